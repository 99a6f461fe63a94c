// BertBlocks<T, Dims>: the blocks of a BERT (embeddings, encoder layers, pooler, classifier, MLM
// head) bound to a parameter set by Hugging Face name, and the inference loop over them. It is the
// one engine under both models: ElasticBert (serving: packs once, keeps only what it needs) and
// train::TrainableBert (training: binds to its parameters and gradients, repacks when they change,
// and runs the same blocks' training forward and backward).
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "dynabert/core/params.hpp"
#include "dynabert/layers/batch.hpp"
#include "dynabert/layers/context.hpp"
#include "dynabert/layers/embeddings.hpp"
#include "dynabert/layers/encoder_layer.hpp"
#include "dynabert/layers/heads.hpp"
#include "dynabert/model/config.hpp"
#include "dynabert/model/elastic.hpp"
#include "dynabert/model/weights.hpp"
#include "dynabert/model/workspace.hpp"

namespace dynabert::detail {

/// Tensors by name from a primary set, else a fallback (serving: vectors from the model's own
/// store, matrices from the source weights while they are packed).
template <class T>
struct TensorLookup {
  const ParameterSet<T>* primary = nullptr;
  const ParameterSet<T>* fallback = nullptr;
  const T* view(const std::string& name) const {
    if (name.empty()) return nullptr;
    if (primary->has(name)) return primary->view(name);
    return fallback && fallback->has(name) ? fallback->view(name) : nullptr;
  }
  bool has(const std::string& name) const { return primary->has(name) || (fallback && fallback->has(name)); }
};

template <class T, class Dims>
class BertBlocks {
 public:
  using Layer = layers::EncoderLayer<T, Dims>;
  using Emb = layers::Embeddings<T, Dims::kHidden>;
  /// Gradient views of every block.
  struct Grads {
    typename Emb::Grads embeddings;
    std::vector<typename Layer::Grads> layers;
    typename layers::Pooler<T>::Grads pooler;
    typename layers::Classifier<T>::Grads classifier;
    typename layers::MlmHead<T>::Grads mlm;
  };

  BertBlocks() = default;

