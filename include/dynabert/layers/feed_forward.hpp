// FeedForward<T>: y = act(x W1[:f]^T + b1[:f]) W2[:, :f]^T + b2 (+ residual), BERT's intermediate
// and output dense layers at any prefix of f neurons (after rewiring the most important first).
// The activation (erf or tanh GELU) is applied in the first GEMM's epilogue; the second GEMM's
// inner dimension is the prefix.
//
//   forward (inference)  the activations go to the caller's buffer;
//   forward (training)   the cache keeps the pre-activation u (stored by the same epilogue) and
//                        the activation g, the second product's input;
//   backward             dg = dy W2, du = dg act'(u), dx += du W1; dW1, db1, dW2, db2 +=.
#pragma once
#include <algorithm>
#include <type_traits>
#include <string>

#include "dynabert/core/params.hpp"
#include "dynabert/kernels/ops.hpp"
#include "dynabert/layers/context.hpp"
#include "dynabert/layers/linear.hpp"

namespace dynabert::layers {

/// Feed-forward parameters (P = const T) or gradients (P = T), Hugging Face layout:
/// W1 [I, H], W2 [H, I].
template <class P>
struct FeedForwardTensors {
  P *in_w = nullptr, *in_b = nullptr, *out_w = nullptr, *out_b = nullptr;
  template <class Q = P, class = std::enable_if_t<!std::is_const_v<Q>>>
  operator FeedForwardTensors<const Q>() const { return {in_w, in_b, out_w, out_b}; }
};

struct FeedForwardShape {
  int hidden = 0, intermediate = 0;
  Activation act = Activation::kGeluErf;
};

/// What a feed-forward block's backward needs.
template <class T>
struct FeedForwardCache {
  AlignedBuffer<T> u, g;  ///< [rows, f] pre-activation, [rows, ld_g] activation
  int rows = 0, neurons = 0;
  long ld_g = 0;
};

template <class T>
class FeedForward {
 public:
  using Params = FeedForwardTensors<const T>;
  using Grads = FeedForwardTensors<T>;
  using Cache = FeedForwardCache<T>;

  FeedForward() = default;
  FeedForward(const FeedForwardShape& s, Params p) : s_(s), p_(p) {}
  /// Declares BERT's tensors of a layer under `prefix` ("encoder.layer.3.").
  static void declare(Schema& sc, const std::string& prefix, const FeedForwardShape& s) {
    sc.add(prefix + "intermediate.dense.weight", {s.intermediate, s.hidden});
    sc.add(prefix + "intermediate.dense.bias", {s.intermediate});
    sc.add(prefix + "output.dense.weight", {s.hidden, s.intermediate});
    sc.add(prefix + "output.dense.bias", {s.hidden});
  }
  template <class Set>
  static auto tensors(Set& set, const std::string& prefix) {
    using P = std::remove_reference_t<decltype(*set.view(""))>;
    return FeedForwardTensors<P>{set.view(prefix + "intermediate.dense.weight"), set.view(prefix + "intermediate.dense.bias"),
                                 set.view(prefix + "output.dense.weight"), set.view(prefix + "output.dense.bias")};
  }
  void bind(Params p) { p_ = p; }
  const FeedForwardShape& shape() const { return s_; }
  void pack(bool backward) {
    in_.pack(p_.in_w, s_.intermediate, s_.hidden, s_.hidden, backward);
    out_.pack(p_.out_w, s_.hidden, s_.intermediate, s_.intermediate, backward);
  }
  /// Adds int8 or bf16 packings of both weights (serving; before forget_matrices()).
  void pack_lowp(Precision p) {
    in_.pack_lowp(p);
    out_.pack_lowp(p);
  }
  void drop_fp32() {
    in_.drop_fp32();
    out_.drop_fp32();
  }
  bool has(Precision p) const { return in_.has(p) && out_.has(p); }
  std::size_t bytes(Precision p) const { return in_.bytes(p) + out_.bytes(p); }
  Linear<T>& in_linear() { return in_; }
  Linear<T>& out_linear() { return out_; }
  void forget_matrices() {
    p_.in_w = p_.out_w = nullptr;
    in_.forget_source();
    out_.forget_source();
  }
  std::size_t bytes() const {
    return in_.bytes() + out_.bytes() + sizeof(T) * (static_cast<std::size_t>(s_.intermediate) + s_.hidden);
  }

  /// y [rows, H] = FFN(x) (+ residual) with f neurons; `act` [rows, ld_act] holds the activations.
  void forward(T* y, const T* x, const T* residual, int rows, int f, T* act, long ld_act, const Compute& c) const {
    check(f);
    LinearEpilogue<T> e1;
    e1.bias = p_.in_b;
    e1.act = s_.act;
    in_.forward(act, ld_act, x, s_.hidden, rows, f, s_.hidden, e1, c);
    second(y, act, ld_act, residual, rows, f, c);
  }
  /// Training: the same, keeping u and g in the cache.
  void forward(T* y, const T* x, const T* residual, int rows, int f, Cache& cache, const Compute& c) const {
    check(f);
    cache.rows = rows;
    cache.neurons = f;
    LinearEpilogue<T> e1;
    e1.bias = p_.in_b;
    e1.act = s_.act;
    e1.pre_activation = cache.u.ensure(static_cast<std::size_t>(rows) * f);
    e1.ld_pre_activation = f;
    cache.ld_g = padded_ld(f);
    T* g = cache.g.ensure(static_cast<std::size_t>(rows) * cache.ld_g);
    in_.forward(g, cache.ld_g, x, s_.hidden, rows, f, s_.hidden, e1, c);
    second(y, g, cache.ld_g, residual, rows, f, c);
  }

