// TrainableBert<T>: the BERT of BertWeights<T> with a forward that records what the backward
// needs, and hand-written backward passes ("autodiff-lite": no tape, no graph).
//
// - forward(inputs, subnetwork, cache, mode) runs any (width, depth) sub-network, with dropout in
//   training mode (hidden and attention-probability rates from config.json, seeded generator);
// - backward(cache, d_logits, d_hidden_states, d_gates) ACCUMULATES (+=) into grads(), whose
//   layout is the parameters' layout: several sub-networks backpropagated before one optimizer
//   step simply sum, and entries outside the active width stay exactly zero. The caller zeroes.
// - d_gates receives d(loss)/d(head gate) per [layer, head]: DynaBERT's head importance.
//
// Products go through Eigen (train/linalg.hpp) so T = double gives exact gradient checks.
// Positions and masks follow Hugging Face's BertModel: post-LayerNorm, additive -10000 mask
// (keys past a sequence's end are skipped: their probability is exactly 0), dropout after the
// embedding LayerNorm, on attention probabilities, and after both output projections.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "dynabert/core/error.hpp"
#include "dynabert/kernels/ops.hpp"
#include "dynabert/kernels/reference.hpp"
#include "dynabert/model/bert.hpp"
#include "dynabert/model/elastic.hpp"
#include "dynabert/model/weights.hpp"
#include "dynabert/train/linalg.hpp"
#include "dynabert/train/losses.hpp"

namespace dynabert::train {

/// Training or evaluation behaviour of a forward pass.
struct ForwardMode {
  bool dropout = false;            ///< apply dropout (training mode)
  std::mt19937_64* rng = nullptr;  ///< generator for the dropout masks (required with dropout)
};

/// Activations of one forward pass, kept for the backward. Reused across steps (buffers only grow).
template <class T>
struct TrainCache {
  struct Layer {
    int index = 0, heads = 0, neurons = 0;
    std::vector<T> q, k, v;              ///< [tokens, a] (a = heads * head_dim)
    std::vector<T> probs;                ///< softmax output [B, heads, S, S]
    std::vector<T> probs_drop;           ///< dropout multiplier of the probabilities (empty: none)
    std::vector<T> ctx;                  ///< [tokens, a], after gates
    std::vector<T> attn_drop;            ///< dropout multiplier after the output projection
    std::vector<T> ln1_xhat, ln1_rstd;   ///< LayerNorm 1 normalised input and 1/std
    std::vector<T> h1;                   ///< [tokens, H]
    std::vector<T> u, g;                 ///< FFN pre-activation and activation [tokens, neurons]
    std::vector<T> ffn_drop;
    std::vector<T> ln2_xhat, ln2_rstd;
  };
  int B = 0, S = 0;
  std::vector<std::int32_t> ids, types, key_end;
  std::vector<T> mask_bias;       ///< [B, S] additive mask (holes), used when has_holes[b]
  std::vector<std::uint8_t> has_holes;
  std::vector<T> emb_xhat, emb_rstd, emb_drop;
  std::vector<std::vector<T>> states;  ///< hidden states: embeddings, then each executed layer
  std::vector<Layer> layers;
  std::vector<T> cls, pooled, logits;  ///< [B, H], [B, H], [B, C]
  SubNetwork net;
  std::vector<float> gates;            ///< copy of the gates used ([L, NH]) or empty
  bool has_head = false;
};

template <class T>
class TrainableBert {
 public:
  explicit TrainableBert(BertWeights<T> params) : p_(std::move(params)), g_(p_.config(), p_.heads()) {}

  const BertConfig& config() const { return p_.config(); }
  BertWeights<T>& params() { return p_; }
  const BertWeights<T>& params() const { return p_; }
  BertWeights<T>& grads() { return g_; }
  const BertWeights<T>& grads() const { return g_; }
  void zero_grad() { g_.buffer().fill_zero(); }
  /// Threads for the training products (results are bitwise identical for any count).
  void set_threads(const Threads& t) { threads_ = t; }

