// BertWeights<T>: every parameter of a BERT encoder (+ optional pooler, classifier and MLM head) in
// one flat buffer, with named views in Hugging Face's layout ([out, in] for linear weights). This
// is the trainable / serialisable form; models bind their blocks to it (training) or pack the
// linear weights from it (serving).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstring>
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
#include "dynabert/kernels/lowp.hpp"
#include "dynabert/core/params.hpp"
#include "dynabert/layers/embeddings.hpp"
#include "dynabert/layers/encoder_layer.hpp"
#include "dynabert/layers/heads.hpp"
#include "dynabert/model/config.hpp"

namespace dynabert {

/// Which optional heads a weight set carries.
struct HeadSpec {
  bool pooler = true;
  /// Classifier outputs (0: no classifier; 1: regression).
  int num_labels = 0;
  /// Masked-language-model head (cls.predictions.*; decoder tied to the word embeddings).
  bool mlm = false;
};

/// An int8 matrix as an INT8 checkpoint stores it: rows quantized symmetrically
/// (kernels::quantize_s8), q [rows, cols] and one scale per row.
struct QuantizedMatrix {
  std::vector<std::int8_t> q;
  std::vector<float> scale;
  int rows = 0, cols = 0;
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

/// All parameters of a BERT in one flat, aligned buffer (a ParameterSet whose schema the blocks
/// declare, in Hugging Face's names and order).
template <class T>
class BertWeights : public ParameterSet<T> {
 public:
  BertWeights() = default;
  /// Zero-initialised weights for `config` with the given heads.
  explicit BertWeights(BertConfig config, HeadSpec heads = {})
      : ParameterSet<T>(schema(prepared(config, heads), family_heads(config, heads))), config_(std::move(config)),
        heads_(family_heads(config_, heads)) {}
  /// `heads` as the family has them: RoBERTa has no pooler of its own (its classification head's
  /// dense layer plays that part), so without a classifier there is none.
  static HeadSpec family_heads(const BertConfig& c, HeadSpec heads) {
    if (c.model_type == ModelType::kRoberta && heads.num_labels == 0) heads.pooler = false;
    return heads;
  }
  BertWeights(const BertWeights&) = default;
  BertWeights(BertWeights&&) noexcept = default;
  /// Copies values in place when the layouts agree (views into this set stay valid).
  BertWeights& operator=(const BertWeights& o) {
    ParameterSet<T>::operator=(o);
    config_ = o.config_;
    heads_ = o.heads_;
    return *this;
  }
  BertWeights& operator=(BertWeights&& o) noexcept {
    ParameterSet<T>::operator=(std::move(o));
    config_ = std::move(o.config_);
    heads_ = o.heads_;
    return *this;
  }

  /// The same parameters converted to another scalar type (tensor by tensor: the flat layouts of
  /// different types differ by their alignment padding).
  template <class U>
  BertWeights<U> cast() const {
    BertWeights<U> out(config_, heads_);
    out.copy_values_from(*this);
    return out;
  }

  /// The tensors of a model with this config, in a fixed order.
  static Schema schema(const BertConfig& c, const HeadSpec& heads) {
    Schema s;
    const int H = c.hidden_size;
    layers::Embeddings<T>::declare(s, "embeddings.", embedding_shape(c));
    for (int l = 0; l < c.num_hidden_layers; ++l)
      layers::EncoderLayer<T>::declare(s, "encoder.layer." + std::to_string(l) + ".", layer_shape(c, l));
    const FamilyNames& n = c.names();
    if (heads.pooler) layers::Pooler<T>::declare_dense(s, n.pooler, H);
    if (heads.num_labels > 0) layers::Classifier<T>::declare(s, n.classifier, H, heads.num_labels);
    if (heads.mlm) layers::MlmHead<T>::declare(s, n.mlm, n.mlm_dense, n.mlm_norm, H, c.vocab_size);
    return s;
  }
  static layers::EmbeddingShape embedding_shape(const BertConfig& c) {
    return {c.vocab_size, c.max_position_embeddings, c.type_vocab_size, c.hidden_size, c.layer_norm_eps, c.position_offset()};
  }
  static layers::EncoderLayerShape layer_shape(const BertConfig& c, int l) {
    layers::EncoderLayerShape s;
    s.attention = {c.hidden_size, c.layer_heads(l), c.head_dim()};
    s.ffn = {c.hidden_size, c.layer_intermediate(l), c.hidden_act};
    s.eps = c.layer_norm_eps;
    return s;
  }

