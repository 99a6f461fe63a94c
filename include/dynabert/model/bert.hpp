// ElasticBert<T, Dims>: a BERT encoder (+ pooler and classifier when the weights have them) that
// runs any sub-network chosen per call. Weights are prepared once at construction (packed for
// float); a call takes a SubNetwork, a Workspace and a Threads, copies no weight and allocates
// nothing. T = float is the fast path; T = double runs the same layers on reference kernels.
#pragma once
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#include "dynabert/core/error.hpp"
#include "dynabert/core/parallel.hpp"
#include "dynabert/layers/embeddings.hpp"
#include "dynabert/layers/encoder_layer.hpp"
#include "dynabert/layers/heads.hpp"
#include "dynabert/model/elastic.hpp"
#include "dynabert/model/weights.hpp"
#include "dynabert/model/workspace.hpp"

namespace dynabert {

/// A batch of token sequences, row-major [batch, seq]. Padding is described either by per-
/// sequence `lengths` (tokens at positions >= length are padding) or by a 0/1 `attention_mask`
/// (1 = attend); with neither, every token is attended. `token_type_ids` may be null (all 0).
struct Inputs {
  const std::int32_t* input_ids = nullptr;
  const std::int32_t* token_type_ids = nullptr;
  const std::int32_t* lengths = nullptr;
  const std::int32_t* attention_mask = nullptr;
  int batch = 0;
  int seq_len = 0;
};

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
};

template <class T = float, class Dims = DynamicDims>
class ElasticBert {
 public:
  /// Prepares (packs) all weights. `weights` is not referenced afterwards.
  explicit ElasticBert(const BertWeights<T>& weights)
      : config_(weights.config()), heads_(weights.heads()), dims_(config_), embeddings_(weights) {
    layers_.reserve(config_.num_hidden_layers);
    for (int l = 0; l < config_.num_hidden_layers; ++l) layers_.emplace_back(weights, l, dims_);
    if (heads_.pooler) pooler_.emplace(weights);
    if (heads_.num_labels > 0) {
      DYNABERT_REQUIRE(heads_.pooler, FormatError, "a classifier head needs the pooler");
      classifier_.emplace(weights);
    }
  }

  const BertConfig& config() const { return config_; }
  int num_labels() const { return heads_.num_labels; }
  bool has_pooler() const { return heads_.pooler; }

  /// A workspace for calls up to the given limits.
  Workspace<T> make_workspace(WorkspaceLimits lim) const { return Workspace<T>(config_, lim); }

  /// Bytes of prepared weights.
  std::size_t weight_bytes() const {
    std::size_t b = embeddings_.bytes();
    for (auto& l : layers_) b += l.bytes();
    if (pooler_) b += pooler_->bytes();
    if (classifier_) b += classifier_->bytes();
    return b;
  }

  /// Runs sub-network `net` on `in`, writing what `out` asks for. Throws InputError on bad input.
  void forward(const Inputs& in, const SubNetwork& net, const Outputs& out, Workspace<T>& ws,
               const Threads& threads = Threads()) const {
    const int H = config_.hidden_size;
    const std::size_t tokens = static_cast<std::size_t>(in.batch) * in.seq_len;
    // Padding tokens are packed away (no GEMM work for them) unless per-token outputs are wanted.
    const bool pack = out.pack_tokens && !out.hidden_states && !out.last_hidden;
    run(in, net, out, ws, threads, pack, [&](std::size_t state, const T* hidden) {
      if (out.hidden_states) copy_out(out.hidden_states + state * tokens * H, hidden, tokens * H);
    });
    if (out.last_hidden) copy_out(out.last_hidden, ws.hidden.data(), tokens * H);
    if (out.pooled || out.logits) {
      pool(in, ws, threads);
      if (out.pooled) copy_out(out.pooled, ws.pooled.data(), static_cast<std::size_t>(in.batch) * H);
      if (out.logits) {
        if constexpr (std::is_same_v<T, float>) {
          classifier_->forward(out.logits, ws.pooled.data(), in.batch, ws.gemm_scratch.data(), threads);
        } else {  // computed in T, written as float
          classifier_->forward(ws.tmp.data(), ws.pooled.data(), in.batch, ws.gemm_scratch.data(), threads);
          copy_out(out.logits, ws.tmp.data(), static_cast<std::size_t>(in.batch) * heads_.num_labels);
        }
      }
    }
  }

