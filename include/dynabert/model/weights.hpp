// BertWeights<T>: every parameter of a BERT encoder (+ optional pooler and classifier) in one
// flat buffer, with named views in Hugging Face's layout ([out, in] for linear weights). This is
// the trainable / serialisable form; `ElasticBert` packs the linear weights from it for inference.
#pragma once
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "dynabert/core/aligned.hpp"
#include "dynabert/core/error.hpp"
#include "dynabert/io/checkpoint.hpp"
#include "dynabert/io/safetensors.hpp"
#include "dynabert/model/config.hpp"

namespace dynabert {

/// Name, shape and place of one parameter in the flat buffer.
struct TensorSpec {
  std::string name;  ///< normalised Hugging Face name (no "bert." prefix)
  std::vector<std::int64_t> shape;
  std::size_t offset = 0;
  std::size_t numel() const {
    std::size_t n = 1;
    for (auto d : shape) n *= static_cast<std::size_t>(d);
    return n;
  }
};

/// Which optional heads a weight set carries.
struct HeadSpec {
  bool pooler = true;
  /// Classifier outputs (0: no classifier; 1: regression).
  int num_labels = 0;
  /// Masked-language-model head (cls.predictions.*; decoder tied to the word embeddings).
  bool mlm = false;
};

/// Typed pointers into the flat buffer for one encoder layer.
template <class T>
struct LayerParams {
  T *q_w, *q_b, *k_w, *k_b, *v_w, *v_b;   ///< [a, H], [a] with a = heads * head_dim, rows head-major
  T *o_w, *o_b;                           ///< [H, a], [H]
  T *ln1_g, *ln1_b;                       ///< attention output LayerNorm [H]
  T *i_w, *i_b;                           ///< [I, H], [I]
  T *f_w, *f_b;                           ///< [H, I], [H]
  T *ln2_g, *ln2_b;                       ///< FFN output LayerNorm [H]
};

/// All parameters of a BERT in one flat, aligned buffer.
template <class T>
class BertWeights {
 public:
  BertWeights() = default;
  /// Zero-initialised weights for `config` with the given heads.
  explicit BertWeights(BertConfig config, HeadSpec heads = {}) : config_(std::move(config)), heads_(heads) {
    config_.validate();
    if (heads_.num_labels > 0 && config_.num_labels() != heads_.num_labels) {
      config_.id2label.clear();
      for (int i = 0; i < heads_.num_labels; ++i) config_.id2label.push_back("LABEL_" + std::to_string(i));
    }
    specs_ = schema(config_, heads_);
    std::size_t off = 0;
    for (auto& s : specs_) {
      s.offset = off;
      off += round_up(s.numel(), kAlignment / sizeof(T));
      index_[s.name] = &s - specs_.data();
    }
    data_.resize(off, true);
  }
  BertWeights(const BertWeights& o) : config_(o.config_), heads_(o.heads_), specs_(o.specs_), index_(o.index_), data_(o.data_) {}
  BertWeights& operator=(const BertWeights& o) {
    BertWeights t(o);
    std::swap(*this, t);
    return *this;
  }
  BertWeights(BertWeights&&) noexcept = default;
  BertWeights& operator=(BertWeights&&) noexcept = default;

  /// The same parameters converted to another scalar type (tensor by tensor: the flat layouts of
  /// different types differ by their alignment padding).
  template <class U>
  BertWeights<U> cast() const {
    BertWeights<U> out(config_, heads_);
    for (auto& s : specs_) {
      const T* src = data_.data() + s.offset;
      U* dst = out.tensor(s.name);
      for (std::size_t i = 0; i < s.numel(); ++i) dst[i] = static_cast<U>(src[i]);
    }
    return out;
  }

