// TrainableBert<T, Dims>: a BERT whose parameters train, as a short loop over the same blocks
// serving uses (model/blocks.hpp): each block's training forward records what its backward needs,
// and the hand-written backwards run in reverse ("autodiff-lite": no tape, no graph).
//
// - forward(inputs, subnetwork, cache, mode) runs any (width, depth) sub-network with dropout in
//   training mode (hidden and attention-probability rates from config.json, keys drawn from the
//   caller's seeded generator) and, with mode.pack_tokens, the tokens of a padded batch packed
//   together (hidden states then hold one row per real token);
// - backward(cache, d_logits, d_hidden_states, d_gates) ACCUMULATES (+=) into grads(), whose
//   layout is the parameters' layout: several sub-networks backpropagated before one optimizer
//   step simply sum, and entries outside the active width stay exactly zero. The caller zeroes.
// - d_gates receives d(loss)/d(head gate) per [layer, head]: DynaBERT's head importance;
// - infer() is the serving forward of the same blocks (no cache): the teacher's forward and
//   evaluation run on it.
// For float the weights are packed for the GEMM (both orientations) and repacked whenever the
// parameters were accessed mutably since (ParameterSet::version()), so writing params() directly
// is always seen. Buffers grow to the largest call and are reused: after the first step of the
// largest shape, a step allocates nothing.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <optional>
#include <random>
#include <vector>

#include "dynabert/core/error.hpp"
#include "dynabert/core/span.hpp"
#include "dynabert/layers/losses.hpp"
#include "dynabert/model/blocks.hpp"
#include "dynabert/model/elastic.hpp"
#include "dynabert/model/weights.hpp"
#include "dynabert/model/workspace.hpp"

namespace dynabert::train {

/// Training or evaluation behaviour of a forward pass.
struct ForwardMode {
  bool dropout = false;            ///< apply dropout (training mode)
  std::mt19937_64* rng = nullptr;  ///< generator for the dropout keys (required with dropout)
  bool pack_tokens = false;        ///< pack the tokens of a padded batch (no rows for padding)
  /// The last layer computes only each sequence's first token, the pooler's input (its keys and
  /// values still use every token): same logits, bitwise, and the last layer's forward and
  /// backward cost about a quarter. The last hidden state is then [batch, H]. For losses on the
  /// logits alone; ignored when the forward runs no classifier head.
  bool first_token_only = false;
};

/// Activations of one forward pass, kept for the backward. Reused across steps (buffers only grow).
template <class T>
struct TrainCache {
  /// Hidden states: embeddings, then each executed layer; each [layout.rows, H], except the last
  /// after a first_token_only forward: [batch, H] (first_only).
  std::vector<Span<T>> states;
  /// [batch, num_labels] when the forward ran the head, else empty.
  Span<T> logits;
  BatchLayout layout;
  int B = 0, S = 0;

  // internals of the blocks (filled by TrainableBert::forward)
  LayoutStorage storage;
  std::vector<AlignedBuffer<T>> state_buf;
  AlignedBuffer<T> logits_buf, pooled, a;
  layers::EmbeddingCache<T> embeddings;
  std::vector<layers::EncoderLayerCache<T>> layers;
  layers::PoolerCache<T> pooler;
  layers::ClassifierCache<T> classifier;
  SubNetwork net;
  std::vector<float> gates;  ///< copy of the gates used ([L, NH]) or empty
  bool has_head = false;
  bool first_only = false;  ///< the last layer ran on first tokens only (states.back() is [batch, H])
};

template <class T, class Dims = DynamicDims>
class TrainableBert {
 public:
  explicit TrainableBert(BertWeights<T> params) : p_(std::move(params)), g_(p_.config(), p_.heads()) {
    blocks_.build(p_.config(), p_.heads(), static_cast<const ParameterSet<T>&>(p_));
    grads_ = blocks_.grad_views(g_);
    bound_p_ = p_.data();
    bound_g_ = g_.data();
  }
  TrainableBert(const TrainableBert& o) : TrainableBert(o.p_) { threads_ = o.threads_; }
  TrainableBert(TrainableBert&&) noexcept = default;  // the views point into heap buffers that move along
  TrainableBert& operator=(const TrainableBert&) = delete;

