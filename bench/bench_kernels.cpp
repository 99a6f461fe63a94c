// Kernel benchmarks: the machine's FMA peak, the packed GEMM at every BERT-base shape and
// DynaBERT width (GFLOP/s and % of measured peak), and the row kernels (GB/s).
#include <algorithm>
#include <array>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>

#include <dynabert/dynabert.hpp>

#include "peak.hpp"

using namespace dynabert;

namespace {

void set_flop_counters(benchmark::State& st, double flops, int threads) {
  st.counters["GFLOP/s"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["pct_peak"] = benchmark::Counter(flops / 1e9 / dynabert_bench::peak_gflops(threads) * 100.0,
                                               benchmark::Counter::kIsIterationInvariantRate);
}

void BM_PeakFma(benchmark::State& st) {
  const int threads = static_cast<int>(st.range(0));
  for (auto _ : st) benchmark::DoNotOptimize(dynabert_bench::measure_peak_gflops(threads));
  st.counters["peak_GFLOP/s"] = dynabert_bench::peak_gflops(threads);
  st.SetLabel(simd::arch_name());
}
BENCHMARK(BM_PeakFma)->Arg(1)->Arg(2)->Iterations(1)->Unit(benchmark::kMillisecond);

/// Round trip of a cache line between the first two CPUs (bench/peak.hpp): about 50 ns when they
/// share an L3 on this machine kind, 340-450 ns when they do not.
void BM_CoreRoundTrip(benchmark::State& st) {
  double ns = 0;
  for (auto _ : st) benchmark::DoNotOptimize(ns = dynabert_bench::core_round_trip_ns());
  st.counters["round_trip_ns"] = ns;
}
BENCHMARK(BM_CoreRoundTrip)->Iterations(1)->Unit(benchmark::kMillisecond);

/// y = x W^T + b at BERT-base shapes; args: M, N (active), K (active), threads, full N, full K.
void BM_Gemm(benchmark::State& st) {
  const int M = static_cast<int>(st.range(0)), n = static_cast<int>(st.range(1)), k = static_cast<int>(st.range(2));
  const int threads = static_cast<int>(st.range(3)), N = static_cast<int>(st.range(4)), K = static_cast<int>(st.range(5));
  std::mt19937 g(1);
  std::normal_distribution<float> d;
  std::vector<float> a(static_cast<std::size_t>(M) * K), w(static_cast<std::size_t>(N) * K), c(static_cast<std::size_t>(M) * N), bias(N);
  for (auto& v : a) v = d(g);
  for (auto& v : w) v = d(g);
  kernels::PackedWeight pw(w.data(), N, K, K);
  AlignedBuffer<float> scratch(threads * kernels::gemm_scratch_floats());
  Threads th(threads);
  kernels::Epilogue ep;
  ep.bias = bias.data();
  for (auto _ : st) {
    kernels::gemm(c.data(), N, a.data(), K, M, pw.view(), n, k, ep, scratch.data(), th);
    benchmark::ClobberMemory();
  }
  set_flop_counters(st, 2.0 * M * n * k, threads);
}
// Q/K/V (fused), attention output, FFN in, FFN out at S=128, full width and DynaBERT width 0.25.
BENCHMARK(BM_Gemm)
    ->ArgNames({"M", "n", "k", "threads", "N", "K"})
    ->Args({128, 2304, 768, 1, 2304, 768})->Args({128, 768, 768, 1, 768, 768})
    ->Args({128, 3072, 768, 1, 3072, 768})->Args({128, 768, 3072, 1, 768, 3072})
    ->Args({128, 576, 768, 1, 2304, 768})->Args({128, 768, 192, 1, 768, 768})
    ->Args({128, 768, 768, 1, 3072, 768})->Args({128, 768, 768, 1, 768, 3072})
    ->Args({1024, 3072, 768, 1, 3072, 768})
    ->Args({128, 3072, 768, 2, 3072, 768})->Args({1024, 3072, 768, 2, 3072, 768})
    ->Args({4096, 768, 256, 1, 768, 256})->Args({4096, 256, 256, 1, 256, 256})
    ->Args({4096, 1024, 256, 1, 1024, 256})->Args({4096, 256, 1024, 1, 256, 1024})
    ->UseRealTime()->Unit(benchmark::kMicrosecond);

/// Peaks of the low-precision dot instructions (kind 0: vpdpbusd INT8, 1: vdpbf16ps BF16, 2 and 3:
/// the AMX tile products tdpbsud and tdpbf16ps), in
/// operations (2 per multiply-add) per second, beside BM_PeakFma. args: kind, threads.
void BM_PeakLowp(benchmark::State& st) {
  const int kind = static_cast<int>(st.range(0)), threads = static_cast<int>(st.range(1));
  for (auto _ : st) benchmark::DoNotOptimize(dynabert_bench::measure_lowp_peak(threads, kind));
  st.counters["peak_GOP/s"] = dynabert_bench::lowp_peak_gops(threads, kind);
  st.counters["vs_fp32_fma"] = dynabert_bench::lowp_peak_gops(threads, kind) / dynabert_bench::peak_gflops(threads);
  static const char* names[] = {"vpdpbusd", "vdpbf16ps", "AMX tdpbsud", "AMX tdpbf16ps"};
  st.SetLabel(names[kind]);
}
BENCHMARK(BM_PeakLowp)->ArgNames({"kind", "threads"})->ArgsProduct({{0, 1, 2, 3}, {1, 2}})->Iterations(1)->Unit(benchmark::kMillisecond);

/// The low-precision product at the BM_Gemm shapes: args M, n, k, threads, N, K, precision (1 bf16,
/// 2 int8), kernel (0: the default, else a LowpKernel value: the other kernels this CPU runs, for
/// comparison). Times the product alone (A converted once before the loop); GOP/s and % of the peak
/// of the kernel's instruction (BM_PeakLowp; BM_PeakFma for BF16 on FP32 FMAs). BM_LowpConvert
/// times the conversion of A.
void BM_GemmLowp(benchmark::State& st) {
  const int M = static_cast<int>(st.range(0)), n = static_cast<int>(st.range(1)), k = static_cast<int>(st.range(2));
  const int threads = static_cast<int>(st.range(3)), N = static_cast<int>(st.range(4)), K = static_cast<int>(st.range(5));
  const Precision p = st.range(6) == 2 ? Precision::kInt8 : Precision::kBf16;
  const auto asked = static_cast<kernels::LowpKernel>(st.range(7));
  const auto kern = asked == kernels::LowpKernel::kAuto ? kernels::default_lowp_kernel(p) : asked;
  std::mt19937 g(1);
  std::normal_distribution<float> d;
  std::vector<float> a(static_cast<std::size_t>(M) * K), w(static_cast<std::size_t>(N) * K), c(static_cast<std::size_t>(M) * N), bias(N);
  for (auto& v : a) v = d(g);
  for (auto& v : w) v = d(g);
  kernels::LowpWeight pw;
  pw.pack(p, N, K, [&](int r) { return w.data() + static_cast<long>(r) * K; });
  AlignedBuffer<std::uint8_t> abuf(static_cast<std::size_t>(M) * kernels::lowp_a_ld(k, p) * 2);
  AlignedBuffer<float> scale(M);
  AlignedBuffer<std::int32_t> corr(M);
  Threads th(threads);
  const auto conv = kernels::convert_a(p, abuf.data(), scale.data(), corr.data(), a.data(), K, M, k, th);
  kernels::Epilogue ep;
  ep.bias = bias.data();
  for (auto _ : st) {
    kernels::gemm_lowp(c.data(), N, conv, M, pw.view(), n, k, ep, th, kern);
    benchmark::ClobberMemory();
  }
  const double ops = 2.0 * M * n * k;
  st.counters["GOP/s"] = benchmark::Counter(ops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  using LK = kernels::LowpKernel;
  const double peak = kern == LK::kEmulated    ? dynabert_bench::peak_gflops(threads)
                      : kern == LK::kVnni512   ? dynabert_bench::lowp_peak_gops(threads, 0)
                      : kern == LK::kNative512 ? dynabert_bench::lowp_peak_gops(threads, 1)
                      : kern == LK::kAmxInt8   ? dynabert_bench::lowp_peak_gops(threads, 2)
                      : kern == LK::kAmxBf16   ? dynabert_bench::lowp_peak_gops(threads, 3)
                                               : 0.0;
  if (peak > 0)
    st.counters["pct_peak"] = benchmark::Counter(ops / 1e9 / peak * 100.0, benchmark::Counter::kIsIterationInvariantRate);
  st.SetLabel(kernels::to_string(kern));
}
void lowp_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "n", "k", "threads", "N", "K", "precision", "kernel"});
  using LK = kernels::LowpKernel;
  for (int p : {2, 1}) {
    const Precision prec = p == 2 ? Precision::kInt8 : Precision::kBf16;
    // the default, then the other fast kernels this CPU runs (the plain and AVX2 INT8 ones are
    // for CPUs without VNNI: not timed here)
    std::vector<int> kerns{0};
    for (LK k : {LK::kVnni512, LK::kNative512, LK::kEmulated, LK::kAmxInt8, LK::kAmxBf16})
      if (k != kernels::default_lowp_kernel(prec) && kernels::has_lowp_kernel(k, prec)) kerns.push_back(static_cast<int>(k));
    for (int kern : kerns)
      for (auto s : std::vector<std::array<int, 6>>{{128, 2304, 768, 1, 2304, 768}, {128, 768, 768, 1, 768, 768},
                                                    {128, 3072, 768, 1, 3072, 768}, {128, 768, 3072, 1, 768, 3072},
                                                    {128, 576, 768, 1, 2304, 768}, {128, 768, 192, 1, 768, 768},
                                                    {1024, 3072, 768, 1, 3072, 768}, {1024, 768, 3072, 1, 768, 3072},
                                                    {1024, 3072, 768, 2, 3072, 768}})
        b->Args({s[0], s[1], s[2], s[3], s[4], s[5], p, kern});
  }
}
BENCHMARK(BM_GemmLowp)->Apply(lowp_shapes)->UseRealTime()->Unit(benchmark::kMicrosecond);