  const BertConfig& config() const { return config_; }
  const HeadSpec& heads() const { return heads_; }

  /// Whether `name` is one of the matrices an INT8 checkpoint stores in int8: the encoder layers'
  /// Q, K, V, attention-output, FFN-in and FFN-out weights.
  static bool int8_matrix(const std::string& name) {
    if (name.rfind("encoder.layer.", 0) != 0) return false;
    for (const char* end : {".attention.self.query.weight", ".attention.self.key.weight", ".attention.self.value.weight",
                            ".attention.output.dense.weight", ".intermediate.dense.weight", ".output.dense.weight"})
      if (name.size() > std::strlen(end) && name.compare(name.size() - std::strlen(end), std::strlen(end), end) == 0 &&
          name.find("LayerNorm") == std::string::npos)
        return true;
    return false;
  }
  /// The int8 matrices of an INT8 checkpoint this set was loaded from, while the parameters have
  /// not changed since (then the float values are exactly q x scale); null otherwise.
  const QuantizedMatrix* quantized(const std::string& name) const {
    if (this->version() != quantized_version_) return nullptr;
    const auto it = quantized_.find(name);
    return it == quantized_.end() ? nullptr : &it->second;
  }
  using ParameterSet<T>::specs;
  using ParameterSet<T>::has;
  using ParameterSet<T>::spec;
  using ParameterSet<T>::tensor;
  using ParameterSet<T>::buffer;

  /// Typed views of layer l (mutable: counts as a change).
  LayerParams<T> layer(int l) {
    this->touch();
    return layer_of<T>(*this, l);
  }
  LayerParams<const T> layer(int l) const { return layer_of<const T>(*this, l); }

  /// Hugging Face-style initialisation: weights ~ N(0, stddev), biases 0, LayerNorm 1/0.
  /// `perturb_all` also randomises biases and LayerNorm parameters (tests use it so that a
  /// mix-up of any two parameters changes the outputs).
  void init_random(std::uint64_t seed, double stddev = 0.02, bool perturb_all = false) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> nd(0.0, stddev);
    T* base = buffer().data();
    for (auto& s : specs()) {
      T* p = base + s.offset;
      // LayerNorm: BERT's "...LayerNorm.weight" and RoBERTa's LM head "lm_head.layer_norm.weight"
      const bool is_ln = s.name.find("LayerNorm") != std::string::npos || s.name.find("layer_norm") != std::string::npos;
      const bool is_bias = s.name.size() > 5 && s.name.compare(s.name.size() - 5, 5, ".bias") == 0;
      for (std::size_t i = 0; i < s.numel(); ++i) {
        if (is_ln && !is_bias) p[i] = perturb_all ? T(1 + nd(rng) * 5) : T(1);
        else if (is_bias || is_ln) p[i] = perturb_all ? T(nd(rng)) : T(0);
        else p[i] = T(nd(rng));
      }
    }
  }

