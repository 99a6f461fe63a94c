// Autodiff-lite: finite-difference gradient checks in double of the whole model at the 12
// DynaBERT cells (head gates, padding, mask holes, token types, dropout), of every loss, and the
// optimizer's arithmetic. The checked scalar is a random projection of the logits and of every
// hidden state, so a gradient that lands on the wrong element cannot pass.
#define BOOST_TEST_MODULE dynabert_train
#include <boost/test/unit_test.hpp>

#include <random>
#include <sstream>

#include <dynabert/dynabert.hpp>
#include <dynabert/train/losses.hpp>
#include <dynabert/train/optim.hpp>
#include <dynabert/train/trainable_bert.hpp>
#include <dynabert/importance/rewire.hpp>

#include "fixtures.hpp"

using namespace dynabert;
using namespace dynabert::train;

namespace {

BertConfig tiny_config() {
  BertConfig c;
  c.vocab_size = 23; c.hidden_size = 16; c.num_hidden_layers = 4; c.num_attention_heads = 4;
  c.intermediate_size = 24; c.max_position_embeddings = 8; c.hidden_dropout_prob = 0.2;
  c.attention_probs_dropout_prob = 0.25;
  return c;
}

struct Problem {
  int B = 3, S = 6;
  std::vector<std::int32_t> ids, types, mask;
  Inputs inputs() const {
    Inputs in;
    in.input_ids = ids.data(); in.token_type_ids = types.data(); in.attention_mask = mask.data();
    in.batch = B; in.seq_len = S;
    return in;
  }
};

Problem make_problem(std::mt19937& g) {
  Problem p;
  p.ids.resize(p.B * p.S); p.types.resize(p.B * p.S); p.mask.assign(p.B * p.S, 1);
  for (auto& v : p.ids) v = g() % 23;
  for (auto& v : p.types) v = g() % 2;
  for (int s = 4; s < 6; ++s) p.mask[1 * 6 + s] = 0;  // sequence 1 padded after 4 tokens
  p.mask[2 * 6 + 1] = 0;                            // sequence 2 has a hole
  return p;
}

/// Scalar = <r_logits, logits> + sum_j <r_j, state_j>; fills the d-buffers with the projections.
struct Projection {
  std::vector<double> r_logits;
  std::vector<std::vector<double>> r_states;
  double operator()(const TrainCache<double>& c) const {
    double s = 0;
    for (std::size_t i = 0; i < r_logits.size(); ++i) s += r_logits[i] * c.logits[i];
    for (std::size_t j = 0; j < r_states.size(); ++j)
      for (std::size_t i = 0; i < r_states[j].size(); ++i) s += r_states[j][i] * c.states[j][i];
    return s;
  }
};

Projection make_projection(const TrainCache<double>& c, std::mt19937& g) {
  std::normal_distribution<double> n;
  Projection p;
  for (std::size_t i = 0; i < c.logits.size(); ++i) p.r_logits.push_back(n(g));
  for (auto& s : c.states) {
    p.r_states.emplace_back(s.size());
    for (auto& v : p.r_states.back()) v = n(g);
  }
  return p;
}

double rel_err(double a, double b) { return std::abs(a - b) / std::max(1e-6, std::abs(a) + std::abs(b)); }

/// Central differences of `proj` (after `run(cache)`) at 3 random entries of every parameter tensor
/// whose name `keep` accepts, against the model's accumulated gradients. Returns the entries checked.
template <class Run, class Keep>
int check_parameter_gradients(TrainableBert<double>& model, Run&& run, const Projection& proj, std::mt19937& g, Keep&& keep,
                              const std::string& where) {
  const double eps = 1e-6;
  int checked = 0;
  for (auto& s : model.params().specs()) {
    if (!keep(s.name)) continue;
    for (int trial = 0; trial < 3; ++trial) {
      const std::size_t i = g() % s.numel();
      double* p = model.params().tensor(s.name) + i;
      const double old = *p;
      TrainCache<double> cp, cm;
      *p = old + eps; run(cp);
      *p = old - eps; run(cm);
      *p = old;
      const double num = (proj(cp) - proj(cm)) / (2 * eps);
      const double ana = model.grads().tensor(s.name)[i];
      // central differences on a scalar of magnitude ~100 carry ~1e-8 of round-off
      BOOST_TEST((rel_err(num, ana) < 1e-5 || std::abs(num - ana) < 1e-7),
                 s.name << "[" << i << "] " << where << ": numeric " << num << " analytic " << ana);
      ++checked;
    }
  }
  return checked;
}

}  // namespace

BOOST_AUTO_TEST_CASE(trainable_forward_equals_the_inference_model) {
  BertWeights<double> w(tiny_config(), HeadSpec{true, 3});
  w.init_random(4, 0.2, true);
  TrainableBert<double> tm(w);
  ElasticBert<double> im(w);
  std::mt19937 g(1);
  auto prob = make_problem(g);
  auto ws = im.make_workspace({3, 6, 1});
  for (double width : {1.0, 0.5}) for (double depth : {1.0, 0.5}) {
    auto net = SubNetwork::dynabert(w.config(), width, depth);
    TrainCache<double> c;
    tm.forward(prob.inputs(), net, c, {});
    std::vector<double> logits(9), states((net.depth() + 1) * 3 * 6 * 16);
    im.forward_t(prob.inputs(), net, logits.data(), states.data(), ws);
    for (int i = 0; i < 9; ++i) BOOST_TEST(std::abs(logits[i] - c.logits[i]) < 1e-12);
    for (int j = 0; j <= net.depth(); ++j)
      for (int i = 0; i < 3 * 6 * 16; ++i) BOOST_REQUIRE(std::abs(states[j * 288 + i] - c.states[j][i]) < 1e-12);
  }
}

BOOST_AUTO_TEST_CASE(gradient_check_every_cell_with_gates_padding_and_dropout) {
  std::mt19937 g(7);
  BertWeights<double> w(tiny_config(), HeadSpec{true, 3});
  w.init_random(5, 0.3, true);
  TrainableBert<double> model(w);
  auto prob = make_problem(g);
  std::vector<float> gates(4 * 4);
  for (auto& v : gates) v = 0.5f + static_cast<float>(g() % 1000) / 1000.0f;
  int checked = 0;
  for (double width : {1.0, 0.75, 0.5, 0.25})
    for (double depth : {1.0, 0.75, 0.5}) {
      auto net = SubNetwork::dynabert(w.config(), width, depth);
      net.head_gates = gates.data();
      const bool dropout = (checked % 2) == 1;  // half the cells in training mode
      const std::uint64_t seed = 100 + checked;
      auto run = [&](TrainCache<double>& c) {
        std::mt19937_64 rng(seed);  // the same dropout masks on every evaluation
        ForwardMode mode{dropout, &rng};
        model.forward(prob.inputs(), net, c, mode);
      };
      TrainCache<double> c;
      run(c);
      const auto proj = make_projection(c, g);
      model.zero_grad();
      std::vector<double> d_gates(16, 0.0);
      std::vector<const double*> ds;
      for (auto& r : proj.r_states) ds.push_back(r.data());
      model.backward(c, proj.r_logits.data(), ds, d_gates.data());
      // parameters: a few random entries of every tensor, plus every gate
      std::ostringstream where;
      where << "w " << width << " d " << depth;
      check_parameter_gradients(model, run, proj, g, [](const std::string&) { return true; }, where.str());
      for (int k = 0; k < 16; ++k) {
        const float old = gates[k];
        TrainCache<double> cp, cm;
        gates[k] = static_cast<float>(old + 2e-4); run(cp);  // gates are float: use the stored steps
        const double up = gates[k];
        gates[k] = static_cast<float>(old - 2e-4); run(cm);
        const double down = gates[k];
        gates[k] = old;
        const double num = (proj(cp) - proj(cm)) / (up - down);
        BOOST_TEST((rel_err(num, d_gates[k]) < 2e-5 || std::abs(num - d_gates[k]) < 1e-6),
                   "gate " << k << " w " << width << " d " << depth << ": numeric " << num << " analytic " << d_gates[k]);
      }
      // Entries outside the active width stay exactly zero.
      const int a = net.heads[0] * 4;
      for (int l = 0; l < 4; ++l) {
        const double* gq = model.grads().tensor("encoder.layer." + std::to_string(l) + ".attention.self.query.weight");
        for (int r = a; r < 16; ++r)
          for (int col = 0; col < 16; ++col) BOOST_REQUIRE(gq[r * 16 + col] == 0.0);
        const double* gi = model.grads().tensor("encoder.layer." + std::to_string(l) + ".intermediate.dense.bias");
        for (int r = net.neurons[l]; r < 24; ++r) BOOST_REQUIRE(gi[r] == 0.0);
      }
      ++checked;
    }
  BOOST_TEST(checked == 12);
}