  const BertConfig& config() const { return p_.config(); }
  BertWeights<T>& params() { return p_; }
  const BertWeights<T>& params() const { return p_; }
  BertWeights<T>& grads() { return g_; }
  const BertWeights<T>& grads() const { return g_; }
  void zero_grad() { g_.fill_zero(); }
  /// Threads for every block (results are bitwise identical for any count).
  void set_threads(const Threads& t) { threads_ = t; }
  const Threads& threads() const { return threads_; }

  /// Runs `net` on `in`, recording activations in `c`. Returns the logits ([B, C]) when the model
  /// has a classifier and `with_head`, else nullptr. Hidden states are c.states.
  const T* forward(const Inputs& in, const SubNetwork& net, TrainCache<T>& c, const ForwardMode& mode,
                   bool with_head = true) const {
    sync();
    const auto& cfg = p_.config();
    blocks_.check(in, net);
    DYNABERT_REQUIRE(!mode.dropout || mode.rng, InputError, "dropout needs a generator");
    const int H = cfg.hidden_size;
    c.storage.reserve(in.batch, in.seq_len);
    c.layout = plan_batch(in, mode.pack_tokens, c.storage);
    const BatchLayout& lay = c.layout;
    const std::size_t n = static_cast<std::size_t>(lay.rows) * H;
    c.B = in.batch;
    c.S = in.seq_len;
    copy_net(net, c);
    const layers::Compute comp = compute(in.seq_len);
    const double hp = mode.dropout ? cfg.hidden_dropout_prob : 0.0, ap = mode.dropout ? cfg.attention_probs_dropout_prob : 0.0;
    auto key = [&](double p) { return p > 0.0 ? kernels::DropoutKey::make(p, (*mode.rng)()) : kernels::DropoutKey{}; };

    const std::size_t depth = net.layers.size();
    c.has_head = with_head && blocks_.classifier.has_value();
    const bool first = mode.first_token_only && c.has_head && depth >= 1;
    c.first_only = first;
    if (c.state_buf.size() < static_cast<std::size_t>(cfg.num_hidden_layers) + 1)
      c.state_buf.resize(static_cast<std::size_t>(cfg.num_hidden_layers) + 1);
    c.states.reserve(static_cast<std::size_t>(cfg.num_hidden_layers) + 1);
    c.states.clear();
    for (std::size_t j = 0; j <= depth; ++j) {
      const std::size_t m = first && j == depth ? static_cast<std::size_t>(in.batch) * H : n;
      c.states.emplace_back(c.state_buf[j].ensure(m), m);
    }
    if (c.layers.size() < static_cast<std::size_t>(cfg.num_hidden_layers))
      c.layers.resize(static_cast<std::size_t>(cfg.num_hidden_layers));

    blocks_.embeddings.forward(c.states[0].data(), in, lay, key(hp), c.embeddings, comp);
    T* a = c.a.ensure(n);
    const auto attn = attention_buffers(in.seq_len);
    for (std::size_t i = 0; i < depth; ++i) {
      const int l = net.layers[i];
      layers::LayerDropout drop;
      drop.probs = key(ap);
      drop.attention_out = key(hp);
      drop.ffn_out = key(hp);
      blocks_.layers[l].forward(c.states[i + 1].data(), c.states[i].data(), lay, call_of(c, l), drop, c.layers[i], a, attn, comp,
                                first && i + 1 == depth);
    }
    c.logits = Span<T>();
    if (!c.has_head) return nullptr;
    const int B = in.batch, C = blocks_.classifier->num_labels();
    T* pooled = c.pooled.ensure(static_cast<std::size_t>(B) * H);
    // RoBERTa's classification head drops out its input (the <s> row) before the dense layer
    blocks_.pooler->forward(pooled, c.states[depth].data(), first ? lay.first_rows() : lay, c.pooler, comp,
                            cfg.names().pooler_input_dropout ? key(hp) : kernels::DropoutKey{});
    c.logits = Span<T>(c.logits_buf.ensure(static_cast<std::size_t>(B) * C), static_cast<std::size_t>(B) * C);
    blocks_.classifier->forward(c.logits.data(), pooled, B, key(hp), c.classifier, comp);
    return c.logits.data();
  }

