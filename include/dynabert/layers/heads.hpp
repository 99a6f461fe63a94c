// The output blocks of BERT, each with its inference forward, training forward and backward:
//  - Pooler<T>:     pooled[b] = tanh(W h[first row of b] + b), the [CLS] row of each sequence (in
//                   training optionally after dropout: RoBERTa's classification head);
//  - Classifier<T>: logits[b] = W dropout(pooled[b]) + b (one output: regression), dropout on its
//                   input in training as in BertForSequenceClassification;
//  - MlmHead<T>:    BertForMaskedLM's prediction head on selected rows: dense, activation,
//                   LayerNorm, then the decoder tied to the word embeddings plus its own bias.
#pragma once
#include <type_traits>
#include <cstring>
#include <string>

#include "dynabert/core/params.hpp"
#include "dynabert/kernels/ops.hpp"
#include "dynabert/layers/add_norm.hpp"
#include "dynabert/layers/batch.hpp"
#include "dynabert/layers/context.hpp"
#include "dynabert/layers/linear.hpp"

namespace dynabert::layers {

/// A dense layer's parameters (P = const T) or gradients (P = T): W [out, in], b [out].
template <class P>
struct DenseTensors {
  P* w = nullptr;
  P* b = nullptr;
  template <class Q = P, class = std::enable_if_t<!std::is_const_v<Q>>>
  operator DenseTensors<const Q>() const { return {w, b}; }
};

template <class Set>
auto dense_tensors(Set& set, const std::string& prefix) {
  using P = std::remove_reference_t<decltype(*set.view(""))>;
  return DenseTensors<P>{set.view(prefix + "weight"), set.view(prefix + "bias")};
}

template <class T>
struct PoolerCache {
  AlignedBuffer<T> cls, pooled;  ///< [batch, H] input rows (after dropout) and tanh outputs
  kernels::DropoutKey drop;
  int batch = 0;
};

template <class T>
class Pooler {
 public:
  using Params = DenseTensors<const T>;
  using Grads = DenseTensors<T>;
  using Cache = PoolerCache<T>;
  Pooler() = default;
  Pooler(int hidden, Params p) : H_(hidden), p_(p) {}
  /// BertModel's pooler: prefix + "dense.weight" / "dense.bias".
  static void declare(Schema& s, const std::string& prefix, int H) { declare_dense(s, prefix + "dense.", H); }
  /// The dense layer's tensors under `dense` (RoBERTa's head: "classifier.dense.").
  static void declare_dense(Schema& s, const std::string& dense, int H) {
    s.add(dense + "weight", {H, H});
    s.add(dense + "bias", {H});
  }
  void bind(Params p) { p_ = p; }
  void pack(bool backward) { dense_.pack(p_.w, H_, H_, H_, backward); }
  void forget_matrices() {
    p_.w = nullptr;
    dense_.forget_source();
  }
  std::size_t bytes() const { return dense_.bytes() + sizeof(T) * H_; }

  /// pooled [batch, H] from the first row of each sequence of `hidden`; `gather` holds batch x H
  /// values (used when the rows are packed).
  void forward(T* pooled, const T* hidden, const BatchLayout& lay, T* gather, const Compute& c) const {
    LinearEpilogue<T> e;
    e.bias = p_.b;
    e.act = Activation::kTanh;
    if (!lay.packed) {  // the first rows are evenly spaced: read them in place
      dense_.forward(pooled, H_, hidden, static_cast<long>(lay.seq) * H_, lay.batch, H_, H_, e, c);
      return;
    }
    gather_rows(gather, hidden, lay);
    dense_.forward(pooled, H_, gather, H_, lay.batch, H_, H_, e, c);
  }
  /// Training: the same, keeping the input rows and the output. `drop` (inactive by default) is
  /// dropout on the input rows, as RoBERTa's classification head applies before its dense layer.
  void forward(T* pooled, const T* hidden, const BatchLayout& lay, Cache& cache, const Compute& c,
               const kernels::DropoutKey& drop = {}) const {
    cache.batch = lay.batch;
    cache.drop = drop;
    T* cls = cache.cls.ensure(static_cast<std::size_t>(lay.batch) * H_);
    gather_rows(cls, hidden, lay);
    dropout_rows(cls, H_, lay.batch, H_, nullptr, drop, c);
    LinearEpilogue<T> e;
    e.bias = p_.b;
    e.act = Activation::kTanh;
    dense_.forward(pooled, H_, cls, H_, lay.batch, H_, H_, e, c);
    std::memcpy(cache.pooled.ensure(static_cast<std::size_t>(lay.batch) * H_), pooled, sizeof(T) * lay.batch * H_);
  }
  /// d_hidden (first row of each sequence) += d(input) from d_pooled [batch, H]; grads +=.
  void backward(T* d_hidden, const T* d_pooled, const BatchLayout& lay, const Cache& cache, Grads g, const Compute& c) const {
    const int B = cache.batch;
    T* dz = c.train->tmp<T>(0, static_cast<std::size_t>(2) * B * H_);
    T* dcls = dz + static_cast<std::size_t>(B) * H_;
    for (long i = 0; i < static_cast<long>(B) * H_; ++i) dz[i] = d_pooled[i] * (T(1) - cache.pooled[i] * cache.pooled[i]);
    std::fill(dcls, dcls + static_cast<std::size_t>(B) * H_, T(0));
    dense_.backward_input(dcls, H_, dz, H_, B, H_, H_, c);
    linear_backward_weight(g.w, H_, g.b, dz, H_, cache.cls.data(), H_, B, H_, H_, c);
    dropout_rows(dcls, H_, B, H_, nullptr, cache.drop, c);
    for (int b = 0; b < B; ++b) ops::add(d_hidden + static_cast<long>(lay.row_off[b]) * H_, dcls + static_cast<long>(b) * H_, H_);
  }