  /// Runs `net` on `in`, recording activations in `c`. Returns the logits ([B, C]) when the model
  /// has a classifier and `with_head`, else nullptr. Hidden states are c.states.
  const T* forward(const Inputs& in, const SubNetwork& net, TrainCache<T>& c, const ForwardMode& mode,
                   bool with_head = true) const {
    const auto& cfg = p_.config();
    validate(in, net);
    DYNABERT_REQUIRE(!mode.dropout || mode.rng, InputError, "dropout needs a generator");
    const int B = in.batch, S = in.seq_len, H = cfg.hidden_size, dh = cfg.head_dim();
    const long T_ = static_cast<long>(B) * S;
    c.B = B;
    c.S = S;
    c.net = net;
    c.gates.clear();
    if (net.head_gates) c.gates.assign(net.head_gates, net.head_gates + cfg.num_hidden_layers * cfg.num_attention_heads);
    c.ids.assign(in.input_ids, in.input_ids + T_);
    c.types.assign(T_, 0);
    if (in.token_type_ids) c.types.assign(in.token_type_ids, in.token_type_ids + T_);
    prepare_mask(in, c);
    const double hp = mode.dropout ? cfg.hidden_dropout_prob : 0.0;
    const double ap = mode.dropout ? cfg.attention_probs_dropout_prob : 0.0;

    // Embeddings + LayerNorm + dropout
    c.states.resize(net.layers.size() + 1);
    auto& h0 = c.states[0];
    h0.resize(T_ * H);
    const T* word = p_.tensor("embeddings.word_embeddings.weight");
    const T* pos = p_.tensor("embeddings.position_embeddings.weight");
    const T* typ = p_.tensor("embeddings.token_type_embeddings.weight");
    for (long t = 0; t < T_; ++t) {
      const int s = static_cast<int>(t % S);
      for (int i = 0; i < H; ++i)
        h0[t * H + i] = word[static_cast<long>(c.ids[t]) * H + i] + pos[static_cast<long>(s) * H + i] + typ[static_cast<long>(c.types[t]) * H + i];
    }
    layernorm_fwd(h0.data(), c.emb_xhat, c.emb_rstd, p_.tensor("embeddings.LayerNorm.weight"),
                  p_.tensor("embeddings.LayerNorm.bias"), T_, H);
    dropout_fwd(h0.data(), c.emb_drop, T_ * H, hp, mode);

    // Encoder layers
    c.layers.resize(net.layers.size());
    for (std::size_t i = 0; i < net.layers.size(); ++i) {
      auto& L = c.layers[i];
      L.index = net.layers[i];
      L.heads = net.heads[L.index];
      L.neurons = net.neurons[L.index];
      const auto w = p_.layer(L.index);
      const int a = L.heads * dh, f = L.neurons;
      const std::vector<T>& x = c.states[i];  // the layer's input
      L.q.resize(T_ * a); L.k.resize(T_ * a); L.v.resize(T_ * a);
      linalg::linear(L.q.data(), a, x.data(), H, w.q_w, H, w.q_b, T_, a, H, threads_);
      linalg::linear(L.k.data(), a, x.data(), H, w.k_w, H, w.k_b, T_, a, H, threads_);
      linalg::linear(L.v.data(), a, x.data(), H, w.v_w, H, w.v_b, T_, a, H, threads_);
      attention_fwd(L, c, ap, mode, dh);
      // output projection + dropout + residual + LayerNorm
      auto& x1 = L.ln1_xhat;
      x1.resize(T_ * H);
      linalg::linear(x1.data(), H, L.ctx.data(), a, w.o_w, a_full(L.index), w.o_b, T_, H, a, threads_);
      dropout_fwd(x1.data(), L.attn_drop, T_ * H, hp, mode);
      for (long j = 0; j < T_ * H; ++j) x1[j] += x[j];
      L.h1 = x1;
      layernorm_fwd(L.h1.data(), L.ln1_xhat, L.ln1_rstd, w.ln1_g, w.ln1_b, T_, H);
      // FFN
      const int I = cfg.layer_intermediate(L.index);
      L.u.resize(T_ * f);
      linalg::linear(L.u.data(), f, L.h1.data(), H, w.i_w, H, w.i_b, T_, f, H, threads_);
      L.g.resize(T_ * f);
      ops::activation(L.g.data(), L.u.data(), T_ * f, cfg.hidden_act);
      auto& out = c.states[i + 1];
      out.resize(T_ * H);
      linalg::linear(out.data(), H, L.g.data(), f, w.f_w, I, w.f_b, T_, H, f, threads_);
      dropout_fwd(out.data(), L.ffn_drop, T_ * H, hp, mode);
      for (long j = 0; j < T_ * H; ++j) out[j] += L.h1[j];
      layernorm_fwd(out.data(), L.ln2_xhat, L.ln2_rstd, w.ln2_g, w.ln2_b, T_, H);
    }

    // Pooler + classifier
    c.has_head = with_head && p_.heads().num_labels > 0;
    if (!c.has_head) return nullptr;
    const int C = p_.heads().num_labels;
    const auto& last = c.states.back();
    c.cls.resize(static_cast<std::size_t>(B) * H);
    for (int b = 0; b < B; ++b) std::memcpy(c.cls.data() + b * H, last.data() + static_cast<long>(b) * S * H, sizeof(T) * H);
    c.pooled.resize(static_cast<std::size_t>(B) * H);
    linalg::linear(c.pooled.data(), H, c.cls.data(), H, p_.tensor("pooler.dense.weight"), H, p_.tensor("pooler.dense.bias"), B, H, H);
    for (auto& v : c.pooled) v = std::tanh(v);
    c.logits.resize(static_cast<std::size_t>(B) * C);
    linalg::linear(c.logits.data(), C, c.pooled.data(), H, p_.tensor("classifier.weight"), H, p_.tensor("classifier.bias"), B, C, H);
    return c.logits.data();
  }

