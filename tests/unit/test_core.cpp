// Elastic rules (DynaBERT's exact rounding), config.json parsing, safetensors validation (one case
// per malformed-file rule), checkpoint folders (sharding, name aliases, shape checks).
#define BOOST_TEST_MODULE dynabert_core
#include <boost/test/unit_test.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>

#include <dynabert/dynabert.hpp>

using namespace dynabert;
namespace fs = std::filesystem;

namespace {
/// A fresh temporary folder removed at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("dynabert_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  static int& counter() { static int c = 0; return c; }
  std::string operator/(const std::string& f) const { return (path / f).string(); }
};

/// Writes a raw safetensors file from a header string and a data buffer.
void write_raw(const std::string& path, const std::string& header, const std::string& data, long len_override = -1) {
  std::ofstream f(path, std::ios::binary);
  std::uint64_t n = len_override >= 0 ? static_cast<std::uint64_t>(len_override) : header.size();
  for (int i = 0; i < 8; ++i) f.put(static_cast<char>((n >> (8 * i)) & 0xff));
  f << header << data;
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no exception>";
}
bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
}  // namespace

BOOST_AUTO_TEST_SUITE(elastic_rules)

BOOST_AUTO_TEST_CASE(round_half_even_matches_python) {
  BOOST_TEST(round_half_even(0.5) == 0);
  BOOST_TEST(round_half_even(1.5) == 2);
  BOOST_TEST(round_half_even(2.5) == 2);
  BOOST_TEST(round_half_even(4.5) == 4);
  BOOST_TEST(round_half_even(7.5) == 8);
  BOOST_TEST(round_half_even(10.5) == 10);
  BOOST_TEST(round_half_even(2.4999) == 2);
  BOOST_TEST(round_half_even(2.5001) == 3);
}

BOOST_AUTO_TEST_CASE(width_table_of_the_method) {
  // m_w -> (heads, FFN neurons) for BERT-base (method doc, section 1.1)
  struct Row { double w; int heads, neurons; };
  for (auto r : {Row{1.0, 12, 3072}, Row{0.75, 9, 2304}, Row{0.5, 6, 1536}, Row{0.25, 3, 768},
                 Row{5.0 / 6, 10, 2560}, Row{2.0 / 3, 8, 2048}, Row{0.125, 2, 512}, Row{0.375, 4, 1024},
                 Row{0.625, 8, 2048}, Row{0.875, 10, 2560}}) {
    const int h = dynabert_heads(12, r.w);
    BOOST_TEST(h == r.heads, "m_w " << r.w);
    BOOST_TEST(dynabert_neurons(h, 12, 3072) == r.neurons, "m_w " << r.w);
    for (int n = 1; n <= 12; ++n) BOOST_TEST(dynabert_neurons(n, 12, 768) == 64 * n);
  }
}

BOOST_AUTO_TEST_CASE(depth_table_of_the_method) {
  using V = std::vector<int>;
  BOOST_TEST(dynabert_layers(12, 1.0) == V({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}), boost::test_tools::per_element());
  BOOST_TEST(dynabert_layers(12, 0.75) == V({0, 1, 2, 4, 5, 6, 8, 9, 10}), boost::test_tools::per_element());
  BOOST_TEST(dynabert_layers(12, 0.5) == V({0, 2, 4, 6, 8, 10}), boost::test_tools::per_element());
  BOOST_TEST(dynabert_layers(12, 0.25) == V({0, 4, 8}), boost::test_tools::per_element());
  BOOST_TEST(dynabert_layers(12, 2.0 / 3) == V({0, 1, 3, 4, 6, 7, 9, 10}), boost::test_tools::per_element());
  BOOST_TEST(dynabert_layers(12, 0.8) == V({0, 1, 2, 3, 5, 6, 7, 8, 10, 11}), boost::test_tools::per_element());
  BOOST_TEST(dynabert_layers(12, 0.6) == V({0, 1, 3, 5, 6, 8, 10}), boost::test_tools::per_element());
  BOOST_TEST(dynabert_layers(12, 1.0 / 3) == V({0, 3, 6, 9}), boost::test_tools::per_element());
  // float caveat of the method doc: 3 / 0.3 = 10.000000000000002 -> 10
  BOOST_TEST(dynabert_layers(12, 0.3)[3] == 10);
}

