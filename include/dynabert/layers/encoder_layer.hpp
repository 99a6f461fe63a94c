// EncoderLayer<T, Dims>: one BERT layer composed of the blocks, self-attention -> AddNorm ->
// feed-forward -> AddNorm (post-LayerNorm residuals), at any prefix of heads and FFN neurons.
//
//   forward (inference)  hidden -> hidden in place, through the caller's buffers; the residuals
//                        ride in the GEMM epilogues (FP32; the fused low-precision path below
//                        adds them in its row sinks);
//   forward (training)   x -> y with every block's cache; dropout after both output projections
//                        (then the residual is added after the dropout) and on the attention
//                        probabilities; in evaluation mode it computes bitwise what inference does;
//   backward             the blocks' backwards in reverse.
//   fused low precision  (inference in INT8 or BF16) the same products, each handing its
//                        finished rows to the next step while they are in cache: Q/K/V's to
//                        their conversion for the attention tasks (bfloat16; int8 per head in
//                        INT8 calls), the output projection's to the first LayerNorm and the
//                        conversion of the FFN's input, the FFN's first product's straight to
//                        the conversion of its second (its FP32 output is stored whole only when
//                        threads split its columns),
//                        the second's to the last LayerNorm and the conversion of the next
//                        layer's input. Bitwise the products one after another (kernels::RowSink,
//                        LowpScratch).
//   first-row forward    (inference and training, `first`) when only the pooler reads a layer's output (the last
//                        layer under a classification or regression loss): keys and values come
//                        from every row, but only each sequence's first row is queried, and the
//                        output projection, the FFN and both LayerNorms run on those rows alone,
//                        y being [batch, H]. The logits are bitwise those of the full forward
//                        (every row is computed alone), and the last layer costs about a quarter.
#pragma once
#include <algorithm>
#include <string>
#include <type_traits>

#include "dynabert/core/params.hpp"
#include "dynabert/layers/add_norm.hpp"
#include "dynabert/layers/attention.hpp"
#include "dynabert/layers/dims.hpp"
#include "dynabert/layers/feed_forward.hpp"

#ifndef DYNABERT_LOWP_FUSE  // 0: low-precision layers run their products one after another
#define DYNABERT_LOWP_FUSE 1
#endif

namespace dynabert::layers {

/// A layer's parameters (P = const T) or gradients (P = T).
template <class P>
struct EncoderLayerTensors {
  AttentionTensors<P> attention;
  NormTensors<P> norm1;
  FeedForwardTensors<P> ffn;
  NormTensors<P> norm2;
  template <class Q = P, class = std::enable_if_t<!std::is_const_v<Q>>>
  operator EncoderLayerTensors<const Q>() const { return {attention, norm1, ffn, norm2}; }
};

struct EncoderLayerShape {
  AttentionShape attention;
  FeedForwardShape ffn;
  double eps = 1e-12;
};

/// The active part of a layer in one call.
struct LayerCall {
  int heads = 0;                 ///< active heads (prefix)
  int neurons = 0;               ///< active FFN neurons (prefix)
  const float* gates = nullptr;  ///< [heads] multipliers on the attention probabilities, or null
};

/// Where an inference call keeps its intermediates ([rows, H] buffers and the attention's).
template <class T>
struct EncoderBuffers {
  T* tmp = nullptr;
  T* h1 = nullptr;
  T* ffn = nullptr;  ///< [rows, ld_ffn]
  long ld_ffn = 0;
  AttentionBuffers<T> attention;
};

/// Dropout of one training call of a layer (inactive keys: evaluation mode).
struct LayerDropout {
  kernels::DropoutKey probs, attention_out, ffn_out;
  bool active() const { return probs.active() || attention_out.active() || ffn_out.active(); }
};

/// What a layer's backward needs.
template <class T>
struct EncoderLayerCache {
  AttentionCache<T> attention;
  NormCache<T> norm1, norm2;
  FeedForwardCache<T> ffn;
  AlignedBuffer<T> h1;  ///< [rows, H] output of the first AddNorm, input of the FFN
  bool first = false;   ///< the first-row forward ran: h1 and the output are [batch, H]
  AlignedBuffer<T> x_first;          ///< [batch, H] the input's first rows (the residual)
  mutable AlignedBuffer<T> d_first;  ///< [batch, H] backward temporary
};

template <class T, class Dims = DynamicDims>
class EncoderLayer {
 public:
  using Attention = SelfAttention<T, Dims::kHeadDim>;
  using Norm = AddNorm<T, Dims::kHidden>;
  using Params = EncoderLayerTensors<const T>;
  using Grads = EncoderLayerTensors<T>;
  using Cache = EncoderLayerCache<T>;

