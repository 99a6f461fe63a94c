// The machine's measured FP32 FMA peak (GFLOP/s for a thread count), measured once per process
// with independent FMA chains on the widest SIMD batch the build uses. Benchmarks report "% of
// peak" against this figure, so the percentage refers to the machine the numbers came from.
#pragma once
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include <dynabert/core/simd.hpp>
#include <dynabert/kernels/lowp.hpp>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

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

// ---- how far apart the first two CPUs are ------------------------------------------------------

/// Round trip of one cache line between two threads pinned to the first two CPUs of the process's
/// affinity mask, in ns (fastest of 5 runs of 20,000 round trips: a run in which another thread
/// took one of the CPUs for a while only reads slower); 0 where it cannot be measured (fewer than
/// two CPUs, pinning refused, or not Linux). On a VM the host may move the two virtual CPUs between
/// cores that share an L3 and cores that do not, and two-thread times change with it
/// (docs/performance.md, "Where the two CPUs are"): the benchmarks report this beside them.
inline double core_round_trip_ns() {
#if defined(__linux__)
  cpu_set_t mask;
  if (sched_getaffinity(0, sizeof mask, &mask) != 0) return 0;
  int cpus[2], found = 0;
  for (int c = 0; c < CPU_SETSIZE && found < 2; ++c)
    if (CPU_ISSET(c, &mask)) cpus[found++] = c;
  if (found < 2) return 0;
  std::atomic<bool> pinned{true};
  auto pin = [&](int cpu) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    if (pthread_setaffinity_np(pthread_self(), sizeof one, &one) != 0) pinned = false;
  };
  const int trips = 20000;
  std::vector<double> runs;
  for (int rep = 0; rep < 5; ++rep) {
    alignas(64) std::atomic<int> flag{0};
    double ns = 0;
    std::thread echo([&] {
      pin(cpus[1]);
      for (int i = 0; i < trips; ++i) {
        while (flag.load(std::memory_order_acquire) != 2 * i + 1) {
        }
        flag.store(2 * i + 2, std::memory_order_release);
      }
    });
    std::thread serve([&] {
      pin(cpus[0]);
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < trips; ++i) {
        flag.store(2 * i + 1, std::memory_order_release);
        while (flag.load(std::memory_order_acquire) != 2 * i + 2) {
        }
      }
      ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / trips;
    });
    serve.join();
    echo.join();
    runs.push_back(ns);
  }
  return pinned ? *std::min_element(runs.begin(), runs.end()) : 0.0;
#else
  return 0;
#endif
}

// ---- low-precision instruction peaks (AVX512_VNNI vpdpbusd, AVX512_BF16 vdpbf16ps) -------------
// Operations count multiplies and adds separately, as FLOPs do: one vpdpbusd on zmm is 64
// multiply-adds = 128 ops, one vdpbf16ps 32 multiply-adds = 64 ops.

/// Runs `iters` x 24 independent low-precision dot instructions (kind 0: vpdpbusd, 1: vdpbf16ps), or
/// iters / 16 x 4 AMX tile products on four accumulator tiles (2: tdpbsud, 3: tdpbf16ps); returns
/// ops per iteration (0 when the build or the OS lacks the instruction). The accumulators must stay
/// in registers: GCC 12 keeps an array of __m512i in memory across such a loop (and spills even
/// named vpdpbusd accumulators), which would measure store forwarding instead of the instruction.
#define DYNABERT_BENCH_24(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15) \
  X(16) X(17) X(18) X(19) X(20) X(21) X(22) X(23)