BOOST_AUTO_TEST_CASE(teacher_indices_and_counts) {
  BertConfig c;
  auto s = SubNetwork::dynabert(c, 1.0, 0.75);
  BOOST_TEST(s.teacher_state_indices(c) == std::vector<int>({0, 1, 2, 4, 5, 6, 8, 9, 10, 12}),
             boost::test_tools::per_element());
  // Parameter counts and FLOPs of method doc section 8.2 (encoder params in M, GFLOPs at 128)
  struct Row { double w, d, params_m, gflops; };
  for (auto r : {Row{1, 1, 85.1, 22.35}, Row{1, 0.75, 63.8, 16.76}, Row{0.75, 0.75, 47.9, 12.57},
                 Row{0.5, 1, 42.6, 11.17}, Row{0.25, 0.75, 16.0, 4.19}, Row{0.25, 0.5, 10.7, 2.79}}) {
    auto n = SubNetwork::dynabert(c, r.w, r.d);
    BOOST_TEST(std::abs(n.encoder_params(c) / 1e6 - r.params_m) < 0.051, r.w << "/" << r.d);
    BOOST_TEST(std::abs(n.encoder_flops(c, 128) / 1e9 - r.gflops) < 0.006, r.w << "/" << r.d);
  }
}

BOOST_AUTO_TEST_CASE(impossible_multipliers_are_rejected) {
  BertConfig c;
  BOOST_TEST(has(error_of([&] { SubNetwork::dynabert(c, 0.0, 1.0); }), "outside (0, 1]"));
  BOOST_TEST(has(error_of([&] { SubNetwork::dynabert(c, 1.5, 1.0); }), "outside (0, 1]"));
  BOOST_TEST(has(error_of([&] { SubNetwork::dynabert(c, 1.0, -0.5); }), "depth multiplier"));
  BOOST_TEST(has(error_of([&] { SubNetwork::dynabert(c, 0.04, 1.0); }), "keeps no head"));
  BOOST_TEST(has(error_of([&] { SubNetwork::dynabert(c, 1.0, 0.04); }), "keeps no layer"));
  BOOST_TEST(has(error_of([&] { SubNetwork::custom(c, {0, 0}, std::vector<int>(12, 12), std::vector<int>(12, 3072)); }),
                 "strictly increasing"));
  BOOST_TEST(has(error_of([&] { SubNetwork::custom(c, {0}, std::vector<int>(12, 13), std::vector<int>(12, 3072)); }),
                 "keeps 13 heads"));
  BOOST_TEST(has(error_of([&] { SubNetwork::custom(c, {12}, std::vector<int>(12, 1), std::vector<int>(12, 1)); }),
                 "outside 0..11"));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(config_json)

BOOST_AUTO_TEST_CASE(parses_hugging_face_fields) {
  auto j = io::parse_json(R"({"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
    "intermediate_size": 1024, "vocab_size": 30522, "hidden_act": "gelu_new", "layer_norm_eps": 1e-5,
    "id2label": {"0": "ham", "1": "spam"}, "pruned_heads": {"1": [3, 0]}, "unknown_key": true})", "test");
  auto c = BertConfig::from_json(j);
  BOOST_TEST(c.hidden_size == 256);
  BOOST_TEST(c.head_dim() == 64);
  BOOST_TEST((c.hidden_act == Activation::kGeluTanh));
  BOOST_TEST(c.layer_norm_eps == 1e-5);
  BOOST_TEST(c.num_labels() == 2);
  BOOST_TEST(c.id2label[1] == "spam");
  BOOST_TEST(c.layer_heads(1) == 2);
  BOOST_TEST(c.layer_heads(0) == 4);
  auto back = BertConfig::from_json(c.to_json());
  BOOST_TEST(back.layer_heads(1) == 2);
  BOOST_TEST(back.id2label == c.id2label, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(rejects_inconsistent_configs) {
  BOOST_TEST(has(error_of([] { BertConfig::from_json(io::parse_json(R"({"hidden_size": 100, "num_attention_heads": 12})", "t")); }),
                 "not a multiple"));
  BOOST_TEST(has(error_of([] { BertConfig::from_json(io::parse_json(R"({"hidden_act": "swish"})", "t")); }),
                 "hidden_act 'swish'"));
  BOOST_TEST(has(error_of([] { BertConfig::from_json(io::parse_json(R"({"hidden_size": "768"})", "t")); }),
                 "'hidden_size' must be an integer"));
  BOOST_TEST(has(error_of([] { BertConfig::from_json(io::parse_json(R"({"pruned_heads": {"0": [0,1,2,3,4,5,6,7,8,9,10,11]}})", "t")); }),
                 "removes every head"));
  TempDir d;
  { std::ofstream(d / "config.json") << "{ not json"; }
  BOOST_TEST(has(error_of([&] { BertConfig::from_file(d / "config.json"); }), "not valid JSON"));
  // integers are never narrowed, and sizes are bounded before anything is allocated
  auto cfg = [](const std::string& j) { return error_of([&] { BertConfig::from_json(io::parse_json(j, "config.json")); }); };
  BOOST_TEST(has(cfg(R"({"num_labels": 2147483647})"), "num_labels' = 2147483647 is outside 0..65536"));
  BOOST_TEST(has(cfg(R"({"num_labels": 4294967298})"), "is outside"));
  BOOST_TEST(has(cfg(R"({"vocab_size": 1099511628288})"), "'vocab_size' = 1099511628288 is outside"));
  BOOST_TEST(has(cfg(R"({"vocab_size": 2147483647})"), "is outside 1..16777216"));
  BOOST_TEST(has(cfg(R"({"hidden_size": 0})"), "is outside 1.."));
  BOOST_TEST(has(cfg(R"({"pruned_heads": {"x": [0]}})"), "is not a layer number"));
  BOOST_TEST(has(cfg(R"({"id2label": {"0": "a", "7": "b"}})"), "is not an id in 0..1"));
  { std::ofstream(d / "deep.json") << std::string(100000, '[') << std::string(100000, ']'); }
  BOOST_TEST(has(error_of([&] { io::read_json_file(d / "deep.json"); }), "nests deeper than 32"));
  BOOST_TEST(has(error_of([&] { io::read_json_file(d.path.string()); }), "is a folder"));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(safetensors)

BOOST_AUTO_TEST_CASE(write_read_round_trip_and_alignment) {
  TempDir d;
  std::vector<float> a = {1, 2, 3, 4, 5, 6}, b = {-1.5f};
  io::SafetensorsWriter w;
  w.add("a", {2, 3}, a.data());
  w.add("b", {1}, b.data());
  w.add_metadata("note", "hello");
  w.write(d / "x.safetensors");
  BOOST_TEST(!fs::exists(d / "x.safetensors.tmp." + std::to_string(::getpid())));
  std::ifstream f(d / "x.safetensors", std::ios::binary);
  std::uint64_t n = 0;
  f.read(reinterpret_cast<char*>(&n), 8);
  BOOST_TEST(n % 8 == 0u);  // data starts 8-byte aligned
  io::SafetensorsFile r(d / "x.safetensors");
  BOOST_TEST(r.metadata().at("note") == "hello");
  BOOST_TEST(r.read<float>("a") == a, boost::test_tools::per_element());
  BOOST_TEST(r.read<double>("b")[0] == -1.5);
  BOOST_TEST((r.info("a").shape == std::vector<std::int64_t>{2, 3}));
}

BOOST_AUTO_TEST_CASE(reads_f16_bf16_f64) {
  TempDir d;
  // 1.0 and -2.5 in F16 (0x3c00, 0xc100) and BF16 (0x3f80, 0xc020); 0.25 in F64.
  std::string data;
  auto put16 = [&](std::uint16_t v) { data.push_back(char(v & 0xff)); data.push_back(char(v >> 8)); };
  put16(0x3c00); put16(0xc100); put16(0x3f80); put16(0xc020);
  double q = 0.25;
  data.append(reinterpret_cast<const char*>(&q), 8);
  write_raw(d / "m.safetensors",
            R"({"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[4,8]},"d":{"dtype":"F64","shape":[1],"data_offsets":[8,16]}})",
            data);
  io::SafetensorsFile r(d / "m.safetensors");
  BOOST_TEST(r.read<float>("h") == std::vector<float>({1.0f, -2.5f}), boost::test_tools::per_element());
  BOOST_TEST(r.read<float>("b") == std::vector<float>({1.0f, -2.5f}), boost::test_tools::per_element());
  BOOST_TEST(r.read<float>("d")[0] == 0.25f);
  BOOST_TEST(io::half_to_float(0x0001) == 5.960464477539063e-08f);  // smallest subnormal
}