namespace {
/// Full forward and backward against the first-row last layer (ForwardMode::first_token_only) on
/// the same dropout masks: the logits must be bitwise equal and the gradients equal to rounding
/// (the weight-gradient sums skip zero rows, which regroups their additions). Returns the largest
/// gradient difference relative to the largest gradient.
template <class T>
double first_token_run(TrainableBert<T>& model, const Problem& prob, const SubNetwork& net, bool dropout, bool pack,
                       std::vector<T>& d_gates_full, std::vector<T>& d_gates_first) {
  std::mt19937 g(21);
  std::normal_distribution<double> n;
  TrainCache<T> cf, c1;
  {
    std::mt19937_64 rng(5);
    model.forward(prob.inputs(), net, cf, ForwardMode{dropout, &rng, pack, false});
  }
  {
    std::mt19937_64 rng(5);
    model.forward(prob.inputs(), net, c1, ForwardMode{dropout, &rng, pack, true});
  }
  BOOST_REQUIRE(!cf.first_only);
  BOOST_REQUIRE(c1.first_only);
  const std::size_t depth = net.layers.size(), H = 16;
  BOOST_REQUIRE(c1.states[depth].size() == static_cast<std::size_t>(prob.B) * H);
  for (std::size_t i = 0; i < cf.logits.size(); ++i) BOOST_REQUIRE(cf.logits[i] == c1.logits[i]);
  for (int b = 0; b < prob.B; ++b)  // the first rows of the last state are those of the full forward
    for (std::size_t h = 0; h < H; ++h)
      BOOST_REQUIRE(c1.states[depth][b * H + h] == cf.states[depth][cf.layout.row_off[b] * H + h]);
  std::vector<T> dl(cf.logits.size());
  for (auto& v : dl) v = static_cast<T>(n(g));
  std::vector<std::vector<T>> dsf(depth + 1), ds1(depth + 1);
  for (std::size_t j = 0; j <= depth; ++j) {
    dsf[j].assign(cf.states[j].size(), T(0));
    ds1[j].assign(c1.states[j].size(), T(0));
    if (j < depth) {
      for (std::size_t i = 0; i < dsf[j].size(); ++i) dsf[j][i] = ds1[j][i] = static_cast<T>(n(g));
    } else {  // the last state: only its first rows exist in the first-row forward
      for (int b = 0; b < prob.B; ++b)
        for (std::size_t h = 0; h < H; ++h) ds1[j][b * H + h] = dsf[j][cf.layout.row_off[b] * H + h] = static_cast<T>(n(g));
    }
  }
  std::vector<const T*> pf, p1;
  for (std::size_t j = 0; j <= depth; ++j) {
    pf.push_back(dsf[j].data());
    p1.push_back(ds1[j].data());
  }
  model.zero_grad();
  model.backward(cf, dl.data(), pf, d_gates_full.data());
  const auto gf = model.grads().buffer();
  const std::vector<T> full(gf.begin(), gf.end());
  model.zero_grad();
  model.backward(c1, dl.data(), p1, d_gates_first.data());
  double max_g = 0, max_d = 0;
  for (std::size_t i = 0; i < full.size(); ++i) {
    max_g = std::max(max_g, std::abs(static_cast<double>(full[i])));
    max_d = std::max(max_d, std::abs(static_cast<double>(full[i]) - static_cast<double>(model.grads().buffer()[i])));
  }
  for (std::size_t k = 0; k < d_gates_full.size(); ++k)
    max_d = std::max(max_d, std::abs(static_cast<double>(d_gates_full[k]) - static_cast<double>(d_gates_first[k])));
  return max_d / max_g;
}
}  // namespace

BOOST_AUTO_TEST_CASE(first_token_last_layer_equals_the_full_forward_and_backward) {
  BertWeights<double> wd(tiny_config(), HeadSpec{true, 3});
  wd.init_random(12, 0.3, true);
  TrainableBert<double> md(wd);
  TrainableBert<float> mf(wd.cast<float>());
  std::mt19937 g(2);
  const auto prob = make_problem(g);
  std::vector<float> gates(16);
  for (auto& v : gates) v = 0.5f + static_cast<float>(g() % 1000) / 1000.0f;
  int runs = 0;
  for (double width : {1.0, 0.5})
    for (double depth : {1.0, 0.5})
      for (int mode = 0; mode < 4; ++mode) {
        auto net = SubNetwork::dynabert(wd.config(), width, depth);
        if (mode == 3) net.head_gates = gates.data();
        const bool dropout = mode & 1, pack = mode & 2;
        std::vector<double> gd0(16, 0.0), gd1(16, 0.0);
        std::vector<float> gf0(16, 0.0f), gf1(16, 0.0f);
        const double ed = first_token_run(md, prob, net, dropout, pack, gd0, gd1);
        const double ef = first_token_run(mf, prob, net, dropout, pack, gf0, gf1);
        BOOST_TEST(ed < 1e-13, "double, w " << width << " d " << depth << " mode " << mode << ": " << ed);
        BOOST_TEST(ef < 1e-5, "float, w " << width << " d " << depth << " mode " << mode << ": " << ef);
        ++runs;
      }
  BOOST_TEST(runs == 16);
  // the MLM loss needs every row of the last state
  BertWeights<double> wm(tiny_config(), HeadSpec{true, 3, true});
  wm.init_random(3, 0.3, true);
  TrainableBert<double> mm(wm);
  TrainCache<double> c;
  mm.forward(prob.inputs(), SubNetwork::full(wm.config()), c, ForwardMode{false, nullptr, false, true});
  std::vector<std::int32_t> labels(prob.B * prob.S, -100);
  labels[2] = 5;
  std::vector<double> d_last;
  BOOST_CHECK_EXCEPTION(mm.mlm_loss(c, labels.data(), d_last), InputError,
                        [](const InputError& e) { return std::string(e.what()).find("first_token_only") != std::string::npos; });
}

BOOST_AUTO_TEST_CASE(first_token_last_layer_gradient_check) {
  // finite differences in double straight through the first-row path (dropout, gates, a hole)
  std::mt19937 g(17);
  BertWeights<double> w(tiny_config(), HeadSpec{true, 3});
  w.init_random(8, 0.3, true);
  TrainableBert<double> model(w);
  const auto prob = make_problem(g);
  std::vector<float> gates(16);
  for (auto& v : gates) v = 0.5f + static_cast<float>(g() % 1000) / 1000.0f;
  auto net = SubNetwork::dynabert(w.config(), 0.75, 0.75);
  net.head_gates = gates.data();
  auto run = [&](TrainCache<double>& c) {
    std::mt19937_64 rng(9);
    model.forward(prob.inputs(), net, c, ForwardMode{true, &rng, true, true});
  };
  TrainCache<double> c;
  run(c);
  BOOST_REQUIRE(c.first_only);
  const auto proj = make_projection(c, g);
  model.zero_grad();
  std::vector<const double*> ds;
  for (auto& r : proj.r_states) ds.push_back(r.data());
  model.backward(c, proj.r_logits.data(), ds);
  // the last executed layer (2 of 0, 1, 2), the one before it, and the pooler
  const int checked = check_parameter_gradients(model, run, proj, g, [](const std::string& n) {
    return n.find("layer.1.") != std::string::npos || n.find("layer.2.") != std::string::npos || n.find("pooler") != std::string::npos;
  }, "first-row path");
  BOOST_TEST(checked >= 3 * 18);
}

BOOST_AUTO_TEST_CASE(float_gradients_agree_with_double) {
  BertWeights<float> wf(tiny_config(), HeadSpec{true, 3});
  wf.init_random(9, 0.3, true);
  TrainableBert<float> mf(wf);
  TrainableBert<double> md(wf.cast<double>());
  std::mt19937 g(3);
  auto prob = make_problem(g);
  auto net = SubNetwork::dynabert(wf.config(), 0.75, 0.75);
  TrainCache<float> cf;
  TrainCache<double> cd;
  mf.forward(prob.inputs(), net, cf, {});
  md.forward(prob.inputs(), net, cd, {});
  std::vector<std::int32_t> labels = {0, 2, 1};
  std::vector<float> df(9, 0.0f);
  std::vector<double> dd(9, 0.0);
  cross_entropy(cf.logits.data(), labels.data(), 3, 3, df.data());
  cross_entropy(cd.logits.data(), labels.data(), 3, 3, dd.data());
  mf.backward(cf, df.data(), {});
  md.backward(cd, dd.data(), {});
  double max_g = 0, max_d = 0;
  for (double v : md.grads().buffer()) max_g = std::max(max_g, std::abs(v));
  const auto gf = mf.grads().cast<double>();
  for (std::size_t i = 0; i < gf.buffer().size(); ++i)
    max_d = std::max(max_d, std::abs(gf.buffer()[i] - md.grads().buffer()[i]));
  BOOST_TEST(max_d / max_g < 1e-4, "max difference " << max_d << " of max gradient " << max_g);
}