  /// Accumulates gradients of a loss whose derivatives are d_logits ([B, C], may be null) and
  /// d_states[j] for hidden state j (embeddings = 0; each may be null; size depth + 1 or empty).
  /// d_gates ([L, NH], may be null) receives += d(loss)/d(gate).
  void backward(const TrainCache<T>& c, const T* d_logits, const std::vector<const T*>& d_states,
                T* d_gates = nullptr) {
    const auto& cfg = p_.config();
    const int B = c.B, S = c.S, H = cfg.hidden_size, dh = cfg.head_dim();
    const long T_ = static_cast<long>(B) * S;
    const std::size_t depth = c.layers.size();
    DYNABERT_REQUIRE(d_states.empty() || d_states.size() == depth + 1, InputError, "backward: ", d_states.size(),
                     " hidden-state gradients for ", depth + 1, " states");
    auto& dh_buf = sb_.dh;
    dh_buf.assign(T_ * H, T(0));
    if (!d_states.empty() && d_states[depth]) add(dh_buf.data(), d_states[depth], T_ * H);
    if (d_logits) {
      DYNABERT_REQUIRE(c.has_head, InputError, "backward: logits gradient for a forward without the head");
      const int C = p_.heads().num_labels;
      std::vector<T> dpooled(static_cast<std::size_t>(B) * H, T(0)), dcls(static_cast<std::size_t>(B) * H, T(0));
      linalg::linear_backward(dpooled.data(), H, g_.tensor("classifier.weight"), H, g_.tensor("classifier.bias"), d_logits, C,
                              c.pooled.data(), H, p_.tensor("classifier.weight"), H, B, C, H);
      for (std::size_t j = 0; j < dpooled.size(); ++j) dpooled[j] *= T(1) - c.pooled[j] * c.pooled[j];
      linalg::linear_backward(dcls.data(), H, g_.tensor("pooler.dense.weight"), H, g_.tensor("pooler.dense.bias"), dpooled.data(), H,
                              c.cls.data(), H, p_.tensor("pooler.dense.weight"), H, B, H, H);
      for (int b = 0; b < B; ++b) add(dh_buf.data() + static_cast<long>(b) * S * H, dcls.data() + b * H, H);
    }
    auto &dx = sb_.dx, &dh1 = sb_.dh1, &tmp = sb_.tmp, &dg = sb_.dg, &dctx = sb_.dctx, &dq = sb_.dq, &dk = sb_.dk,
         &dv = sb_.dv;
    dx.resize(T_ * H);
    dh1.resize(T_ * H);
    for (std::size_t i = depth; i-- > 0;) {
      const auto& L = c.layers[i];
      const auto w = p_.layer(L.index);
      auto gw = g_.layer(L.index);
      const int a = L.heads * dh, f = L.neurons, I = cfg.layer_intermediate(L.index);
      // LayerNorm 2 -> d(o + h1)
      std::fill(dh1.begin(), dh1.end(), T(0));
      tmp.assign(T_ * H, T(0));
      layernorm_bwd(tmp.data(), dh_buf.data(), L.ln2_xhat, L.ln2_rstd, w.ln2_g, gw.ln2_g, gw.ln2_b, T_, H);
      add(dh1.data(), tmp.data(), T_ * H);  // residual
      dropout_bwd(tmp.data(), L.ffn_drop, T_ * H);
      dg.assign(T_ * f, T(0));
      linalg::linear_backward(dg.data(), f, gw.f_w, I, gw.f_b, tmp.data(), H, L.g.data(), f, w.f_w, I, T_, H, f, threads_);
      ops::activation_backward(dg.data(), L.u.data(), T_ * f, cfg.hidden_act);
      linalg::linear_backward(dh1.data(), H, gw.i_w, H, gw.i_b, dg.data(), f, L.h1.data(), H, w.i_w, H, T_, f, H, threads_);
      // LayerNorm 1 -> d(attn + x)
      tmp.assign(T_ * H, T(0));
      layernorm_bwd(tmp.data(), dh1.data(), L.ln1_xhat, L.ln1_rstd, w.ln1_g, gw.ln1_g, gw.ln1_b, T_, H);
      dx = tmp;  // residual
      dropout_bwd(tmp.data(), L.attn_drop, T_ * H);
      dctx.assign(T_ * a, T(0));
      linalg::linear_backward(dctx.data(), a, gw.o_w, a_full(L.index), gw.o_b, tmp.data(), H, L.ctx.data(), a, w.o_w,
                              a_full(L.index), T_, H, a, threads_);
      dq.assign(T_ * a, T(0));
      dk.assign(T_ * a, T(0));
      dv.assign(T_ * a, T(0));
      attention_bwd(L, c, dctx, dq, dk, dv, d_gates, dh);
      const T* x = c.states[i].data();  // the layer's input
      linalg::linear_backward(dx.data(), H, gw.q_w, H, gw.q_b, dq.data(), a, x, H, w.q_w, H, T_, a, H, threads_);
      linalg::linear_backward(dx.data(), H, gw.k_w, H, gw.k_b, dk.data(), a, x, H, w.k_w, H, T_, a, H, threads_);
      linalg::linear_backward(dx.data(), H, gw.v_w, H, gw.v_b, dv.data(), a, x, H, w.v_w, H, T_, a, H, threads_);
      if (!d_states.empty() && d_states[i]) add(dx.data(), d_states[i], T_ * H);
      dh_buf.swap(dx);
    }
    // Embeddings: dropout, LayerNorm, scatter into the tables
    dropout_bwd(dh_buf.data(), c.emb_drop, T_ * H);
    tmp.assign(T_ * H, T(0));
    layernorm_bwd(tmp.data(), dh_buf.data(), c.emb_xhat, c.emb_rstd, p_.tensor("embeddings.LayerNorm.weight"),
                  g_.tensor("embeddings.LayerNorm.weight"), g_.tensor("embeddings.LayerNorm.bias"), T_, H);
    T* gword = g_.tensor("embeddings.word_embeddings.weight");
    T* gpos = g_.tensor("embeddings.position_embeddings.weight");
    T* gtyp = g_.tensor("embeddings.token_type_embeddings.weight");
    for (long t = 0; t < T_; ++t) {
      const T* d = tmp.data() + t * H;
      add(gword + static_cast<long>(c.ids[t]) * H, d, H);
      add(gpos + (t % S) * H, d, H);
      add(gtyp + static_cast<long>(c.types[t]) * H, d, H);
    }
  }