  /// Builds the blocks of `c` with `heads`, bound to the tensors of `set` (a ParameterSet or a
  /// TensorLookup with BERT's names).
  template <class Set>
  void build(const BertConfig& c, const HeadSpec& heads, const Set& set) {
    Dims::check(c.hidden_size, c.num_attention_heads, c.intermediate_size);
    DYNABERT_REQUIRE(heads.num_labels == 0 || heads.pooler, FormatError, "a classifier head needs the pooler");
    config_ = c;
    heads_ = heads;
    embeddings = Emb(BertWeights<T>::embedding_shape(c), Emb::tensors(set, "embeddings."));
    layers.clear();
    layers.reserve(static_cast<std::size_t>(c.num_hidden_layers));
    for (int l = 0; l < c.num_hidden_layers; ++l)
      layers.emplace_back(BertWeights<T>::layer_shape(c, l), Layer::tensors(set, prefix(l)));
    pooler.reset();
    classifier.reset();
    mlm.reset();
    const FamilyNames& n = c.names();
    if (heads.pooler) pooler.emplace(c.hidden_size, layers::dense_tensors(set, n.pooler));
    if (heads.num_labels > 0) classifier.emplace(c.hidden_size, heads.num_labels, layers::dense_tensors(set, n.classifier));
    if (heads.mlm)  // RobertaLMHead applies erf GELU whatever hidden_act says
      mlm.emplace(c.hidden_size, c.vocab_size, n.mlm_erf_gelu ? Activation::kGeluErf : c.hidden_act, c.layer_norm_eps,
                  mlm_tensors(set));
  }
  /// Binds the same blocks to another set of the same model (after its buffer moved).
  template <class Set>
  void bind(const Set& set) {
    embeddings.bind(Emb::tensors(set, "embeddings."));
    for (int l = 0; l < static_cast<int>(layers.size()); ++l) layers[l].bind(Layer::tensors(set, prefix(l)));
    if (pooler) pooler->bind(layers::dense_tensors(set, config_.names().pooler));
    if (classifier) classifier->bind(layers::dense_tensors(set, config_.names().classifier));
    if (mlm) mlm->bind(mlm_tensors(set));
  }
  /// (Re)packs every weight matrix from the bound views; with `backward`, for training too.
  void pack(bool backward) {
    for (auto& l : layers) l.pack(backward);
    if (pooler) pooler->pack(backward);
    if (classifier) classifier->pack(backward);
    if (mlm) mlm->pack(backward);
  }
  /// Adds int8 or bf16 packings of the encoder layers' linear layers (serving, before
  /// forget_matrices()); the pooler, the classifier and attention's own products stay FP32.
  void pack_lowp(Precision p) {
    for (auto& l : layers) l.pack_lowp(p);
  }
  /// The int8 packings from matrices quantized already (an INT8 checkpoint, `quantized(name)`
  /// returning a QuantizedMatrix or null): layers whose six matrices are all there are packed
  /// from them, without re-quantizing; returns how many layers were.
  template <class Lookup>
  int pack_int8_quantized(Lookup&& quantized) {
    int done = 0;
    for (int l = 0; l < static_cast<int>(layers.size()); ++l) {
      const std::string p = prefix(l);
      const auto* q = quantized(p + "attention.self.query.weight");
      const auto* k = quantized(p + "attention.self.key.weight");
      const auto* v = quantized(p + "attention.self.value.weight");
      const auto* o = quantized(p + "attention.output.dense.weight");
      const auto* fi = quantized(p + "intermediate.dense.weight");
      const auto* fo = quantized(p + "output.dense.weight");
      if (!(q && k && v && o && fi && fo)) continue;
      auto& qkv = layers[l].attention().qkv_linear();
      const decltype(q) parts[3] = {q, k, v};
      qkv.pack_quantized(
          [&](int r) { int part; long row; qkv.fused_row(r, part, row); return parts[part]->q.data() + row * parts[part]->cols; },
          [&](int r) { int part; long row; qkv.fused_row(r, part, row); return parts[part]->scale[static_cast<std::size_t>(row)]; });
      auto plain = [](auto& lin, const auto* m) {
        lin.pack_quantized([&](int r) { return m->q.data() + static_cast<long>(r) * m->cols; },
                           [&](int r) { return m->scale[static_cast<std::size_t>(r)]; });
      };
      plain(layers[l].attention().output_linear(), o);
      plain(layers[l].ffn().in_linear(), fi);
      plain(layers[l].ffn().out_linear(), fo);
      ++done;
    }
    return done;
  }
  /// Frees the encoder layers' FP32 packings (a model served only in low precision).
  void drop_layer_fp32() {
    for (auto& l : layers) l.drop_fp32();
  }
  /// Whether every encoder layer can run in precision p.
  bool has(Precision p) const {
    for (auto& l : layers)
      if (!l.has(p)) return false;
    return true;
  }
  /// Bytes of the encoder layers' packings in precision p.
  std::size_t layer_bytes(Precision p) const {
    std::size_t b = 0;
    for (auto& l : layers) b += l.bytes(p);
    return b;
  }
  /// Drops the matrix views (serving keeps only the packed copies).
  void forget_matrices() {
    for (auto& l : layers) l.forget_matrices();
    if (pooler) pooler->forget_matrices();
    if (classifier) classifier->forget_matrices();
  }
  /// Views of the gradient set `g` (same schema as the parameters).
  Grads grad_views(ParameterSet<T>& g) const {
    Grads out;
    out.embeddings = Emb::tensors(g, "embeddings.");
    for (int l = 0; l < static_cast<int>(layers.size()); ++l) out.layers.push_back(Layer::tensors(g, prefix(l)));
    if (pooler) out.pooler = layers::dense_tensors(g, config_.names().pooler);
    if (classifier) out.classifier = layers::dense_tensors(g, config_.names().classifier);
    if (mlm) out.mlm = mlm_tensors(g);
    return out;
  }
  std::size_t bytes() const {
    std::size_t b = embeddings.bytes();
    for (auto& l : layers) b += l.bytes();
    if (pooler) b += pooler->bytes();
    if (classifier) b += classifier->bytes();
    return b;
  }