BOOST_AUTO_TEST_CASE(loss_gradients_match_finite_differences) {
  std::mt19937 g(11);
  std::normal_distribution<double> n(0, 2);
  const int B = 3, C = 4;
  std::vector<double> s(B * C), t(B * C);
  for (auto& v : s) v = n(g);
  for (auto& v : t) v = n(g);
  std::vector<std::int32_t> labels = {1, 3, 0};
  // loss_fn returns the unweighted loss; `weight` is what it multiplies its gradient by
  auto check = [&](auto loss_fn, const char* name, double weight = 1.0) {
    std::vector<double> grad(B * C, 0.0);
    loss_fn(s.data(), grad.data());
    for (auto& v : grad) v /= weight;
    for (int i = 0; i < B * C; ++i) {
      const double old = s[i];
      s[i] = old + 1e-6; const double up = loss_fn(s.data(), nullptr);
      s[i] = old - 1e-6; const double down = loss_fn(s.data(), nullptr);
      s[i] = old;
      BOOST_TEST(std::abs((up - down) / 2e-6 - grad[i]) < 1e-7, name << " [" << i << "]");
    }
  };
  check([&](const double* x, double* gr) { return cross_entropy(x, labels.data(), B, C, gr); }, "cross_entropy");
  check([&](const double* x, double* gr) { return soft_cross_entropy(x, t.data(), B, C, gr); }, "soft CE T=1");
  check([&](const double* x, double* gr) { return soft_cross_entropy(x, t.data(), B, C, gr, 2.0, 0.3); }, "soft CE T=2", 0.3);
  check([&](const double* x, double* gr) { return mse(x, t.data(), B * C, gr, 0.1); }, "mse", 0.1);
  // values: soft CE of identical logits is the entropy; CE of a confident right answer is ~0
  std::vector<double> sure = {50, 0, 0, 0};
  std::int32_t zero = 0;
  BOOST_TEST(cross_entropy(sure.data(), &zero, 1, 4, static_cast<double*>(nullptr)) < 1e-12);
  std::vector<double> flat(4, 1.0);
  BOOST_TEST(std::abs(soft_cross_entropy(flat.data(), flat.data(), 1, 4, static_cast<double*>(nullptr)) - std::log(4.0)) < 1e-12);
  // the weight scales the gradient only
  std::vector<double> g1(4, 0.0), g2(4, 0.0);
  const double l1 = mse(sure.data(), flat.data(), 4, g1.data(), 1.0), l2 = mse(sure.data(), flat.data(), 4, g2.data(), 0.5);
  BOOST_TEST(l1 == l2);
  BOOST_TEST(std::abs(g2[0] - 0.5 * g1[0]) < 1e-12);
  std::int32_t bad = 4;
  BOOST_CHECK_THROW(cross_entropy(sure.data(), &bad, 1, 4, static_cast<double*>(nullptr)), InputError);
}

BOOST_AUTO_TEST_CASE(adamw_matches_the_reference_formula) {
  BertConfig c = tiny_config();
  BertWeights<double> p(c), gr(c);
  p.init_random(1, 0.5, true);
  std::mt19937 g(2);
  std::normal_distribution<double> n;
  for (auto& v : gr.buffer()) v = n(g);
  const auto p0 = p;
  AdamW<double> opt(p, AdamWConfig{1e-3, 0.9, 0.999, 1e-8, 0.01, true});
  opt.step(p, gr, 1e-3);
  opt.step(p, gr, 5e-4);
  // hand-computed two steps for one decayed weight and one bias
  for (const char* name : {"encoder.layer.1.intermediate.dense.weight", "encoder.layer.1.intermediate.dense.bias"}) {
    const double g0 = gr.tensor(name)[3];
    double w = p0.tensor(name)[3], m = 0, v = 0;
    const bool decay = decays(name);
    for (int t = 1; t <= 2; ++t) {
      const double lr = t == 1 ? 1e-3 : 5e-4;
      m = 0.9 * m + 0.1 * g0;
      v = 0.999 * v + 0.001 * g0 * g0;
      w -= lr * std::sqrt(1 - std::pow(0.999, t)) / (1 - std::pow(0.9, t)) * m / (std::sqrt(v) + 1e-8);
      if (decay) w -= lr * 0.01 * w;
    }
    BOOST_TEST(std::abs(p.tensor(name)[3] - w) < 1e-12, name);
  }
  BOOST_TEST(!decays("encoder.layer.0.output.LayerNorm.weight"));
  BOOST_TEST(decays("encoder.layer.0.output.dense.weight"));
  BOOST_TEST(opt.step_count() == 2);
}

BOOST_AUTO_TEST_CASE(clipping_and_schedule) {
  BertConfig c = tiny_config();
  BertWeights<double> gr(c);
  for (auto& v : gr.buffer()) v = 0.0;
  gr.tensor("pooler.dense.bias")[0] = 3.0;
  gr.tensor("embeddings.LayerNorm.bias")[1] = 4.0;
  BOOST_TEST(clip_grad_norm(gr, 1.0) == 5.0);
  BOOST_TEST(std::abs(gr.tensor("pooler.dense.bias")[0] - 3.0 / (5.0 + 1e-6)) < 1e-12);
  const double after = clip_grad_norm(gr, 10.0);
  BOOST_TEST(std::abs(after - 5.0 / (5.0 + 1e-6)) < 1e-12);
  BOOST_TEST(clip_grad_norm(gr, 10.0) == after);  // below the limit: unchanged
  BOOST_TEST(linear_schedule(0, 10, 110) == 0.0);
  BOOST_TEST(linear_schedule(5, 10, 110) == 0.5);
  BOOST_TEST(linear_schedule(10, 10, 110) == 1.0);
  BOOST_TEST(linear_schedule(60, 10, 110) == 0.5);
  BOOST_TEST(linear_schedule(200, 10, 110) == 0.0);
  BOOST_TEST(linear_schedule(3, 0, 4) == 0.25);
}

// ---- parity with the PyTorch reference (tools/make_train_fixtures.py) ---------------------------
namespace {

/// The projection vector of tools/make_train_fixtures.py (a 32-bit multiplicative hash).
double proj_r(const std::string& name, std::uint64_t i) {
  std::uint32_t seed = 0;
  for (unsigned char ch : name) seed = seed * 131u + ch;
  std::uint32_t h = static_cast<std::uint32_t>((i + 1) * 2654435761ull);
  h = (h ^ seed) * 2246822519u;
  h ^= h >> 13;
  return static_cast<double>(h) / 4294967296.0 * 2.0 - 1.0;
}

/// [sum(g r), sum(g^2), max |g|] of tensor `name`.
template <class T>
std::array<double, 3> tensor_stats(const BertWeights<T>& w, const std::string& name) {
  const T* g = w.tensor(name);
  std::array<double, 3> s{0, 0, 0};
  for (std::size_t i = 0; i < w.spec(name).numel(); ++i) {
    s[0] += g[i] * proj_r(name, i);
    s[1] += static_cast<double>(g[i]) * g[i];
    s[2] = std::max(s[2], std::abs(static_cast<double>(g[i])));
  }
  return s;
}

/// Compares statistics within `tol` relative to the tensor's norm, with a floor of `tol` times
/// the norm over all tensors (a gradient that is exactly 0 in exact arithmetic, like the key
/// biases', is float round-off in float).
template <class T>
void check_stats(const BertWeights<T>& w, const std::vector<double>& want, const std::vector<std::string>& names,
                 double tol, const std::string& what) {
  double total = 0;
  for (std::size_t t = 0; t < names.size(); ++t) total += want[t * 3 + 1];
  const double floor = tol * std::sqrt(total);
  for (std::size_t t = 0; t < names.size(); ++t) {
    const auto got = tensor_stats(w, names[t]);
    const double norm = std::sqrt(want[t * 3 + 1]);
    BOOST_TEST(std::abs(got[0] - want[t * 3]) <= tol * (std::abs(want[t * 3]) + norm) + floor,
               what << " " << names[t] << ": projection " << got[0] << " vs " << want[t * 3]);
    BOOST_TEST(std::abs(std::sqrt(got[1]) - norm) <= tol * norm + floor,
               what << " " << names[t] << ": norm " << std::sqrt(got[1]) << " vs " << norm);
  }
}

/// The fixture model with a classification head (3 labels) or a regression head (row 0 of it).
template <class T>
BertWeights<T> fixture_model(bool regression) {
  auto w = fixtures::load_model().cast<T>();
  if (!regression) return w;
  auto c = w.config();
  c.id2label = {"score"};
  BertWeights<T> r(c, HeadSpec{true, 1});
  for (auto& s : r.specs()) {
    const T* src = w.tensor(s.name);
    std::copy(src, src + s.numel(), r.tensor(s.name));  // classifier: the first row / entry
  }
  return r;
}

struct TrainFixture {
  io::SafetensorsFile file{fixtures::kDir + "/tiny_train.safetensors"};
  std::vector<std::string> names = io::parse_json(file.metadata().at("tensors"), "tensors").as_vector<std::string>();
  fixtures::Batch batch = fixtures::load_inputs();
  std::vector<std::int32_t> labels = {0, 2, 1, 2};
  std::vector<double> targets = {0.5, -1.0, 2.0, 0.1};
};

/// Loss and gradients of one batch at a cell, dropout off.
template <class T>
T loss_and_grads(TrainableBert<T>& m, const TrainFixture& f, const SubNetwork& net, bool regression) {
  TrainCache<T> c;
  m.zero_grad();
  m.forward(f.batch.inputs(), net, c, {});
  std::vector<T> d(c.logits.size(), T(0));
  T loss;
  if (regression) {
    std::vector<T> tg(f.targets.begin(), f.targets.end());
    loss = mse(c.logits.data(), tg.data(), 4, d.data());
  } else {
    loss = cross_entropy(c.logits.data(), f.labels.data(), 4, 3, d.data());
  }
  m.backward(c, d.data(), {});
  return loss;
}

}  // namespace

