// ElasticBert<T, Dims>: a BERT encoder (+ pooler and classifier when the weights have them) that
// runs any sub-network chosen per call: a short loop over the blocks of model/blocks.hpp. Weights
// are prepared once at construction (packed for float; the model then keeps only the packed
// matrices and its own copy of the vectors and embedding tables); a call takes a SubNetwork, a Workspace
// and a Threads, copies no weight and allocates nothing. T = float is the fast path; T = double
// runs the same blocks on reference kernels.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "dynabert/core/error.hpp"
#include "dynabert/core/parallel.hpp"
#include "dynabert/layers/batch.hpp"
#include "dynabert/model/blocks.hpp"
#include "dynabert/model/elastic.hpp"
#include "dynabert/model/weights.hpp"
#include "dynabert/model/workspace.hpp"

namespace dynabert {

/// Where to write results; any pointer may be null (not computed when nothing needs it).
struct Outputs {
  float* logits = nullptr;         ///< [batch, num_labels]
  float* pooled = nullptr;         ///< [batch, hidden]
  float* last_hidden = nullptr;    ///< [batch, seq, hidden]
  float* hidden_states = nullptr;  ///< [depth + 1, batch, seq, hidden]: embeddings, then each run layer
  /// When only logits / pooled are wanted, pack the tokens of all sequences together so that no
  /// layer computes padding positions (results are bitwise the same). Off: compute the padded
  /// layout (benchmarks use it as the baseline).
  bool pack_tokens = true;
  /// When only logits / pooled are wanted, the last layer computes only each sequence's first
  /// token, the pooler's input (its keys and values still use every token): bitwise the same
  /// results at about a quarter of the last layer's cost (the workspace's last state then holds
  /// one row per sequence). Off: every row (the baseline).
  bool first_token_only = true;
};

template <class T = float, class Dims = DynamicDims>
class ElasticBert {
 public:
  /// Prepares (packs) all weights, for every precision in `precisions` (FP32, BF16, INT8: a call
  /// picks one of them through SubNetwork::precision; low precisions need T = float). `weights` is
  /// not referenced afterwards.
  explicit ElasticBert(const BertWeights<T>& weights, std::vector<Precision> precisions = {Precision::kFp32})
      : config_(weights.config()), heads_(weights.heads()), precisions_(std::move(precisions)) {
    check_precisions();
    heads_.mlm = false;  // serving does not predict tokens
    // The model's own copy of what is read in place: embedding tables, biases, LayerNorms (for
    // float; the matrices exist only packed), or everything (the reference path of other types
    // reads the matrices in place too).
    constexpr bool kPacked = std::is_same_v<T, float>;
    Schema keep;
    for (auto& s : weights.specs())
      if (!kPacked || s.shape.size() == 1 || s.name.rfind("embeddings.", 0) == 0) keep.add(s.name, s.shape);
    store_ = ParameterSet<T>(keep);
    for (auto& s : store_.specs()) std::memcpy(store_.view(s.name), weights.view(s.name), sizeof(T) * s.numel());
    blocks_.build(config_, heads_, detail::TensorLookup<T>{&store_, &weights});
    blocks_.pack(false);
    if constexpr (kPacked) {
      for (Precision p : precisions_)
        if (p != Precision::kFp32) blocks_.pack_lowp(p);
      // an INT8 checkpoint: its own int8 values and scales, not a re-quantization of q x scale
      if (has_precision(Precision::kInt8))
        blocks_.pack_int8_quantized([&](const std::string& n) { return weights.quantized(n); });
      if (!has_precision(Precision::kFp32)) blocks_.drop_layer_fp32();
      blocks_.forget_matrices();
    }
  }
  ElasticBert(const ElasticBert&) = delete;  // the blocks view the store: not copyable
  ElasticBert& operator=(const ElasticBert&) = delete;