  /// Loads from a checkpoint folder (config.json + safetensors), inferring the heads from the
  /// tensors present. Every tensor of the schema must be present with exactly its shape. A
  /// config.json without model_type (older than the field) is read as RoBERTa when its
  /// architectures or the tensor names say so.
  static BertWeights load(const std::string& path) {
    io::CheckpointReader r(path);
    DYNABERT_REQUIRE(!r.folder().empty(), FormatError, path, ": a single safetensors file has no config.json; load a folder");
    const std::string cfg_path = (std::filesystem::path(r.folder()) / "config.json").string();
    io::Json j = io::read_json_file(cfg_path);
    if (j.is_object() && !j.find("model_type") && names_of(r) == ModelType::kRoberta) j["model_type"] = "roberta";
    return load(r, BertConfig::from_json(j, cfg_path));
  }
  /// The family a checkpoint's tensor names belong to, as far as they say (BERT when neutral).
  static ModelType names_of(const io::CheckpointReader& r) {
    return r.had_prefix("roberta.") || r.contains("classifier.out_proj.weight") || r.contains("lm_head.dense.weight")
               ? ModelType::kRoberta
               : ModelType::kBert;
  }
  /// Loads from a reader with an explicit config.
  static BertWeights load(const io::CheckpointReader& r, BertConfig config) {
    {  // the names must be the family's: a head of the other family would otherwise be dropped silently
      const bool bert_names = r.had_prefix("bert.") || r.contains("classifier.weight") ||
                              r.contains("cls.predictions.transform.dense.weight");
      const bool roberta_names = names_of(r) == ModelType::kRoberta;
      const bool roberta = config.model_type == ModelType::kRoberta;
      const std::string where = r.folder().empty() ? std::string("checkpoint") : r.folder();
      DYNABERT_REQUIRE(!(roberta ? bert_names : roberta_names), FormatError, where, ": config.json says model_type '",
                       config.names().type, "' but the tensors are named as in a ", roberta ? "BERT" : "RoBERTa",
                       " checkpoint (", roberta ? "bert., classifier.weight, cls.predictions" : "roberta., classifier.out_proj, lm_head",
                       ")");
    }
    HeadSpec heads;
    const FamilyNames& n = config.names();
    heads.pooler = r.contains(std::string(n.pooler) + "weight");
    heads.mlm = r.contains(std::string(n.mlm) + n.mlm_dense + "weight");
    if (const std::string cw = std::string(n.classifier) + "weight"; r.contains(cw)) {
      const auto& shape = r.info(cw).shape;
      DYNABERT_REQUIRE(shape.size() == 2, FormatError, r.file_name(cw), ": tensor '", cw, "' must be 2-D");
      DYNABERT_REQUIRE(shape[0] >= 1 && shape[0] <= BertConfig::kMaxLabels, FormatError, r.file_name(cw), ": tensor '", cw,
                       "' has ", shape[0], " rows (labels); 1 to ", BertConfig::kMaxLabels, " are accepted");
      heads.num_labels = static_cast<int>(shape[0]);
      DYNABERT_REQUIRE(config.num_labels() == 0 || config.num_labels() == heads.num_labels, FormatError,
                       "config.json declares ", config.num_labels(), " labels but ", cw, " has ", heads.num_labels, " rows");
    }
    heads = family_heads(config, heads);
    // every tensor present with its shape before anything is allocated: a config.json that
    // claims sizes its file does not hold fails here, cheaply
    const Schema expected = schema(prepared(config, heads), heads);
    for (auto& s : expected.specs()) {
      DYNABERT_REQUIRE(r.contains(s.name), FormatError,
                       r.folder().empty() ? std::string("checkpoint") : r.folder(), ": tensor '", s.name,
                       "' is missing");
      const auto& info = r.info(s.name);
      DYNABERT_REQUIRE(info.shape == s.shape, FormatError, r.file_name(s.name), ": tensor '", s.name,
                       "' has shape ", shape_str(info.shape), " but config.json implies ", shape_str(s.shape));
    }
    BertWeights w(std::move(config), heads);
    T* base = w.buffer().data();
    for (auto& s : w.specs()) {
      T* dst = base + s.offset;
      if (r.info(s.name).dtype == io::DType::kI8) {
        read_int8(r, s, dst, w.quantized_);
        continue;
      }
      r.read(s.name, dst, s.numel());
      for (std::size_t i = 0; i < s.numel(); ++i)  // NaN or infinity: a broken file, never silent garbage
        DYNABERT_REQUIRE(std::isfinite(static_cast<double>(dst[i])), FormatError, r.file_name(s.name), ": tensor '", s.name,
                         "' holds ", static_cast<double>(dst[i]), " at element ", i);
    }
    if (heads.mlm) {  // the decoder is the word embeddings: a file whose decoder differs cannot be served as stored
      const std::string dn = std::string(n.mlm) + "decoder.weight";
      if (r.contains(dn)) {
        const auto& info = r.info(dn);
        const TensorSpec& we = w.spec("embeddings.word_embeddings.weight");
        DYNABERT_REQUIRE(info.shape == we.shape, FormatError, r.file_name(dn), ": tensor '", dn, "' has shape ",
                         shape_str(info.shape), "; the tied decoder has the word embeddings' ", shape_str(we.shape));
        std::vector<T> dec(we.numel());
        r.read(dn, dec.data(), dec.size());
        DYNABERT_REQUIRE(std::equal(dec.begin(), dec.end(), w.tensor("embeddings.word_embeddings.weight")), FormatError,
                         r.file_name(dn), ": tensor '", dn, "' differs from the word embeddings; dynabert ties the MLM decoder "
                         "to them (an untied decoder is not supported)");
      }
    }
    w.quantized_version_ = w.version();
    return w;
  }