BOOST_AUTO_TEST_CASE(loss_and_every_gradient_match_pytorch) {
  TrainFixture f;
  for (bool regression : {false, true}) {
    TrainableBert<double> md(fixture_model<double>(regression));
    TrainableBert<float> mf(fixture_model<float>(regression));
    for (auto [w, d] : {std::pair{1.0, 1.0}, {0.5, 0.75}, {0.25, 0.5}}) {
      char key[64];
      std::snprintf(key, sizeof key, "grad.%s.w%.2f_d%.2f", regression ? "reg" : "cls", w, d);
      const auto net = SubNetwork::dynabert(md.config(), w, d);
      const double want_loss = f.file.read<double>(std::string(key) + ".loss")[0];
      const auto want = f.file.read<double>(std::string(key) + ".stats");
      const double ld = loss_and_grads(md, f, net, regression);
      BOOST_TEST(std::abs(ld - want_loss) < 1e-10 * (1 + std::abs(want_loss)), key << " loss " << ld << " vs " << want_loss);
      check_stats(md.grads(), want, f.names, 1e-8, std::string(key) + " (double)");
      const float lf = loss_and_grads(mf, f, net, regression);
      BOOST_TEST(std::abs(lf - want_loss) < 1e-4 * (1 + std::abs(want_loss)), key << " float loss");
      check_stats(mf.grads(), want, f.names, 1e-4, std::string(key) + " (float)");
    }
  }
}

BOOST_AUTO_TEST_CASE(mlm_loss_and_every_gradient_match_pytorch) {
  TrainFixture f;
  const auto names = io::parse_json(f.file.metadata().at("mlm_tensors"), "mlm_tensors").as_vector<std::string>();
  const auto lab = f.file.read<double>("mlm.labels");
  std::vector<std::int32_t> labels(lab.begin(), lab.end());
  auto with_head = [&](auto tag) {
    using T = decltype(tag);
    const auto src = fixtures::load_model().cast<T>();
    BertWeights<T> w(src.config(), HeadSpec{true, 3, true});
    for (auto& s : w.specs()) {
      if (src.has(s.name)) { std::copy_n(src.tensor(s.name), s.numel(), w.tensor(s.name)); continue; }
      const auto v = f.file.read<double>("mlm.param." + s.name);
      BOOST_REQUIRE_EQUAL(v.size(), s.numel());
      std::copy(v.begin(), v.end(), w.tensor(s.name));
    }
    return TrainableBert<T>(w);
  };
  auto run = [&](auto& m, const SubNetwork& net) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(m.params().buffer().data())>>;
    TrainCache<T> c;
    m.zero_grad();
    m.forward(f.batch.inputs(), net, c, {}, false);
    std::vector<T> d_last;
    const T loss = m.mlm_loss(c, labels.data(), d_last);
    std::vector<const T*> ds(c.states.size(), nullptr);
    ds.back() = d_last.data();
    m.backward(c, nullptr, ds);
    return static_cast<double>(loss);
  };
  auto md = with_head(double{});
  auto mf = with_head(float{});
  for (auto [w, d] : {std::pair{1.0, 1.0}, {0.5, 0.75}}) {
    char key[64];
    std::snprintf(key, sizeof key, "mlm.w%.2f_d%.2f", w, d);
    const auto net = SubNetwork::dynabert(md.config(), w, d);
    const double want = f.file.read<double>(std::string(key) + ".loss")[0];
    const auto stats = f.file.read<double>(std::string(key) + ".stats");
    BOOST_TEST(std::abs(run(md, net) - want) < 1e-10 * (1 + want), key << " loss");
    check_stats(md.grads(), stats, names, 1e-8, std::string(key) + " (double)");
    BOOST_TEST(std::abs(run(mf, net) - want) < 1e-4 * (1 + want), key << " float loss");
    check_stats(mf.grads(), stats, names, 1e-4, std::string(key) + " (float)");
  }
}

BOOST_AUTO_TEST_CASE(one_adamw_step_matches_the_reference) {
  TrainFixture f;
  TrainableBert<double> m(fixture_model<double>(false));
  loss_and_grads(m, f, SubNetwork::full(m.config()), false);
  AdamW<double> opt(m.params(), AdamWConfig{1e-3, 0.9, 0.999, 1e-8, 0.01, true});
  opt.step(m.params(), m.grads(), 1e-3);
  check_stats(m.params(), f.file.read<double>("adamw.stats"), f.names, 1e-6, "AdamW step");
}

BOOST_AUTO_TEST_CASE(importance_matches_the_reference_in_both_variants) {
  TrainFixture f;
  for (auto [variant, name] : {std::pair{importance::Variant::kCumulative, "cumulative"}, {importance::Variant::kPaper, "paper"}}) {
    TrainableBert<double> m(fixture_model<double>(false));
    importance::Scorer<double> scorer(m, variant);
    scorer.add_batch(f.batch.inputs(0, 2), f.labels.data());
    scorer.add_batch(f.batch.inputs(2, 2), f.labels.data() + 2);
    const auto s = scorer.result();
    const auto heads = f.file.read<double>(std::string("importance.") + name + ".heads");
    const auto neurons = f.file.read<double>(std::string("importance.") + name + ".neurons");
    for (int l = 0; l < 4; ++l) {
      for (int h = 0; h < 4; ++h)
        BOOST_TEST(std::abs(s.heads[l][h] - heads[l * 4 + h]) <= 1e-8 * (1 + heads[l * 4 + h]), name << " head " << l << "/" << h);
      for (int j = 0; j < 256; ++j)
        BOOST_REQUIRE(std::abs(s.neurons[l][j] - neurons[l * 256 + j]) <= 1e-8 * (1 + neurons[l * 256 + j]));
    }
  }
}

BOOST_AUTO_TEST_CASE(rewiring_preserves_the_function_and_sorts_importance) {
  TrainFixture f;
  TrainableBert<double> m(fixture_model<double>(false));
  importance::Scorer<double> scorer(m);
  scorer.add_batch(f.batch.inputs(0, 2), f.labels.data());
  scorer.add_batch(f.batch.inputs(2, 2), f.labels.data() + 2);
  const auto scores = scorer.result();
  auto original = fixtures::load_model();
  auto rewired = original;
  const auto perm = importance::rewire(rewired, scores);
  // full width: the same function
  ElasticBert<float> a(original), b(rewired);
  auto ws = a.make_workspace({4, 10, 1});
  std::vector<float> la(12), lb(12), ha(4 * 10 * 64), hb(4 * 10 * 64);
  Outputs oa, ob;
  oa.logits = la.data(); oa.last_hidden = ha.data();
  ob.logits = lb.data(); ob.last_hidden = hb.data();
  a.forward(f.batch.inputs(), SubNetwork::full(original.config()), oa, ws);
  b.forward(f.batch.inputs(), SubNetwork::full(rewired.config()), ob, ws);
  for (int i = 0; i < 12; ++i) BOOST_TEST(std::abs(la[i] - lb[i]) < 1e-5);
  for (std::size_t i = 0; i < ha.size(); ++i) BOOST_REQUIRE(std::abs(ha[i] - hb[i]) < 1e-5);
  // the permutation really moves something, and puts the most important first
  bool moved = false;
  for (int l = 0; l < 4; ++l) {
    for (int h = 0; h < 4; ++h) moved |= perm.heads[l][h] != h;
    for (int h = 1; h < 4; ++h) BOOST_TEST(scores.heads[l][perm.heads[l][h - 1]] >= scores.heads[l][perm.heads[l][h]]);
  }
  BOOST_TEST(moved);
  // scoring the rewired model gives per-layer descending scores: the kept prefix at any width is
  // the top of the ranking
  TrainableBert<double> mr(rewired.cast<double>());
  importance::Scorer<double> again(mr);
  again.add_batch(f.batch.inputs(0, 2), f.labels.data());
  again.add_batch(f.batch.inputs(2, 2), f.labels.data() + 2);
  const auto s2 = again.result();
  for (int l = 0; l < 4; ++l) {
    for (int h = 1; h < 4; ++h) BOOST_TEST(s2.heads[l][h - 1] >= s2.heads[l][h] * (1 - 1e-9));
    for (int j = 1; j < 256; ++j) BOOST_REQUIRE(s2.neurons[l][j - 1] >= s2.neurons[l][j] * (1 - 1e-9));
    BOOST_TEST(std::abs(s2.heads[l][0] - scores.heads[l][perm.heads[l][0]]) < 1e-6 * (1 + s2.heads[l][0]));
  }
}