  /// Masked-language-model loss on the last hidden state of forward `c`: mean cross-entropy over
  /// positions whose label is not -100 (Hugging Face convention), through the prediction head
  /// (dense, activation, LayerNorm, decoder tied to the word embeddings, decoder bias). Computes
  /// the head's forward and backward at once: head and embedding gradients accumulate (times
  /// `weight`) and the gradient of the last hidden state is ADDED to d_last ([B*S, H]).
  /// `predicted` (optional) receives the arg-max token of each labelled position, in order;
  /// `with_backward = false` only evaluates (no gradient is touched, d_last stays empty).
  T mlm_loss(const TrainCache<T>& c, const std::int32_t* labels, std::vector<T>& d_last, T weight = T(1),
             std::vector<std::int32_t>* predicted = nullptr, bool with_backward = true) {
    const auto& cfg = p_.config();
    DYNABERT_REQUIRE(p_.heads().mlm, InputError, "the model has no MLM head");
    const int H = cfg.hidden_size, V = cfg.vocab_size;
    const long T_ = static_cast<long>(c.B) * c.S;
    if (with_backward) d_last.resize(T_ * H, T(0));
    std::vector<long> pos;
    for (long t = 0; t < T_; ++t) {
      if (labels[t] == -100) continue;
      DYNABERT_REQUIRE(labels[t] >= 0 && labels[t] < V, InputError, "MLM label ", labels[t], " at position ", t,
                       " is outside the vocabulary");
      pos.push_back(t);
    }
    const long M = static_cast<long>(pos.size());
    if (M == 0) return T(0);
    const auto& last = c.states.back();
    std::vector<T> X(M * H), Z(M * H), A(M * H), Y, xhat, rstd, logits(M * V);
    for (long m = 0; m < M; ++m) std::copy_n(last.data() + pos[m] * H, H, X.data() + m * H);
    const T* Wt = p_.tensor("cls.predictions.transform.dense.weight");
    const T* E = p_.tensor("embeddings.word_embeddings.weight");
    linalg::linear(Z.data(), H, X.data(), H, Wt, H, p_.tensor("cls.predictions.transform.dense.bias"), M, H, H);
    ops::activation(A.data(), Z.data(), M * H, cfg.hidden_act);
    Y = A;
    layernorm_fwd(Y.data(), xhat, rstd, p_.tensor("cls.predictions.transform.LayerNorm.weight"),
                  p_.tensor("cls.predictions.transform.LayerNorm.bias"), M, H);
    linalg::linear(logits.data(), V, Y.data(), H, E, H, p_.tensor("cls.predictions.bias"), M, V, H);
    std::vector<T> dlogits(M * V, T(0));
    std::vector<std::int32_t> lab(M);
    for (long m = 0; m < M; ++m) lab[m] = labels[pos[m]];
    const T loss = cross_entropy(logits.data(), lab.data(), static_cast<int>(M), V, dlogits.data(), weight);
    if (predicted) {
      predicted->resize(M);
      for (long m = 0; m < M; ++m)
        (*predicted)[m] = static_cast<std::int32_t>(std::max_element(logits.data() + m * V, logits.data() + (m + 1) * V) -
                                                    (logits.data() + m * V));
    }
    if (!with_backward) return loss;
    std::vector<T> dY(M * H, T(0)), dA(M * H, T(0)), dX(M * H, T(0));
    linalg::linear_backward(dY.data(), H, g_.tensor("embeddings.word_embeddings.weight"), H, g_.tensor("cls.predictions.bias"),
                            dlogits.data(), V, Y.data(), H, E, H, M, V, H);
    layernorm_bwd(dA.data(), dY.data(), xhat, rstd, p_.tensor("cls.predictions.transform.LayerNorm.weight"),
                  g_.tensor("cls.predictions.transform.LayerNorm.weight"), g_.tensor("cls.predictions.transform.LayerNorm.bias"), M, H);
    ops::activation_backward(dA.data(), Z.data(), M * H, cfg.hidden_act);
    linalg::linear_backward(dX.data(), H, g_.tensor("cls.predictions.transform.dense.weight"), H,
                            g_.tensor("cls.predictions.transform.dense.bias"), dA.data(), H, X.data(), H, Wt, H, M, H, H);
    for (long m = 0; m < M; ++m) add(d_last.data() + pos[m] * H, dX.data() + m * H, H);
    return loss;
  }