  /// Accumulates gradients of a loss whose derivatives are d_logits ([B, C], may be null) and
  /// d_states[j] for hidden state j (embeddings = 0; each may be null; size depth + 1 or empty;
  /// each the size of c.states[j]).
  /// d_gates ([L, NH], may be null) receives += d(loss)/d(gate).
  void backward(const TrainCache<T>& c, const T* d_logits, const std::vector<const T*>& d_states, T* d_gates = nullptr) {
    sync();
    const auto& cfg = p_.config();
    const BatchLayout& lay = c.layout;
    const int H = cfg.hidden_size, NH = cfg.num_attention_heads;
    const std::size_t depth = c.net.layers.size(), n = static_cast<std::size_t>(lay.rows) * H;
    DYNABERT_REQUIRE(d_states.empty() || d_states.size() == depth + 1, InputError, "backward: ", d_states.size(),
                     " hidden-state gradients for ", depth + 1, " states");
    const layers::Compute comp = compute(c.S);
    T* dh = bwd_[0].ensure(n);
    T* dx = bwd_[1].ensure(n);
    T* da = bwd_[2].ensure(n);
    T* dh1 = bwd_[3].ensure(n);
    std::fill(dh, dh + n, T(0));
    if (!d_states.empty() && d_states[depth]) ops::add(dh, d_states[depth], c.states[depth].size());
    if (d_logits) {
      DYNABERT_REQUIRE(c.has_head, InputError, "backward: logits gradient for a forward without the head");
      const std::size_t bh = static_cast<std::size_t>(c.B) * H;
      T* dpooled = bwd_[4].ensure(bh);
      std::fill(dpooled, dpooled + bh, T(0));
      blocks_.classifier->backward(dpooled, d_logits, c.classifier, grads_.classifier, comp);
      blocks_.pooler->backward(dh, dpooled, c.first_only ? lay.first_rows() : lay, c.pooler, grads_.pooler, comp);
    }
    const auto attn = attention_buffers(c.S);
    for (std::size_t i = depth; i-- > 0;) {
      const int l = c.net.layers[i];
      blocks_.layers[l].backward(dx, dh, c.states[i].data(), lay, c.layers[i], grads_.layers[l],
                                 d_gates ? d_gates + static_cast<long>(l) * NH : nullptr, da, dh1, attn, comp);
      if (!d_states.empty() && d_states[i]) ops::add(dx, d_states[i], n);
      std::swap(dh, dx);
    }
    blocks_.embeddings.backward(dh, lay, c.embeddings, grads_.embeddings, comp);
  }