  EncoderLayer() = default;
  EncoderLayer(const EncoderLayerShape& s, Params p)
      : s_(s), attention_(s.attention, p.attention), norm1_(s.attention.hidden, s.eps, p.norm1), ffn_(s.ffn, p.ffn),
        norm2_(s.attention.hidden, s.eps, p.norm2) {}
  /// Declares BERT's tensors of a layer under `prefix` ("encoder.layer.3.").
  static void declare(Schema& sc, const std::string& prefix, const EncoderLayerShape& s) {
    Attention::declare(sc, prefix, s.attention);
    Norm::declare(sc, prefix + "attention.output.LayerNorm.", s.attention.hidden);
    FeedForward<T>::declare(sc, prefix, s.ffn);
    Norm::declare(sc, prefix + "output.LayerNorm.", s.attention.hidden);
  }
  template <class Set>
  static auto tensors(Set& set, const std::string& prefix) {
    using P = std::remove_reference_t<decltype(*set.view(""))>;
    EncoderLayerTensors<P> t;
    t.attention = Attention::tensors(set, prefix);
    t.norm1 = {set.view(prefix + "attention.output.LayerNorm.weight"), set.view(prefix + "attention.output.LayerNorm.bias")};
    t.ffn = FeedForward<T>::tensors(set, prefix);
    t.norm2 = {set.view(prefix + "output.LayerNorm.weight"), set.view(prefix + "output.LayerNorm.bias")};
    return t;
  }
  void bind(Params p) {
    attention_.bind(p.attention);
    norm1_.bind(p.norm1);
    ffn_.bind(p.ffn);
    norm2_.bind(p.norm2);
  }
  void pack(bool backward) {
    attention_.pack(backward);
    ffn_.pack(backward);
  }
  /// Low-precision packings for serving (kernels/lowp.hpp): the four linear layers.
  void pack_lowp(Precision p) {
    attention_.pack_lowp(p);
    ffn_.pack_lowp(p);
  }
  void drop_fp32() {
    attention_.drop_fp32();
    ffn_.drop_fp32();
  }
  bool has(Precision p) const { return attention_.has(p) && ffn_.has(p); }
  /// Bytes of the packings of precision p (LayerNorms and biases count with FP32).
  std::size_t bytes(Precision p) const {
    return attention_.bytes(p) + ffn_.bytes(p) +
           (p == Precision::kFp32 ? sizeof(T) * (6 * s_.attention.hidden + s_.ffn.intermediate) : 0);
  }
  Attention& attention() { return attention_; }
  FeedForward<T>& ffn() { return ffn_; }
  void forget_matrices() {
    attention_.forget_matrices();
    ffn_.forget_matrices();
  }
  const EncoderLayerShape& shape() const { return s_; }
  int heads() const { return s_.attention.heads; }
  int intermediate() const { return s_.ffn.intermediate; }
  const Attention& attention() const { return attention_; }
  std::size_t bytes() const { return attention_.bytes() + ffn_.bytes() + sizeof(T) * 4 * s_.attention.hidden; }

  /// Whether forward() takes the fused low-precision path in a call with `c`: a float layer with
  /// every linear layer packed in c.precision (INT8 or BF16) and room for the row sinks in c.lowp.
  bool fused(const Compute& c) const {
    if constexpr (!ops::kFast<T>) {
      return false;
    } else {
      return DYNABERT_LOWP_FUSE && c.precision != Precision::kFp32 && has(c.precision) && c.lowp != nullptr &&
             c.lowp->fits_sink(c.th().count(), std::max({s_.attention.hidden, s_.ffn.intermediate,
                                                         3 * s_.attention.heads * attention_.head_dim()}));
    }
  }