  /// The tensors of a model with this config, in a fixed order.
  static std::vector<TensorSpec> schema(const BertConfig& c, const HeadSpec& heads) {
    const std::int64_t H = c.hidden_size;
    std::vector<TensorSpec> s;
    auto add = [&](std::string n, std::vector<std::int64_t> shape) { s.push_back({std::move(n), std::move(shape), 0}); };
    add("embeddings.word_embeddings.weight", {c.vocab_size, H});
    add("embeddings.position_embeddings.weight", {c.max_position_embeddings, H});
    add("embeddings.token_type_embeddings.weight", {c.type_vocab_size, H});
    add("embeddings.LayerNorm.weight", {H});
    add("embeddings.LayerNorm.bias", {H});
    for (int l = 0; l < c.num_hidden_layers; ++l) {
      const std::string p = "encoder.layer." + std::to_string(l) + ".";
      const std::int64_t a = static_cast<std::int64_t>(c.layer_heads(l)) * c.head_dim();
      const std::int64_t I = c.layer_intermediate(l);
      for (const char* qkv : {"query", "key", "value"}) {
        add(p + "attention.self." + qkv + ".weight", {a, H});
        add(p + "attention.self." + qkv + ".bias", {a});
      }
      add(p + "attention.output.dense.weight", {H, a});
      add(p + "attention.output.dense.bias", {H});
      add(p + "attention.output.LayerNorm.weight", {H});
      add(p + "attention.output.LayerNorm.bias", {H});
      add(p + "intermediate.dense.weight", {I, H});
      add(p + "intermediate.dense.bias", {I});
      add(p + "output.dense.weight", {H, I});
      add(p + "output.dense.bias", {H});
      add(p + "output.LayerNorm.weight", {H});
      add(p + "output.LayerNorm.bias", {H});
    }
    if (heads.pooler) {
      add("pooler.dense.weight", {H, H});
      add("pooler.dense.bias", {H});
    }
    if (heads.num_labels > 0) {
      add("classifier.weight", {heads.num_labels, H});
      add("classifier.bias", {heads.num_labels});
    }
    if (heads.mlm) {
      add("cls.predictions.transform.dense.weight", {H, H});
      add("cls.predictions.transform.dense.bias", {H});
      add("cls.predictions.transform.LayerNorm.weight", {H});
      add("cls.predictions.transform.LayerNorm.bias", {H});
      add("cls.predictions.bias", {c.vocab_size});
    }
    return s;
  }

  const BertConfig& config() const { return config_; }
  const HeadSpec& heads() const { return heads_; }
  const std::vector<TensorSpec>& specs() const { return specs_; }
  bool has(const std::string& name) const { return index_.count(name) != 0; }
  const TensorSpec& spec(const std::string& name) const {
    auto it = index_.find(name);
    DYNABERT_REQUIRE(it != index_.end(), InputError, "model has no tensor '", name, "'");
    return specs_[it->second];
  }
  T* tensor(const std::string& name) { return data_.data() + spec(name).offset; }
  const T* tensor(const std::string& name) const { return data_.data() + spec(name).offset; }
  AlignedBuffer<T>& buffer() { return data_; }
  const AlignedBuffer<T>& buffer() const { return data_; }
  std::size_t num_parameters() const {
    std::size_t n = 0;
    for (auto& s : specs_) n += s.numel();
    return n;
  }

  /// Typed views of layer l.
  LayerParams<T> layer(int l) {
    const std::string p = "encoder.layer." + std::to_string(l) + ".";
    auto t = [&](const char* n) { return tensor(p + n); };
    return {t("attention.self.query.weight"), t("attention.self.query.bias"),
            t("attention.self.key.weight"),   t("attention.self.key.bias"),
            t("attention.self.value.weight"), t("attention.self.value.bias"),
            t("attention.output.dense.weight"), t("attention.output.dense.bias"),
            t("attention.output.LayerNorm.weight"), t("attention.output.LayerNorm.bias"),
            t("intermediate.dense.weight"), t("intermediate.dense.bias"),
            t("output.dense.weight"), t("output.dense.bias"),
            t("output.LayerNorm.weight"), t("output.LayerNorm.bias")};
  }
  LayerParams<const T> layer(int l) const {
    auto p = const_cast<BertWeights*>(this)->layer(l);
    return {p.q_w, p.q_b, p.k_w, p.k_b, p.v_w, p.v_b, p.o_w, p.o_b, p.ln1_g, p.ln1_b,
            p.i_w, p.i_b, p.f_w, p.f_b, p.ln2_g, p.ln2_b};
  }