  /// Masked-language-model loss on the last hidden state of forward `c`: mean cross-entropy over
  /// positions whose label is not -100 (Hugging Face convention; labels are indexed [B * S] like
  /// the inputs), through the prediction head (dense, activation, LayerNorm, decoder tied to the
  /// word embeddings, decoder bias). Computes the head's forward and backward at once: head and
  /// embedding gradients accumulate (times `weight`) and the gradient of the last hidden state is
  /// ADDED to d_last ([rows, H]). `predicted` (optional) receives the arg-max token of each
  /// labelled position, in order; `with_backward = false` only evaluates (no gradient is touched,
  /// d_last stays as it is).
  T mlm_loss(const TrainCache<T>& c, const std::int32_t* labels, std::vector<T>& d_last, T weight = T(1),
             std::vector<std::int32_t>* predicted = nullptr, bool with_backward = true) {
    sync();
    const auto& cfg = p_.config();
    DYNABERT_REQUIRE(blocks_.mlm.has_value(), InputError, "the model has no MLM head");
    DYNABERT_REQUIRE(!c.first_only, InputError, "the MLM loss needs every row of the last hidden state: run the forward without first_token_only");
    const int H = cfg.hidden_size, V = cfg.vocab_size;
    const BatchLayout& lay = c.layout;
    if (with_backward && d_last.size() != static_cast<std::size_t>(lay.rows) * H)
      d_last.resize(static_cast<std::size_t>(lay.rows) * H, T(0));
    int* rows = mlm_rows_.ensure(static_cast<std::size_t>(lay.rows));
    std::int32_t* lab = mlm_labels_.ensure(static_cast<std::size_t>(lay.rows));
    int M = 0;
    for (int r = 0; r < lay.rows; ++r) {
      const int t = lay.row_token[r];
      if (labels[t] == -100) continue;
      DYNABERT_REQUIRE(labels[t] >= 0 && labels[t] < V, InputError, "MLM label ", labels[t], " at position ", t,
                       " is outside the vocabulary");
      rows[M] = r;
      lab[M++] = labels[t];
    }
    for (long t = 0; t < static_cast<long>(c.B) * c.S; ++t)  // labels on positions without a row (packed padding)
      DYNABERT_REQUIRE(labels[t] == -100 || !lay.packed || (t % c.S) < lay.key_end[t / c.S], InputError, "MLM label at position ",
                       t, " is on padding");
    if (M == 0) return T(0);
    const layers::Compute comp = compute(c.S);
    blocks_.mlm->forward(c.states.back().data(), rows, M, mlm_cache_, comp);
    const T* logits = mlm_cache_.logits.data();
    T* dlogits = nullptr;
    if (with_backward) {
      dlogits = mlm_dlogits_.ensure(static_cast<std::size_t>(M) * V);
      std::fill(dlogits, dlogits + static_cast<std::size_t>(M) * V, T(0));
    }
    const T loss = layers::cross_entropy(logits, lab, M, V, dlogits, weight);
    if (predicted) {
      predicted->resize(static_cast<std::size_t>(M));
      for (int m = 0; m < M; ++m)
        (*predicted)[m] = static_cast<std::int32_t>(std::max_element(logits + static_cast<long>(m) * V, logits + static_cast<long>(m + 1) * V) -
                                                    (logits + static_cast<long>(m) * V));
    }
    if (!with_backward) return loss;
    blocks_.mlm->backward(d_last.data(), dlogits, mlm_cache_, grads_.mlm, comp);
    return loss;
  }

  /// The serving forward of the same blocks (no cache, evaluation mode): logits [B, C] (when not
  /// null and the model has a classifier) and, through on_state(j, hidden [rows, H], layout), every
  /// hidden state. With `pack`, the tokens of a padded batch are packed (as ForwardMode::pack_tokens).
  template <class OnState = std::nullptr_t>
  void infer(const Inputs& in, const SubNetwork& net, bool pack, T* logits, OnState&& on_state = nullptr) const {
    sync();
    blocks_.check(in, net);
    auto& ws = inference_workspace(in.batch, in.seq_len);
    const BatchLayout lay = plan_batch(in, pack, ws.layout);
    const layers::Compute comp = compute(in.seq_len);
    // logits alone (no observer of the states): the last layer's first tokens suffice
    constexpr bool kObserved = !std::is_same_v<std::decay_t<OnState>, std::nullptr_t>;
    const bool first = !kObserved && logits != nullptr;
    blocks_.run(in, net, lay, ws, comp, [&](std::size_t j, const T* hidden) {
      if constexpr (kObserved) on_state(j, hidden, lay);
    }, first);
    if (!logits) return;
    DYNABERT_REQUIRE(blocks_.classifier.has_value(), InputError, "logits requested from a model without a classifier head");
    blocks_.pool(ws.hidden.data(), blocks_.first_layout(lay, net, first), ws, comp);
    blocks_.classifier->forward(logits, ws.pooled.data(), in.batch, comp);
  }

  /// Sizes every buffer for batches up to max_batch x max_seq (optional: they also grow on use).
  void reserve(int max_batch, int max_seq) const { inference_workspace(max_batch, max_seq); }

