// The elastic model: parity with the PyTorch reference (tools/torch_reference.py) at every cell,
// float against double, padded batches against sequences run alone, switching without
// allocation, thread-count independence, head gates against pruned heads, input errors.
#define BOOST_TEST_MODULE dynabert_model
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <map>
#include <new>
#include <random>
#include <sstream>

#include <dynabert/dynabert.hpp>

#include "fixtures.hpp"

using namespace dynabert;

#include "alloc_counter.hpp"  // counts operator new for this test program

namespace {
const std::string& kFixtures = fixtures::kDir;

using fixtures::Batch;
using fixtures::load_inputs;

double max_abs(const float* a, const float* b, std::size_t n) {
  double m = 0;
  for (std::size_t i = 0; i < n; ++i) m = std::max(m, std::abs(double(a[i]) - double(b[i])));
  return m;
}

/// How much a packing of precision p grows by K's padding (kernels::lowp_kpad) for c's products.
double kpad_factor(const BertConfig& c, Precision p) {
  double f = 1.0;
  for (int k : {c.hidden_size, c.intermediate_size}) f = std::max(f, double(kernels::lowp_kpad(k, p)) / k);
  return f;
}

BertConfig random_config(int layers = 3, int hidden = 96, int heads = 6, int ffn = 192) {
  BertConfig c;
  c.vocab_size = 300; c.hidden_size = hidden; c.num_hidden_layers = layers; c.num_attention_heads = heads;
  c.intermediate_size = ffn; c.max_position_embeddings = 64;
  return c;
}

template <class F>
std::string error_of(F&& f) {
  try { f(); } catch (const Error& e) { return e.what(); }
  return "<no exception>";
}
bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

/// Runs a cell on the fixture model, comparing logits and every hidden state with PyTorch.
template <class Model>
void check_cell(const Model& model, Workspace<float>& ws, const Batch& in, const SubNetwork& net,
                const io::SafetensorsFile& expected, const std::string& name, const Threads& threads) {
  const auto want_logits = expected.read<float>(name + ".logits");
  const auto want_states = expected.read<float>(name + ".hidden_states");
  std::vector<float> logits(want_logits.size(), NAN), states(want_states.size(), NAN);
  BOOST_REQUIRE_EQUAL(states.size(), std::size_t(net.depth() + 1) * in.B * in.S * model.config().hidden_size);
  Outputs o;
  o.logits = logits.data();
  o.hidden_states = states.data();
  model.forward(in.inputs(), net, o, ws, threads);
  const double el = max_abs(logits.data(), want_logits.data(), logits.size());
  const double eh = max_abs(states.data(), want_states.data(), states.size());
  BOOST_TEST(el < 1e-5, name << ": logits differ by " << el);
  BOOST_TEST(eh < 1e-5, name << ": hidden states differ by " << eh);
}
}  // namespace

BOOST_AUTO_TEST_SUITE(pytorch_parity)

BOOST_AUTO_TEST_CASE(all_cells_match_the_reference) {
  const auto weights = BertWeights<float>::load(kFixtures + "/tiny");  // F16 weights read into F32
  const auto batch = load_inputs();
  io::SafetensorsFile expected(kFixtures + "/tiny_expected.safetensors");
  const auto cells = io::parse_json(expected.metadata().at("cells"), "cells");
  BOOST_REQUIRE_EQUAL(cells.size(), 16u);
  ElasticBert<float> dynamic_model(weights);
  ElasticBert<float, StaticDims<64, 4, 256>> static_model(weights);
  auto ws = dynamic_model.make_workspace({4, 16, 2});
  for (auto& cell : cells) {
    const std::string name = cell.at("name").as_string();
    SubNetwork net;
    std::vector<float> gates;
    if (name == "custom") {
      gates = expected.read<float>("custom.gates");
      net = SubNetwork::custom(weights.config(), cell.at("layers").as_vector<int>(), cell.at("heads").as_vector<int>(),
                               cell.at("neurons").as_vector<int>());
      net.head_gates = gates.data();
    } else {
      net = SubNetwork::dynabert(weights.config(), cell.at("width").as_double(), cell.at("depth").as_double());
    }
    check_cell(dynamic_model, ws, batch, net, expected, name, Threads());
    check_cell(static_model, ws, batch, net, expected, name, Threads(2));
  }
}

BOOST_AUTO_TEST_CASE(double_model_matches_the_reference_tightly) {
  const auto wf = BertWeights<float>::load(kFixtures + "/tiny");
  const auto wd = wf.cast<double>();
  ElasticBert<double> model(wd);
  auto ws = model.make_workspace({4, 16, 1});
  const auto batch = load_inputs();
  io::SafetensorsFile expected(kFixtures + "/tiny_expected.safetensors");
  for (double w : {1.0, 0.5, 0.25}) {
    auto net = SubNetwork::dynabert(wd.config(), w, 0.5);
    char name[64];
    std::snprintf(name, sizeof name, "w%.4f_d%.4f", w, 0.5);
    const auto want = expected.read<float>(std::string(name) + ".logits");
    std::vector<double> logits(want.size());
    model.forward_t(batch.inputs(), net, logits.data(), nullptr, ws);
    for (std::size_t i = 0; i < want.size(); ++i) BOOST_TEST(std::abs(logits[i] - want[i]) < 1e-6);
  }
}