inline double lowp_chains(long iters, int kind, float* sink) {
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
  if (kind == 0) {
    // inline assembly: GCC 12 spills vpdpbusd accumulators to the stack even as named variables
    static volatile int va = 0x01010101, vb = 0x02020202;
    const __m512i a = _mm512_set1_epi32(va), b = _mm512_set1_epi32(vb);
#define DECL(i) __m512i u##i = _mm512_set1_epi32(i), w##i = _mm512_set1_epi32(i + 100);
#define SUM(i) s = _mm512_add_epi32(s, _mm512_add_epi32(u##i, w##i));
    DECL(0) DECL(1) DECL(2) DECL(3) DECL(4) DECL(5) DECL(6) DECL(7) DECL(8) DECL(9) DECL(10) DECL(11)
    for (long i = 0; i < iters; ++i) {
#define DYNABERT_VNNI12(o)                                                                                         \
  asm volatile(                                                                                                    \
      "vpdpbusd %[b], %[a], %[x0]\n\tvpdpbusd %[b], %[a], %[x1]\n\tvpdpbusd %[b], %[a], %[x2]\n\t"                 \
      "vpdpbusd %[b], %[a], %[x3]\n\tvpdpbusd %[b], %[a], %[x4]\n\tvpdpbusd %[b], %[a], %[x5]\n\t"                 \
      "vpdpbusd %[b], %[a], %[x6]\n\tvpdpbusd %[b], %[a], %[x7]\n\tvpdpbusd %[b], %[a], %[x8]\n\t"                 \
      "vpdpbusd %[b], %[a], %[x9]\n\tvpdpbusd %[b], %[a], %[x10]\n\tvpdpbusd %[b], %[a], %[x11]"                    \
      : [x0] "+v"(o##0), [x1] "+v"(o##1), [x2] "+v"(o##2), [x3] "+v"(o##3), [x4] "+v"(o##4), [x5] "+v"(o##5),       \
        [x6] "+v"(o##6), [x7] "+v"(o##7), [x8] "+v"(o##8), [x9] "+v"(o##9), [x10] "+v"(o##10), [x11] "+v"(o##11)  \
      : [a] "v"(a), [b] "v"(b));
      DYNABERT_VNNI12(u)
      DYNABERT_VNNI12(w)
#undef DYNABERT_VNNI12
    }
    __m512i s = _mm512_setzero_si512();
    SUM(0) SUM(1) SUM(2) SUM(3) SUM(4) SUM(5) SUM(6) SUM(7) SUM(8) SUM(9) SUM(10) SUM(11)
#undef DECL
#undef SUM
    *sink = static_cast<float>(_mm512_reduce_add_epi32(s));
    return 24.0 * 128.0;
  }
#endif
#if defined(__AVX512BF16__) && defined(__AVX512BW__)
  if (kind == 1) {
    static volatile int va = 0x3F803F80;  // (1.0, 1.0) in bfloat16
    const __m512bh a = reinterpret_cast<__m512bh>(_mm512_set1_epi32(va));
#define DECL(i) __m512 c##i = _mm512_set1_ps(static_cast<float>(i));
#define STEP(i) c##i = _mm512_dpbf16_ps(c##i, a, a);
#define SUM(i) s = _mm512_add_ps(s, c##i);
    DYNABERT_BENCH_24(DECL)
    for (long i = 0; i < iters; ++i) {
      DYNABERT_BENCH_24(STEP)
    }
    __m512 s = _mm512_setzero_ps();
    DYNABERT_BENCH_24(SUM)
#undef DECL
#undef STEP
#undef SUM
    *sink = _mm512_reduce_add_ps(s);
    return 24.0 * 64.0;
  }
#endif
#if DYNABERT_HAS_AMX
  if ((kind == 2 || kind == 3) && dynabert::kernels::lowp::amx_permitted()) {
    // four independent 16 x 16 accumulator tiles, A and B tiles loaded once
    alignas(64) std::uint8_t ab[2][1024];  // (each measuring thread its own)
    std::memset(ab, kind == 2 ? 1 : 0, sizeof ab);
    const dynabert::kernels::lowp::AmxScope scope;
    dynabert::kernels::lowp::amx_use_rows(16, 16);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    _tile_loadd(4, ab[0], 64);
    _tile_loadd(5, ab[0], 64);
    _tile_loadd(6, ab[1], 64);
    _tile_loadd(7, ab[1], 64);
    for (long i = 0; i < iters / 16; ++i) {
      if (kind == 2) {
        _tile_dpbsud(0, 4, 6);
        _tile_dpbsud(1, 4, 7);
        _tile_dpbsud(2, 5, 6);
        _tile_dpbsud(3, 5, 7);
      } else {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
    }
    alignas(64) std::int32_t out[256];
    _tile_stored(0, out, 64);
    *sink = static_cast<float>(out[0]);
    // per iteration of `iters` (the loop ran iters / 16 times): 4 instructions x 16 x 16 x K (64
    // int8, 32 bf16) multiply-adds / 16
    return 4.0 * 16 * 16 * (kind == 2 ? 64 : 32) * 2 / 16;
  }
#endif
  (void)iters;
  (void)kind;
  *sink = 0;
  return 0.0;
}
#undef DYNABERT_BENCH_24

/// Best of 5 runs of `threads` threads running the chains of `kind`: GOP/s (0 without the
/// instruction).
inline double measure_lowp_peak(int threads, int kind) {
  const long iters = 10'000'000;
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    std::vector<std::thread> ts;
    std::vector<float> sink(threads);
    std::vector<double> ops(threads);
    const auto t0 = std::chrono::steady_clock::now();
    for (int t = 0; t < threads; ++t) ts.emplace_back([&, t] { ops[t] = lowp_chains(iters, kind, &sink[t]); });
    for (auto& t : ts) t.join();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, ops[0] * iters * threads / s / 1e9);
  }
  return best;
}

/// Cached measured low-precision peak (GOP/s) for a thread count and kind.
inline double lowp_peak_gops(int threads, int kind) {
  static std::mutex mu;
  static std::map<std::pair<int, int>, double> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find({threads, kind});
  if (it == cache.end()) it = cache.emplace(std::make_pair(threads, kind), measure_lowp_peak(threads, kind)).first;
  return it->second;
}

}  // namespace dynabert_bench