  /// Hugging Face-style initialisation: weights ~ N(0, stddev), biases 0, LayerNorm 1/0.
  /// `perturb_all` also randomises biases and LayerNorm parameters (tests use it so that a
  /// mix-up of any two parameters changes the outputs).
  void init_random(std::uint64_t seed, double stddev = 0.02, bool perturb_all = false) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> nd(0.0, stddev);
    for (auto& s : specs_) {
      T* p = data_.data() + s.offset;
      const bool is_ln = s.name.find("LayerNorm") != std::string::npos;
      const bool is_bias = s.name.size() > 5 && s.name.compare(s.name.size() - 5, 5, ".bias") == 0;
      for (std::size_t i = 0; i < s.numel(); ++i) {
        if (is_ln && !is_bias) p[i] = perturb_all ? T(1 + nd(rng) * 5) : T(1);
        else if (is_bias || is_ln) p[i] = perturb_all ? T(nd(rng)) : T(0);
        else p[i] = T(nd(rng));
      }
    }
  }

  /// Loads from a checkpoint folder (config.json + safetensors), inferring the heads from the
  /// tensors present. Every tensor of the schema must be present with exactly its shape.
  static BertWeights load(const std::string& path) {
    io::CheckpointReader r(path);
    return load(r, r.config());
  }
  /// Loads from a reader with an explicit config.
  static BertWeights load(const io::CheckpointReader& r, BertConfig config) {
    HeadSpec heads;
    heads.pooler = r.contains("pooler.dense.weight");
    heads.mlm = r.contains("cls.predictions.transform.dense.weight");
    if (r.contains("classifier.weight")) {
      const auto& shape = r.info("classifier.weight").shape;
      DYNABERT_REQUIRE(shape.size() == 2, FormatError, r.file_name("classifier.weight"),
                       ": tensor 'classifier.weight' must be 2-D");
      heads.num_labels = static_cast<int>(shape[0]);
      DYNABERT_REQUIRE(config.num_labels() == 0 || config.num_labels() == heads.num_labels, FormatError,
                       "config.json declares ", config.num_labels(), " labels but classifier.weight has ",
                       heads.num_labels, " rows");
    }
    BertWeights w(std::move(config), heads);
    for (auto& s : w.specs_) {
      DYNABERT_REQUIRE(r.contains(s.name), FormatError,
                       r.folder().empty() ? std::string("checkpoint") : r.folder(), ": tensor '", s.name,
                       "' is missing");
      const auto& info = r.info(s.name);
      DYNABERT_REQUIRE(info.shape == s.shape, FormatError, r.file_name(s.name), ": tensor '", s.name,
                       "' has shape ", shape_str(info.shape), " but config.json implies ", shape_str(s.shape));
      r.read(s.name, w.data_.data() + s.offset, s.numel());
    }
    return w;
  }

  /// Writes a Hugging Face checkpoint folder: config.json and model.safetensors, names prefixed
  /// with "bert." when a classifier or MLM head is present (BertForSequenceClassification /
  /// BertForMaskedLM layout; the head tensors "classifier.*" and "cls.*" stay unprefixed).
  void save(const std::string& folder, const std::map<std::string, std::string>& metadata = {}) const {
    static_assert(std::is_same_v<T, float>, "checkpoints are written in F32");
    std::filesystem::create_directories(folder);
    io::SafetensorsWriter w;
    const bool prefixed = heads_.num_labels > 0 || heads_.mlm;
    for (auto& s : specs_) {
      const bool top = s.name.rfind("classifier.", 0) == 0 || s.name.rfind("cls.", 0) == 0;
      w.add((prefixed && !top ? "bert." : "") + s.name, s.shape, data_.data() + s.offset);
    }
    w.add_metadata("format", "pt");
    for (auto& [k, v] : metadata) w.add_metadata(k, v);
    w.write((std::filesystem::path(folder) / "model.safetensors").string());
    const std::string cfg = config_.to_json().dump(2);
    io::write_atomically((std::filesystem::path(folder) / "config.json").string(),
                         [&](std::ofstream& out) { out << cfg << "\n"; });
  }

  static std::string shape_str(const std::vector<std::int64_t>& s) {
    std::string r = "[";
    for (std::size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
  }

 private:
  BertConfig config_;
  HeadSpec heads_;
  std::vector<TensorSpec> specs_;
  std::map<std::string, std::size_t> index_;
  AlignedBuffer<T> data_;
};

}  // namespace dynabert