  /// Writes a Hugging Face checkpoint folder: config.json and model.safetensors, the encoder's
  /// names prefixed with "bert." ("roberta.") when a classifier or MLM head is present
  /// (Bert/RobertaForSequenceClassification or ForMaskedLM layout; the head tensors "classifier.*",
  /// "cls.*" and "lm_head.*" stay unprefixed; the tied decoder weight is not written).
  /// With `int8`, the encoder layers' linear weights are written as I8 with an F32 row scale
  /// "<name>_scale" (symmetric per output row; docs/formats.md), every other tensor in F32; a set
  /// loaded from an INT8 checkpoint writes its int8 values unchanged.
  void save(const std::string& folder, const std::map<std::string, std::string>& metadata = {}, bool int8 = false) const {
    static_assert(std::is_same_v<T, float>, "checkpoints are written in F32");
    io::create_folders(folder);
    io::SafetensorsWriter w;
    const bool prefixed = heads_.num_labels > 0 || heads_.mlm;
    std::map<std::string, QuantizedMatrix> fresh;  // quantized here (kept alive until written)
    const FamilyNames& fam = config_.names();
    for (auto& s : specs()) {
      const bool top = s.name.rfind("encoder.", 0) != 0 && s.name.rfind("embeddings.", 0) != 0 && s.name.rfind("pooler.", 0) != 0;
      const std::string name = (prefixed && !top ? fam.encoder_prefix : "") + s.name;
      if (int8 && int8_matrix(s.name)) {
        const QuantizedMatrix* q = quantized(s.name);
        if (!q) q = &(fresh[s.name] = quantize_matrix(this->data() + s.offset, static_cast<int>(s.shape[0]),
                                                      static_cast<int>(s.shape[1])));
        w.add(name, s.shape, q->q.data());
        w.add(name + "_scale", {s.shape[0]}, q->scale.data());
        continue;
      }
      w.add(name, s.shape, this->data() + s.offset);
    }
    w.add_metadata("format", "pt");
    if (int8) w.add_metadata("dynabert_int8", "encoder linear weights I8, symmetric per output row, scale in <name>_scale");
    for (auto& [k, v] : metadata) w.add_metadata(k, v);
    w.write((std::filesystem::path(folder) / "model.safetensors").string());
    io::Json cj = config_.to_json();
    if (heads_.mlm && heads_.num_labels == 0) cj["architectures"] = std::vector<std::string>{fam.mlm_class};
    const std::string cfg = cj.dump(2);
    io::write_atomically((std::filesystem::path(folder) / "config.json").string(),
                         [&](std::ofstream& out) { out << cfg << "\n"; });
  }