  /// hidden [rows, H] -> hidden, in place (inference). With `first`, the first-row forward: the
  /// first batch rows of hidden then hold [batch, H], row b being sequence b's first token.
  /// On the fused path (fused(c)): with `in_converted`, c.lowp->op[1] holds hidden converted
  /// already (by the previous layer's `convert_out`), and with `convert_out` the output is also
  /// converted there for the next layer (neither with `first`'s output).
  void forward(T* hidden, const BatchLayout& lay, const LayerCall& call, const EncoderBuffers<T>& buf, const Compute& c,
               bool first = false, bool in_converted = false, bool convert_out = false) const {
    const int H = s_.attention.hidden;
    const T* res = hidden;
    if (first) {  // the residual, each sequence's first row, waits in h1 (hidden is read whole by Q/K/V)
      for (int b = 0; b < lay.batch; ++b)
        std::copy_n(hidden + static_cast<long>(lay.row_off[b]) * H, H, buf.h1 + static_cast<long>(b) * H);
      res = buf.h1;
    }
    const int rows = first ? lay.batch : lay.rows;
    if constexpr (ops::kFast<T>) {
      if (fused(c)) return forward_fused(hidden, res, rows, lay, call, buf, c, first, in_converted, convert_out && !first);
    }
    DYNABERT_REQUIRE(!in_converted && !convert_out, InputError, "encoder layer: converted inputs need the fused path");
    attention_.forward(buf.tmp, hidden, res, lay, call.heads, call.gates, buf.attention, c, first);
    norm1_.forward(buf.h1, buf.tmp, nullptr, rows, c);
    ffn_.forward(buf.tmp, buf.h1, buf.h1, rows, call.neurons, buf.ffn, buf.ld_ffn, c);
    norm2_.forward(hidden, buf.tmp, nullptr, rows, c);
  }

  /// Training: y [rows, H] from x [rows, H]; `a` is a [rows, H] temporary, `attention` holds the
  /// attention's training scratch.
  /// With `first`, the first-row forward: y is [batch, H] (row b: sequence b's first token).
  void forward(T* y, const T* x, const BatchLayout& lay, const LayerCall& call, const LayerDropout& drop, Cache& cache,
               T* a, const AttentionBuffers<T>& attention, const Compute& c, bool first = false) const {
    const int H = s_.attention.hidden;
    const BatchLayout out = first ? lay.first_rows() : lay;  // the layout of the rows computed after attention
    const int rows = out.rows;
    const bool split = drop.attention_out.active() || drop.ffn_out.active();  // residual after the dropout
    const T* res = x;
    if (first) {  // the residual: each sequence's first row of x
      T* xf = cache.x_first.ensure(static_cast<std::size_t>(rows) * H);
      for (int b = 0; b < lay.batch; ++b)
        std::copy_n(x + static_cast<long>(lay.row_off[b]) * H, H, xf + static_cast<long>(b) * H);
      res = xf;
    }
    cache.first = first;
    T* h1 = cache.h1.ensure(static_cast<std::size_t>(rows) * H);
    attention_.forward(a, x, split ? nullptr : res, lay, call.heads, call.gates, drop.probs, cache.attention, attention, c, first);
    norm1_.forward(h1, a, split ? res : nullptr, out, drop.attention_out, cache.norm1, c);
    ffn_.forward(a, h1, split ? nullptr : h1, rows, call.neurons, cache.ffn, c);
    norm2_.forward(y, a, split ? h1 : nullptr, out, drop.ffn_out, cache.norm2, c);
  }

  /// dx [rows, H] = d(input) (written) from dy [rows, H] ([batch, H] after a first-row
  /// forward); grads +=; d_gates[h] += d/d(gate h) when not null. x is the forward's input; da and
  /// dh1 are [rows, H] temporaries.
  void backward(T* dx, const T* dy, const T* x, const BatchLayout& lay, const Cache& cache, Grads g, T* d_gates, T* da,
                T* dh1, const AttentionBuffers<T>& attention, const Compute& c) const {
    const int H = s_.attention.hidden;
    const BatchLayout out = cache.first ? lay.first_rows() : lay;
    const std::size_t n = static_cast<std::size_t>(lay.rows) * H, m = static_cast<std::size_t>(out.rows) * H;
    std::fill(dh1, dh1 + m, T(0));
    norm2_.backward(da, dh1, dy, out, cache.norm2, g.norm2, c);
    ffn_.backward(dh1, da, cache.h1.data(), cache.ffn, g.ffn, c);
    std::fill(dx, dx + n, T(0));
    T* dres = dx;
    if (cache.first) {  // the residual's gradient reaches the first rows only
      dres = cache.d_first.ensure(m);
      std::fill(dres, dres + m, T(0));
    }
    norm1_.backward(da, dres, dh1, out, cache.norm1, g.norm1, c);
    if (cache.first)
      for (int b = 0; b < lay.batch; ++b)
        ops::add(dx + static_cast<long>(lay.row_off[b]) * H, dres + static_cast<long>(b) * H, static_cast<std::size_t>(H));
    attention_.backward(dx, da, x, lay, cache.attention, g.attention, d_gates, attention, c);
  }