/// Converting a linear layer's input for a low-precision product (per-row int8 quantization, or
/// bf16 rounding): args rows, k, precision (1 bf16, 2 int8); one thread. GB/s of FP32 input read.
void BM_LowpConvert(benchmark::State& st) {
  const int M = static_cast<int>(st.range(0)), k = static_cast<int>(st.range(1));
  const Precision p = st.range(2) == 2 ? Precision::kInt8 : Precision::kBf16;
  std::mt19937 g(2);
  std::normal_distribution<float> d;
  std::vector<float> a(static_cast<std::size_t>(M) * k);
  for (auto& v : a) v = d(g);
  AlignedBuffer<std::uint8_t> abuf(static_cast<std::size_t>(M) * kernels::lowp_a_ld(k, p) * 2);
  AlignedBuffer<float> scale(M);
  AlignedBuffer<std::int32_t> corr(M);
  const Threads th(1);
  for (auto _ : st) {
    benchmark::DoNotOptimize(kernels::convert_a(p, abuf.data(), scale.data(), corr.data(), a.data(), k, M, k, th));
    benchmark::ClobberMemory();
  }
  st.SetBytesProcessed(static_cast<long>(st.iterations()) * M * k * 4);
}
BENCHMARK(BM_LowpConvert)->ArgNames({"M", "k", "precision"})->ArgsProduct({{128, 1024}, {768, 3072}, {2, 1}})
    ->Unit(benchmark::kMicrosecond);