  const BertConfig& config() const { return config_; }
  const HeadSpec& heads() const { return heads_; }

  /// Throws InputError when `in` or `net` cannot run on this model.
  void check(const Inputs& in, const SubNetwork& net) const {
    check_inputs(in);
    net.validate(config_);
    embeddings.check(in);
  }
  /// The active part of executed layer l.
  layers::LayerCall call_of(const SubNetwork& net, int l) const {
    return {net.heads[l], net.neurons[l],
            net.head_gates ? net.head_gates + static_cast<long>(l) * config_.num_attention_heads : nullptr};
  }

  /// Inference: embeddings, then the executed layers, in ws.hidden; on_state(j, hidden) sees
  /// state j (0 = embeddings) as it is produced. With `first` (and at least one layer) the last
  /// layer computes each sequence's first token only (first_layout()): for the pooler alone.
  template <class OnState>
  void run(const Inputs& in, const SubNetwork& net, const BatchLayout& lay, Workspace<T>& ws, const layers::Compute& c,
           OnState&& on_state, bool first = false) const {
    embeddings.forward(ws.hidden.data(), in, lay, c);
    on_state(0, ws.hidden.data());
    const auto buf = ws.layer_buffers();
    bool converted = false;  // the fused low-precision path converted hidden for the next layer already
    for (std::size_t i = 0; i < net.layers.size(); ++i) {
      const int l = net.layers[i];
      const bool last = i + 1 == net.layers.size(), fused = layers[l].fused(c);
      const bool convert = fused && !last && layers[net.layers[i + 1]].fused(c);
      layers[l].forward(ws.hidden.data(), lay, call_of(net, l), buf, c, first && last, converted, convert);
      converted = convert;
      on_state(i + 1, ws.hidden.data());
    }
  }
  /// The layout of the last hidden state after run(..., first): lay.first_rows() when a layer ran
  /// first-row, else lay.
  static BatchLayout first_layout(const BatchLayout& lay, const SubNetwork& net, bool first) {
    return first && !net.layers.empty() ? lay.first_rows() : lay;
  }
  /// ws.pooled = pooler(first row of each sequence of `hidden`).
  void pool(const T* hidden, const BatchLayout& lay, Workspace<T>& ws, const layers::Compute& c) const {
    pooler->forward(ws.pooled.data(), hidden, lay, ws.gather.data(), c);
  }

  Emb embeddings;
  std::vector<Layer> layers;
  std::optional<layers::Pooler<T>> pooler;
  std::optional<layers::Classifier<T>> classifier;
  std::optional<layers::MlmHead<T>> mlm;

 private:
  static std::string prefix(int l) { return "encoder.layer." + std::to_string(l) + "."; }
  template <class Set>
  auto mlm_tensors(Set& set) const {
    using P = std::remove_reference_t<decltype(*set.view(""))>;
    const FamilyNames& n = config_.names();
    const std::string head = n.mlm, norm = head + n.mlm_norm;
    layers::MlmTensors<P> t;
    t.transform = layers::dense_tensors(set, head + n.mlm_dense);
    t.norm = {set.view(norm + "weight"), set.view(norm + "bias")};
    t.decoder_bias = set.view(head + "bias");
    t.decoder = set.view("embeddings.word_embeddings.weight");
    return t;
  }

  BertConfig config_;
  HeadSpec heads_;
};

}  // namespace dynabert::detail