 private:
  /// A row sink that adds the residual to finished rows, LayerNorms them into `out` and (with
  /// `dst`) converts the result. The residual is added here rather than in the product's
  /// epilogue: read row after row it streams from memory, where the epilogue's 32-column pieces
  /// of rows 3 KB apart each waited for their line. The same float additions as the epilogue's
  /// after its bias (BERT's output projections and FFN have biases; without one the compiler may
  /// fuse the epilogue's multiply with its residual addition, and the two paths could differ in
  /// the last bit).
  struct NormSink {
    const Norm* norm;
    const T* residual;  ///< [rows, hidden], or null
    T* out;
    int hidden;
    LowpOperand* dst;
    Precision p;
    static void rows(void* ctx, long m0, long m1, float* r, long ld) {
      const auto* s = static_cast<const NormSink*>(ctx);
      const long H = s->hidden;
      if (s->dst && s->p == Precision::kInt8) {
        // residual, LayerNorm with max |y|, int8: two passes over a row fewer with AVX512BW (bitwise
        // the same as add, forward_row and convert_rows)
        for (long m = m0; m < m1; ++m) {
          T* y = s->out + m * H;
          const kernels::RowAbsMax mx = s->norm->forward_row_absmax(y, r + (m - m0) * ld, s->residual ? s->residual + m * H : nullptr);
          s->dst->quantize_row(m, y, s->hidden, mx.amax, mx.nan);
        }
        return;
      }
      for (long m = m0; m < m1; ++m) {
        float* x = r + (m - m0) * ld;
        if (s->residual) ops::add(x, s->residual + m * H, static_cast<std::size_t>(H));
        s->norm->forward_row(s->out + m * H, x);
      }
      if (s->dst) s->dst->convert_rows(s->p, s->out + m0 * H, H, m0, m1, s->hidden);
    }
  };

  /// The fused low-precision forward (see the file's comment). The two operands of c.lowp
  /// alternate: Q/K/V reads op[1] (in_converted) or converts hidden into op[0], its rows going to
  /// bfloat16 in c.lowp->qkv (INT8 calls: to int8 there, each head's Q, K and V with its scale in
  /// c.lowp->qkv_scale); the output projection converts the context into op[0] while its
  /// rows (+ res) go through LayerNorm into h1 and op[1]; the FFN reads op[1] and converts its
  /// intermediate into op[0]; its rows (+ h1) go through LayerNorm into hidden and (convert_out)
  /// op[1].
  void forward_fused(T* hidden, const T* res, int rows, const BatchLayout& lay, const LayerCall& call,
                     const EncoderBuffers<T>& buf, const Compute& c, bool first, bool in_converted, bool convert_out) const {
    const int H = s_.attention.hidden;
    const Precision p = c.precision;
    LowpScratch& ls = *c.lowp;
    DYNABERT_REQUIRE(ls.fits(lay.rows, std::max({H, call.neurons, call.heads * attention_.head_dim()}), p), InputError,
                     "encoder layer: no room to convert ", lay.rows, " rows in ", to_string(p));
    const kernels::LowpA in = ls.op[1].view(p, H);
    NormSink n1{&norm1_, res, buf.h1, H, &ls.op[1], p};
    const kernels::RowSink s1{&NormSink::rows, &n1, ls.sink_scratch(), ls.rows_stride};
    AttentionBuffers<T> ab = buf.attention;
    const bool room = ls.qkv.size() >= static_cast<std::size_t>(lay.rows) * ab.ld_qkv;
    if (Attention::task_precision(c, nullptr) == Precision::kInt8) {
      if (room && ls.qkv_scale.size() >= static_cast<std::size_t>(lay.rows) * 3 * call.heads) {
        ab.qkv_s8 = reinterpret_cast<std::int8_t*>(ls.qkv.data());
        ab.qkv_scale = ls.qkv_scale.data();
        ab.qkv_corr = ls.qkv_corr.data();
        ab.ld_seg = lay.rows;
      }
    } else if (room) {
      ab.qkv_bf16 = ls.qkv.data();
    }
    attention_.forward(buf.tmp, hidden, nullptr, lay, call.heads, call.gates, ab, c, first, in_converted ? &in : nullptr, &s1);
    NormSink n2{&norm2_, buf.h1, hidden, H, convert_out ? &ls.op[1] : nullptr, p};
    const kernels::RowSink s2{&NormSink::rows, &n2, ls.sink_scratch(), ls.rows_stride};
    ffn_.forward_converted(buf.tmp, ls.op[1].view(p, H), ls.op[0], nullptr, rows, call.neurons, buf.ffn, buf.ld_ffn, &s2, c);
  }

  EncoderLayerShape s_;
  Attention attention_;
  Norm norm1_;
  FeedForward<T> ffn_;
  Norm norm2_;
};

}  // namespace dynabert::layers