 private:
  long a_full(int l) const { return static_cast<long>(p_.config().layer_heads(l)) * p_.config().head_dim(); }

  static void add(T* y, const T* x, long n) {
    for (long i = 0; i < n; ++i) y[i] += x[i];
  }

  void validate(const Inputs& in, const SubNetwork& net) const {
    const auto& cfg = p_.config();
    DYNABERT_REQUIRE(in.input_ids && in.batch >= 1 && in.seq_len >= 1, InputError, "empty or null batch");
    DYNABERT_REQUIRE(in.seq_len <= cfg.max_position_embeddings, InputError, "sequence length ", in.seq_len,
                     " exceeds max_position_embeddings ", cfg.max_position_embeddings);
    DYNABERT_REQUIRE(!(in.lengths && in.attention_mask), InputError, "give either lengths or attention_mask, not both");
    net.validate(cfg);
    for (long t = 0; t < static_cast<long>(in.batch) * in.seq_len; ++t) {
      DYNABERT_REQUIRE(in.input_ids[t] >= 0 && in.input_ids[t] < cfg.vocab_size, InputError, "input_ids[", t / in.seq_len,
                       "][", t % in.seq_len, "] = ", in.input_ids[t], " is outside the vocabulary");
      DYNABERT_REQUIRE(!in.token_type_ids || (in.token_type_ids[t] >= 0 && in.token_type_ids[t] < cfg.type_vocab_size),
                       InputError, "token_type_ids[", t / in.seq_len, "][", t % in.seq_len, "] is out of range");
    }
    if (in.lengths)
      for (int b = 0; b < in.batch; ++b)
        DYNABERT_REQUIRE(in.lengths[b] >= 1 && in.lengths[b] <= in.seq_len, InputError, "lengths[", b, "] = ",
                         in.lengths[b], " is outside 1..", in.seq_len);
  }

