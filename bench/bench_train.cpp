// One training step of a small BERT (4 layers, hidden 256, 4 heads, FFN 1024, vocabulary 30,522,
// sequence 128): forward with dropout, cross-entropy, backward, gradient clipping, AdamW; 1 and 2
// threads (every block, the gradient clipping and AdamW use the threads). One untimed warm-up step
// sizes the buffers; after it a step allocates nothing. first_token:1 is what the trainer runs for
// a loss on the logits (the last layer computes the first tokens only: the same logits, gradients
// equal to rounding);
// first_token:0 computes every row of the last layer, as PyTorch does.
#include <random>
#include <vector>

#include <benchmark/benchmark.h>

#include <dynabert/dynabert.hpp>
#include <dynabert/train/losses.hpp>
#include <dynabert/train/optim.hpp>
#include <dynabert/train/trainable_bert.hpp>

using namespace dynabert;

namespace {

void BM_TrainStep(benchmark::State& st) {
  const int batch = static_cast<int>(st.range(0)), threads = static_cast<int>(st.range(1)), S = 128;
  const bool first_token = st.range(2) != 0;
  BertConfig c;
  c.hidden_size = 256; c.num_hidden_layers = 4; c.num_attention_heads = 4; c.intermediate_size = 1024;
  BertWeights<float> w(c, HeadSpec{true, 2});
  w.init_random(1);
  train::TrainableBert<float> model(std::move(w));
  model.set_threads(Threads(threads));
  train::AdamW<float> opt(model.params(), train::AdamWConfig{2e-5});
  std::mt19937_64 rng(3);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(batch) * S), labels(batch);
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int32_t>((i * 7919) % 30522);
  for (int b = 0; b < batch; ++b) labels[b] = b % 2;
  Inputs in;
  in.input_ids = ids.data(); in.batch = batch; in.seq_len = S;
  const auto net = SubNetwork::full(c);
  train::TrainCache<float> cache;
  std::vector<float> d(static_cast<std::size_t>(batch) * 2);
  const Threads th(threads);
  auto step = [&] {
    model.zero_grad();
    model.forward(in, net, cache, {true, &rng, false, first_token});
    std::fill(d.begin(), d.end(), 0.0f);
    train::cross_entropy(cache.logits.data(), labels.data(), batch, 2, d.data());
    model.backward(cache, d.data(), {});
    train::clip_grad_norm(model.grads(), 1.0, th);
    opt.step(model.params(), model.grads(), 2e-5, th);
  };
  step();  // warm-up: buffers are sized and their pages touched by the first step
  for (auto _ : st) step();
  st.counters["examples/s"] = benchmark::Counter(batch, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_TrainStep)->ArgNames({"batch", "threads", "first_token"})
    ->Args({16, 1, 1})->Args({32, 1, 1})->Args({16, 2, 1})->Args({32, 2, 1})->Args({32, 1, 0})->Args({32, 2, 0})->UseRealTime()->Unit(benchmark::kMillisecond)
    ->MinTime(1.0)->Repetitions(3)->ReportAggregatesOnly(true);

}  // namespace