  /// The same in the model's own scalar type (double for oracles): logits [B, C] and hidden
  /// states [depth + 1, B, S, H] in T; either may be null.
  void forward_t(const Inputs& in, const SubNetwork& net, T* logits, T* hidden_states, Workspace<T>& ws,
                 const Threads& threads = Threads()) const {
    DYNABERT_REQUIRE(!logits || classifier_.has_value(), InputError, "logits requested from a model without a classifier head");
    const std::size_t n = static_cast<std::size_t>(in.batch) * in.seq_len * config_.hidden_size;
    run(in, net, Outputs{}, ws, threads, hidden_states == nullptr, [&](std::size_t state, const T* hidden) {
      if (hidden_states) std::memcpy(hidden_states + state * n, hidden, n * sizeof(T));
    });
    if (logits) {
      pool(in, ws, threads);
      classifier_->forward(logits, ws.pooled.data(), in.batch, ws.gemm_scratch.data(), threads);
    }
  }

 private:
  /// Checks the call, then embeddings and the executed layers; on_state(j, hidden) sees state j
  /// (0 = embeddings) as it is produced. The last state stays in ws.hidden.
  /// With `pack_tokens` and padding in the batch, the tokens of all sequences are packed into
  /// consecutive rows (ws.seq_off) and padding positions are not computed at all.
  template <class OnState>
  void run(const Inputs& in, const SubNetwork& net, const Outputs& out, Workspace<T>& ws, const Threads& threads,
           bool pack_tokens, OnState&& on_state) const {
    check(in, net, out, ws, threads);
    prepare_mask(in, ws);
    ws.packed = false;
    if (pack_tokens) {
      int rows = 0;
      for (int b = 0; b < in.batch; ++b) {
        ws.seq_off[b] = rows;
        rows += ws.key_end[b];
      }
      ws.seq_off[in.batch] = rows;
      ws.packed = rows < in.batch * in.seq_len;
    }
    const int* seq_off = ws.packed ? ws.seq_off.data() : nullptr;
    embeddings_.forward(ws.hidden.data(), in.input_ids, in.token_type_ids, in.batch, in.seq_len, threads, seq_off);
    on_state(0, ws.hidden.data());
    for (std::size_t i = 0; i < net.layers.size(); ++i) {
      const int l = net.layers[i];
      layers::LayerCall<T> call{in.batch, in.seq_len, net.heads[l], net.neurons[l],
                                net.head_gates ? net.head_gates + static_cast<long>(l) * config_.num_attention_heads : nullptr,
                                seq_off};
      layers_[l].forward(call, ws, threads);
      on_state(i + 1, ws.hidden.data());
    }
  }

  /// ws.pooled = pooler(first token of each sequence), from the padded or packed last state.
  void pool(const Inputs& in, Workspace<T>& ws, const Threads& threads) const {
    const int H = config_.hidden_size;
    if (!ws.packed) {
      pooler_->forward(ws.pooled.data(), ws.hidden.data(), in.batch, in.seq_len, ws.gemm_scratch.data(), threads);
      return;
    }
    for (int b = 0; b < in.batch; ++b)  // [CLS] rows gathered into ws.tmp (free after the last layer)
      std::memcpy(ws.tmp.data() + static_cast<long>(b) * H, ws.hidden.data() + static_cast<long>(ws.seq_off[b]) * H,
                  sizeof(T) * H);
    pooler_->forward(ws.pooled.data(), ws.tmp.data(), in.batch, 1, ws.gemm_scratch.data(), threads);
  }