  static std::string shape_str(const std::vector<std::int64_t>& s) {
    std::string r = "[";
    for (std::size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
  }

 private:
  template <class P, class Self>
  static LayerParams<P> layer_of(Self& self, int l) {
    const std::string p = "encoder.layer." + std::to_string(l) + ".";
    auto t = [&](const char* n) { return self.view(p + n); };
    return {t("attention.self.query.weight"), t("attention.self.query.bias"),
            t("attention.self.key.weight"),   t("attention.self.key.bias"),
            t("attention.self.value.weight"), t("attention.self.value.bias"),
            t("attention.output.dense.weight"), t("attention.output.dense.bias"),
            t("attention.output.LayerNorm.weight"), t("attention.output.LayerNorm.bias"),
            t("intermediate.dense.weight"), t("intermediate.dense.bias"),
            t("output.dense.weight"), t("output.dense.bias"),
            t("output.LayerNorm.weight"), t("output.LayerNorm.bias")};
  }
  /// Rows of W [rows, cols] quantized to int8 (kernels::quantize_s8).
  static QuantizedMatrix quantize_matrix(const float* w, int rows, int cols) {
    QuantizedMatrix m;
    m.rows = rows;
    m.cols = cols;
    m.q.resize(static_cast<std::size_t>(rows) * cols);
    m.scale.resize(static_cast<std::size_t>(rows));
    for (int r = 0; r < rows; ++r)
      m.scale[r] = kernels::quantize_s8(m.q.data() + static_cast<std::size_t>(r) * cols, w + static_cast<std::size_t>(r) * cols, cols);
    return m;
  }
  /// An I8 tensor and its row scales: checked, dequantized into dst and kept in `out`.
  static void read_int8(const io::CheckpointReader& r, const TensorSpec& s, T* dst, std::map<std::string, QuantizedMatrix>& out) {
    const std::string file = r.file_name(s.name);
    DYNABERT_REQUIRE(int8_matrix(s.name) && s.shape.size() == 2, FormatError, file, ": tensor '", s.name,
                     "' is I8, which only the encoder layers' linear weights may be");
    const std::string sn = s.name + "_scale";
    DYNABERT_REQUIRE(r.contains(sn), FormatError, file, ": I8 tensor '", s.name, "' has no row scales '", sn, "'");
    DYNABERT_REQUIRE(r.info(sn).shape == std::vector<std::int64_t>{s.shape[0]}, FormatError, r.file_name(sn), ": tensor '", sn,
                     "' has shape ", shape_str(r.info(sn).shape), " but ", s.name, " has ", s.shape[0], " rows");
    QuantizedMatrix m;
    m.rows = static_cast<int>(s.shape[0]);
    m.cols = static_cast<int>(s.shape[1]);
    m.q.resize(s.numel());
    m.scale.resize(static_cast<std::size_t>(m.rows));
    r.read_i8(s.name, m.q.data(), s.numel());
    r.read(sn, m.scale.data(), m.scale.size());
    for (int i = 0; i < m.rows; ++i)
      DYNABERT_REQUIRE(std::isfinite(m.scale[i]) && m.scale[i] >= 0.0f, FormatError, r.file_name(sn), ": tensor '", sn,
                       "' holds ", m.scale[i], " at row ", i, " (scales are finite and not negative)");
    for (std::size_t i = 0; i < s.numel(); ++i) {
      DYNABERT_REQUIRE(m.q[i] != -128, FormatError, file, ": tensor '", s.name, "' holds -128 at element ", i,
                       " (symmetric int8 uses -127..127)");
      dst[i] = static_cast<T>(static_cast<float>(m.q[i]) * m.scale[i / static_cast<std::size_t>(m.cols)]);
    }
    out[s.name] = std::move(m);
  }

  /// `c` validated, with placeholder label names when the heads ask for more labels than it names.
  static const BertConfig& prepared(BertConfig& c, const HeadSpec& heads) {
    c.validate();
    if (heads.num_labels > 0 && c.num_labels() != heads.num_labels) {
      c.id2label.clear();
      for (int i = 0; i < heads.num_labels; ++i) c.id2label.push_back("LABEL_" + std::to_string(i));
    }
    return c;
  }

  BertConfig config_;
  HeadSpec heads_;
  std::map<std::string, QuantizedMatrix> quantized_;  ///< int8 matrices as loaded (INT8 checkpoints)
  std::uint64_t quantized_version_ = ~std::uint64_t{0};
};

}  // namespace dynabert
