// Whole-model benchmark: BERT-base dimensions, sequence length 128, batch 1 and 8, the 12
// DynaBERT cells (width 1, .75, .5, .25 x depth 1, .75, .5), 1 and 2 threads. Reports the time per
// call (real time), GFLOP/s of the encoder and % of the machine's measured FP32 peak.
#include <memory>
#include <vector>

#include <benchmark/benchmark.h>

#include <dynabert/dynabert.hpp>

#include "peak.hpp"

using namespace dynabert;

namespace {

const double kWidths[] = {1.0, 0.75, 0.5, 0.25};
const double kDepths[] = {1.0, 0.75, 0.5};

/// One BERT-base model with random weights, shared by every benchmark of the process.
const ElasticBert<float, BertBaseDims>& bert_base() {
  static std::unique_ptr<ElasticBert<float, BertBaseDims>> model = [] {
    BertWeights<float> w(BertConfig::bert_base(), HeadSpec{true, 2});
    w.init_random(2020);
    return std::make_unique<ElasticBert<float, BertBaseDims>>(w);
  }();
  return *model;
}

/// args: batch, width index, depth index, threads
void BM_BertBase(benchmark::State& st) {
  const int batch = static_cast<int>(st.range(0)), threads = static_cast<int>(st.range(3));
  const double width = kWidths[st.range(1)], depth = kDepths[st.range(2)];
  const int S = 128;
  const auto& model = bert_base();
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
  const auto net = SubNetwork::dynabert(model.config(), width, depth);
  Threads th(threads);
  model.forward(in, net, out, ws, th);  // warm-up
  for (auto _ : st) {
    model.forward(in, net, out, ws, th);
    benchmark::DoNotOptimize(logits.data());
  }
  const double flops = net.encoder_flops(model.config(), S) * batch;
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
BENCHMARK(BM_BertBase)->Apply(grid)->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(0.3)
    ->Repetitions(5)->ReportAggregatesOnly(true);

}  // namespace