/// The epilogue's cost on a batch-8 product of width 0.5 (1,024 x 1,536 x 768, weight packed at
/// 3,072 x 768): arg 0 bias only, 1 bias + erf GELU (the FFN-in product), 2 bias + residual (the
/// FFN-out and attention-output products; the residual is a separate 1,024-row buffer, as in the
/// model). Compare 1 and 2 against 0.
void BM_GemmEpilogue(benchmark::State& st) {
  const int M = 1024, n = 1536, k = 768, N = 3072, K = 768, kind = static_cast<int>(st.range(0));
  std::mt19937 g(4);
  std::normal_distribution<float> d;
  std::vector<float> a(static_cast<std::size_t>(M) * K), w(static_cast<std::size_t>(N) * K), bias(N),
      c(static_cast<std::size_t>(M) * N), res(static_cast<std::size_t>(M) * N);
  for (auto& v : a) v = d(g);
  for (auto& v : w) v = d(g) * 0.05f;  // pre-activations of BERT's scale, so GELU sees both signs
  for (auto& v : res) v = d(g);
  kernels::PackedWeight pw(w.data(), N, K, K);
  AlignedBuffer<float> scratch(kernels::gemm_scratch_floats());
  kernels::Epilogue ep;
  ep.bias = bias.data();
  if (kind == 1) ep.act = Activation::kGeluErf;
  if (kind == 2) {
    ep.residual = res.data();
    ep.ld_residual = N;
  }
  for (auto _ : st) {
    kernels::gemm(c.data(), N, a.data(), K, M, pw.view(), n, k, ep, scratch.data());
    benchmark::ClobberMemory();
  }
  set_flop_counters(st, 2.0 * M * n * k, 1);
}
BENCHMARK(BM_GemmEpilogue)->ArgName("epilogue")->DenseRange(0, 2)->UseRealTime()->Unit(benchmark::kMillisecond)
    ->Repetitions(5)->ReportAggregatesOnly(true);