  const BertConfig& config() const { return config_; }
  int num_labels() const { return heads_.num_labels; }
  bool has_pooler() const { return heads_.pooler; }

  /// A workspace for calls up to the given limits (in any of the model's precisions).
  Workspace<T> make_workspace(WorkspaceLimits lim) const { return Workspace<T>(config_, lim, precisions_); }

  /// Bytes of prepared weights (every precision).
  std::size_t weight_bytes() const { return blocks_.bytes(); }
  /// Bytes of the encoder layers' packings in precision p (0 when not prepared).
  std::size_t weight_bytes(Precision p) const { return has_precision(p) ? blocks_.layer_bytes(p) : 0; }
  /// Bytes every precision shares: embeddings, pooler, classifier.
  std::size_t shared_weight_bytes() const { return blocks_.bytes() - blocks_.layer_bytes(Precision::kFp32) -
                                                   blocks_.layer_bytes(Precision::kBf16) - blocks_.layer_bytes(Precision::kInt8); }
  /// The precisions the model was prepared for, and whether it has p.
  const std::vector<Precision>& precisions() const { return precisions_; }
  bool has_precision(Precision p) const { return std::find(precisions_.begin(), precisions_.end(), p) != precisions_.end(); }

  /// Runs sub-network `net` on `in`, writing what `out` asks for. Throws InputError on bad input.
  void forward(const Inputs& in, const SubNetwork& net, const Outputs& out, Workspace<T>& ws,
               const Threads& threads = Threads()) const {
    const int H = config_.hidden_size;
    check(in, net, out, ws, threads);
    const std::size_t tokens = static_cast<std::size_t>(in.batch) * in.seq_len;
    // Padding tokens are packed away (no GEMM work for them) unless per-token outputs are wanted.
    const bool pack = out.pack_tokens && !out.hidden_states && !out.last_hidden;
    // the workspace keeps every row of the last state when nothing is asked (Session::embed reads it)
    const bool first = out.first_token_only && !out.hidden_states && !out.last_hidden && (out.logits || out.pooled);
    const BatchLayout lay = begin(in, pack, ws);
    const layers::Compute c{&threads, ws.gemm_scratch.data(), nullptr, net.precision, &ws.lowp};
    blocks_.run(in, net, lay, ws, c, [&](std::size_t state, const T* hidden) {
      if (out.hidden_states) copy_out(out.hidden_states + state * tokens * H, hidden, tokens * H);
    }, first);
    if (out.last_hidden) copy_out(out.last_hidden, ws.hidden.data(), tokens * H);
    if (out.pooled || out.logits) {
      blocks_.pool(ws.hidden.data(), blocks_.first_layout(lay, net, first), ws, c);
      if (out.pooled) copy_out(out.pooled, ws.pooled.data(), static_cast<std::size_t>(in.batch) * H);
      if (out.logits) {
        if constexpr (std::is_same_v<T, float>) {
          blocks_.classifier->forward(out.logits, ws.pooled.data(), in.batch, c);
        } else {  // computed in T, written as float
          blocks_.classifier->forward(ws.tmp.data(), ws.pooled.data(), in.batch, c);
          copy_out(out.logits, ws.tmp.data(), static_cast<std::size_t>(in.batch) * heads_.num_labels);
        }
      }
    }
  }