 private:
  void gather_rows(T* dst, const T* hidden, const BatchLayout& lay) const {
    for (int b = 0; b < lay.batch; ++b)
      std::memcpy(dst + static_cast<long>(b) * H_, hidden + static_cast<long>(lay.row_off[b]) * H_, sizeof(T) * H_);
  }
  int H_ = 0;
  Params p_;
  Linear<T> dense_;
};

template <class T>
struct ClassifierCache {
  AlignedBuffer<T> x;  ///< [batch, H] the input after dropout
  kernels::DropoutKey drop;
  int batch = 0;
};

template <class T>
class Classifier {
 public:
  using Params = DenseTensors<const T>;
  using Grads = DenseTensors<T>;
  using Cache = ClassifierCache<T>;
  Classifier() = default;
  Classifier(int hidden, int labels, Params p) : H_(hidden), C_(labels), p_(p) {}
  static void declare(Schema& s, const std::string& prefix, int H, int labels) {
    s.add(prefix + "weight", {labels, H});
    s.add(prefix + "bias", {labels});
  }
  void bind(Params p) { p_ = p; }
  void pack(bool backward) { dense_.pack(p_.w, C_, H_, H_, backward); }
  void forget_matrices() {
    p_.w = nullptr;
    dense_.forget_source();
  }
  int num_labels() const { return C_; }
  std::size_t bytes() const { return dense_.bytes() + sizeof(T) * C_; }

  /// logits [batch, C] from pooled [batch, H] (inference).
  void forward(T* logits, const T* pooled, int batch, const Compute& c) const {
    LinearEpilogue<T> e;
    e.bias = p_.b;
    dense_.forward(logits, C_, pooled, H_, batch, C_, H_, e, c);
  }
  /// Training: dropout on the input first.
  void forward(T* logits, const T* pooled, int batch, const kernels::DropoutKey& drop, Cache& cache, const Compute& c) const {
    cache.batch = batch;
    cache.drop = drop;
    T* x = cache.x.ensure(static_cast<std::size_t>(batch) * H_);
    std::memcpy(x, pooled, sizeof(T) * batch * H_);
    dropout_rows(x, H_, batch, H_, nullptr, drop, c);
    forward(logits, x, batch, c);
  }
  /// d_pooled [batch, H] += d(input) from d_logits [batch, C]; grads +=.
  void backward(T* d_pooled, const T* d_logits, const Cache& cache, Grads g, const Compute& c) const {
    const int B = cache.batch;
    T* dx = c.train->tmp<T>(1, static_cast<std::size_t>(B) * H_);
    std::fill(dx, dx + static_cast<std::size_t>(B) * H_, T(0));
    dense_.backward_input(dx, H_, d_logits, C_, B, C_, H_, c);
    linear_backward_weight(g.w, H_, g.b, d_logits, C_, cache.x.data(), H_, B, C_, H_, c);
    dropout_rows(dx, H_, B, H_, nullptr, cache.drop, c);
    ops::add(d_pooled, dx, static_cast<std::size_t>(B) * H_);
  }