  /// Inference in a low precision (float; both products packed in c.precision) from an input
  /// converted already (`in`, hidden columns). The first product's finished rows are converted
  /// straight into `next` (kernels::RowSink): its FP32 output is never stored whole, only a chunk
  /// at a time in the sink's scratch (or in `act` [rows, ld_act] when threads split its columns).
  /// The second product reads `next` and hands its finished rows (+ residual) to `sink`, or
  /// stores them in y [rows, H] without one. Bitwise the results of forward().
  void forward_converted(T* y, const kernels::LowpA& in, LowpOperand& next, const T* residual, int rows, int f, T* act,
                         long ld_act, const kernels::RowSink* sink, const Compute& c) const {
    static_assert(ops::kFast<T>, "converted inputs are for the float path");
    check(f);
    const Precision p = c.precision;
    DYNABERT_REQUIRE(c.lowp && c.lowp->fits_sink(c.th().count(), std::max(f, s_.hidden)), InputError,
                     "feed-forward: no row-sink scratch for ", f, " neurons on ", c.th().count(), " threads");
    DYNABERT_REQUIRE(next.fits(rows, f, p), InputError, "feed-forward: no room to convert ", rows, " x ", f,
                     " intermediate values");
    struct Convert {
      LowpOperand* dst;
      Precision p;
      int f;
      static void rows(void* ctx, long m0, long m1, float* r, long ld) {
        auto* s = static_cast<Convert*>(ctx);
        s->dst->convert_rows(s->p, r, ld, m0, m1, s->f);
      }
    } convert{&next, p, f};
    const kernels::RowSink to_next{&Convert::rows, &convert, c.lowp->sink_scratch(), c.lowp->rows_stride};
    LinearEpilogue<T> e1;
    e1.bias = p_.in_b;
    e1.act = s_.act;
    in_.forward_converted(act, ld_act, in, rows, f, s_.hidden, e1, c, &to_next);
    LinearEpilogue<T> e2;
    e2.bias = p_.out_b;
    e2.residual = residual;
    e2.ld_residual = s_.hidden;
    out_.forward_converted(y, s_.hidden, next.view(p, f), rows, s_.hidden, f, e2, c, sink);
  }

  /// A row stride for f values that is not a multiple of 4 KB (rows 4 KB apart would share one L1
  /// set when the GEMM reads them in place).
  static long padded_ld(int f) { return (static_cast<long>(f) * sizeof(T)) % 4096 == 0 ? f + 16 : f; }

  /// dx [rows, H] += d(input) from dy [rows, H]; grads +=. x is the forward's input.
  void backward(T* dx, const T* dy, const T* x, const Cache& cache, Grads gr, const Compute& c) const {
    const int rows = cache.rows, f = cache.neurons, H = s_.hidden, I = s_.intermediate;
    const long ld = padded_ld(f);  // dg is read in place by dx += dg W1
    T* dg = c.train->tmp<T>(0, static_cast<std::size_t>(rows) * ld);
    std::fill(dg, dg + static_cast<std::size_t>(rows) * ld, T(0));
    out_.backward_input(dg, ld, dy, H, rows, H, f, c);
    linear_backward_weight(gr.out_w, I, gr.out_b, dy, H, cache.g.data(), cache.ld_g, rows, H, f, c);
    c.th().for_chunks(rows, [&](int, long lo, long hi) {
      for (long r = lo; r < hi; ++r)
        ops::activation_backward(dg + r * ld, cache.u.data() + r * f, static_cast<std::size_t>(f), s_.act);
    });
    in_.backward_input(dx, H, dg, ld, rows, f, H, c);
    linear_backward_weight(gr.in_w, H, gr.in_b, dg, ld, x, H, rows, f, H, c);
  }

 private:
  void check(int f) const {
    DYNABERT_REQUIRE(f >= 1 && f <= s_.intermediate, InputError, "feed-forward: ", f, " neurons of ", s_.intermediate);
  }
  void second(T* y, const T* g, long ld, const T* residual, int rows, int f, const Compute& c) const {
    LinearEpilogue<T> e2;
    e2.bias = p_.out_b;
    e2.residual = residual;
    e2.ld_residual = s_.hidden;
    out_.forward(y, s_.hidden, g, ld, rows, s_.hidden, f, e2, c);
  }

  FeedForwardShape s_;
  Params p_;
  Linear<T> in_, out_;
};

}  // namespace dynabert::layers