BOOST_AUTO_TEST_CASE(each_malformed_file_is_named) {
  TempDir d;
  const std::string p = d / "bad.safetensors";
  const std::string ok_entry = R"("t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  auto err = [&] { return error_of([&] { io::SafetensorsFile f(p); }); };
  struct Case { const char* what; std::string header; std::string data; long len; std::string expect; };
  std::vector<Case> cases = {
      {"header length beyond file", "{" + ok_entry + "}", std::string(8, '\0'), 1000, "beyond the end of the file"},
      {"header over 100 MB", "{}", "", 200000000, "100 MB"},
      {"not JSON", "{\"t\": [", std::string(8, '\0'), -1, "not valid JSON"},
      {"not an object", "[1, 2]", "", -1, "not a JSON object"},
      {"duplicate name", "{" + ok_entry + "," + R"("t":{"dtype":"F32","shape":[2],"data_offsets":[8,16]})" + "}",
       std::string(16, '\0'), -1, "'t' appears twice"},
      {"unknown dtype", R"({"t":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0'), -1,
       "unknown dtype 'F33'"},
      {"shape vs bytes", R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0'), -1,
       "8 bytes for shape of 3"},
      {"offset out of range", R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", std::string(8, '\0'), -1,
       "beyond the data buffer"},
      {"overlap", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
       std::string(12, '\0'), -1, "overlaps"},
      {"hole", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
       std::string(12, '\0'), -1, "hole of 4 bytes"},
      {"trailing bytes", "{" + ok_entry + "}", std::string(12, '\0'), -1, "not covered"},
      {"metadata not string", R"({"__metadata__":{"k":1},)" + ok_entry + "}", std::string(8, '\0'), -1,
       "metadata value 'k'"},
      {"negative dim", R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", std::string(8, '\0'), -1,
       "negative"},
      {"reversed offsets", R"({"t":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", std::string(8, '\0'), -1,
       "reversed"},
      // element counts that would wrap in 64 bits
      {"count wraps (2^32 x 2^30)", R"({"t":{"dtype":"F32","shape":[4294967296,1073741824],"data_offsets":[0,0]}})", "", -1,
       "overflows"},
      {"count wraps (2^62 + 1)", R"({"t":{"dtype":"F32","shape":[4611686018427387905],"data_offsets":[0,4]}})",
       std::string(4, '\0'), -1, "overflows"},
      {"count wraps (2^63 + 1, 2)", R"({"t":{"dtype":"F32","shape":[9223372036854775809,2],"data_offsets":[0,0]}})", "", -1,
       "overflows"},
      {"nested too deep", "{\"t\":" + std::string(5000, '[') + std::string(5000, ']') + "}", "", -1, "nests deeper"},
  };
  for (auto& c : cases) {
    write_raw(p, c.header, c.data, c.len);
    const std::string e = err();
    BOOST_TEST(has(e, c.expect), c.what << ": got '" << e << "'");
    BOOST_TEST(has(e, p), c.what << ": message does not name the file");
  }
  { std::ofstream(p, std::ios::binary) << "abc"; }
  BOOST_TEST(has(err(), "truncated"));
  // A dtype that cannot be converted to float is reported when read.
  write_raw(p, R"({"t":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0'));
  BOOST_TEST(has(error_of([&] { io::SafetensorsFile(p).read<float>("t"); }), "dtype I32"));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(checkpoints)

namespace {
BertConfig small_config() {
  BertConfig c;
  c.vocab_size = 50; c.hidden_size = 16; c.num_hidden_layers = 2; c.num_attention_heads = 2;
  c.intermediate_size = 32; c.max_position_embeddings = 20;
  return c;
}
}  // namespace

BOOST_AUTO_TEST_CASE(save_load_round_trip_with_classifier) {
  TempDir d;
  BertWeights<float> w(small_config(), HeadSpec{true, 2});
  w.init_random(7, 0.1, true);
  w.save(d / "ckpt", {{"dynabert", "test"}});
  io::CheckpointReader r(d / "ckpt");
  BOOST_TEST(r.contains("encoder.layer.1.output.dense.weight"));
  BOOST_TEST(r.metadata().at("dynabert") == "test");
  auto back = BertWeights<float>::load(d / "ckpt");
  BOOST_TEST(back.heads().num_labels == 2);
  BOOST_TEST(std::equal(back.buffer().begin(), back.buffer().end(), w.buffer().begin()));
}

BOOST_AUTO_TEST_CASE(sharded_index_and_legacy_names) {
  TempDir d;
  BertWeights<float> w(small_config(), HeadSpec{true, 0});
  w.init_random(3, 0.1, true);
  // Shard 1: embeddings with old gamma/beta names and a bert. prefix; shard 2: everything else.
  io::SafetensorsWriter s1, s2;
  io::Json map = io::Json::object();
  for (auto& s : w.specs()) {
    std::string name = s.name;
    const bool emb = name.rfind("embeddings.", 0) == 0;
    if (emb) {
      if (name == "embeddings.LayerNorm.weight") name = "embeddings.LayerNorm.gamma";
      if (name == "embeddings.LayerNorm.bias") name = "embeddings.LayerNorm.beta";
      name = "bert." + name;
    }
    (emb ? s1 : s2).add(name, s.shape, w.tensor(s.name));
    map[name] = emb ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  s1.write(d / "model-00001-of-00002.safetensors");
  s2.write(d / "model-00002-of-00002.safetensors");
  std::ofstream(d / "model.safetensors.index.json") << io::Json{{"metadata", io::Json::object()}, {"weight_map", map}}.dump();
  std::ofstream(d / "config.json") << w.config().to_json().dump();
  auto back = BertWeights<float>::load(d.path.string());
  BOOST_TEST(std::equal(back.buffer().begin(), back.buffer().end(), w.buffer().begin()));
  BOOST_TEST(!back.heads().num_labels);
}

BOOST_AUTO_TEST_CASE(missing_and_misshapen_tensors_are_named) {
  TempDir d;
  BertWeights<float> w(small_config(), HeadSpec{true, 0});
  w.save(d / "ok");
  // Wrong shape for config.json: claim a bigger FFN.
  auto cfg = io::read_json_file(d / "ok/config.json");
  cfg["intermediate_size"] = 64;
  std::ofstream(d / "ok/config.json") << cfg.dump();
  auto e = error_of([&] { BertWeights<float>::load(d / "ok"); });
  BOOST_TEST(has(e, "encoder.layer.0.intermediate.dense.weight"), e);
  BOOST_TEST(has(e, "[32, 16]"), e);
  BOOST_TEST(has(e, "model.safetensors"), e);
  // A tensor missing.
  io::SafetensorsWriter partial;
  partial.add("embeddings.word_embeddings.weight", {50, 16}, w.tensor("embeddings.word_embeddings.weight"));
  fs::create_directories(d / "partial");
  partial.write(d / "partial/model.safetensors");
  std::ofstream(d / "partial/config.json") << w.config().to_json().dump();
  e = error_of([&] { BertWeights<float>::load(d / "partial"); });
  BOOST_TEST(has(e, "'embeddings.position_embeddings.weight' is missing"), e);
  // Duplicate after normalisation.
  io::SafetensorsWriter dup;
  float x = 0;
  dup.add("bert.pooler.dense.bias", {1}, &x);
  dup.add("pooler.dense.bias", {1}, &x);
  dup.write(d / "dup.safetensors");
  BOOST_TEST(has(error_of([&] { io::CheckpointReader r(d / "dup.safetensors"); }), "after normalising"));
  // Folder without weights; pytorch_model.bin only.
  fs::create_directories(d / "empty");
  BOOST_TEST(has(error_of([&] { io::CheckpointReader r(d / "empty"); }), "no model.safetensors"));
  std::ofstream(d / "empty/pytorch_model.bin") << "x";
  BOOST_TEST(has(error_of([&] { io::CheckpointReader r(d / "empty"); }), "convert_hf.py"));
  BOOST_TEST(has(error_of([&] { io::CheckpointReader r(d / "nowhere"); }), "no such file"));
  // A config.json that claims a huge vocabulary fails on the shapes, before allocating anything.
  cfg["intermediate_size"] = 32;
  cfg["vocab_size"] = 6000000;
  std::ofstream(d / "ok/config.json") << cfg.dump();
  const long before = aligned_allocations().load();
  e = error_of([&] { BertWeights<float>::load(d / "ok"); });
  BOOST_TEST(has(e, "word_embeddings.weight' has shape [50, 16] but config.json implies [6000000, 16]"), e);
  BOOST_TEST(aligned_allocations().load() == before);
  // NaN or infinity in a weight: named at load.
  w.tensor("encoder.layer.1.output.dense.bias")[3] = std::numeric_limits<float>::quiet_NaN();
  w.save(d / "nan");
  e = error_of([&] { BertWeights<float>::load(d / "nan"); });
  BOOST_TEST(has(e, "'encoder.layer.1.output.dense.bias' holds nan at element 3"), e);
  // An output folder that cannot be made: a named IoError, not a filesystem exception.
  { std::ofstream(d / "a_file") << "x"; }
  BOOST_TEST(has(error_of([&] { w.save(d / "a_file/sub"); }), "cannot create the folder"));
}

BOOST_AUTO_TEST_CASE(pruned_heads_change_layer_shapes) {
  auto c = small_config();
  c.num_attention_heads = 4;
  c.pruned_heads[1] = {0, 2};
  BertWeights<float> w(c);
  BOOST_TEST(w.spec("encoder.layer.1.attention.self.query.weight").shape == std::vector<std::int64_t>({8, 16}),
             boost::test_tools::per_element());
  BOOST_TEST(w.spec("encoder.layer.1.attention.output.dense.weight").shape == std::vector<std::int64_t>({16, 8}),
             boost::test_tools::per_element());
  BOOST_TEST(w.spec("encoder.layer.0.attention.self.query.weight").shape[0] == 16);
}

BOOST_AUTO_TEST_SUITE_END()
