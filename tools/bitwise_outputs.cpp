// Prints the raw bytes of every hidden state, logits and pooled output of FP32, BF16 and INT8
// forwards of three random models (hidden 96, 256 and 90; batch 1 and 8 with padding; widths 1,
// 0.5 and 0.25; depths 1 and 0.5; one and two threads; with and without every hidden state), so
// that a change meant to keep results bitwise can be checked against the commit before it:
//
//   git worktree add /tmp/base <commit>
//   for t in base new; do src=$([ $t = base ] && echo /tmp/base || echo .); \
//     g++ -std=gnu++17 -O2 -march=native -DNDEBUG -I$src/include tools/bitwise_outputs.cpp \
//       -o /tmp/$t -ltbb -lutf8proc; done
//   /tmp/base > /tmp/base.out && /tmp/new > /tmp/new.out && cmp /tmp/base.out /tmp/new.out
//
// (about 200 MB each; a minute on two cores).
#include <cstdio>
#include <random>
#include <vector>

#include <dynabert/dynabert.hpp>

using namespace dynabert;

int main() {
  for (int H : {96, 256, 90}) {
    BertConfig c;
    c.vocab_size = 300; c.hidden_size = H; c.num_hidden_layers = 3; c.num_attention_heads = H == 256 ? 4 : 6;
    c.intermediate_size = 4 * H; c.max_position_embeddings = 128;
    BertWeights<float> w(c, HeadSpec{true, 2});
    w.init_random(7, 0.08, true);
    const ElasticBert<float> m(w, {Precision::kFp32, Precision::kBf16, Precision::kInt8});
    const int S = 100;
    auto ws = m.make_workspace({8, S, 2});
    std::mt19937 g(3);
    std::vector<std::int32_t> ids(8 * S), lengths(8);
    for (auto& v : ids) v = static_cast<std::int32_t>(g() % 300);
    for (auto& v : lengths) v = 1 + static_cast<int>(g() % S);
    lengths[0] = S;
    for (int B : {1, 8})
      for (double wm : {1.0, 0.5, 0.25})
        for (double dm : {1.0, 0.5})
          for (int th : {1, 2})
            for (Precision p : {Precision::kFp32, Precision::kBf16, Precision::kInt8}) {
              Inputs in;
              in.input_ids = ids.data(); in.lengths = lengths.data(); in.batch = B; in.seq_len = S;
              auto net = SubNetwork::dynabert(w.config(), wm, dm);
              net.precision = p;
              const std::size_t states = (net.layers.size() + 1) * B * S * H;
              std::vector<float> lo(B * 2), po(B * H), hs(states);
              Outputs o;
              o.logits = lo.data(); o.pooled = po.data(); o.hidden_states = hs.data();
              m.forward(in, net, o, ws, Threads(th));
              fwrite(lo.data(), 4, lo.size(), stdout);
              fwrite(po.data(), 4, po.size(), stdout);
              fwrite(hs.data(), 4, hs.size(), stdout);
              // also without hidden states (the fused path's first-token last layer)
              Outputs o2;
              o2.logits = lo.data(); o2.pooled = po.data();
              m.forward(in, net, o2, ws, Threads(th));
              fwrite(lo.data(), 4, lo.size(), stdout);
            }
  }
}