 private:
  /// Rebinds the blocks when a buffer moved and repacks the weights when the parameters changed.
  void sync() const {
    if (p_.data() != bound_p_ || g_.data() != bound_g_) {
      auto& self = const_cast<TrainableBert&>(*this);
      self.blocks_.bind(static_cast<const ParameterSet<T>&>(p_));
      self.grads_ = self.blocks_.grad_views(self.g_);
      bound_p_ = p_.data();
      bound_g_ = g_.data();
      packed_version_ = ~std::uint64_t{0};
    }
    if (p_.version() != packed_version_) {
      const_cast<TrainableBert&>(*this).blocks_.pack(true);
      packed_version_ = p_.version();
    }
  }

  layers::Compute compute(int seq) const {
    const std::size_t workers = static_cast<std::size_t>(threads_.count());
    gemm_scratch_.ensure(std::max(gemm_scratch_.size(), workers * kernels::gemm_scratch_floats()));
    attn_stride_ = layers::SelfAttention<T>::scratch_size(seq, p_.config().head_dim(), true);
    attn_scratch_.ensure(std::max(attn_scratch_.size(), attn_stride_ * workers));
    return layers::Compute{&threads_, gemm_scratch_.data(), &scratch_};
  }
  layers::AttentionBuffers<T> attention_buffers(int seq) const {
    layers::AttentionBuffers<T> b;
    b.scratch = attn_scratch_.data();
    b.scratch_stride = layers::SelfAttention<T>::scratch_size(seq, p_.config().head_dim(), true);
    return b;
  }
  Workspace<T>& inference_workspace(int batch, int seq) const {
    const int threads = std::max(1, threads_.count());
    if (!infer_ws_ || infer_ws_->limits().max_batch < batch || infer_ws_->limits().max_seq_len < seq ||
        infer_ws_->limits().max_threads < threads) {
      WorkspaceLimits lim{batch, seq, threads};
      if (infer_ws_) {
        lim.max_batch = std::max(lim.max_batch, infer_ws_->limits().max_batch);
        lim.max_seq_len = std::max(lim.max_seq_len, infer_ws_->limits().max_seq_len);
        lim.max_threads = std::max(lim.max_threads, infer_ws_->limits().max_threads);
      }
      infer_ws_.emplace(p_.config(), lim);
    }
    return *infer_ws_;
  }
  /// Copies the sub-network into the cache (vectors reuse their capacity), gates included, so that
  /// the backward never reads the caller's arrays.
  void copy_net(const SubNetwork& net, TrainCache<T>& c) const {
    c.net.layers.assign(net.layers.begin(), net.layers.end());
    c.net.heads.assign(net.heads.begin(), net.heads.end());
    c.net.neurons.assign(net.neurons.begin(), net.neurons.end());
    const auto& cfg = p_.config();
    if (net.head_gates) c.gates.assign(net.head_gates, net.head_gates + static_cast<long>(cfg.num_hidden_layers) * cfg.num_attention_heads);
    else c.gates.clear();
    c.net.head_gates = c.gates.empty() ? nullptr : c.gates.data();
  }
  layers::LayerCall call_of(const TrainCache<T>& c, int l) const { return blocks_.call_of(c.net, l); }


  BertWeights<T> p_, g_;
  detail::BertBlocks<T, Dims> blocks_;
  typename detail::BertBlocks<T, Dims>::Grads grads_;
  Threads threads_;
  mutable const T* bound_p_ = nullptr;
  mutable const T* bound_g_ = nullptr;
  mutable std::uint64_t packed_version_ = ~std::uint64_t{0};
  mutable AlignedBuffer<float> gemm_scratch_;
  mutable AlignedBuffer<T> attn_scratch_;
  mutable std::size_t attn_stride_ = 0;
  mutable layers::TrainScratch scratch_;
  mutable std::optional<Workspace<T>> infer_ws_;
  AlignedBuffer<T> bwd_[5];
  AlignedBuffer<int> mlm_rows_;
  AlignedBuffer<std::int32_t> mlm_labels_;
  AlignedBuffer<T> mlm_dlogits_;
  layers::MlmHeadCache<T> mlm_cache_;
};

}  // namespace dynabert::train