  /// The same in the model's own scalar type (double for oracles): logits [B, C] and hidden
  /// states [depth + 1, B, S, H] in T; either may be null.
  void forward_t(const Inputs& in, const SubNetwork& net, T* logits, T* hidden_states, Workspace<T>& ws,
                 const Threads& threads = Threads()) const {
    DYNABERT_REQUIRE(!logits || blocks_.classifier.has_value(), InputError, "logits requested from a model without a classifier head");
    check(in, net, Outputs{}, ws, threads);
    const std::size_t n = static_cast<std::size_t>(in.batch) * in.seq_len * config_.hidden_size;
    const BatchLayout lay = begin(in, hidden_states == nullptr, ws);
    const layers::Compute c{&threads, ws.gemm_scratch.data(), nullptr, net.precision, &ws.lowp};
    const bool first = hidden_states == nullptr;  // logits alone: the last layer's first tokens suffice
    blocks_.run(in, net, lay, ws, c, [&](std::size_t state, const T* hidden) {
      if (hidden_states) std::memcpy(hidden_states + state * n, hidden, n * sizeof(T));
    }, first);
    if (logits) {
      blocks_.pool(ws.hidden.data(), blocks_.first_layout(lay, net, first), ws, c);
      blocks_.classifier->forward(logits, ws.pooled.data(), in.batch, c);
    }
  }

 private:
  BatchLayout begin(const Inputs& in, bool pack, Workspace<T>& ws) const {
    ws.current = plan_batch(in, pack, ws.layout);
    ws.packed = ws.current.packed;
    return ws.current;
  }

  template <class Src>
  static void copy_out(float* dst, const Src* src, std::size_t n) {
    if constexpr (std::is_same_v<Src, float>) std::memcpy(dst, src, n * sizeof(float));
    else for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
  }

  void check(const Inputs& in, const SubNetwork& net, const Outputs& out, const Workspace<T>& ws, const Threads& threads) const {
    check_inputs(in);
    DYNABERT_REQUIRE(in.seq_len <= config_.max_tokens(), InputError, "sequence length ", in.seq_len,
                     " exceeds max_position_embeddings ", config_.max_tokens(),
                     config_.position_offset() ? " (positions start at pad_token_id + 1)" : "");
    const auto& lim = ws.limits();
    DYNABERT_REQUIRE(in.batch <= lim.max_batch && in.seq_len <= lim.max_seq_len, InputError, "batch ", in.batch, " x length ",
                     in.seq_len, " exceeds the workspace limits ", lim.max_batch, " x ", lim.max_seq_len);
    DYNABERT_REQUIRE(threads.count() <= lim.max_threads, InputError, "call uses ", threads.count(),
                     " threads; the workspace was sized for ", lim.max_threads);
    net.validate(config_);
    DYNABERT_REQUIRE(has_precision(net.precision), InputError, "the model was not prepared for ", to_string(net.precision),
                     " (construct it, or open the session, with that precision)");
    if (net.precision != Precision::kFp32) {
      const int kmax = std::max({config_.hidden_size, config_.max_layer_intermediate(), config_.max_layer_heads() * config_.head_dim()});
      DYNABERT_REQUIRE(ws.lowp.fits(static_cast<long>(in.batch) * in.seq_len, kmax, net.precision), InputError,
                       "the workspace has no room for ", to_string(net.precision), " calls (make it with this model's make_workspace)");
    }
    DYNABERT_REQUIRE(!(out.logits && !blocks_.classifier), InputError, "logits requested from a model without a classifier head");
    DYNABERT_REQUIRE(!(out.pooled && !blocks_.pooler), InputError, "pooled output requested from a model without a pooler");
    blocks_.embeddings.check(in);
  }

  void check_precisions() const {
    DYNABERT_REQUIRE(!precisions_.empty(), InputError, "a model needs at least one precision");
    for (std::size_t i = 0; i < precisions_.size(); ++i) {
      DYNABERT_REQUIRE((std::is_same_v<T, float> || precisions_[i] == Precision::kFp32), InputError,
                       to_string(precisions_[i]), " needs the float model");
      for (std::size_t j = 0; j < i; ++j)
        DYNABERT_REQUIRE(precisions_[j] != precisions_[i], InputError, "precision ", to_string(precisions_[i]), " listed twice");
    }
  }

  BertConfig config_;
  HeadSpec heads_;
  std::vector<Precision> precisions_;
  ParameterSet<T> store_;
  detail::BertBlocks<T, Dims> blocks_;
};

}  // namespace dynabert
