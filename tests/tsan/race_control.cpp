// Positive control of the ThreadSanitizer run (docs/hardening.md): two chunks of one
// Threads::for_chunks call write the same variable with no synchronisation. Under TSan against the
// instrumented oneTBB this must be reported as a data race; the ctest passes only when it is
// (PASS_REGULAR_EXPRESSION), so a TSan run that silently checks nothing fails here. Built only by
// the `tsan` preset.
#include <cstdio>

#include <dynabert/core/parallel.hpp>

int main() {
  long shared = 0;  // written by both chunks: the deliberate race
  const dynabert::Threads threads(2);
  for (int round = 0; round < 50; ++round)
    threads.for_chunks(2, [&](int, long lo, long hi) {
      for (long i = lo; i < hi; ++i) shared += i + 1;
    });
  std::printf("sum %ld (a race, on purpose)\n", shared);
  return 0;
}
