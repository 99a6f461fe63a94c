// Builds against the installed dynabert and runs a small random model at two cells.
#include <cstdio>
#include <vector>

#include <dynabert/dynabert.hpp>

int main() {
  dynabert::BertConfig c;
  c.vocab_size = 100; c.hidden_size = 32; c.num_hidden_layers = 2; c.num_attention_heads = 2;
  c.intermediate_size = 64; c.max_position_embeddings = 16;
  dynabert::BertWeights<float> w(c, {true, 2});
  w.init_random(1);
  dynabert::ElasticBert<float> model(w);
  auto ws = model.make_workspace({1, 8, 1});
  std::vector<std::int32_t> ids = {1, 2, 3, 4, 5, 6, 7, 8};
  dynabert::Inputs in;
  in.input_ids = ids.data(); in.batch = 1; in.seq_len = 8;
  float logits[2];
  dynabert::Outputs out;
  out.logits = logits;
  model.forward(in, dynabert::SubNetwork::dynabert(c, 0.5, 0.5), out, ws);
  std::printf("consumer: logits %.4f %.4f\n", logits[0], logits[1]);
  return logits[0] == logits[0] ? 0 : 1;  // not NaN
}
