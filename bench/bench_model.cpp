// Whole-model benchmark: BERT-base dimensions, sequence length 128, batch 1 and 8, the 12
// DynaBERT cells (width 1, .75, .5, .25 x depth 1, .75, .5), 1 and 2 threads, in FP32, BF16 and
// INT8. Reports the time per call (real time), GFLOP/s of the encoder and % of the machine's
// measured FP32 peak; and the compile-time against the run-time dimensions.
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include <dynabert/dynabert.hpp>

#include "peak.hpp"

using namespace dynabert;

namespace {

const double kWidths[] = {1.0, 0.75, 0.5, 0.25};
const double kDepths[] = {1.0, 0.75, 0.5};

/// One BERT-base model with random weights, packed in FP32, BF16 and INT8, shared by every
/// benchmark of the process.
const ElasticBert<float, BertBaseDims>& bert_base() {
  static std::unique_ptr<ElasticBert<float, BertBaseDims>> model = [] {
    BertWeights<float> w(BertConfig::bert_base(), HeadSpec{true, 2});
    w.init_random(2020);
    return std::make_unique<ElasticBert<float, BertBaseDims>>(w, std::vector<Precision>{Precision::kFp32, Precision::kBf16,
                                                                                        Precision::kInt8});
  }();
  return *model;
}

/// One call of a BERT-base model at a cell; args: batch, width index, depth index, threads.
template <class Model>
void run_cell(benchmark::State& st, const Model& model, Precision precision, bool first_token = true) {
  const int batch = static_cast<int>(st.range(0)), threads = static_cast<int>(st.range(3));
  const double width = kWidths[st.range(1)], depth = kDepths[st.range(2)];
  const int S = 128;
  auto ws = model.make_workspace({batch, S, threads});
  std::vector<std::int32_t> ids(static_cast<std::size_t>(batch) * S);
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int32_t>((i * 7919) % 30522);
  Inputs in;
  in.input_ids = ids.data();
  in.batch = batch;
  in.seq_len = S;
  std::vector<float> logits(batch * 2);
  Outputs out;
  out.logits = logits.data();
  out.first_token_only = first_token;
  auto net = SubNetwork::dynabert(model.config(), width, depth);
  net.precision = precision;
  Threads th(threads);
  model.forward(in, net, out, ws, th);  // warm-up
  // where the two CPUs are while this cell runs (two-thread times depend on it; bench/peak.hpp)
  if (threads > 1) st.counters["core_rtt_ns"] = dynabert_bench::core_round_trip_ns();
  for (auto _ : st) {
    model.forward(in, net, out, ws, th);
    benchmark::DoNotOptimize(logits.data());
  }
  const double flops = net.encoder_flops(model.config(), S, out.first_token_only) * batch;  // as performed
  st.counters["GFLOP/s"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["pct_peak"] = benchmark::Counter(flops / 1e9 / dynabert_bench::peak_gflops(threads) * 100.0,
                                               benchmark::Counter::kIsIterationInvariantRate);
  st.counters["GFLOP"] = flops / 1e9;
  st.counters["width"] = width;
  st.counters["depth"] = depth;
}

void grid(benchmark::internal::Benchmark* b) {
  b->ArgNames({"batch", "w", "d", "threads"});
  for (int batch : {1, 8})
    for (int threads : {1, 2})
      for (int w = 0; w < 4; ++w)
        for (int d = 0; d < 3; ++d) b->Args({batch, w, d, threads});
}

/// The 12 cells x batch 1 and 8 x 1 and 2 threads in each precision:
/// BM_BertBase/precision:fp32|bf16|int8/batch:B/w:W/d:D/threads:T (pct_peak: of the FP32 peak).
const int kBertBaseRegistered = [] {
  for (Precision p : {Precision::kFp32, Precision::kBf16, Precision::kInt8})
    benchmark::RegisterBenchmark((std::string("BM_BertBase/precision:") + to_string(p)).c_str(),
                                 [p](benchmark::State& st) { run_cell(st, bert_base(), p); })
        ->Apply(grid)->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(0.3)->Repetitions(5)->ReportAggregatesOnly(true);
  return 0;
}();

/// What the first-token last layer buys (Outputs::first_token_only, on in BM_BertBase): the same
/// calls computing every row of the last layer, as ONNX Runtime and PyTorch do. args: batch, width
/// index, depth index, threads, precision (0 fp32, 2 int8).
void BM_BertBaseAllRows(benchmark::State& st) {
  run_cell(st, bert_base(), st.range(4) == 2 ? Precision::kInt8 : Precision::kFp32, false);
}
BENCHMARK(BM_BertBaseAllRows)->ArgNames({"batch", "w", "d", "threads", "precision"})
    ->ArgsProduct({{1, 8}, {0, 3}, {0, 2}, {1}, {0, 2}})->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(0.3)
    ->Repetitions(5)->ReportAggregatesOnly(true);

/// What compile-time dimensions buy: the same random BERT-base as ElasticBert<float, BertBaseDims>
/// (hidden size and head size constants in LayerNorm rows and attention's per-head loops) and as
/// ElasticBert<float> (both run-time), FP32, one thread. args: batch, width index, depth index,
/// threads (as BM_BertBase), dims (0 run-time, 1 compile-time).
void BM_BertBaseDims(benchmark::State& st) {
  static std::unique_ptr<ElasticBert<float>> dynamic_model = [] {
    BertWeights<float> w(BertConfig::bert_base(), HeadSpec{true, 2});
    w.init_random(2020);
    return std::make_unique<ElasticBert<float>>(w);
  }();
  if (st.range(4) == 0) run_cell(st, *dynamic_model, Precision::kFp32);
  else run_cell(st, bert_base(), Precision::kFp32);
}
BENCHMARK(BM_BertBaseDims)->ArgNames({"batch", "w", "d", "threads", "static"})
    ->ArgsProduct({{1, 8}, {0, 3}, {0, 2}, {1}, {0, 1}})->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(0.3)
    ->Repetitions(5)->ReportAggregatesOnly(true);

/// A batch of 8 sequences of mixed lengths (16..128 tokens, mean 69, seeded) padded to 128 at
/// the full size: tokens packed (default) against the padded layout. args: packed, threads.
void BM_MixedLengths(benchmark::State& st) {
  const bool packed = st.range(0) != 0;
  const int threads = static_cast<int>(st.range(1)), B = 8, S = 128;
  const auto& model = bert_base();
  auto ws = model.make_workspace({B, S, threads});
  std::vector<std::int32_t> ids(static_cast<std::size_t>(B) * S, 0), lengths(B);
  std::mt19937 g(11);
  long real = 0;
  for (int b = 0; b < B; ++b) {
    lengths[b] = 16 + static_cast<int>(g() % 113);
    real += lengths[b];
    for (int s = 0; s < lengths[b]; ++s) ids[static_cast<std::size_t>(b) * S + s] = static_cast<std::int32_t>(1000 + g() % 20000);
  }
  Inputs in;
  in.input_ids = ids.data(); in.lengths = lengths.data(); in.batch = B; in.seq_len = S;
  std::vector<float> logits(B * 2);
  Outputs out;
  out.logits = logits.data();
  out.pack_tokens = packed;
  const auto net = SubNetwork::full(model.config());
  Threads th(threads);
  model.forward(in, net, out, ws, th);
  for (auto _ : st) {
    model.forward(in, net, out, ws, th);
    benchmark::DoNotOptimize(logits.data());
  }
  st.counters["real_tokens"] = static_cast<double>(real);
  st.counters["padded_tokens"] = B * S;
}
BENCHMARK(BM_MixedLengths)->ArgNames({"packed", "threads"})->ArgsProduct({{0, 1}, {1, 2}})->UseRealTime()
    ->Unit(benchmark::kMillisecond)->MinTime(0.3)->Repetitions(5)->ReportAggregatesOnly(true);

}  // namespace