/// The FFN-in product (128 x 3072 x 768) with its weight hot in cache (arg 1 copy) or cold: the
/// calls cycle through 16 packed copies (150 MB, more than L3), as a model's layers do.
void BM_GemmColdWeights(benchmark::State& st) {
  const int M = 128, N = 3072, K = 768, copies = static_cast<int>(st.range(0));
  std::mt19937 g(2);
  std::normal_distribution<float> d;
  std::vector<float> a(static_cast<std::size_t>(M) * K), w(static_cast<std::size_t>(N) * K), c(static_cast<std::size_t>(M) * N);
  for (auto& v : a) v = d(g);
  for (auto& v : w) v = d(g);
  std::vector<kernels::PackedWeight> pw;
  for (int i = 0; i < copies; ++i) pw.emplace_back(w.data(), N, K, K);
  AlignedBuffer<float> scratch(kernels::gemm_scratch_floats());
  long i = 0;
  for (auto _ : st) {
    kernels::gemm(c.data(), N, a.data(), K, M, pw[static_cast<std::size_t>(i++ % copies)].view(), N, K, {}, scratch.data());
    benchmark::ClobberMemory();
  }
  set_flop_counters(st, 2.0 * M * N * K, 1);
}
BENCHMARK(BM_GemmColdWeights)->ArgName("copies")->Arg(1)->Arg(16)->UseRealTime()->Unit(benchmark::kMicrosecond);

void BM_Softmax(benchmark::State& st) {
  const int n = static_cast<int>(st.range(0)), rows = 128;
  std::vector<float> x(static_cast<std::size_t>(rows) * n, 0.5f), mask(n, 0.0f);
  for (auto _ : st) {
    for (int r = 0; r < rows; ++r) kernels::softmax_row(x.data() + r * n, n, 0.125f, mask.data());
    benchmark::ClobberMemory();
  }
  st.SetBytesProcessed(st.iterations() * rows * n * 8);
}
BENCHMARK(BM_Softmax)->Arg(128)->Arg(512);

void BM_LayerNorm(benchmark::State& st) {
  const int H = static_cast<int>(st.range(0)), rows = 128;
  std::vector<float> x(static_cast<std::size_t>(rows) * H, 0.5f), g(H, 1.0f), b(H, 0.0f);
  for (auto _ : st) {
    for (int r = 0; r < rows; ++r) kernels::layernorm_row(x.data() + r * H, x.data() + r * H, g.data(), b.data(), H, 1e-12);
    benchmark::ClobberMemory();
  }
  st.SetBytesProcessed(st.iterations() * rows * H * 8);
}
BENCHMARK(BM_LayerNorm)->Arg(768)->Arg(256);

void BM_Activation(benchmark::State& st) {
  const auto act = static_cast<Activation>(st.range(0));
  std::vector<float> src(128 * 3072), x(src.size());
  for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<float>(i % 17) * 0.1f - 0.8f;
  for (auto _ : st) {
    // the same inputs every time: applied to its own output, the GELU halves negative values on
    // each pass until they are denormal, which Intel CPUs process about 20x slower (microcode
    // assists), so the benchmark measured denormals rather than the GELU
    st.PauseTiming();
    std::copy(src.begin(), src.end(), x.begin());
    st.ResumeTiming();
    kernels::activation(x.data(), x.size(), act);
    benchmark::ClobberMemory();
  }
  st.SetBytesProcessed(st.iterations() * x.size() * 8);
  st.SetLabel(to_string(act));
}
BENCHMARK(BM_Activation)->Arg(static_cast<int>(Activation::kGeluErf))->Arg(static_cast<int>(Activation::kGeluTanh));

}  // namespace