  static void prepare_mask(const Inputs& in, TrainCache<T>& c) {
    const int B = in.batch, S = in.seq_len;
    c.key_end.assign(B, S);
    c.has_holes.assign(B, 0);
    c.mask_bias.assign(static_cast<std::size_t>(B) * S, T(0));
    for (int b = 0; b < B; ++b) {
      if (in.lengths) c.key_end[b] = in.lengths[b];
      else if (in.attention_mask) {
        const std::int32_t* m = in.attention_mask + static_cast<long>(b) * S;
        int end = 0;
        for (int j = 0; j < S; ++j) {
          DYNABERT_REQUIRE(m[j] == 0 || m[j] == 1, InputError, "attention_mask[", b, "][", j, "] is not 0 or 1");
          if (m[j]) end = j + 1;
        }
        for (int j = 0; j < end; ++j)
          if (!m[j]) { c.mask_bias[static_cast<long>(b) * S + j] = T(-10000); c.has_holes[b] = 1; }
        c.key_end[b] = end ? end : S;
      }
    }
  }

  void layernorm_fwd(T* x, std::vector<T>& xhat, std::vector<T>& rstd, const T* gamma, const T* beta, long rows, int H) const {
    xhat.resize(rows * H);
    rstd.resize(rows);
    for (long r = 0; r < rows; ++r) {
      T* row = x + r * H;
      T mean, rs;
      kernels::reference::layernorm_stats(row, H, p_.config().layer_norm_eps, mean, rs);
      rstd[r] = rs;
      for (int i = 0; i < H; ++i) {
        const T xh = (row[i] - mean) * rs;
        xhat[r * H + i] = xh;
        row[i] = xh * gamma[i] + beta[i];
      }
    }
  }

  /// dx += LN backward of dy; dgamma, dbeta accumulate.
  static void layernorm_bwd(T* dx, const T* dy, const std::vector<T>& xhat, const std::vector<T>& rstd, const T* gamma,
                            T* dgamma, T* dbeta, long rows, int H) {
    for (long r = 0; r < rows; ++r) {
      const T* d = dy + r * H;
      const T* xh = xhat.data() + r * H;
      T s1 = 0, s2 = 0;
      for (int i = 0; i < H; ++i) {
        const T dxh = d[i] * gamma[i];
        s1 += dxh;
        s2 += dxh * xh[i];
        dgamma[i] += d[i] * xh[i];
        dbeta[i] += d[i];
      }
      s1 /= T(H);
      s2 /= T(H);
      for (int i = 0; i < H; ++i) dx[r * H + i] += rstd[r] * (d[i] * gamma[i] - s1 - xh[i] * s2);
    }
  }