 private:
  int H_ = 0, C_ = 0;
  Params p_;
  Linear<T> dense_;
};

/// MLM head parameters (P = const T) or gradients (P = T). The decoder weight is the word
/// embedding table (tied), bound separately.
template <class P>
struct MlmTensors {
  DenseTensors<P> transform;
  NormTensors<P> norm;
  P* decoder_bias = nullptr;  ///< [vocab]
  P* decoder = nullptr;       ///< [vocab, H]: the word embeddings
  template <class Q = P, class = std::enable_if_t<!std::is_const_v<Q>>>
  operator MlmTensors<const Q>() const { return {transform, norm, decoder_bias, decoder}; }
};

template <class T>
struct MlmHeadCache {
  AlignedBuffer<int> rows;              ///< the hidden rows predicted
  AlignedBuffer<T> x, z, y, xhat, rstd;  ///< [M, H] input, pre-activation, LayerNorm output
  AlignedBuffer<T> a;                   ///< [M, H] activation (the LayerNorm's input)
  AlignedBuffer<T> logits;              ///< [M, vocab]
  int m = 0;
};

template <class T>
class MlmHead {
 public:
  using Params = MlmTensors<const T>;
  using Grads = MlmTensors<T>;
  using Cache = MlmHeadCache<T>;
  MlmHead() = default;
  MlmHead(int hidden, int vocab, Activation act, double eps, Params p) : H_(hidden), V_(vocab), act_(act), eps_(eps), p_(p) {}
  /// The head's tensors under `prefix`: the dense layer under prefix + `dense`, the LayerNorm
  /// under prefix + `norm`, the decoder bias prefix + "bias" (the decoder weight is tied: not
  /// declared). BertForMaskedLM: "cls.predictions." with "transform.dense." and
  /// "transform.LayerNorm."; RobertaForMaskedLM: "lm_head." with "dense." and "layer_norm.".
  static void declare(Schema& s, const std::string& prefix, const std::string& dense, const std::string& norm, int H,
                      int vocab) {
    s.add(prefix + dense + "weight", {H, H});
    s.add(prefix + dense + "bias", {H});
    AddNorm<T>::declare(s, prefix + norm, H);
    s.add(prefix + "bias", {vocab});
  }
  static void declare(Schema& s, const std::string& prefix, int H, int vocab) {
    declare(s, prefix, "transform.dense.", "transform.LayerNorm.", H, vocab);
  }
  void bind(Params p) { p_ = p; }
  void pack(bool backward) {
    transform_.pack(p_.transform.w, H_, H_, H_, backward);
    decoder_.pack(p_.decoder, V_, H_, H_, backward);
  }
  int vocab() const { return V_; }

  /// Logits [m, vocab] (in cache.logits) of hidden rows `rows` of `hidden`.
  void forward(const T* hidden, const int* rows, int m, Cache& cache, const Compute& c) const {
    cache.m = m;
    std::memcpy(cache.rows.ensure(static_cast<std::size_t>(m)), rows, sizeof(int) * m);
    const std::size_t n = static_cast<std::size_t>(m) * H_;
    T* x = cache.x.ensure(n);
    for (int i = 0; i < m; ++i) std::memcpy(x + static_cast<long>(i) * H_, hidden + static_cast<long>(rows[i]) * H_, sizeof(T) * H_);
    LinearEpilogue<T> e;
    e.bias = p_.transform.b;
    e.act = act_;
    e.pre_activation = cache.z.ensure(n);
    e.ld_pre_activation = H_;
    T* a = cache.a.ensure(n);
    transform_.forward(a, H_, x, H_, m, H_, H_, e, c);
    T* y = cache.y.ensure(n);
    layernorm_rows(y, a, m, H_, p_.norm.gamma, p_.norm.beta, eps_, cache.xhat.ensure(n), cache.rstd.ensure(static_cast<std::size_t>(m)), c);
    LinearEpilogue<T> ed;
    ed.bias = p_.decoder_bias;
    decoder_.forward(cache.logits.ensure(static_cast<std::size_t>(m) * V_), V_, y, H_, m, V_, H_, ed, c);
  }
  /// d_hidden (the predicted rows) += d(input) from d_logits [m, vocab]; grads += (the decoder's
  /// into the word embeddings).
  void backward(T* d_hidden, const T* d_logits, const Cache& cache, Grads g, const Compute& c) const {
    const int m = cache.m;
    const std::size_t n = static_cast<std::size_t>(m) * H_;
    T* dy = c.train->tmp<T>(0, 2 * n);
    T* da = dy + n;
    std::fill(dy, dy + n, T(0));
    decoder_.backward_input(dy, H_, d_logits, V_, m, V_, H_, c);
    linear_backward_weight(g.decoder, H_, g.decoder_bias, d_logits, V_, cache.y.data(), H_, m, V_, H_, c);
    layernorm_backward_rows(da, dy, cache.xhat.data(), cache.rstd.data(), m, H_, p_.norm.gamma, g.norm.gamma, g.norm.beta, false, c);
    ops::activation_backward(da, cache.z.data(), n, act_);
    T* dx = dy;  // dy is no longer needed
    std::fill(dx, dx + n, T(0));
    transform_.backward_input(dx, H_, da, H_, m, H_, H_, c);
    linear_backward_weight(g.transform.w, H_, g.transform.b, da, H_, cache.x.data(), H_, m, H_, H_, c);
    for (int i = 0; i < m; ++i) ops::add(d_hidden + static_cast<long>(cache.rows[i]) * H_, dx + static_cast<long>(i) * H_, H_);
  }

 private:
  int H_ = 0, V_ = 0;
  Activation act_ = Activation::kGeluErf;
  double eps_ = 1e-12;
  Params p_;
  Linear<T> transform_, decoder_;
};

}  // namespace dynabert::layers
