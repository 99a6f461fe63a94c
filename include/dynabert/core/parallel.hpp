// Thread use is the caller's choice: `Threads` wraps either a thread count (dynabert creates and
// owns a tbb::task_arena of that size) or a tbb::task_arena the caller owns. Kernels receive a
// `const Threads&` and split work in static, deterministic chunks. No OpenMP anywhere.
#pragma once
#include <algorithm>
#include <memory>

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>
#include <tbb/task_arena.h>

#include "dynabert/core/error.hpp"

namespace dynabert {

/// How many threads a call may use, and where they come from.
class Threads {
 public:
  /// Most threads one Threads object may ask for.
  static constexpr int kMaxThreads = 1024;
  /// Single-threaded: everything runs on the calling thread, TBB is not touched.
  Threads() = default;

  /// `n` threads in an arena owned by this object (n == 1 runs on the calling thread).
  explicit Threads(int n) : count_(n) {
    DYNABERT_REQUIRE(n >= 1 && n <= kMaxThreads, InputError, "thread count must be in 1..", kMaxThreads, ", got ", n);
    if (n > 1) {
      owned_ = std::make_shared<tbb::task_arena>(n);
      arena_ = owned_.get();
    }
  }

  /// Uses the caller's arena (which must outlive every call using this object).
  explicit Threads(tbb::task_arena& arena) : count_(arena.max_concurrency()), arena_(&arena) {}

  int count() const noexcept { return count_; }

  /// Runs f(chunk, begin, end) over [0, n) split into at most `count()` contiguous chunks of
  /// nearly equal size (static partition: the same split every call, hence deterministic results).
  template <class F>
  void for_chunks(long n, F&& f) const {
    if (n <= 0) return;
    const long chunks = std::min<long>(count_, n);
    if (chunks <= 1 || arena_ == nullptr) {
      f(0, 0L, n);
      return;
    }
    arena_->execute([&] {
      tbb::parallel_for(
          tbb::blocked_range<long>(0, chunks, 1),
          [&](const tbb::blocked_range<long>& r) {
            for (long c = r.begin(); c < r.end(); ++c) {
              const long lo = n * c / chunks, hi = n * (c + 1) / chunks;
              f(static_cast<int>(c), lo, hi);
            }
          },
          tbb::static_partitioner());
    });
  }

  /// Runs f(index, worker) for each index in [0, n); worker in [0, count()) identifies the chunk
  /// (use it to pick per-thread scratch memory).
  template <class F>
  void for_each(long n, F&& f) const {
    for_chunks(n, [&](int worker, long lo, long hi) {
      for (long i = lo; i < hi; ++i) f(i, worker);
    });
  }

 private:
  int count_ = 1;
  std::shared_ptr<tbb::task_arena> owned_;
  tbb::task_arena* arena_ = nullptr;
};

}  // namespace dynabert