  /// Counter-based keep decision: element i of a call keyed by `key` is kept with probability
  /// 1 - p (splitmix64 of key + i, 24-bit threshold). One generator draw per call, so a call's
  /// masks do not depend on how its elements are visited.
  static bool keep(std::uint64_t key, std::uint64_t i, std::uint32_t threshold) {
    std::uint64_t z = key + 0x9E3779B97F4A7C15ull * (i + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return static_cast<std::uint32_t>(z >> 40) >= threshold;
  }
  static std::uint32_t drop_threshold(double p) { return static_cast<std::uint32_t>(p * 16777216.0); }

  static void dropout_fwd(T* x, std::vector<T>& mask, long n, double p, const ForwardMode& mode) {
    if (p <= 0.0) { mask.clear(); return; }
    mask.resize(n);
    const std::uint64_t key = (*mode.rng)();
    const std::uint32_t th = drop_threshold(p);
    const T scale = static_cast<T>(1.0 / (1.0 - p));
    for (long i = 0; i < n; ++i) {
      mask[i] = keep(key, static_cast<std::uint64_t>(i), th) ? scale : T(0);
      x[i] *= mask[i];
    }
  }
  static void dropout_bwd(T* d, const std::vector<T>& mask, long n) {
    if (mask.empty()) return;
    for (long i = 0; i < n; ++i) d[i] *= mask[i];
  }

  void attention_fwd(typename TrainCache<T>::Layer& L, TrainCache<T>& c, double p, const ForwardMode& mode, int dh) const {
    const int B = c.B, S = c.S, nh = L.heads, a = nh * dh;
    const T scale = T(1) / std::sqrt(static_cast<T>(dh));
    L.probs.assign(static_cast<std::size_t>(B) * nh * S * S, T(0));
    L.ctx.assign(static_cast<std::size_t>(B) * S * a, T(0));
    if (p > 0) L.probs_drop.resize(L.probs.size()); else L.probs_drop.clear();
    const std::uint64_t key = p > 0 ? (*mode.rng)() : 0;
    const std::uint32_t th = drop_threshold(p);
    const T dscale = p > 0 ? static_cast<T>(1.0 / (1.0 - p)) : T(1);
    threads_.for_each(static_cast<long>(B) * nh, [&](long task, int) {
        const int b = static_cast<int>(task / nh), h = static_cast<int>(task % nh);
        const int kend = c.key_end[b];
        const T* bias = c.has_holes[b] ? c.mask_bias.data() + static_cast<long>(b) * S : nullptr;
        const T gate = c.gates.empty() ? T(1) : static_cast<T>(c.gates[L.index * p_.config().num_attention_heads + h]);
        T* P = L.probs.data() + (static_cast<long>(b) * nh + h) * S * S;
        const auto Q = linalg::cmat(L.q.data() + static_cast<long>(b) * S * a + h * dh, S, dh, a);
        const auto K = linalg::cmat(L.k.data() + static_cast<long>(b) * S * a + h * dh, kend, dh, a);
        const auto V = linalg::cmat(L.v.data() + static_cast<long>(b) * S * a + h * dh, kend, dh, a);
        auto Pm = linalg::mat(P, S, kend, S);
        Pm.noalias() = Q * K.transpose();
        for (int i = 0; i < S; ++i) ops::softmax_row(P + static_cast<long>(i) * S, kend, scale, bias);
        auto ctx = linalg::mat(L.ctx.data() + static_cast<long>(b) * S * a + h * dh, S, dh, a);
        if (p > 0) {  // dropped probabilities (a copy) only when dropout is on
          linalg::RowMat<T> Pd = Pm;
          const long base = (static_cast<long>(b) * nh + h) * S * S;
          T* D = L.probs_drop.data() + base;
          for (int i = 0; i < S; ++i)
            for (int j = 0; j < kend; ++j) {
              D[i * S + j] = keep(key, static_cast<std::uint64_t>(base + i * S + j), th) ? dscale : T(0);
              Pd(i, j) *= D[i * S + j];
            }
          ctx.noalias() = gate * (Pd * V);
        } else {
          ctx.noalias() = gate * (Pm * V);
        }
      });
  }

  void attention_bwd(const typename TrainCache<T>::Layer& L, const TrainCache<T>& c, const std::vector<T>& dctx,
                     std::vector<T>& dq, std::vector<T>& dk, std::vector<T>& dv, T* d_gates, int dh) {
    const int B = c.B, S = c.S, nh = L.heads, a = nh * dh, NH = p_.config().num_attention_heads;
    const T scale = T(1) / std::sqrt(static_cast<T>(dh));
    // (sequence, head) tasks write disjoint slices; the gate gradients are gathered per task and
    // summed afterwards in a fixed order, so any thread count gives the same bits.
    auto& gate_parts = sb_.gate_parts;
    gate_parts.assign(static_cast<std::size_t>(B) * nh, T(0));
    threads_.for_each(static_cast<long>(B) * nh, [&](long task, int) {
        const int b = static_cast<int>(task / nh), h = static_cast<int>(task % nh);
        const int kend = c.key_end[b];
        const long off = static_cast<long>(b) * S * a + h * dh;
        const T gate = c.gates.empty() ? T(1) : static_cast<T>(c.gates[L.index * NH + h]);
        const T* P = L.probs.data() + (static_cast<long>(b) * nh + h) * S * S;
        const T* D = L.probs_drop.empty() ? nullptr : L.probs_drop.data() + (static_cast<long>(b) * nh + h) * S * S;
        const auto Pm = linalg::cmat(P, S, kend, S);
        const auto Q = linalg::cmat(L.q.data() + off, S, dh, a);
        const auto K = linalg::cmat(L.k.data() + off, kend, dh, a);
        const auto V = linalg::cmat(L.v.data() + off, kend, dh, a);
        const auto dC = linalg::cmat(dctx.data() + off, S, dh, a);
        // ctx = gate * Pd V, with Pd the dropped probabilities (a copy only when dropout was on)
        auto through_pd = [&](const auto& Pd) {
          if (d_gates) gate_parts[task] = (dC.array() * (Pd * V).array()).sum();
          linalg::mat(dv.data() + off, kend, dh, a).noalias() += gate * (Pd.transpose() * dC);
        };
        if (D) {
          linalg::RowMat<T> Pd = Pm;
          for (int i = 0; i < S; ++i) for (int j = 0; j < kend; ++j) Pd(i, j) *= D[i * S + j];
          through_pd(Pd);
        } else {
          through_pd(Pm);
        }
        linalg::RowMat<T> dP = gate * (dC * V.transpose());  // [S, kend]
        if (D) for (int i = 0; i < S; ++i) for (int j = 0; j < kend; ++j) dP(i, j) *= D[i * S + j];
        // softmax backward, then the scale of the scores
        for (int i = 0; i < S; ++i) {
          T dot = 0;
          for (int j = 0; j < kend; ++j) dot += dP(i, j) * Pm(i, j);
          for (int j = 0; j < kend; ++j) dP(i, j) = Pm(i, j) * (dP(i, j) - dot) * scale;
        }
        linalg::mat(dq.data() + off, S, dh, a).noalias() += dP * K;
        linalg::mat(dk.data() + off, kend, dh, a).noalias() += dP.transpose() * Q;
      });
    if (d_gates)
      for (int b = 0; b < B; ++b)
        for (int h = 0; h < nh; ++h) d_gates[L.index * NH + h] += gate_parts[static_cast<std::size_t>(b) * nh + h];
  }

  BertWeights<T> p_;
  BertWeights<T> g_;
  Threads threads_;
  /// Backward scratch, reused between steps (grows to the largest batch, never shrinks).
  struct Scratch {
    std::vector<T> dh, dx, dh1, tmp, dg, dctx, dq, dk, dv, gate_parts;
  } sb_;
};

}  // namespace dynabert::train
