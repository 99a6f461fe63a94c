// Positive control of the ThreadSanitizer run (docs/hardening.md): two chunks of one
// Threads::for_chunks call write the same variable with no synchronisation. Under TSan against the
// instrumented oneTBB this must be reported as a data race; the ctest passes only when it is
// (PASS_REGULAR_EXPRESSION), so a TSan run that silently checks nothing fails here. Built only by
// the `tsan` preset.
//
// The two chunks must run on two threads, or there is no race to see: on a loaded machine the
// calling thread can run both chunks before oneTBB's worker wakes (CI once saw exactly that). So
// each chunk first announces itself and waits, up to a deadline, for the other one to start. The
// waiting thread cannot take the other chunk itself, so a worker has to. The flags are relaxed
// atomics, which give TSan no happens-before edge, so the writes after the handshake still race.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include <dynabert/core/parallel.hpp>

int main() {
  long shared = 0;  // written by both chunks: the deliberate race
  std::atomic<int> started[2] = {0, 0};
  bool met = false;
  const dynabert::Threads threads(2);
  threads.for_chunks(2, [&](int chunk, long lo, long hi) {
    started[chunk].store(1, std::memory_order_relaxed);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (started[1 - chunk].load(std::memory_order_relaxed) == 0 &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::yield();
    if (chunk == 0) met = started[1].load(std::memory_order_relaxed) != 0;
    for (long i = lo; i < hi; ++i) shared += i + 1;
  });
  std::printf("sum %ld (a race, on purpose); the chunks %s\n", shared,
              met ? "ran at the same time" : "never overlapped: no race could be seen");
  return 0;
}