BOOST_AUTO_TEST_CASE(static_dims_must_match_config) {
  const auto weights = BertWeights<float>::load(kFixtures + "/tiny");
  BOOST_CHECK_THROW((ElasticBert<float, BertBaseDims>(weights)), FormatError);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(behaviour)

BOOST_AUTO_TEST_CASE(float_matches_double_on_a_random_model) {
  BertWeights<float> wf(random_config(5, 80, 5, 200), HeadSpec{true, 2});  // sizes not multiples of 16
  wf.init_random(11, 0.08, true);
  const auto wd = wf.cast<double>();
  ElasticBert<float> mf(wf);
  ElasticBert<double> md(wd);
  BOOST_TEST(wd.buffer().size() != wf.buffer().size());  // the layouts differ: cast() copies by name
  auto wsf = mf.make_workspace({3, 40, 2});
  auto wsd = md.make_workspace({3, 40, 1});
  std::mt19937 g(3);
  std::vector<std::int32_t> ids(3 * 40), lengths = {40, 23, 1};
  for (auto& v : ids) v = g() % 300;
  Inputs in;
  in.input_ids = ids.data(); in.lengths = lengths.data(); in.batch = 3; in.seq_len = 40;
  for (double w : {1.0, 0.5, 1.0 / 6}) for (double d : {1.0, 2.0 / 3}) {
    auto net = SubNetwork::dynabert(wd.config(), w, d);
    std::vector<float> lf(6);
    std::vector<double> ld(6);
    Outputs o;
    o.logits = lf.data();
    mf.forward(in, net, o, wsf, Threads(2));
    md.forward_t(in, net, ld.data(), nullptr, wsd);
    for (int i = 0; i < 6; ++i) BOOST_TEST(std::abs(lf[i] - ld[i]) < 2e-5, "w " << w << " d " << d);
  }
}

BOOST_AUTO_TEST_CASE(padded_batch_equals_sequences_run_alone) {
  BertWeights<float> w(random_config(), HeadSpec{true, 3});
  w.init_random(5, 0.08, true);
  ElasticBert<float> m(w);
  const int B = 4, S = 33, H = 96;
  auto ws = m.make_workspace({B, S, 2});
  std::mt19937 g(8);
  std::vector<std::int32_t> ids(B * S), types(B * S), lengths = {33, 17, 5, 29};
  for (auto& v : ids) v = 1 + g() % 299;
  for (auto& v : types) v = g() % 2;
  std::vector<std::int32_t> mask(B * S, 0);
  for (int b = 0; b < B; ++b) for (int s = 0; s < lengths[b]; ++s) mask[b * S + s] = 1;
  for (double width : {1.0, 0.5}) {
    auto net = SubNetwork::dynabert(w.config(), width, 0.75);
    std::vector<float> logits(B * 3), hidden(B * S * H), logits_m(B * 3), hidden_m(B * S * H);
    Inputs in;
    in.input_ids = ids.data(); in.token_type_ids = types.data(); in.lengths = lengths.data();
    in.batch = B; in.seq_len = S;
    Outputs o;
    o.logits = logits.data(); o.last_hidden = hidden.data();
    m.forward(in, net, o, ws, Threads(2));
    // lengths and the equivalent 0/1 mask agree exactly
    Inputs im = in;
    im.lengths = nullptr; im.attention_mask = mask.data();
    Outputs om;
    om.logits = logits_m.data(); om.last_hidden = hidden_m.data();
    m.forward(im, net, om, ws, Threads(2));
    BOOST_TEST(max_abs(hidden.data(), hidden_m.data(), hidden.size()) == 0.0);
    for (int b = 0; b < B; ++b) {
      const int L = lengths[b];
      Inputs one;
      one.input_ids = ids.data() + b * S; one.token_type_ids = types.data() + b * S;
      one.batch = 1; one.seq_len = L;
      std::vector<float> l1(3), h1(L * H);
      Outputs o1;
      o1.logits = l1.data(); o1.last_hidden = h1.data();
      m.forward(one, net, o1, ws);
      BOOST_TEST(max_abs(l1.data(), logits.data() + b * 3, 3) < 1e-6, "sequence " << b);
      BOOST_TEST(max_abs(h1.data(), hidden.data() + b * S * H, L * H) < 1e-6, "sequence " << b);
    }
  }
}

BOOST_AUTO_TEST_CASE(switching_cells_allocates_nothing_and_threads_agree) {
  BertWeights<float> w(random_config(4, 128, 8, 256), HeadSpec{true, 2});
  w.init_random(6, 0.05);
  ElasticBert<float> m(w);
  auto ws = m.make_workspace({2, 48, 2});
  std::vector<std::int32_t> ids(2 * 48, 7), lengths = {48, 30};
  Inputs in;
  in.input_ids = ids.data(); in.lengths = lengths.data(); in.batch = 2; in.seq_len = 48;
  std::vector<SubNetwork> nets;
  for (double wm : {1.0, 0.75, 0.5, 0.25}) for (double dm : {1.0, 0.75, 0.5}) nets.push_back(SubNetwork::dynabert(w.config(), wm, dm));
  std::vector<float> logits(4), one(4);
  Outputs o;
  o.logits = logits.data();
  Threads t1(1), t2(2);
  for (auto& n : nets) m.forward(in, n, o, ws, t2);  // warm-up (TBB workers start)
  const long before = test_alloc::count.load();
  for (int rep = 0; rep < 2; ++rep)
    for (auto& n : nets) {
      m.forward(in, n, o, ws, t2);
      m.forward(in, n, o, ws, t1);
    }
  BOOST_TEST(test_alloc::count.load() - before == 0, "allocations while switching: " << test_alloc::count.load() - before);
  for (auto& n : nets) {
    m.forward(in, n, o, ws, t1);
    one = logits;
    m.forward(in, n, o, ws, t2);
    BOOST_TEST(std::memcmp(one.data(), logits.data(), 16) == 0);
  }
  // the cells really differ
  m.forward(in, nets.front(), o, ws);
  one = logits;
  m.forward(in, nets.back(), o, ws);
  BOOST_TEST(max_abs(one.data(), logits.data(), 4) > 1e-4);
}

BOOST_AUTO_TEST_CASE(zero_gate_equals_pruned_head) {
  auto c = random_config(2, 64, 4, 128);
  BertWeights<float> full(c, HeadSpec{true, 2});
  full.init_random(21, 0.1, true);
  // Remove head 1 of layer 1 by slicing, as Hugging Face's prune_heads does.
  auto pc = c;
  pc.pruned_heads[1] = {1};
  BertWeights<float> pruned(pc, HeadSpec{true, 2});
  const int dh = 16, H = 64;
  for (auto& s : pruned.specs()) {
    const float* src = full.tensor(s.name);
    float* dst = pruned.tensor(s.name);
    const bool l1 = s.name.rfind("encoder.layer.1.attention.", 0) == 0;
    if (l1 && s.name.find(".self.") != std::string::npos) {  // rows of heads 0, 2, 3
      const long cols = s.shape.size() == 2 ? H : 1;
      long r = 0;
      for (int h : {0, 2, 3})
        for (int i = 0; i < dh; ++i, ++r) std::memcpy(dst + r * cols, src + (h * dh + i) * cols, cols * 4);
    } else if (l1 && s.name == "encoder.layer.1.attention.output.dense.weight") {
      for (int row = 0; row < H; ++row) {
        long col = 0;
        for (int h : {0, 2, 3})
          for (int i = 0; i < dh; ++i, ++col) dst[row * 48 + col] = src[row * H + h * dh + i];
      }
    } else {
      std::memcpy(dst, src, s.numel() * 4);
    }
  }
  ElasticBert<float> mf(full), mp(pruned);
  auto ws = mf.make_workspace({1, 9, 1});
  std::vector<std::int32_t> ids = {1, 5, 9, 22, 3, 4, 5, 6, 7};
  Inputs in;
  in.input_ids = ids.data(); in.batch = 1; in.seq_len = 9;
  std::vector<float> gates(2 * 4, 1.0f), a(2), b(2);
  gates[1 * 4 + 1] = 0.0f;
  auto net = SubNetwork::full(c);
  net.head_gates = gates.data();
  Outputs oa, ob;
  oa.logits = a.data(); ob.logits = b.data();
  mf.forward(in, net, oa, ws);
  mp.forward(in, SubNetwork::full(pc), ob, ws);
  BOOST_TEST(max_abs(a.data(), b.data(), 2) < 1e-5);
  BOOST_TEST(pruned.config().layer_heads(1) == 3);
}

BOOST_AUTO_TEST_CASE(bad_inputs_get_clear_errors) {
  BertWeights<float> w(random_config(), HeadSpec{true, 0});
  ElasticBert<float> m(w);
  auto ws = m.make_workspace({2, 16, 1});
  std::vector<std::int32_t> ids(2 * 16, 3), types(2 * 16, 0), lengths = {16, 4}, mask(2 * 16, 1);
  std::vector<float> out(2 * 96 * 16);
  auto run = [&](Inputs in, SubNetwork net = SubNetwork{}, Outputs o = Outputs{}, const Threads& t = Threads()) {
    if (net.layers.empty()) net = SubNetwork::full(w.config());
    return error_of([&] { m.forward(in, net, o, ws, t); });
  };
  Inputs in;
  in.input_ids = ids.data(); in.token_type_ids = types.data(); in.batch = 2; in.seq_len = 16;
  ids[17] = 300;
  BOOST_TEST(has(run(in), "input_ids[1][1] = 300 is outside the vocabulary (0..299)"));
  ids[17] = -1;
  BOOST_TEST(has(run(in), "input_ids[1][1] = -1"));
  ids[17] = 3;
  types[5] = 2;
  BOOST_TEST(has(run(in), "token_type_ids[0][5] = 2"));
  types[5] = 0;
  Inputs big = in;
  big.seq_len = 65;
  BOOST_TEST(has(run(big), "exceeds max_position_embeddings 64"));
  big.seq_len = 17;
  BOOST_TEST(has(run(big), "exceeds the workspace limits 2 x 16"));
  big = in;
  big.batch = 0;
  BOOST_TEST(has(run(big), "is empty"));
  Inputs li = in;
  lengths[1] = 17;
  li.lengths = lengths.data();
  BOOST_TEST(has(run(li), "lengths[1] = 17"));
  lengths[1] = 4;
  li.attention_mask = mask.data();
  BOOST_TEST(has(run(li), "either lengths or attention_mask"));
  Inputs mi = in;
  mask[3] = 2;
  mi.attention_mask = mask.data();
  BOOST_TEST(has(run(mi), "attention_mask[0][3] = 2"));
  Outputs o;
  o.logits = out.data();
  BOOST_TEST(has(run(in, {}, o), "without a classifier head"));
  BOOST_TEST(has(run(in, {}, {}, Threads(2)), "sized for 1"));
  auto net = SubNetwork::full(w.config());
  net.heads[1] = 7;
  BOOST_TEST(has(run(in, net), "layer 1 keeps 7 heads; it has 6"));
  BOOST_TEST(has(error_of([&] { m.make_workspace({1, 65, 1}); }), "exceeds max_position_embeddings"));
  Inputs nul = in;
  nul.input_ids = nullptr;
  BOOST_TEST(has(run(nul), "input_ids is null"));
}

BOOST_AUTO_TEST_SUITE_END()

// ---- sub-network export (model/export.hpp); tools/check_export.py checks it against PyTorch ----
#include <dynabert/model/export.hpp>

BOOST_AUTO_TEST_CASE(exported_subnetworks_compute_what_the_cell_computes) {
  auto c = random_config(4, 64, 4, 128);
  c.pruned_heads[2] = {0};  // a source that is already pruned: original ids must carry over
  BertWeights<float> w(c, HeadSpec{true, 3});
  w.init_random(5, 0.1, true);
  const ElasticBert<float> elastic(w);
  std::vector<std::int32_t> ids = {1, 5, 9, 22, 3, 4, 5, 6, 7, 11, 12, 0, 0, 0};
  std::vector<std::int32_t> lengths = {7, 4};
  Inputs in;
  in.input_ids = ids.data(); in.lengths = lengths.data(); in.batch = 2; in.seq_len = 7;
  auto ws = elastic.make_workspace({2, 7, 1});
  std::vector<float> gates(4 * 4, 1.0f);
  gates[0 * 4 + 1] = 0.0f;   // pruned by the export
  gates[3 * 4 + 0] = 0.37f;  // folded into the attention output
  std::vector<std::pair<std::string, SubNetwork>> nets = {
      {"0.5x0.5", SubNetwork::dynabert(c, 0.5, 0.5)},
      {"0.75x1", SubNetwork::dynabert(c, 0.75, 1.0)},
      {"custom", SubNetwork::custom(c, {0, 2, 3}, {4, 4, 2, 3}, {128, 128, 30, 77})},
      {"gated", SubNetwork::custom(c, {0, 1, 3}, {3, 4, 3, 2}, {100, 128, 128, 64})}};
  nets.back().second.head_gates = gates.data();
  const auto dir = std::filesystem::temp_directory_path() / ("dynabert_export_" + std::to_string(::getpid()));
  for (auto& [name, net] : nets) {
    std::vector<float> want(6), got(6);
    Outputs o;
    o.logits = want.data();
    elastic.forward(in, net, o, ws);
    const auto small = extract_subnetwork(w, net);
    small.save(dir.string());
    const auto loaded = BertWeights<float>::load(dir.string());
    BOOST_TEST(loaded.config().num_hidden_layers == net.depth(), name);
    const ElasticBert<float> m(loaded);
    auto ws2 = m.make_workspace({2, 7, 1});
    o.logits = got.data();
    m.forward(in, SubNetwork::full(loaded.config()), o, ws2);
    BOOST_TEST(max_abs(want.data(), got.data(), 6) < 1e-5, name << ": differs by " << max_abs(want.data(), got.data(), 6));
    // only the kept parameters: the encoder shrinks by exactly what the cell leaves out (the gated
    // cell also drops its zero-gate head)
    if (!net.head_gates) {
      const long dropped = SubNetwork::full(c).encoder_params(c) - net.encoder_params(c);
      BOOST_TEST(static_cast<long>(w.num_parameters() - small.num_parameters()) == dropped, name);
    }
    BOOST_TEST(small.num_parameters() < w.num_parameters(), name);
  }
  // the custom shape keeps layer 2's original heads 1, 2 (head 0 was pruned before): 0 and 3 pruned
  const auto custom = extract_subnetwork(w, nets[2].second);
  BOOST_TEST((custom.config().pruned_heads.at(1) == std::vector<int>{0, 3}));
  BOOST_TEST((custom.config().layer_intermediate_sizes == std::vector<int>{128, 30, 77}));
  BOOST_TEST(custom.config().intermediate_size == 128);
  const auto gated = extract_subnetwork(w, nets[3].second);
  BOOST_TEST((gated.config().pruned_heads.at(0) == std::vector<int>{1, 3}));  // gate 0 and beyond width
  BOOST_TEST(gated.config().layer_heads(0) == 2);
  std::filesystem::remove_all(dir);
}

// ---- Session (serve/session.hpp) and the budget controller (serve/budget.hpp) ----
#include <thread>

namespace {
/// Random inputs of one call: batch 1..3, length 4..24, lengths per sequence.
struct Call {
  std::vector<std::int32_t> ids, lengths;
  int B = 0, S = 0;
  double width = 1, depth = 1;
  Inputs inputs() const {
    Inputs in;
    in.input_ids = ids.data(); in.lengths = lengths.data(); in.batch = B; in.seq_len = S;
    return in;
  }
};
std::vector<Call> random_calls(int n, std::uint64_t seed) {
  std::mt19937_64 g(seed);
  const double ws[] = {1.0, 0.75, 0.5, 0.25}, ds[] = {1.0, 0.75, 0.5};
  std::vector<Call> calls(n);
  for (auto& c : calls) {
    c.B = 1 + static_cast<int>(g() % 3);
    c.S = 4 + static_cast<int>(g() % 21);
    for (int i = 0; i < c.B * c.S; ++i) c.ids.push_back(static_cast<std::int32_t>(g() % 300));
    for (int b = 0; b < c.B; ++b) c.lengths.push_back(1 + static_cast<int>(g() % c.S));
    c.width = ws[g() % 4];
    c.depth = ds[g() % 3];
  }
  return calls;
}
}  // namespace

BOOST_AUTO_TEST_CASE(session_concurrent_mixed_cells_match_single_threaded_runs) {
  BertWeights<float> w(random_config(4, 64, 4, 128), HeadSpec{true, 2});
  w.init_random(8, 0.1, true);
  SessionOptions opt;
  opt.max_batch = 3; opt.max_seq_len = 24; opt.max_threads = 2; opt.max_concurrent_calls = 2;
  const Session<float> session(w, opt);
  const auto calls = random_calls(48, 9);
  // single-threaded results first
  std::vector<std::vector<float>> want(calls.size());
  for (std::size_t i = 0; i < calls.size(); ++i) {
    want[i].assign(static_cast<std::size_t>(calls[i].B) * 2, 0.0f);
    Outputs o;
    o.logits = want[i].data();
    session.run(calls[i].inputs(), calls[i].width, calls[i].depth, o);
  }
  // four host threads share the session (two workspaces: some calls wait); two of them run each
  // call on a shared 2-thread arena, the others single-threaded; each repeats its share 3 times
  tbb::task_arena arena(2);
  std::vector<std::vector<float>> got(calls.size());
  for (std::size_t i = 0; i < calls.size(); ++i) got[i].assign(want[i].size(), NAN);
  std::atomic<int> mismatches{0};
  std::vector<std::thread> hosts;
  for (int t = 0; t < 4; ++t)
    hosts.emplace_back([&, t] {
      const Threads threads = t % 2 ? Threads(arena) : Threads();
      std::vector<float> out(6);
      for (int rep = 0; rep < 3; ++rep)
        for (std::size_t i = static_cast<std::size_t>(t); i < calls.size(); i += 4) {
          Outputs o;
          o.logits = out.data();
          session.run(calls[i].inputs(), calls[i].width, calls[i].depth, o, threads);
          if (std::memcmp(out.data(), want[i].data(), want[i].size() * 4) != 0) ++mismatches;
        }
    });
  for (auto& h : hosts) h.join();
  BOOST_TEST(mismatches.load() == 0);
  // memory is fixed at construction and reported
  const auto mem = session.memory();
  BOOST_TEST(mem.workspaces == 2);
  BOOST_TEST(mem.weight_bytes >= 4 * (w.num_parameters() - 300 * 64));  // everything but maybe padding
  BOOST_TEST(mem.total() == mem.weight_bytes + 2 * mem.workspace_bytes);
  BOOST_TEST(mem.workspace_bytes == session.model().make_workspace({3, 24, 2}).bytes());
  // an unprepared cell, or a call over the limits, is refused with a clear message
  std::vector<float> out(6);
  Outputs o;
  o.logits = out.data();
  BOOST_TEST(has(error_of([&] { session.run(calls[0].inputs(), 0.6, 1.0, o); }), "was not prepared"));
  Call big = calls[0];
  big.S = 30;
  big.ids.assign(static_cast<std::size_t>(big.B) * 30, 1);
  BOOST_TEST(has(error_of([&] { session.run(big.inputs(), 1.0, 1.0, o); }), "exceeds the workspace limits"));
}

BOOST_AUTO_TEST_CASE(session_switching_and_budgeted_calls_allocate_nothing) {
  BertWeights<float> w(random_config(4, 64, 4, 128), HeadSpec{true, 2});
  w.init_random(8, 0.1);
  SessionOptions opt;
  opt.max_batch = 3; opt.max_seq_len = 24;
  Session<float> session(w, opt);
  std::vector<GridCell> grid;
  for (double d : {1.0, 0.75, 0.5})
    for (double wm : {1.0, 0.75, 0.5, 0.25}) grid.push_back({wm, d, wm * d});
  session.set_grid(grid);
  session.calibrate(Threads(), 2, 8);
  const auto calls = random_calls(24, 3);
  std::vector<float> out(6);
  Outputs o;
  o.logits = out.data();
  for (auto& c : calls) session.run(c.inputs(), c.width, c.depth, o);  // warm-up
  const long before = test_alloc::count.load();
  for (auto& c : calls) {
    session.run(c.inputs(), c.width, c.depth, o);
    const auto r = session.run_within(c.inputs(), 1e-3 + 10.0 * (c.width * c.depth), o);  // budgets large and tiny
    BOOST_TEST_REQUIRE(r.measured_ms > 0);
  }
  BOOST_TEST(test_alloc::count.load() - before == 0, "allocations: " << test_alloc::count.load() - before);
}

BOOST_AUTO_TEST_CASE(session_reads_the_grid_from_checkpoint_metadata) {
  BertWeights<float> w(random_config(2, 64, 4, 128), HeadSpec{true, 2});
  w.init_random(1);
  const auto dir = std::filesystem::temp_directory_path() / ("dynabert_session_" + std::to_string(::getpid()));
  w.save(dir.string(), {{"dynabert_grid", R"([{"width":1,"depth":1,"accuracy":0.9},{"width":0.5,"depth":0.5,"accuracy":0.8}])"}});
  SessionOptions small;
  small.max_seq_len = 32;
  const auto s = Session<float>::open(dir.string(), small);
  BOOST_TEST(s->grid().size() == 2u);
  BOOST_TEST(s->grid()[1].accuracy == 0.8);
  w.save(dir.string(), {{"dynabert_grid", R"([{"width":1.5,"depth":1,"accuracy":0.9}])"}});
  BOOST_TEST(has(error_of([&] { Session<float>::open(dir.string(), small); }), "outside (0, 1]"));
  w.save(dir.string(), {{"dynabert_grid", "[oops"}});
  BOOST_TEST(has(error_of([&] { Session<float>::open(dir.string(), small); }), "not valid JSON"));
  BOOST_TEST(has(error_of([&] { Session<float>::open(dir.string(), {}); }), "exceeds max_position_embeddings"));
  std::filesystem::remove_all(dir);
  Session<float> plain(w, small);
  BOOST_TEST(has(error_of([&] { plain.calibrate(); }), "needs an accuracy grid"));
}

BOOST_AUTO_TEST_CASE(budget_controller_tracks_load_with_hysteresis) {
  // three cells: accurate and slow (10 ms), middle (5 ms), small (2 ms) at 100 tokens
  BudgetController c({{1.0, 1.0, 0.9}, {0.5, 1.0, 0.85}, {0.25, 0.5, 0.8}}, {0.9, 0.7, 4, 3});
  c.set_base(0, 10, 1.0, 100, 10.0);
  c.set_base(1, 10, 0.5, 100, 5.0);
  c.set_base(2, 10, 0.2, 100, 2.0);
  BOOST_TEST(std::abs(c.base_ms(0, 55) - 5.5) < 1e-9);
  auto serve = [&](double budget, double slowdown) {  // one call: choose, "run", observe
    const auto d = c.choose(budget, 100);
    c.observe(d.cell, 100, c.base_ms(d.cell, 100) * slowdown);
    return d.cell;
  };
  BOOST_TEST(serve(12.0, 1.0) == 0u);  // idle: the most accurate cell fits
  BOOST_TEST(serve(12.0, 3.0) == 0u);  // one stray slow call (30 ms) does not move the median ...
  BOOST_TEST(serve(12.0, 1.0) == 0u);  // ... so the next call stays
  BOOST_TEST(c.load() == 1.0);
  BOOST_TEST(serve(9.0, 1.0) == 1u);   // 10 > 0.9 x 9: the next one
  BOOST_TEST(c.choose(1.0, 100).cell == 2u);  // nothing fits: the cheapest
  // the machine gets 2.5x busier: the controller moves down within a few calls (budget 15: the
  // slow cell would take 25 ms, the middle one 12.5 still fits 0.9 x 15)
  for (int i = 0; i < 5; ++i) serve(15.0, 1.0);  // from the cheapest cell back to the slow one
  BOOST_TEST(c.current() == 0u);
  std::vector<std::size_t> cells;
  for (int i = 0; i < 10; ++i) cells.push_back(serve(15.0, 2.5));
  BOOST_TEST(cells.back() == 1u);
  BOOST_TEST(c.load() > 2.0);
  // free again: back up once the slow cell fits 0.7 x 15 = 10.5 ms, after the patience of 4 calls
  cells.clear();
  for (int i = 0; i < 12; ++i) cells.push_back(serve(15.0, 1.0));
  BOOST_TEST(cells.back() == 0u);
  BOOST_TEST(cells[2] == 1u);  // not at once
  // between the two margins it stays: at budget 12 the slow cell (10 ms) is above 0.7 x 12 but
  // below 0.9 x 12, so it is kept while running and never re-entered from below
  BOOST_TEST(serve(12.0, 1.0) == 0u);
  for (int i = 0; i < 6; ++i) serve(12.0, 1.4);  // 14 ms > 10.8: down
  for (int i = 0; i < 20; ++i) BOOST_TEST_REQUIRE(serve(12.0, 1.0) != 0u);
  // a load that hovers at the edge does not make it flap: count switches
  int switches = 0;
  std::size_t last = serve(12.0, 1.0);
  for (int i = 0; i < 60; ++i) {
    const std::size_t now = serve(12.0, i % 2 ? 1.25 : 1.0);  // the slow cell alternates 10 and 12.5 ms
    switches += now != last;
    last = now;
  }
  BOOST_TEST(switches <= 6, switches << " switches in 60 calls");
  BOOST_CHECK_THROW(c.choose(-1.0, 100), InputError);
  BOOST_CHECK_THROW(BudgetController({}, {}), InputError);
  BudgetController uncalibrated({{1.0, 1.0, 0.9}});
  BOOST_CHECK_THROW(uncalibrated.choose(10.0, 100), InputError);
}

// ---- packed tokens: padding positions are not computed, results do not change ----
BOOST_AUTO_TEST_CASE(packed_tokens_give_bitwise_the_padded_results) {
  BertWeights<float> w(random_config(3, 96, 6, 192), HeadSpec{true, 3});
  w.init_random(12, 0.08, true);
  const ElasticBert<float> m(w);
  const int B = 5, S = 21;
  std::mt19937 g(3);
  std::vector<std::int32_t> ids(B * S), types(B * S), lengths = {21, 3, 17, 1, 9}, mask(B * S, 0);
  for (int i = 0; i < B * S; ++i) { ids[i] = static_cast<std::int32_t>(g() % 300); types[i] = static_cast<std::int32_t>(g() % 2); }
  for (int b = 0; b < B; ++b)
    for (int s = 0; s < lengths[b]; ++s) mask[b * S + s] = 1;
  mask[2 * S + 5] = 0;  // a hole inside sequence 2
  auto ws = m.make_workspace({B, S, 2});
  const Threads two(2);
  for (int variant = 0; variant < 2; ++variant) {
    Inputs in;
    in.input_ids = ids.data(); in.token_type_ids = types.data(); in.batch = B; in.seq_len = S;
    if (variant == 0) in.lengths = lengths.data(); else in.attention_mask = mask.data();
    for (double wm : {1.0, 0.5}) for (double dm : {1.0, 0.5}) {
      const auto net = SubNetwork::dynabert(w.config(), wm, dm);
      std::vector<float> packed(B * 3), padded(B * 3), pooled_a(B * 96), pooled_b(B * 96);
      Outputs o;
      o.logits = packed.data(); o.pooled = pooled_a.data();
      m.forward(in, net, o, ws, two);
      BOOST_TEST(ws.packed);
      o.logits = padded.data(); o.pooled = pooled_b.data(); o.pack_tokens = false;
      m.forward(in, net, o, ws, two);
      BOOST_TEST(!ws.packed);
      BOOST_TEST(std::memcmp(packed.data(), padded.data(), packed.size() * 4) == 0, "variant " << variant << " cell " << wm << "x" << dm);
      BOOST_TEST(std::memcmp(pooled_a.data(), pooled_b.data(), pooled_a.size() * 4) == 0);
    }
  }
  // no padding: nothing to pack
  Inputs full;
  full.input_ids = ids.data(); full.batch = B; full.seq_len = S;
  std::vector<float> logits(B * 3);
  Outputs o;
  o.logits = logits.data();
  m.forward(full, SubNetwork::full(w.config()), o, ws);
  BOOST_TEST(!ws.packed);
}

// ---- first-token last layer: only the pooler's rows of the last layer, same results ----
BOOST_AUTO_TEST_CASE(first_token_last_layer_gives_bitwise_the_full_results) {
  BertWeights<float> w(random_config(3, 96, 6, 192), HeadSpec{true, 3});
  w.init_random(14, 0.08, true);
  const ElasticBert<float> m(w, {Precision::kFp32, Precision::kBf16, Precision::kInt8});
  const int B = 5, S = 21;
  std::mt19937 g(4);
  std::vector<std::int32_t> ids(B * S), lengths = {21, 3, 17, 1, 9}, mask(B * S, 0);
  for (auto& v : ids) v = static_cast<std::int32_t>(g() % 300);
  for (int b = 0; b < B; ++b)
    for (int s = 0; s < lengths[b]; ++s) mask[b * S + s] = 1;
  mask[2 * S + 5] = 0;  // a hole inside sequence 2
  std::vector<float> gates(3 * 6);
  for (auto& v : gates) v = 0.25f + static_cast<float>(g() % 1000) / 1000.0f;
  auto ws = m.make_workspace({B, S, 2});
  int compared = 0;
  for (int threads : {1, 2})
    for (int variant = 0; variant < 3; ++variant)
      for (Precision p : {Precision::kFp32, Precision::kBf16, Precision::kInt8})
        for (double wm : {1.0, 0.25})
          for (double dm : {1.0, 0.5}) {
            Inputs in;
            in.input_ids = ids.data(); in.batch = B; in.seq_len = S;
            if (variant == 0) in.lengths = lengths.data();
            if (variant == 1) in.attention_mask = mask.data();  // variant 2: no padding
            auto net = SubNetwork::dynabert(w.config(), wm, dm);
            net.precision = p;
            if (threads == 2) net.head_gates = gates.data();
            std::vector<float> la(B * 3), lb(B * 3), pa(B * 96), pb(B * 96);
            Outputs o;
            o.logits = la.data(); o.pooled = pa.data();
            m.forward(in, net, o, ws, Threads(threads));
            o.logits = lb.data(); o.pooled = pb.data(); o.first_token_only = false;
            m.forward(in, net, o, ws, Threads(threads));
            BOOST_TEST(std::memcmp(la.data(), lb.data(), la.size() * 4) == 0,
                       to_string(p) << " variant " << variant << " cell " << wm << "x" << dm << " threads " << threads);
            BOOST_TEST(std::memcmp(pa.data(), pb.data(), pa.size() * 4) == 0);
            ++compared;
          }
  BOOST_TEST(compared == 72);
  // the FLOPs it performs: the last layer's Q/K/V for every token, the rest for one
  const auto full = SubNetwork::full(w.config());
  const double all = full.encoder_flops(w.config(), S), first = full.encoder_flops(w.config(), S, true);
  const double d = 96, f = 192, a = 96;
  const double last_all = 2 * (S * (4 * d * a + 2 * d * f) + 2.0 * S * S * a);
  const double last_first = 2 * (S * 3 * d * a + d * a + 2 * d * f + 2.0 * S * a);
  BOOST_TEST(std::abs((all - first) - (last_all - last_first)) < 1e-6 * all);
}

// ---- low precision (INT8, BF16) -------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(low_precision)

BOOST_AUTO_TEST_CASE(every_cell_in_bf16_and_int8_stays_close_to_fp32_and_allocates_nothing) {
  BertWeights<float> w(random_config(4, 96, 6, 240), HeadSpec{true, 3});  // sizes not multiples of 16
  w.init_random(31, 0.08, true);
  const std::vector<Precision> all = {Precision::kFp32, Precision::kBf16, Precision::kInt8};
  ElasticBert<float> m(w, all);
  ElasticBert<float> int8_only(w, {Precision::kInt8});
  auto ws = m.make_workspace({3, 40, 2});
  auto ws8 = int8_only.make_workspace({3, 40, 2});
  std::mt19937 g(5);
  std::vector<std::int32_t> ids(3 * 40), lengths = {40, 17, 3};
  for (auto& v : ids) v = static_cast<std::int32_t>(g() % 300);
  Inputs in;
  in.input_ids = ids.data(); in.lengths = lengths.data(); in.batch = 3; in.seq_len = 40;
  const Threads two(2);
  const std::size_t n = 3 * 40 * 96;
  for (double wd : {1.0, 0.5, 1.0 / 6})
    for (double dd : {1.0, 0.5}) {
      auto net = SubNetwork::dynabert(w.config(), wd, dd);
      std::vector<float> ref(n), got(n), logits_ref(9), logits(9);
      Outputs o;
      o.last_hidden = ref.data();
      o.logits = logits_ref.data();
      m.forward(in, net, o, ws, two);
      double scale = 0;
      for (float v : ref) scale = std::max(scale, double(std::abs(v)));
      for (Precision p : {Precision::kBf16, Precision::kInt8}) {
        net.precision = p;
        o.last_hidden = got.data();
        o.logits = logits.data();
        m.forward(in, net, o, ws, two);
        // the last hidden state (LayerNorm output, values of order 1) against FP32
        const double e = max_abs(got.data(), ref.data(), n) / scale;
        BOOST_TEST(e < (p == Precision::kInt8 ? 6e-2 : 1.5e-2), to_string(p) << " w " << wd << " d " << dd << " error " << e);
        BOOST_TEST(e > 0.0);  // really computed in another precision
        if (p == Precision::kInt8) {  // an INT8-only model computes bitwise the same
          std::vector<float> only(n);
          o.last_hidden = only.data();
          int8_only.forward(in, net, o, ws8, two);
          BOOST_TEST(std::memcmp(only.data(), got.data(), n * sizeof(float)) == 0);
        }
      }
    }
  // no allocation after warm-up, in any precision; results do not depend on the thread count
  auto net = SubNetwork::dynabert(w.config(), 0.5, 0.5);
  std::vector<float> logits(9), again(9);
  Outputs o;
  o.logits = logits.data();
  for (Precision p : all) {
    net.precision = p;
    m.forward(in, net, o, ws, two);
  }
  const long before = test_alloc::count.load(), buffers = aligned_allocations().load();
  for (Precision p : all) {
    net.precision = p;
    m.forward(in, net, o, ws, two);
    m.forward(in, net, o, ws, Threads(1));
  }
  BOOST_TEST(test_alloc::count.load() - before == 0);
  BOOST_TEST(aligned_allocations().load() - buffers == 0);
  for (Precision p : {Precision::kBf16, Precision::kInt8}) {
    net.precision = p;
    m.forward(in, net, o, ws, Threads(1));
    again = logits;
    m.forward(in, net, o, ws, two);
    BOOST_TEST(std::memcmp(again.data(), logits.data(), sizeof(float) * 9) == 0);
  }
  // memory per packing: INT8 about a quarter, BF16 about half of FP32 (times the padding of K to
  // whole 64-byte steps where the AMX kernels run: this model's hidden size, 96, is not a multiple of 64)
  BOOST_TEST(m.weight_bytes(Precision::kInt8) < m.weight_bytes(Precision::kFp32) * 0.3 * kpad_factor(w.config(), Precision::kInt8));
  BOOST_TEST(m.weight_bytes(Precision::kBf16) < m.weight_bytes(Precision::kFp32) * 0.55 * kpad_factor(w.config(), Precision::kBf16));
  BOOST_TEST(int8_only.weight_bytes(Precision::kFp32) == 0u);
  BOOST_TEST(int8_only.weight_bytes() < m.weight_bytes() / 2);
}

BOOST_AUTO_TEST_CASE(fused_layers_give_bitwise_the_products_one_after_another) {
  // EncoderLayer's fused low-precision path (row sinks: LayerNorm and conversion of each product's
  // finished rows, the FFN's intermediate never stored whole, the next layer's input converted by
  // the previous) against the same products one after another (a workspace without sink scratch):
  // every hidden state, logits and pooled output bitwise, for threads splitting rows (8 x 60 rows)
  // or columns (2 x 60), with the first-token last layer, gates, and every kind of cell
  // hidden 96 with 6 heads of 16, hidden 90 with 6 heads of 15 (odd: Q copied with padding, K and
  // V packed with an odd tail), and hidden 128 with 4 heads of 32 (a head's Q, K and V whole
  // panels of the fused product)
  int compared = 0;
  for (int H : {96, 90, 128}) {
    const int NH = H == 128 ? 4 : 6;
    BertWeights<float> w(random_config(3, H, NH, 240), HeadSpec{true, 3});
    w.init_random(21, 0.08, true);
    const ElasticBert<float> m(w, {Precision::kFp32, Precision::kBf16, Precision::kInt8});
    const int S = 60;
    auto fused = m.make_workspace({8, S, 2});
    auto plain = m.make_workspace({8, S, 2});
    plain.lowp.rows_stride = 0;  // no sink scratch: EncoderLayer::fused() is false
    BOOST_TEST(fused.lowp.fits_sink(2, std::max(240, 3 * H)));  // what EncoderLayer::fused() asks for
    BOOST_TEST(!plain.lowp.fits_sink(1, H));
    std::mt19937 g(8);
    std::vector<std::int32_t> ids(8 * S), lengths(8);
    for (auto& v : ids) v = static_cast<std::int32_t>(g() % 300);
    for (auto& v : lengths) v = 1 + static_cast<int>(g() % S);
    lengths[0] = S;
    std::vector<float> gates(3 * NH);
    for (auto& v : gates) v = 0.25f + static_cast<float>(g() % 1000) / 1000.0f;
    for (int B : {2, 8})
      for (int threads : {1, 2})
        for (Precision p : {Precision::kBf16, Precision::kInt8})
          for (auto [wm, dm] : {std::pair{1.0, 1.0}, std::pair{0.5, 1.0}, std::pair{1.0 / 6, 0.5}})
            for (bool every_state : {true, false}) {
              Inputs in;
              in.input_ids = ids.data(); in.lengths = lengths.data(); in.batch = B; in.seq_len = S;
              auto net = SubNetwork::dynabert(w.config(), wm, dm);
              net.precision = p;
              if ((B == 8) == (threads == 2)) net.head_gates = gates.data();
              const std::size_t states = (net.layers.size() + 1) * B * S * H;
              std::vector<float> la(B * 3), lb(B * 3), pa(B * H), pb(B * H), ha(states), hb(states);
              Outputs o;
              o.logits = la.data(); o.pooled = pa.data();
              if (every_state) o.hidden_states = ha.data();  // every row; else the first-token last layer
              // the fused path ran: it wrote its bfloat16 Q/K/V, or in INT8 their int8 scales
              // (filled with NaN patterns before)
              std::fill(fused.lowp.qkv.begin(), fused.lowp.qkv.end(), std::uint16_t(0xFFFF));
              std::fill(fused.lowp.qkv_scale.begin(), fused.lowp.qkv_scale.end(), std::numeric_limits<float>::quiet_NaN());
              m.forward(in, net, o, fused, Threads(threads));
              if (p == Precision::kInt8) BOOST_TEST(!std::isnan(fused.lowp.qkv_scale[0]));
              else BOOST_TEST(fused.lowp.qkv[0] != 0xFFFF);
              o.logits = lb.data(); o.pooled = pb.data();
              if (every_state) o.hidden_states = hb.data();
              m.forward(in, net, o, plain, Threads(threads));
              const std::string what = std::string(to_string(p)) + " hidden " + std::to_string(H) + " batch " +
                                       std::to_string(B) + " threads " + std::to_string(threads) + " cell " +
                                       std::to_string(wm) + "x" + std::to_string(dm);
              BOOST_TEST(std::memcmp(la.data(), lb.data(), la.size() * 4) == 0, what);
              BOOST_TEST(std::memcmp(pa.data(), pb.data(), pa.size() * 4) == 0, what);
              if (every_state) BOOST_TEST(std::memcmp(ha.data(), hb.data(), ha.size() * 4) == 0, what);
              ++compared;
            }
  }
  BOOST_TEST(compared == 144);
}

BOOST_AUTO_TEST_CASE(attention_tasks_split_by_query_rows_give_bitwise_the_unsplit_results) {
  // With (sequence, head) tasks that do not share evenly among the threads, inference splits each
  // task's query rows into blocks (SelfAttention::query_parts); one thread never splits. Every
  // hidden state, logits and pooled output bitwise against one thread, in each precision, with
  // padded sequences and the first-token last layer.
  BertWeights<float> w(random_config(2, 96, 6, 192), HeadSpec{true, 2});
  w.init_random(31, 0.08, true);
  const ElasticBert<float> m(w, {Precision::kFp32, Precision::kBf16, Precision::kInt8});
  const int S = 40, H = 96;
  auto ws = m.make_workspace({3, S, 4});
  std::mt19937 g(5);
  std::vector<std::int32_t> ids(3 * S), lengths = {S, 23, 31};
  for (auto& v : ids) v = static_cast<std::int32_t>(g() % 300);
  using Attention = layers::SelfAttention<float>;
  int split = 0, compared = 0;
  for (int B : {1, 3})
    for (double wm : {1.0, 0.5})  // 6 and 3 heads
      for (int threads : {2, 4}) {
        const int heads = wm == 1.0 ? 6 : 3;
        BOOST_TEST(Attention::query_parts(static_cast<long>(B) * heads, 1, true) == 1);
        if (Attention::query_parts(static_cast<long>(B) * heads, threads, true) > 1) ++split;
        for (Precision p : {Precision::kFp32, Precision::kBf16, Precision::kInt8})
          for (bool every_state : {true, false}) {
            Inputs in;
            in.input_ids = ids.data(); in.lengths = lengths.data(); in.batch = B; in.seq_len = S;
            auto net = SubNetwork::dynabert(w.config(), wm, 1.0);
            net.precision = p;
            const std::size_t states = (net.layers.size() + 1) * B * S * H;
            std::vector<float> la(B * 2), lb(B * 2), pa(B * H), pb(B * H), ha(states), hb(states);
            Outputs o;
            o.logits = la.data(); o.pooled = pa.data();
            if (every_state) o.hidden_states = ha.data();
            m.forward(in, net, o, ws, Threads(1));
            o.logits = lb.data(); o.pooled = pb.data();
            if (every_state) o.hidden_states = hb.data();
            m.forward(in, net, o, ws, Threads(threads));
            const std::string what = std::string(to_string(p)) + " batch " + std::to_string(B) + " heads " +
                                     std::to_string(heads) + " threads " + std::to_string(threads);
            BOOST_TEST(std::memcmp(la.data(), lb.data(), la.size() * 4) == 0, what);
            BOOST_TEST(std::memcmp(pa.data(), pb.data(), pa.size() * 4) == 0, what);
            if (every_state) BOOST_TEST(std::memcmp(ha.data(), hb.data(), ha.size() * 4) == 0, what);
            ++compared;
          }
      }
  BOOST_TEST(split == 6);  // all but 6 heads x 1 sequence and 6 heads x 3 sequences on 2 threads
  BOOST_TEST(compared == 48);
}

BOOST_AUTO_TEST_CASE(int8_checkpoints_serve_their_own_values_without_requantizing) {
  BertWeights<float> w(random_config(3, 64, 4, 160), HeadSpec{true, 2});
  w.init_random(41, 0.08, true);
  const auto dir = std::filesystem::temp_directory_path() / ("dynabert_int8_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  w.save(dir.string(), {}, /*int8=*/true);
  const auto loaded = BertWeights<float>::load(dir.string());
  const std::string q = "encoder.layer.1.intermediate.dense.weight";
  const QuantizedMatrix* m = loaded.quantized(q);
  BOOST_REQUIRE(m != nullptr);
  BOOST_TEST(m->rows == 160);
  BOOST_TEST(loaded.quantized("embeddings.word_embeddings.weight") == nullptr);
  // the float view is q x scale, within half a step of the original
  for (int r = 0; r < 160; r += 7)
    for (int c = 0; c < 64; ++c) {
      const float orig = w.tensor(q)[r * 64 + c], back = loaded.tensor(q)[r * 64 + c];
      BOOST_REQUIRE(back == static_cast<float>(m->q[r * 64 + c]) * m->scale[r]);
      BOOST_REQUIRE(std::abs(back - orig) <= 0.5001f * m->scale[r]);
    }
  // INT8 from the checkpoint computes bitwise what INT8 from the original weights computes (the
  // same per-row quantization, stored and read back, not re-derived from q x scale)
  const ElasticBert<float> a(w, {Precision::kInt8}), b(loaded, {Precision::kInt8});
  auto wa = a.make_workspace({2, 9, 1}), wb = b.make_workspace({2, 9, 1});
  std::vector<std::int32_t> ids = {1, 5, 9, 22, 3, 4, 5, 6, 7, 11, 12, 13, 14, 15, 0, 0, 0, 0};
  Inputs in;
  in.input_ids = ids.data(); in.batch = 2; in.seq_len = 9;
  std::vector<float> la(4), lb(4);
  Outputs o;
  for (double width : {1.0, 0.5}) {
    auto net = SubNetwork::dynabert(w.config(), width, 1.0);
    net.precision = Precision::kInt8;
    o.logits = la.data();
    a.forward(in, net, o, wa);
    o.logits = lb.data();
    b.forward(in, net, o, wb);
    BOOST_TEST(std::memcmp(la.data(), lb.data(), sizeof(float) * 4) == 0, "width " << width);
  }
  // a changed parameter set forgets its int8 values; bad int8 files are named errors
  auto changed = loaded;
  changed.tensor(q)[0] += 1.0f;
  BOOST_TEST(changed.quantized(q) == nullptr);
  auto t = io::SafetensorsFile((dir / "model.safetensors").string());
  BOOST_TEST(t.info("bert." + q).dtype_name == "I8");
  BOOST_TEST(t.info("bert." + q + "_scale").dtype_name == "F32");
  std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(precisions_a_model_was_not_prepared_for_are_named_errors) {
  BertWeights<float> w(random_config(2, 32, 2, 64), HeadSpec{true, 2});
  w.init_random(3);
  ElasticBert<float> fp32(w);
  auto ws = fp32.make_workspace({1, 8, 1});
  std::vector<std::int32_t> ids(8, 5);
  Inputs in;
  in.input_ids = ids.data(); in.batch = 1; in.seq_len = 8;
  std::vector<float> logits(2);
  Outputs o;
  o.logits = logits.data();
  auto net = SubNetwork::full(w.config());
  net.precision = Precision::kInt8;
  BOOST_TEST(has(error_of([&] { fp32.forward(in, net, o, ws); }), "not prepared for int8"));
  ElasticBert<float> int8(w, {Precision::kInt8});
  auto small = fp32.make_workspace({1, 8, 1});  // a workspace made for an FP32-only model
  BOOST_TEST(has(error_of([&] { int8.forward(in, net, o, small); }), "no room for int8"));
  BOOST_TEST(has(error_of([&] { ElasticBert<float> twice(w, {Precision::kInt8, Precision::kInt8}); }), "listed twice"));
  BOOST_TEST(has(error_of([&] { ElasticBert<float> none(w, {}); }), "at least one precision"));
  const auto wd = w.cast<double>();
  BOOST_TEST(has(error_of([&] { ElasticBert<double> d(wd, {Precision::kBf16}); }), "needs the float model"));
  // a session holds packings per its options and names cells by precision
  SessionOptions so;
  so.max_batch = 1; so.max_seq_len = 8;
  so.precisions = {Precision::kInt8, Precision::kFp32};
  Session<float> s(w, so);  // 2 heads: width 0.25 keeps none; those cells are skipped, not an error
  BOOST_TEST(s.skipped_cells().size() == 3u);
  BOOST_TEST(s.skipped_cells().front().first == 0.25);
  BOOST_TEST((s.cell(0.1 + 0.4, 0.25 + 0.25, Precision::kFp32).precision == Precision::kFp32));  // matched within 1e-9
  BOOST_TEST((s.cell(1.0, 1.0).precision == Precision::kInt8));  // the first precision is the default
  BOOST_TEST((s.cell(0.5, 0.5, Precision::kFp32).precision == Precision::kFp32));
  BOOST_TEST(has(error_of([&] { (void)s.cell(1.0, 1.0, Precision::kBf16); }), "was not prepared"));
  BOOST_TEST(has(error_of([&] { s.set_grid({{1.0, 1.0, 0.9, Precision::kBf16}}); }), "does not hold"));
  const auto mem = s.memory();
  BOOST_TEST(mem.int8_bytes > 0u);
  BOOST_TEST(mem.fp32_bytes * kpad_factor(w.config(), Precision::kInt8) > 3 * mem.int8_bytes);
  BOOST_TEST(mem.bf16_bytes == 0u);
  s.run(in, 0.5, 1.0, Precision::kInt8, o);
  const auto g = parse_grid(R"([{"width":1,"depth":1,"accuracy":0.9,"precision":"int8"},{"width":1,"depth":1,"accuracy":0.91}])");
  BOOST_TEST((g[0].precision == Precision::kInt8 && g[1].precision == Precision::kFp32));
  BOOST_TEST(has(error_of([&] { parse_grid(R"([{"width":1,"depth":1,"accuracy":0.9,"precision":"int4"}])"); }), "precision"));
}

BOOST_AUTO_TEST_SUITE_END()

// ---- classify and embed texts in one call (serve/text_session.hpp) --------------------------------
BOOST_AUTO_TEST_SUITE(text_session)

BOOST_AUTO_TEST_CASE(early_exit_answers_each_sequence_at_its_first_confident_cell) {
  auto w = fixtures::load_model();
  SessionOptions so;
  so.max_batch = 5;  // 13 sequences: three chunks
  so.max_seq_len = 16;
  Session<float> s(w, so);
  TokenBatch b;
  b.batch = 13;
  b.seq_len = 16;
  std::mt19937 g(3);
  for (int i = 0; i < b.batch * b.seq_len; ++i) b.ids.push_back(static_cast<std::int32_t>(1 + g() % 500));
  for (int i = 0; i < b.batch; ++i) b.lengths.push_back(static_cast<std::int32_t>(2 + g() % 15));
  b.type_ids.assign(b.ids.size(), 0);
  const std::vector<std::pair<double, double>> cascade = {{0.25, 0.5}, {0.5, 0.75}, {1.0, 1.0}};
  std::vector<Classification> fixed;
  for (auto [wd, dd] : cascade) fixed.push_back(s.classify(b, wd, dd));
  auto top = [](const Classification& c, int i) { return c.probability(i, c.labels[i]); };
  // thresholds 0 and above every probability: the first and the last cell, exactly
  const auto all_first = s.classify_early_exit(b, cascade, 0.0);
  const auto all_last = s.classify_early_exit(b, cascade, 1.0);
  BOOST_TEST(all_first.probabilities == fixed[0].probabilities);
  BOOST_TEST(all_last.probabilities == fixed[2].probabilities);
  for (int i = 0; i < b.batch; ++i) {
    BOOST_TEST(all_first.exit_stage[i] == 0);
    BOOST_TEST(all_last.exit_stage[i] == 2);
  }
  // a threshold in between: each sequence answers at the first cell confident enough, with that
  // cell's probabilities (packing the unfinished ones together changes nothing)
  std::vector<float> tops;
  for (int i = 0; i < b.batch; ++i) tops.push_back(top(fixed[0], i));
  std::sort(tops.begin(), tops.end());
  const double thr = tops[tops.size() / 2];
  const auto r = s.classify_early_exit(b, cascade, thr);
  int early = 0;
  for (int i = 0; i < b.batch; ++i) {
    const int st = r.exit_stage[i];
    BOOST_REQUIRE(st >= 0 && st <= 2);
    for (int e = 0; e < st; ++e) BOOST_TEST(top(fixed[e], i) < thr, "sequence " << i << " stage " << e);
    if (st < 2) BOOST_TEST(top(fixed[st], i) >= thr);
    for (int c = 0; c < r.num_labels; ++c) BOOST_TEST(std::abs(r.probability(i, c) - fixed[st].probability(i, c)) < 1e-6);
    BOOST_TEST(r.labels[i] == fixed[st].labels[i]);
    early += st == 0;
  }
  BOOST_TEST(early >= b.batch / 2);
  BOOST_TEST(early < b.batch);
  BOOST_TEST(has(error_of([&] { (void)s.classify_early_exit(b, cascade, 1.5); }), "not a probability"));
  BOOST_TEST(has(error_of([&] { (void)s.classify_early_exit(b, std::vector<std::pair<double, double>>{}, 0.5); }),
                 "at least one cell"));
}

BOOST_AUTO_TEST_CASE(classify_and_embed_texts_in_one_call) {
  SessionOptions so;
  so.max_batch = 2;  // 5 texts: three chunks
  so.max_seq_len = 16;
  const auto ts = TextSession::open(kFixtures + "/tiny", so, kFixtures + "/wordpiece");
  const std::vector<std::string> texts = {"hello world!", "the cafes", "unaffable naive resume", "don't", "xy abc"};
  const auto r = ts->classify(texts, 0.5, 0.5);
  BOOST_REQUIRE(r.labels.size() == texts.size());
  BOOST_TEST(r.num_labels == 3);
  BOOST_TEST(r.cell.width == 0.5);
  const auto& net = ts->session().cell(0.5, 0.5);
  auto& model = ts->session().model();
  auto ws = model.make_workspace({1, 16, 1});
  for (std::size_t i = 0; i < texts.size(); ++i) {
    // each text alone, through the model: the same probabilities (padding and chunks change nothing)
    const auto e = ts->tokenizer().encode(texts[i], std::nullopt, 16);
    Inputs in;
    in.input_ids = e.ids.data(); in.token_type_ids = e.type_ids.data(); in.batch = 1;
    in.seq_len = static_cast<int>(e.ids.size());
    std::vector<float> logits(3), last(e.ids.size() * 64);
    Outputs o;
    o.logits = logits.data();
    o.last_hidden = last.data();
    model.forward(in, net, o, ws);
    const float mx = *std::max_element(logits.begin(), logits.end());
    double sum = 0;
    for (float& l : logits) sum += (l = std::exp(l - mx));
    for (int c = 0; c < 3; ++c) BOOST_TEST(std::abs(r.probability(static_cast<int>(i), c) - logits[c] / sum) < 1e-6);
    BOOST_TEST((r.names[i] == "neg" || r.names[i] == "neu" || r.names[i] == "pos"));
    // embeddings: CLS, mean and max of the final hidden states, normalised or not
    for (Pooling p : {Pooling::kCls, Pooling::kMean, Pooling::kMax}) {
      const auto v = ts->embed(texts, p, /*normalize=*/false, 0.5, 0.5);
      const auto u = ts->embed(texts, p, /*normalize=*/true, 0.5, 0.5);
      double n2 = 0;
      for (int j = 0; j < 64; ++j) {
        float want = p == Pooling::kCls ? last[j] : p == Pooling::kMax ? -INFINITY : 0.0f;
        for (std::size_t t = 0; t < e.ids.size() && p != Pooling::kCls; ++t)
          want = p == Pooling::kMax ? std::max(want, last[t * 64 + j]) : want + last[t * 64 + j] / e.ids.size();
        BOOST_TEST(std::abs(v[i * 64 + j] - want) < 1e-5);
        n2 += double(u[i * 64 + j]) * u[i * 64 + j];
      }
      BOOST_TEST(std::abs(n2 - 1.0) < 1e-5);
    }
  }
  BOOST_TEST(has(error_of([&] { (void)ts->classify(texts, 0.3, 0.5); }), "was not prepared"));
}

BOOST_AUTO_TEST_SUITE_END()

// ---- RoBERTa: the same blocks under RoBERTa's positions, heads and names -------------------------
BOOST_AUTO_TEST_SUITE(roberta)

BOOST_AUTO_TEST_CASE(every_cell_matches_the_reference_and_the_names_are_roberta_s) {
  const fixtures::Roberta f;
  const auto w = BertWeights<float>::load(f.dir);
  BOOST_TEST((w.config().model_type == ModelType::kRoberta));
  BOOST_TEST(w.config().position_offset() == 2);
  BOOST_TEST(w.heads().pooler);  // RobertaClassificationHead's dense layer
  BOOST_TEST(w.heads().num_labels == 3);
  BOOST_TEST(w.heads().mlm);
  BOOST_TEST(w.has("classifier.out_proj.weight"));
  BOOST_TEST(w.has("lm_head.layer_norm.weight"));
  BOOST_TEST(!w.has("pooler.dense.weight"));  // RobertaModel's pooler: in the file, used by no head
  const auto cells = io::parse_json(f.expected.metadata().at("cells"), "cells");
  BOOST_REQUIRE_EQUAL(cells.size(), 15u);
  ElasticBert<float> dynamic_model(w);
  ElasticBert<float, StaticDims<32, 4, 64>> static_model(w);
  auto ws = dynamic_model.make_workspace({4, 12, 2});
  for (auto& cell : cells) {
    const std::string name = cell.at("name").as_string();
    const auto net = SubNetwork::dynabert(w.config(), cell.at("width").as_double(), cell.at("depth").as_double());
    check_cell(dynamic_model, ws, f.batch, net, f.expected, name, Threads());
    check_cell(static_model, ws, f.batch, net, f.expected, name, Threads(2));
  }
  // double: tighter
  const ElasticBert<double> md(w.cast<double>());
  auto wsd = md.make_workspace({4, 12, 1});
  const auto want = f.expected.read<float>("w0.5000_d0.5000.logits");
  std::vector<double> logits(want.size());
  md.forward_t(f.batch.inputs(), SubNetwork::dynabert(w.config(), 0.5, 0.5), logits.data(), nullptr, wsd);
  for (std::size_t i = 0; i < want.size(); ++i) BOOST_TEST(std::abs(logits[i] - want[i]) < 1e-6);
  // positions start at 2: 14 position rows hold sequences of 12 tokens, not 13
  std::vector<std::int32_t> ids(13, 5);
  Inputs in;
  in.input_ids = ids.data(); in.batch = 1; in.seq_len = 13;
  std::vector<float> out(3);
  Outputs o;
  o.logits = out.data();
  BOOST_TEST(w.config().max_tokens() == 12);
  const std::string err = error_of([&] { dynamic_model.make_workspace({1, 13, 1}); });
  BOOST_TEST(has(err, "exceeds max_position_embeddings 12"), err);
  const std::string err2 = error_of([&] { dynamic_model.forward(in, SubNetwork::full(w.config()), o, ws); });
  BOOST_TEST(has(err2, "exceeds max_position_embeddings 12"), err2);
}

BOOST_AUTO_TEST_CASE(save_load_export_session_and_low_precision) {
  const fixtures::Roberta f;
  const auto w = BertWeights<float>::load(f.dir);
  const auto dir = std::filesystem::temp_directory_path() / ("dynabert_roberta_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  // written in RobertaFor* names, read back unchanged
  w.save(dir.string());
  {
    io::SafetensorsFile st((dir / "model.safetensors").string());
    BOOST_TEST(st.contains("roberta.encoder.layer.3.output.dense.weight"));
    BOOST_TEST(st.contains("roberta.embeddings.position_embeddings.weight"));
    BOOST_TEST(st.contains("classifier.dense.weight"));
    BOOST_TEST(st.contains("classifier.out_proj.bias"));
    BOOST_TEST(st.contains("lm_head.dense.weight"));
    BOOST_TEST(st.contains("lm_head.bias"));
    BOOST_TEST(!st.contains("bert.embeddings.word_embeddings.weight"));
    const auto cfg = io::read_json_file((dir / "config.json").string());
    BOOST_TEST(cfg.at("model_type").as_string() == "roberta");
    BOOST_TEST(cfg.at("architectures")[0].as_string() == "RobertaForSequenceClassification");
    BOOST_TEST(cfg.at("pad_token_id").as_int() == 1);
  }
  const auto back = BertWeights<float>::load(dir.string());
  BOOST_REQUIRE(back.specs().size() == w.specs().size());
  for (auto& s : w.specs()) BOOST_TEST(std::memcmp(back.tensor(s.name), w.tensor(s.name), s.numel() * sizeof(float)) == 0, s.name);
  // a cell exported as a standalone RoBERTa computes what the cell computes
  const ElasticBert<float> elastic(w);
  auto ws = elastic.make_workspace({4, 10, 1});
  const auto net = SubNetwork::dynabert(w.config(), 0.5, 0.5);
  std::vector<float> want(12), got(12);
  Outputs o;
  o.logits = want.data();
  elastic.forward(f.batch.inputs(), net, o, ws);
  extract_subnetwork(w, net).save(dir.string());
  const auto small = BertWeights<float>::load(dir.string());
  BOOST_TEST((small.config().model_type == ModelType::kRoberta));
  BOOST_TEST(small.config().num_hidden_layers == 2);
  const ElasticBert<float> sm(small);
  auto ws2 = sm.make_workspace({4, 10, 1});
  o.logits = got.data();
  sm.forward(f.batch.inputs(), SubNetwork::full(small.config()), o, ws2);
  BOOST_TEST(max_abs(want.data(), got.data(), 12) < 1e-5);
  std::filesystem::remove_all(dir);
  // a Session serves it at a cell and under a budget, in every precision
  SessionOptions so;
  so.max_batch = 4;
  so.max_seq_len = 12;
  so.precisions = {Precision::kFp32, Precision::kBf16, Precision::kInt8};
  Session<float> session(w, so);
  std::vector<float> s_logits(12);
  o.logits = s_logits.data();
  session.run(f.batch.inputs(), 0.5, 0.5, o);
  BOOST_TEST(max_abs(want.data(), s_logits.data(), 12) < 1e-5);
  auto low = net;
  for (Precision p : {Precision::kBf16, Precision::kInt8}) {
    low.precision = p;
    const ElasticBert<float> m(w, {Precision::kFp32, p});
    auto wsl = m.make_workspace({4, 10, 1});
    m.forward(f.batch.inputs(), low, o, wsl);
    BOOST_TEST(max_abs(want.data(), s_logits.data(), 12) < 0.1, to_string(p));
    BOOST_TEST(max_abs(want.data(), s_logits.data(), 12) > 0.0, to_string(p));
  }
}

namespace {
/// Copies the RoBERTa fixture into `dir` with `edit` applied to its config.json text and
/// `tensors` to its tensors (all written as F32; the writer keeps pointers until write()).
template <class EditConfig, class EditTensors>
void rewrite_fixture(const std::string& dir, EditConfig&& edit, EditTensors&& tensors) {
  const std::string src = fixtures::Roberta().dir;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ifstream in(src + "/config.json");
  std::stringstream cfg;
  cfg << in.rdbuf();
  std::string text = cfg.str();
  edit(text);
  std::ofstream(dir + "/config.json") << text;
  io::SafetensorsFile f(src + "/model.safetensors");
  std::map<std::string, std::vector<float>> data;
  io::SafetensorsWriter w;
  for (const auto& t : f.tensors()) data[t.name] = f.read<float>(t.name);
  tensors(data);
  for (const auto& t : f.tensors()) w.add(t.name, t.shape, data[t.name].data());
  w.write(dir + "/model.safetensors");
}
}  // namespace

BOOST_AUTO_TEST_CASE(the_family_is_read_from_config_names_or_architectures_and_checked) {
  const fixtures::Roberta f;
  const auto ref = BertWeights<float>::load(f.dir);
  const ElasticBert<float> ref_model(ref);
  auto ws = ref_model.make_workspace({4, 10, 1});
  std::vector<float> want(12), got(12);
  Outputs o;
  o.logits = want.data();
  ref_model.forward(f.batch.inputs(), SubNetwork::full(ref.config()), o, ws);
  const std::string dir = (std::filesystem::temp_directory_path() / ("dynabert_family_" + std::to_string(::getpid()))).string();
  auto erase = [](std::string key) {
    return [key](std::string& t) {
      const auto at = t.find("\"" + key + "\"");
      BOOST_REQUIRE(at != std::string::npos);
      t.erase(at, t.find('\n', at) - at + 1);
    };
  };
  auto same = [&](const char* what) {
    const auto w = BertWeights<float>::load(dir);
    BOOST_TEST((w.config().model_type == ModelType::kRoberta), what);
    BOOST_TEST(w.config().position_offset() == 2, what);
    BOOST_TEST(w.heads().num_labels == 3, what);
    const ElasticBert<float> m(w);
    o.logits = got.data();
    m.forward(f.batch.inputs(), SubNetwork::full(w.config()), o, ws);
    BOOST_TEST(max_abs(want.data(), got.data(), 12) == 0.0, what);
  };
  auto no_change = [](std::map<std::string, std::vector<float>>&) {};
  // a config without pad_token_id: RobertaConfig's 1, positions from 2
  rewrite_fixture(dir, erase("pad_token_id"), no_change);
  same("no pad_token_id");
  // a config older than model_type: the names (roberta., classifier.out_proj, lm_head) decide
  rewrite_fixture(dir, [&](std::string& t) {
    erase("model_type")(t);
    t.replace(t.find("RobertaForSequenceClassification"), 32, "Model");
  }, no_change);
  same("no model_type, no architectures");
  // the other family's name in config.json: refused, naming both
  rewrite_fixture(dir, [](std::string& t) { t.replace(t.find("\"roberta\""), 9, "\"bert\""); }, no_change);
  std::string e = error_of([&] { BertWeights<float>::load(dir); });
  BOOST_TEST(has(e, "model_type 'bert' but the tensors are named as in a RoBERTa checkpoint"), e);
  // an untied decoder cannot be served as stored
  rewrite_fixture(dir, [](std::string&) {}, [](auto& d) { d.at("lm_head.decoder.weight")[7] += 1.0f; });
  e = error_of([&] { BertWeights<float>::load(dir); });
  BOOST_TEST(has(e, "differs from the word embeddings"), e);
  std::filesystem::remove_all(dir);
  // a BERT checkpoint declared roberta: refused
  const auto bert_dir = std::filesystem::temp_directory_path() / ("dynabert_family_bert_" + std::to_string(::getpid()));
  std::filesystem::remove_all(bert_dir);
  std::filesystem::copy(kFixtures + "/tiny", bert_dir);
  {
    std::ifstream in((bert_dir / "config.json").string());
    std::stringstream cfg;
    cfg << in.rdbuf();
    std::string t = cfg.str();
    t.replace(t.find("\"bert\""), 6, "\"roberta\"");
    std::ofstream((bert_dir / "config.json").string()) << t;
  }
  e = error_of([&] { BertWeights<float>::load(bert_dir.string()); });
  BOOST_TEST(has(e, "model_type 'roberta' but the tensors are named as in a BERT checkpoint"), e);
  std::filesystem::remove_all(bert_dir);
  // RoBERTa without a classifier has no pooler of its own
  BertWeights<float> bare(BertConfig::roberta_base(), HeadSpec{true, 0, false});
  BOOST_TEST(!bare.heads().pooler);
  BOOST_TEST(!bare.has("classifier.dense.weight"));
}

BOOST_AUTO_TEST_CASE(config_json_names_the_family) {
  auto parse = [](const std::string& text) { return BertConfig::from_json(io::parse_json(text, "config.json")); };
  BOOST_TEST((parse(R"({"model_type": "roberta", "pad_token_id": 1})").model_type == ModelType::kRoberta));
  BOOST_TEST((parse(R"({"hidden_size": 768})").model_type == ModelType::kBert));
  BOOST_TEST(parse(R"({"model_type": "roberta"})").pad_token_id == 1);  // RobertaConfig's default
  BOOST_TEST(parse(R"({"model_type": "roberta"})").position_offset() == 2);
  BOOST_TEST((parse(R"({"architectures": ["RobertaForMaskedLM"]})").model_type == ModelType::kRoberta));
  BOOST_TEST((parse(R"({"architectures": ["BertForMaskedLM"]})").model_type == ModelType::kBert));
  BOOST_TEST(has(error_of([&] { parse(R"({"model_type": "roberta", "vocab_size": 8, "pad_token_id": 9})"); }),
                 "pad_token_id 9 is outside the vocabulary"));
  BOOST_TEST(has(error_of([&] { parse(R"({"model_type": "gpt2"})"); }), "model_type 'gpt2' is not supported"));
  BOOST_TEST(has(error_of([&] { parse(R"({"model_type": "roberta", "pad_token_id": 1, "max_position_embeddings": 2})"); }),
                 "leaves no position"));
  const auto rb = BertConfig::roberta_base();
  BOOST_TEST(BertConfig::from_json(rb.to_json()).position_offset() == 2);
  BOOST_TEST(BertConfig::from_json(rb.to_json()).layer_norm_eps == 1e-5);
}

BOOST_AUTO_TEST_SUITE_END()