// ---- the trainer: phases, resume, metrics ------------------------------------------------------
#include <dynabert/train/trainer.hpp>

#include "synthetic_task.hpp"

namespace {

/// A learnable synthetic task: label 1 iff token 5 occurs in the sequence.
Dataset synthetic(int n, std::uint64_t seed) { return dynabert::testing::synthetic_task(n, seed); }

BertWeights<float> small_model(std::uint64_t seed) {
  BertConfig c = tiny_config();
  c.vocab_size = 23; c.max_position_embeddings = 16;
  c.hidden_dropout_prob = 0.1; c.attention_probs_dropout_prob = 0.1;
  BertWeights<float> w(c, HeadSpec{true, 2});
  w.init_random(seed, 0.2);
  return w;
}

}  // namespace

BOOST_AUTO_TEST_CASE(finetune_then_stage1_and_stage2_learn) {
  const auto train_set = synthetic(256, 1), dev_set = synthetic(128, 2);
  TrainableBert<float> teacher(small_model(3));
  TrainerConfig fc;
  fc.phase = Phase::kFineTune; fc.epochs = 6; fc.batch_size = 16; fc.adam.lr = 3e-3; fc.seed = 5;
  Trainer<float> ft(teacher, nullptr, fc);
  std::vector<double> losses;
  ft.on_progress = [&](const Progress& p) { losses.push_back(p.loss); };
  ft.fit(train_set);
  const double teacher_acc = ft.evaluate(dev_set, {{1.0, 1.0}})[0].metrics.accuracy;
  BOOST_TEST(teacher_acc > 0.9, "teacher accuracy " << teacher_acc);
  BOOST_TEST(losses.back() < losses.front());

  // stage 1 on a rewired copy, then stage 2
  TrainableBert<float> student(teacher.params());
  TrainerConfig s1;
  s1.phase = Phase::kWidth; s1.epochs = 2; s1.batch_size = 16; s1.adam.lr = 2e-3; s1.seed = 6;
  Trainer<float> st1(student, &teacher, s1);
  std::vector<Progress> prog;
  st1.on_progress = [&](const Progress& p) { prog.push_back(p); };
  st1.fit(train_set);
  BOOST_TEST(prog.front().cell_losses.size() == 4u);  // widths 1, .75, .5, .25
  BOOST_TEST(prog.back().total_steps == 32);
  BOOST_TEST(prog.back().eta_seconds == 0.0);
  BOOST_TEST(prog.back().cell_losses[3] >= prog.back().cell_losses[0]);  // the narrowest is hardest
  TrainerConfig s2 = s1;
  s2.phase = Phase::kWidthDepth; s2.epochs = 1; s2.eval_every = 8;
  const auto best_dir = std::filesystem::temp_directory_path() / ("dynabert_best_" + std::to_string(::getpid()));
  s2.best_dir = best_dir.string();
  TrainableBert<float> teacher2(student.params());
  Trainer<float> st2(student, &teacher2, s2);
  std::vector<Progress> prog2;
  st2.on_progress = [&](const Progress& p) { prog2.push_back(p); };
  long evals = 0;
  st2.on_eval = [&](long, const std::vector<CellMetrics>& m) { evals += static_cast<long>(m.size()); };
  st2.fit(train_set, &dev_set);
  BOOST_TEST(prog2.front().cell_losses.size() == 12u);
  BOOST_TEST(evals == 2 * 12);  // 16 steps, every 8
  // the best checkpoint is a loadable model whose score is the best seen
  const auto best = BertWeights<float>::load(best_dir.string());
  TrainableBert<float> reloaded(best);
  Trainer<float> probe(reloaded, &teacher2, s2);
  double score = 0;
  for (auto& m : probe.evaluate(dev_set, probe.cells())) score += m.metrics.accuracy;
  BOOST_TEST(std::abs(score - st2.best_score()) < 1e-9);
  std::filesystem::remove_all(best_dir);
  const auto grid = st2.evaluate(dev_set, st2.cells());
  double mean = 0;
  for (auto& m : grid) mean += m.metrics.accuracy / grid.size();
  BOOST_TEST(mean > 0.75, "mean accuracy over the 12 cells " << mean);
  BOOST_TEST(grid[0].metrics.accuracy > 0.85, "full-size cell " << grid[0].metrics.accuracy);
}

