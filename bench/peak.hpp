// The machine's measured FP32 FMA peak (GFLOP/s for a thread count), measured once per process
// with independent FMA chains on the widest SIMD batch the build uses. Benchmarks report "% of
// peak" against this figure, so the percentage refers to the machine the numbers came from.
#pragma once
#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include <dynabert/core/simd.hpp>

namespace dynabert_bench {

/// Runs `iters` x 12 independent FMAs on batches; returns a value to keep the work alive.
inline float fma_chains(long iters) {
  using B = dynabert::simd::Batch;
  // Operands come through volatile loads so the compiler cannot fold the chains at compile time.
  static volatile float vm = 0.9999999f, vc = 1e-7f, v0 = 1.0f;
  const float base = v0;
  B a0(base), a1(base + 0.001f), a2(base + 0.002f), a3(base + 0.003f), a4(base + 0.004f), a5(base + 0.005f),
      a6(base + 0.006f), a7(base + 0.007f), a8(base + 0.008f), a9(base + 0.009f), a10(base + 0.01f), a11(base + 0.011f);
  const B m(static_cast<float>(vm)), c(static_cast<float>(vc));
  for (long i = 0; i < iters; ++i) {
    a0 = xsimd::fma(a0, m, c); a1 = xsimd::fma(a1, m, c); a2 = xsimd::fma(a2, m, c); a3 = xsimd::fma(a3, m, c);
    a4 = xsimd::fma(a4, m, c); a5 = xsimd::fma(a5, m, c); a6 = xsimd::fma(a6, m, c); a7 = xsimd::fma(a7, m, c);
    a8 = xsimd::fma(a8, m, c); a9 = xsimd::fma(a9, m, c); a10 = xsimd::fma(a10, m, c); a11 = xsimd::fma(a11, m, c);
  }
  return dynabert::simd::reduce_add(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);
}

/// FLOPs per fma_chains iteration.
inline double fma_chain_flops() { return 12.0 * 2.0 * dynabert::simd::kLanes; }

/// Best of 5 runs of `threads` threads each running the FMA chains.
inline double measure_peak_gflops(int threads) {
  const long iters = 20'000'000;
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    std::vector<std::thread> ts;
    std::vector<float> sink(threads);
    const auto t0 = std::chrono::steady_clock::now();
    for (int t = 0; t < threads; ++t) ts.emplace_back([&, t] { sink[t] = fma_chains(iters); });
    for (auto& t : ts) t.join();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, fma_chain_flops() * iters * threads / s / 1e9);
  }
  return best;
}

/// Cached measured peak for a thread count.
inline double peak_gflops(int threads) {
  static std::mutex mu;
  static std::map<int, double> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(threads);
  if (it == cache.end()) it = cache.emplace(threads, measure_peak_gflops(threads)).first;
  return it->second;
}

}  // namespace dynabert_bench