  template <class Src>
  static void copy_out(float* dst, const Src* src, std::size_t n) {
    if constexpr (std::is_same_v<Src, float>) std::memcpy(dst, src, n * sizeof(float));
    else for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
  }

  void check(const Inputs& in, const SubNetwork& net, const Outputs& out, const Workspace<T>& ws,
             const Threads& threads) const {
    DYNABERT_REQUIRE(in.input_ids != nullptr, InputError, "input_ids is null");
    DYNABERT_REQUIRE(in.batch >= 1 && in.seq_len >= 1, InputError, "batch ", in.batch, " x length ",
                     in.seq_len, " is empty");
    DYNABERT_REQUIRE(in.seq_len <= config_.max_position_embeddings, InputError, "sequence length ",
                     in.seq_len, " exceeds max_position_embeddings ", config_.max_position_embeddings);
    const auto& lim = ws.limits();
    DYNABERT_REQUIRE(in.batch <= lim.max_batch && in.seq_len <= lim.max_seq_len, InputError, "batch ",
                     in.batch, " x length ", in.seq_len, " exceeds the workspace limits ", lim.max_batch,
                     " x ", lim.max_seq_len);
    DYNABERT_REQUIRE(threads.count() <= lim.max_threads, InputError, "call uses ", threads.count(),
                     " threads; the workspace was sized for ", lim.max_threads);
    DYNABERT_REQUIRE(!(in.lengths && in.attention_mask), InputError,
                     "give either lengths or attention_mask, not both");
    if (in.lengths)
      for (int b = 0; b < in.batch; ++b)
        DYNABERT_REQUIRE(in.lengths[b] >= 1 && in.lengths[b] <= in.seq_len, InputError, "lengths[", b,
                         "] = ", in.lengths[b], " is outside 1..", in.seq_len);
    if (in.attention_mask)
      for (long i = 0; i < static_cast<long>(in.batch) * in.seq_len; ++i)
        DYNABERT_REQUIRE(in.attention_mask[i] == 0 || in.attention_mask[i] == 1, InputError,
                         "attention_mask[", i / in.seq_len, "][", i % in.seq_len, "] = ",
                         in.attention_mask[i], " is not 0 or 1");
    net.validate(config_);
    DYNABERT_REQUIRE(!(out.logits && !classifier_), InputError, "logits requested from a model without a classifier head");
    DYNABERT_REQUIRE(!(out.pooled && !pooler_), InputError, "pooled output requested from a model without a pooler");
    embeddings_.check_inputs(in.input_ids, in.token_type_ids, in.batch, in.seq_len);
  }

  /// Per sequence: the key range to attend ([0, key_end)) and an additive mask for holes inside.
  void prepare_mask(const Inputs& in, Workspace<T>& ws) const {
    const int S = in.seq_len;
    for (int b = 0; b < in.batch; ++b) {
      int end = S, holes = 0;
      if (in.lengths) end = in.lengths[b];
      else if (in.attention_mask) {
        const std::int32_t* m = in.attention_mask + static_cast<long>(b) * S;
        end = 0;
        for (int j = 0; j < S; ++j)
          if (m[j]) end = j + 1;
        for (int j = 0; j < end; ++j) {
          ws.mask_bias[static_cast<long>(b) * S + j] = m[j] ? T(0) : T(-10000);
          if (!m[j]) holes = 1;
        }
        if (end == 0) end = S;  // fully masked: every score gets -10000, which cancels in softmax
      }
      ws.key_end[b] = end;
      ws.has_holes[b] = holes;
    }
  }

  BertConfig config_;
  HeadSpec heads_;
  Dims dims_;
  layers::Embeddings<T> embeddings_;
  std::vector<layers::EncoderLayer<T, Dims>> layers_;
  std::optional<layers::Pooler<T>> pooler_;
  std::optional<layers::Classifier<T>> classifier_;
};

}  // namespace dynabert