BOOST_AUTO_TEST_CASE(resumed_training_is_bit_identical) {
  namespace fs = std::filesystem;
  const auto data = synthetic(80, 3);
  TrainableBert<float> teacher(small_model(8));
  TrainerConfig cfg;
  cfg.phase = Phase::kWidth; cfg.epochs = 2; cfg.batch_size = 8; cfg.adam.lr = 1e-3; cfg.seed = 17;
  cfg.warmup_ratio = 0.1;
  // uninterrupted: 20 steps
  TrainableBert<float> a(small_model(9));
  Trainer<float> ta(a, &teacher, cfg);
  ta.fit(data);
  BOOST_TEST(ta.step() == 20);
  // interrupted after 7 steps, saved, resumed in a fresh model and trainer
  const fs::path dir = fs::temp_directory_path() / ("dynabert_resume_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  {
    TrainableBert<float> b(small_model(9));
    Trainer<float> tb(b, &teacher, cfg);
    tb.fit(data, nullptr, 7);
    tb.save_checkpoint(dir.string());
    tb.fit(data, nullptr, 2);  // progress past the checkpoint that is then lost
  }
  fs::create_directories(dir / "step-9.tmp");  // a save killed half-way leaves a .tmp folder behind
  TrainableBert<float> c(small_model(1234));   // different initial weights: the checkpoint must win
  Trainer<float> tc(c, &teacher, cfg);
  tc.load_checkpoint(dir.string());
  BOOST_TEST(tc.step() == 7);
  tc.fit(data);
  BOOST_TEST(tc.step() == 20);
  BOOST_TEST(std::memcmp(a.params().buffer().data(), c.params().buffer().data(), a.params().buffer().size() * 4) == 0);
  // a checkpoint of another run is refused
  cfg.seed = 18;
  Trainer<float> td(c, &teacher, cfg);
  BOOST_CHECK_THROW(td.load_checkpoint(dir.string()), FormatError);
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(checkpoints_survive_resaving_and_fall_back_and_name_bad_state) {
  namespace fs = std::filesystem;
  const auto data = synthetic(40, 5);
  TrainableBert<float> teacher(small_model(8));
  TrainerConfig cfg;
  cfg.phase = Phase::kWidth; cfg.epochs = 1; cfg.batch_size = 8; cfg.seed = 3;
  const fs::path dir = fs::temp_directory_path() / ("dynabert_ckpt_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  TrainableBert<float> a(small_model(9));
  Trainer<float> ta(a, &teacher, cfg);
  ta.fit(data);  // 5 steps: the phase ends
  ta.save_checkpoint(dir.string());
  // resuming a finished phase and saving again at the same step (the old protocol deleted the
  // folder `latest` named before renaming the new one into place)
  TrainableBert<float> b(small_model(10));
  Trainer<float> tb(b, &teacher, cfg);
  tb.load_checkpoint(dir.string());
  tb.fit(data);
  tb.save_checkpoint(dir.string());
  std::string latest;
  std::ifstream(dir / "latest") >> latest;
  BOOST_TEST(latest == "step-5.1");
  BOOST_TEST(!fs::exists(dir / "step-5"));  // the older one is gone once latest names the new one
  TrainableBert<float> c(small_model(11));
  Trainer<float> tc(c, &teacher, cfg);
  tc.load_checkpoint(dir.string());
  BOOST_TEST(tc.step() == 5);
  BOOST_TEST(std::memcmp(a.params().buffer().data(), c.params().buffer().data(), a.params().buffer().size() * 4) == 0);
  // `latest` naming nothing (a kill between the rename and the pointer switch of another
  // protocol): the newest complete checkpoint is used; orphans of killed writers are removed
  { std::ofstream(dir / "latest") << "step-99\n"; }
  fs::create_directories(dir / "step-7.tmp");
  { std::ofstream(dir / "latest.tmp.12345") << "x"; }
  Trainer<float> td(c, &teacher, cfg);
  td.load_checkpoint(dir.string());
  BOOST_TEST(td.step() == 5);
  td.save_checkpoint(dir.string());
  BOOST_TEST(!fs::exists(dir / "step-7.tmp"));
  BOOST_TEST(!fs::exists(dir / "latest.tmp.12345"));
  // a state file with a missing key or a value of the wrong type: a named FormatError
  std::ifstream(dir / "latest") >> latest;
  const fs::path state = dir / latest / "trainer_state.json";
  auto j = io::read_json_file(state.string());
  auto broken = [&](const io::Json& v) {
    { std::ofstream(state) << v.dump(); }
    Trainer<float> te(c, &teacher, cfg);
    try {
      te.load_checkpoint(dir.string());
    } catch (const FormatError& e) {
      return std::string(e.what());
    }
    return std::string("<no FormatError>");
  };
  auto missing = j;
  missing.erase("adam_step");
  BOOST_TEST(broken(missing).find("field 'adam_step' is missing") != std::string::npos, broken(missing));
  auto wrong = j;
  wrong["step"] = "five";
  BOOST_TEST(broken(wrong).find("step must be an integer") != std::string::npos, broken(wrong));
  BOOST_TEST(broken(io::Json::array()).find("expected a JSON object") != std::string::npos);
  fs::remove_all(dir);
  BOOST_CHECK_THROW(tc.load_checkpoint(dir.string()), FormatError);
}

BOOST_AUTO_TEST_CASE(metrics_match_hand_computed_values) {
  const auto m = classification_metrics({1, 1, 0, 0, 1, 0}, {1, 0, 0, 0, 1, 1}, 2);
  BOOST_TEST(std::abs(m.accuracy - 4.0 / 6) < 1e-12);
  // class 0: tp 2 fp 1 fn 1 -> F1 2/3; class 1: tp 2 fp 1 fn 1 -> 2/3
  BOOST_TEST(std::abs(m.macro_f1 - 2.0 / 3) < 1e-12);
  // binary MCC = (tp tn - fp fn) / sqrt(...) = (2*2 - 1*1) / sqrt(3*3*3*3) = 1/3
  BOOST_TEST(std::abs(m.mcc - 1.0 / 3) < 1e-12);
  const auto r = regression_metrics({1, 2, 3, 4}, {2, 4, 6, 9});
  BOOST_TEST(r.spearman == 1.0);
  BOOST_TEST(std::abs(r.pearson - 11.5 / std::sqrt(133.75)) < 1e-12);  // sab / sqrt(saa sbb)
  BOOST_TEST((ranks({3, 1, 3}) == std::vector<double>{2.5, 1, 2.5}));
  // batching: every example exactly once per epoch, order reproducible, differs across epochs
  const auto d = synthetic(50, 4);
  auto e0 = epoch_batches(d, 8, 1, 0), e0b = epoch_batches(d, 8, 1, 0), e1 = epoch_batches(d, 8, 1, 1);
  BOOST_TEST((e0 == e0b));
  BOOST_TEST(!(e0 == e1));
  std::vector<int> seen(50, 0);
  for (auto& b : e0) for (auto i : b) ++seen[i];
  BOOST_TEST(std::all_of(seen.begin(), seen.end(), [](int v) { return v == 1; }));
}

BOOST_AUTO_TEST_CASE(mlm_head_and_tanh_gelu_gradient_check) {
  BertConfig c = tiny_config();
  c.hidden_act = Activation::kGeluTanh;  // the other activation's backward
  BertWeights<double> w(c, HeadSpec{false, 0, true});
  w.init_random(12, 0.3, true);
  TrainableBert<double> model(w);
  std::mt19937 g(4);
  auto prob = make_problem(g);
  std::vector<std::int32_t> labels(prob.B * prob.S, -100);
  labels[1] = 7; labels[4] = 0; labels[8] = 22; labels[15] = 3;
  auto net = SubNetwork::dynabert(c, 0.75, 0.75);
  auto loss_of = [&] {
    TrainCache<double> cc;
    model.forward(prob.inputs(), net, cc, {}, false);
    std::vector<double> d;
    TrainableBert<double> probe(model.params());  // gradients of a throw-away copy
    return probe.mlm_loss(cc, labels.data(), d);
  };
  TrainCache<double> cache;
  model.zero_grad();
  BOOST_TEST(model.forward(prob.inputs(), net, cache, {}, false) == nullptr);
  std::vector<double> d_last;
  const double loss = model.mlm_loss(cache, labels.data(), d_last);
  BOOST_TEST(std::abs(loss - loss_of()) < 1e-12);
  std::vector<const double*> ds(cache.states.size(), nullptr);
  ds.back() = d_last.data();
  model.backward(cache, nullptr, ds);
  for (const char* name : {"cls.predictions.transform.dense.weight", "cls.predictions.transform.LayerNorm.weight",
                           "cls.predictions.bias", "embeddings.word_embeddings.weight", "encoder.layer.2.intermediate.dense.weight",
                           "encoder.layer.0.attention.self.query.weight", "embeddings.position_embeddings.weight"}) {
    for (int trial = 0; trial < 6; ++trial) {
      const std::size_t i = g() % model.params().spec(name).numel();
      double* p = model.params().tensor(name) + i;
      const double old = *p;
      *p = old + 1e-6; const double up = loss_of();
      *p = old - 1e-6; const double down = loss_of();
      *p = old;
      const double num = (up - down) / 2e-6, ana = model.grads().tensor(name)[i];
      BOOST_TEST((rel_err(num, ana) < 1e-5 || std::abs(num - ana) < 1e-9), name << "[" << i << "] " << num << " vs " << ana);
    }
  }
  // the decoder is tied: a token that occurs nowhere in the inputs still gets a word-embedding
  // gradient, through the decoder alone
  int unused = -1;
  for (int v = 0; v < 23 && unused < 0; ++v)
    if (std::find(prob.ids.begin(), prob.ids.end(), v) == prob.ids.end()) unused = v;
  BOOST_REQUIRE(unused >= 0);
  double gsum = 0;
  for (int i = 0; i < 16; ++i) gsum += std::abs(model.grads().tensor("embeddings.word_embeddings.weight")[unused * 16 + i]);
  BOOST_TEST(gsum > 0.0);
  std::vector<std::int32_t> bad(labels);
  bad[2] = 23;
  BOOST_CHECK_THROW(model.mlm_loss(cache, bad.data(), d_last), InputError);
}

BOOST_AUTO_TEST_CASE(training_gradients_are_bitwise_independent_of_threads) {
  BertWeights<float> w(tiny_config(), HeadSpec{true, 3});
  w.init_random(31, 0.3, true);
  std::mt19937 g(5);
  auto prob = make_problem(g);
  std::vector<float> gates(16, 0.9f);
  auto net = SubNetwork::dynabert(w.config(), 0.75, 1.0);
  net.head_gates = gates.data();
  std::vector<std::vector<float>> grads, gate_grads;
  for (int threads : {1, 2, 3}) {
    TrainableBert<float> m(w);
    m.set_threads(Threads(threads));
    TrainCache<float> c;
    std::mt19937_64 rng(77);
    m.forward(prob.inputs(), net, c, {true, &rng});
    std::vector<float> d(c.logits.size(), 0.0f), dg(16, 0.0f);
    std::vector<std::int32_t> labels = {0, 1, 2};
    cross_entropy(c.logits.data(), labels.data(), 3, 3, d.data());
    m.backward(c, d.data(), {}, dg.data());
    grads.emplace_back(m.grads().buffer().begin(), m.grads().buffer().end());
    gate_grads.push_back(dg);
  }
  for (int i = 1; i < 3; ++i) {
    BOOST_TEST(std::memcmp(grads[0].data(), grads[i].data(), grads[0].size() * 4) == 0);
    BOOST_TEST(std::memcmp(gate_grads[0].data(), gate_grads[i].data(), 64) == 0);
  }
}

BOOST_AUTO_TEST_CASE(gradient_check_each_layer_alone) {
  // Each piece in isolation: the embeddings (loss on the embedding output only), each encoder
  // layer run as a one-layer sub-network (loss on its output only), and the pooler + classifier
  // (loss on the logits only). Parameters outside the piece must get exactly zero gradient.
  std::mt19937 g(21);
  BertWeights<double> w(tiny_config(), HeadSpec{true, 3});
  w.init_random(22, 0.3, true);
  TrainableBert<double> model(w);
  auto prob = make_problem(g);
  std::normal_distribution<double> n;
  auto check_piece = [&](const SubNetwork& net, int which_state, bool logits, const std::string& prefix,
                         bool outside_zero = true) {
    TrainCache<double> c;
    model.forward(prob.inputs(), net, c, {});
    std::vector<double> r(which_state >= 0 ? c.states[which_state].size() : c.logits.size());
    for (auto& v : r) v = n(g);
    auto scalar = [&](const TrainCache<double>& cc) {
      const auto& out = which_state >= 0 ? cc.states[which_state] : cc.logits;
      double s = 0;
      for (std::size_t i = 0; i < r.size(); ++i) s += r[i] * out[i];
      return s;
    };
    model.zero_grad();
    std::vector<const double*> ds;
    if (which_state >= 0) {
      ds.assign(c.states.size(), nullptr);
      ds[which_state] = r.data();
    }
    model.backward(c, logits ? r.data() : nullptr, ds);
    for (auto& s : model.params().specs()) {
      const bool inside = s.name.rfind(prefix, 0) == 0;
      const double* gr = model.grads().tensor(s.name);
      if (!inside) {
        // embeddings feed every piece; everything else outside the piece must be untouched
        if (!outside_zero || s.name.rfind("embeddings.", 0) == 0) continue;
        for (std::size_t i = 0; i < s.numel(); ++i) BOOST_REQUIRE_MESSAGE(gr[i] == 0.0, prefix << ": " << s.name << " got a gradient");
        continue;
      }
      for (int trial = 0; trial < 5; ++trial) {
        const std::size_t i = g() % s.numel();
        double* p = model.params().tensor(s.name) + i;
        const double old = *p;
        TrainCache<double> cp, cm;
        *p = old + 1e-6; model.forward(prob.inputs(), net, cp, {});
        *p = old - 1e-6; model.forward(prob.inputs(), net, cm, {});
        *p = old;
        const double num = (scalar(cp) - scalar(cm)) / 2e-6;
        BOOST_TEST((rel_err(num, gr[i]) < 1e-5 || std::abs(num - gr[i]) < 1e-7), s.name << "[" << i << "] " << num << " vs " << gr[i]);
      }
    }
  };
  const auto& c = model.config();
  check_piece(SubNetwork::full(c), 0, false, "embeddings.");
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    auto net = SubNetwork::custom(c, {l}, std::vector<int>(4, 3), std::vector<int>(4, 17));
    check_piece(net, 1, false, "encoder.layer." + std::to_string(l) + ".");
  }
  check_piece(SubNetwork::dynabert(c, 0.5, 0.5), -1, true, "");  // all pieces at once, from the logits
  // pooler and classifier: their gradients from the logits alone (everything below gets some too)
  check_piece(SubNetwork::full(c), -1, true, "pooler.", false);
  check_piece(SubNetwork::full(c), -1, true, "classifier.", false);
}

BOOST_AUTO_TEST_CASE(mlm_masking_follows_the_80_10_10_rule) {
  Dataset d;
  std::mt19937_64 g(3);
  for (int i = 0; i < 400; ++i) {  // [CLS] words [SEP], lengths 3..40
    Example e;
    const int len = 3 + static_cast<int>(g() % 38);
    e.ids.push_back(101);
    for (int k = 1; k < len - 1; ++k) e.ids.push_back(static_cast<std::int32_t>(1000 + g() % 5000));
    e.ids.push_back(102);
    d.push_back(e);
  }
  std::vector<std::size_t> idx(d.size());
  std::iota(idx.begin(), idx.end(), 0);
  const Batch clean = make_batch(d, idx, 0, idx.size());
  Batch b = clean;
  std::vector<std::int32_t> labels;
  MlmConfig cfg;
  std::mt19937_64 rng(11);
  const long n = mask_tokens(b, labels, cfg, 30522, rng);
  long words = 0, as_mask = 0, kept = 0, random = 0;
  for (int i = 0; i < b.B; ++i)
    for (int s = 0; s < b.S; ++s) {
      const std::size_t t = static_cast<std::size_t>(i) * b.S + s;
      const bool special = s == 0 || s >= clean.lengths[i] - 1;  // [CLS], [SEP], padding
      if (special) {
        BOOST_TEST_REQUIRE(labels[t] == -100);
        BOOST_TEST_REQUIRE(b.ids[t] == clean.ids[t]);
        continue;
      }
      ++words;
      if (labels[t] == -100) { BOOST_TEST_REQUIRE(b.ids[t] == clean.ids[t]); continue; }
      BOOST_TEST_REQUIRE(labels[t] == clean.ids[t]);
      if (b.ids[t] == 103) ++as_mask;
      else if (b.ids[t] == clean.ids[t]) ++kept;
      else ++random;
    }
  BOOST_TEST(n == as_mask + kept + random);
  const double p = static_cast<double>(n) / words;  // ~7,600 words: 15 % +- 1.2 (3 sigma)
  BOOST_TEST(std::abs(p - 0.15) < 0.012, "masked fraction " << p);
  BOOST_TEST(std::abs(static_cast<double>(as_mask) / n - 0.8) < 0.04);
  BOOST_TEST(std::abs(static_cast<double>(random) / n - 0.1) < 0.03);
  BOOST_TEST(std::abs(static_cast<double>(kept) / n - 0.1) < 0.03);
  // the same generator state gives the same masks
  Batch b2 = clean;
  std::vector<std::int32_t> labels2;
  std::mt19937_64 rng2(11);
  mask_tokens(b2, labels2, cfg, 30522, rng2);
  BOOST_TEST((b2.ids == b.ids && labels2 == labels));
  cfg.mask_id = 40000;
  BOOST_CHECK_THROW(mask_tokens(b2, labels2, cfg, 30522, rng2), InputError);
}

BOOST_AUTO_TEST_CASE(mlm_pretraining_learns_and_resumes) {
  namespace fs = std::filesystem;
  // sequences of a fixed cycle (6 7 8 9 10 6 7 ...) from a random phase: a masked token is
  // predictable from its neighbours, chance is 1 in 23
  Dataset d;
  std::mt19937_64 g(4);
  for (int i = 0; i < 192; ++i) {
    Example e;
    e.ids.push_back(1);
    const int phase = static_cast<int>(g() % 5), len = 8 + static_cast<int>(g() % 7);
    for (int k = 0; k < len; ++k) e.ids.push_back(6 + (phase + k) % 5);
    e.ids.push_back(2);
    d.push_back(e);
  }
  auto model = [](std::uint64_t seed) {
    BertConfig c = tiny_config();
    c.vocab_size = 23; c.max_position_embeddings = 16;
    c.hidden_dropout_prob = 0.05; c.attention_probs_dropout_prob = 0.05;
    BertWeights<float> w(c, HeadSpec{false, 0, true});
    w.init_random(seed, 0.2);
    return w;
  };
  TrainerConfig cfg;
  cfg.phase = Phase::kPretrainMlm; cfg.epochs = 60; cfg.batch_size = 16; cfg.adam.lr = 5e-3; cfg.seed = 9;
  cfg.max_total_steps = 400;
  cfg.mlm.mask_id = 3; cfg.mlm.special_ids = {0, 1, 2};
  TrainableBert<float> a(model(5));
  Trainer<float> ta(a, nullptr, cfg);
  const auto before = ta.evaluate_mlm(d, 1);
  ta.fit(d);
  BOOST_TEST(ta.step() == 400);  // max_total_steps ends the run before 60 epochs
  const auto after = ta.evaluate_mlm(d, 1);
  BOOST_TEST(after.first < before.first);
  BOOST_TEST(after.second > 0.8, "masked-token accuracy " << after.second << " (before " << before.second << ")");
  // interrupted at step 60 and resumed: bit-identical (masks come from the checkpointed generator)
  const fs::path dir = fs::temp_directory_path() / ("dynabert_mlm_resume_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  {
    TrainableBert<float> b(model(5));
    Trainer<float> tb(b, nullptr, cfg);
    tb.fit(d, nullptr, 60);
    tb.save_checkpoint(dir.string());
  }
  TrainableBert<float> c(model(77));
  Trainer<float> tc(c, nullptr, cfg);
  tc.load_checkpoint(dir.string());
  tc.fit(d);
  BOOST_TEST(std::memcmp(a.params().buffer().data(), c.params().buffer().data(), a.params().buffer().size() * 4) == 0);
  fs::remove_all(dir);
  // a classification trainer refuses a model without a classifier, MLM one without an MLM head
  TrainerConfig ft;
  BOOST_CHECK_THROW(Trainer<float>(a, nullptr, ft), InputError);
  TrainableBert<float> cls(small_model(3));
  BOOST_CHECK_THROW(Trainer<float>(cls, nullptr, cfg), InputError);
}

// ---- RoBERTa: its classification head (dropout, dense, tanh, out_proj) and lm_head --------------
BOOST_AUTO_TEST_SUITE(roberta)

BOOST_AUTO_TEST_CASE(head_mlm_gradients_and_adamw_match_pytorch) {
  const fixtures::Roberta f;
  const auto names = f.names("tensors"), mlm_names = f.names("mlm_tensors");
  const std::vector<std::int32_t> labels = {0, 2, 1, 2};
  const auto lab = f.expected.read<double>("mlm.labels");
  const std::vector<std::int32_t> mlm_labels(lab.begin(), lab.end());
  auto check = [&](auto tag, double tol) {
    using T = decltype(tag);
    TrainableBert<T> m(BertWeights<float>::load(f.dir).cast<T>());
    for (auto [w, d] : {std::pair{1.0, 1.0}, {0.5, 0.75}}) {
      const auto net = SubNetwork::dynabert(m.config(), w, d);
      char key[64];
      std::snprintf(key, sizeof key, "w%.2f_d%.2f", w, d);
      const std::string k = key;
      // classification head
      TrainCache<T> c;
      m.zero_grad();
      m.forward(f.batch.inputs(), net, c, {});
      std::vector<T> dl(c.logits.size(), T(0));
      const double loss = cross_entropy(c.logits.data(), labels.data(), 4, 3, dl.data());
      m.backward(c, dl.data(), {});
      const double want = f.expected.read<double>("grad." + k + ".loss")[0];
      BOOST_TEST(std::abs(loss - want) < tol * (1 + want), k << " loss " << loss << " vs " << want);
      check_stats(m.grads(), f.expected.read<double>("grad." + k + ".stats"), names, tol, "roberta head " + k);
      if (w == 1.0 && std::is_same_v<T, double>) {
        AdamW<T> opt(m.params(), AdamWConfig{1e-3, 0.9, 0.999, 1e-8, 0.01, true});
        auto stepped = m.params();
        opt.step(stepped, m.grads(), 1e-3);
        check_stats(stepped, f.expected.read<double>("adamw.stats"), names, 1e-6, "roberta AdamW step");
      }
      // lm_head
      m.zero_grad();
      m.forward(f.batch.inputs(), net, c, {}, false);
      std::vector<T> d_last;
      const double mlm = m.mlm_loss(c, mlm_labels.data(), d_last);
      std::vector<const T*> ds(c.states.size(), nullptr);
      ds.back() = d_last.data();
      m.backward(c, nullptr, ds);
      const double want_mlm = f.expected.read<double>("mlm." + k + ".loss")[0];
      BOOST_TEST(std::abs(mlm - want_mlm) < tol * (1 + want_mlm), k << " MLM loss " << mlm << " vs " << want_mlm);
      check_stats(m.grads(), f.expected.read<double>("mlm." + k + ".stats"), mlm_names, tol, "roberta lm_head " + k);
      if (w == 1.0 && std::is_same_v<T, double>) {
        AdamW<T> opt(m.params(), AdamWConfig{1e-3, 0.9, 0.999, 1e-8, 0.01, true});
        auto stepped = m.params();
        opt.step(stepped, m.grads(), 1e-3);
        check_stats(stepped, f.expected.read<double>("mlm_adamw.stats"), mlm_names, 1e-6, "roberta lm_head AdamW step");
      }
    }
  };
  check(double{}, 1e-8);
  check(float{}, 1e-4);
}

namespace {
/// tiny_config() as a RoBERTa: one token type, padding id 1, positions from 2.
BertConfig tiny_roberta_config() {
  BertConfig c = tiny_config();
  c.model_type = ModelType::kRoberta;
  c.type_vocab_size = 1;
  c.pad_token_id = 1;
  c.max_position_embeddings = 8 + 2;
  return c;
}
}  // namespace

BOOST_AUTO_TEST_CASE(gradient_check_with_the_head_s_dropout) {
  std::mt19937 g(11);
  BertConfig c = tiny_roberta_config();
  c.hidden_dropout_prob = 0.3;
  BertWeights<double> w(c, HeadSpec{true, 3});
  w.init_random(9, 0.3, true);
  BOOST_TEST(w.has("classifier.dense.weight"));
  TrainableBert<double> model(w);
  auto prob = make_problem(g);
  std::fill(prob.types.begin(), prob.types.end(), 0);
  for (auto [width, depth] : {std::pair{1.0, 1.0}, {0.5, 0.5}}) {
    const auto net = SubNetwork::dynabert(c, width, depth);
    auto run = [&](TrainCache<double>& cache) {
      std::mt19937_64 rng(77);  // the same dropout masks on every evaluation
      model.forward(prob.inputs(), net, cache, ForwardMode{true, &rng});
    };
    TrainCache<double> cache;
    run(cache);
    const auto proj = make_projection(cache, g);
    model.zero_grad();
    std::vector<const double*> ds;
    for (auto& r : proj.r_states) ds.push_back(r.data());
    model.backward(cache, proj.r_logits.data(), ds);
    int checked = 0;
    for (const char* name : {"classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight",
                             "embeddings.position_embeddings.weight", "embeddings.word_embeddings.weight",
                             "encoder.layer.0.output.dense.weight"}) {
      for (int trial = 0; trial < 6; ++trial) {
        const std::size_t i = g() % model.params().spec(name).numel();
        double* p = model.params().tensor(name) + i;
        const double old = *p;
        TrainCache<double> cp, cm;
        *p = old + 1e-6; run(cp);
        *p = old - 1e-6; run(cm);
        *p = old;
        const double num = (proj(cp) - proj(cm)) / 2e-6, ana = model.grads().tensor(name)[i];
        BOOST_TEST((rel_err(num, ana) < 1e-5 || std::abs(num - ana) < 1e-7),
                   name << "[" << i << "] w " << width << ": numeric " << num << " analytic " << ana);
        ++checked;
      }
    }
    BOOST_TEST(checked == 36);
    // positions 0 and 1 (below padding_idx + 1) are never used
    const double* gp = model.grads().tensor("embeddings.position_embeddings.weight");
    for (int i = 0; i < 2 * 16; ++i) BOOST_REQUIRE(gp[i] == 0.0);
  }
}

BOOST_AUTO_TEST_CASE(the_head_s_input_dropout_and_the_lm_head_initialisation) {
  // RoBERTa's classification head drops out its input: one more dropout key per training forward
  // than BERT draws.
  auto draws = [](ModelType type) {
    BertConfig c = type == ModelType::kRoberta ? tiny_roberta_config() : tiny_config();
    c.hidden_dropout_prob = 0.5;
    BertWeights<double> w(c, HeadSpec{true, 3});
    w.init_random(3, 0.3);
    TrainableBert<double> m(w);
    std::mt19937 g(1);
    auto prob = make_problem(g);
    std::fill(prob.types.begin(), prob.types.end(), 0);
    std::mt19937_64 rng(99), ref(99);
    TrainCache<double> cache;
    m.forward(prob.inputs(), SubNetwork::full(c), cache, ForwardMode{true, &rng});
    const auto next = rng();
    int n = 0;
    while (ref() != next && n < 100) ++n;  // the draws the forward made
    return n;
  };
  const int bert = draws(ModelType::kBert), roberta = draws(ModelType::kRoberta);
  BOOST_TEST(bert == 1 + 3 * 4 + 1);  // embeddings, 3 per layer, the classifier's input
  BOOST_TEST(roberta == bert + 1);    // and the head's dense input
  // Hugging Face initialises LayerNorm weights to 1: RoBERTa's lm_head.layer_norm too
  BertWeights<float> mlm(tiny_roberta_config(), HeadSpec{false, 0, true});
  mlm.init_random(5);
  const float* g = mlm.tensor("lm_head.layer_norm.weight");
  BOOST_TEST(std::all_of(g, g + 16, [](float v) { return v == 1.0f; }));
}

BOOST_AUTO_TEST_CASE(rewiring_and_the_trainer_s_warmup_for_roberta) {
  // importance and rewiring know nothing of the family: the rewired RoBERTa computes the same
  const fixtures::Roberta f;
  const auto original = BertWeights<float>::load(f.dir);
  TrainableBert<double> m(original.cast<double>());
  importance::Scorer<double> scorer(m);
  const std::vector<std::int32_t> labels = {0, 2, 1, 2};
  scorer.add_batch(f.batch.inputs(0, 2), labels.data());
  scorer.add_batch(f.batch.inputs(2, 2), labels.data() + 2);
  auto rewired = original;
  const auto perm = importance::rewire(rewired, scorer.result());
  bool moved = false;
  for (auto& layer : perm.heads)
    for (int h = 0; h < 4; ++h) moved |= layer[h] != h;
  BOOST_TEST(moved);
  ElasticBert<float> a(original), b(rewired);
  auto ws = a.make_workspace({4, 10, 1});
  std::vector<float> la(12), lb(12);
  Outputs oa, ob;
  oa.logits = la.data();
  ob.logits = lb.data();
  a.forward(f.batch.inputs(), SubNetwork::full(original.config()), oa, ws);
  b.forward(f.batch.inputs(), SubNetwork::full(rewired.config()), ob, ws);
  for (int i = 0; i < 12; ++i) BOOST_TEST(std::abs(la[i] - lb[i]) < 1e-5);
  // the trainer's default warmup is 6 % of the steps for RoBERTa, none for BERT
  Dataset data;
  for (int i = 0; i < 64; ++i) data.push_back({{0, 5 + i % 7, 9, 2}, {0, 0, 0, 0}, i % 3, 0.0});
  for (bool roberta : {true, false}) {
    auto w = roberta ? original : fixtures::load_model();
    TrainableBert<float> student(w);
    TrainerConfig cfg;
    cfg.phase = Phase::kFineTune;
    cfg.epochs = 25;
    cfg.batch_size = 4;  // 400 steps: 24 of warmup for RoBERTa
    std::vector<double> lr;
    Trainer<float> t(student, nullptr, cfg);
    t.on_progress = [&](const Progress& p) { lr.push_back(p.lr); };
    t.fit(data, nullptr, 30);
    BOOST_REQUIRE(lr.size() == 30u);
    const double base = cfg.adam.lr;
    if (roberta) {  // step k of the warmup uses k / 24 of the rate, then the linear decay
      BOOST_TEST(lr[0] == 0.0);
      BOOST_TEST(std::abs(lr[12] - base * 12 / 24) < 1e-12 * base, lr[12]);
      BOOST_TEST(std::abs(lr[24] - base) < 1e-12 * base, lr[24]);
      BOOST_TEST(lr[25] < lr[24]);
    } else {
      BOOST_TEST(lr[0] == base);
      BOOST_TEST(lr[1] < lr[0]);  // decaying from the first step
    }
  }
}

BOOST_AUTO_TEST_SUITE_END()
