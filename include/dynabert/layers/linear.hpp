// Linear<T>: one weight matrix W [n, k] (PyTorch Linear: out x in) prepared for the three products
// of a linear layer at any active prefix (n' <= n outputs, k' <= k inputs):
//   forward          y = act(alpha x W[:n', :k']^T + b) + residual        (x W^T)
//   backward_input   dx += dy W[:n', :k']                                  (dy W)
//   linear_backward_weight (a free function)  dW[:n', :k'] += dy^T x, db += sum dy   (dy^T x)
// For float the weight is packed into elastic panels (kernels/gemm.hpp) once for serving, and in
// training again whenever the parameters change, by the same GEMM the forward uses; `backward`
// packs W^T as well, so that dy W runs on the packed kernel too. For other scalar types (double
// for gradient checks and oracles) the reference loops read the parameters in place, so nothing
// can go stale.
// pack_fused_qkv() builds the attention's fused Q/K/V weight with rows interleaved per head
// ([q_h | k_h | v_h] for h = 0, 1, ...), so that the first h heads are a row prefix.
// For serving, pack_lowp() adds int8 and bf16 packings of the same weight (kernels/lowp.hpp); a
// call whose Compute asks for a precision the layer holds runs in it, else in FP32.
#pragma once
#include <cstring>
#include <type_traits>

#include "dynabert/core/aligned.hpp"
#include "dynabert/core/parallel.hpp"
#include "dynabert/kernels/gemm.hpp"
#include "dynabert/kernels/lowp.hpp"
#include "dynabert/kernels/ops.hpp"
#include "dynabert/kernels/reference.hpp"
#include "dynabert/layers/context.hpp"

namespace dynabert::layers {

/// The epilogue of a linear layer in the model's scalar type (see kernels::Epilogue).
template <class T>
struct LinearEpilogue {
  const T* bias = nullptr;
  const T* residual = nullptr;
  long ld_residual = 0;
  Activation act = Activation::kNone;
  T alpha = T(1);
  T* pre_activation = nullptr;  ///< also store alpha x W^T + b here (training)
  long ld_pre_activation = 0;
};

template <class T>
class Linear {
 public:
  Linear() = default;
  int n() const { return n_; }
  int k() const { return k_; }
  /// Bytes of prepared weights (both orientations when packed for training; 0 when read in place),
  /// all precisions.
  std::size_t bytes() const {
    return sizeof(T) * (fwd_.size() + bwd_.size() + bias_.size()) + s8_.bytes() + bf16_.bytes();
  }
  /// Bytes of the packing of one precision (the fused bias counts with FP32).
  std::size_t bytes(Precision p) const {
    if (p == Precision::kInt8) return s8_.bytes();
    if (p == Precision::kBf16) return bf16_.bytes();
    return sizeof(T) * (fwd_.size() + bwd_.size() + bias_.size());
  }
  /// Whether forward() can run in precision p.
  bool has(Precision p) const {
    if (p == Precision::kInt8) return !s8_.empty();
    if (p == Precision::kBf16) return !bf16_.empty();
    return !ops::kFast<T> || fwd_view_.data != nullptr;
  }

  /// Prepares W [n, k] (row stride ldw); with `backward`, also W^T for dy W. The reference path
  /// (T other than float) reads W in place: it must stay alive and unmoved.
  void pack(const T* w, int n, int k, long ldw, bool backward) {
    n_ = n;
    k_ = k;
    w_ = w;
    ldw_ = ldw;
    fused_ = false;
    if constexpr (ops::kFast<T>) {
      fwd_view_ = kernels::pack_nk(fwd_.ensure(kernels::packed_size(n, k)), w, n, k, ldw);
      if (backward) bwd_view_ = kernels::pack_kn(bwd_.ensure(kernels::packed_size(k, n)), w, n, k, ldw);
    } else {
      (void)backward;
    }
  }

  /// The fused Q/K/V weight and bias of `heads` heads of size dh over H inputs, rows interleaved
  /// per head. The bias is applied by forward() (its epilogue's bias must be null).
  void pack_fused_qkv(const T* q, const T* k, const T* v, const T* qb, const T* kb, const T* vb, int heads, int dh, int H,
                      bool backward) {
    n_ = 3 * heads * dh;
    k_ = H;
    fused_ = true;
    q_[0] = q; q_[1] = k; q_[2] = v;
    qb_[0] = qb; qb_[1] = kb; qb_[2] = vb;
    dh_ = dh;
    if constexpr (ops::kFast<T>) {
      fwd_view_ = kernels::detail::pack(fwd_.ensure(kernels::packed_size(n_, H)), n_, H,
                                        [&](float* d, int j0, int jn, int pc, int kc) {
                                          for (int j = 0; j < jn; ++j) {
                                            const float* src = row(j0 + j) + pc;
                                            for (int kk = 0; kk < kc; ++kk) d[kk * kernels::kNR + j] = src[kk];
                                          }
                                        });
      if (backward)  // W^T: logical [H, 3a], element (j, r) = W[r][j]
        bwd_view_ = kernels::detail::pack(bwd_.ensure(kernels::packed_size(H, n_)), H, n_,
                                          [&](float* d, int j0, int jn, int pc, int kc) {
                                            for (int kk = 0; kk < kc; ++kk)
                                              std::memcpy(d + kk * kernels::kNR, row(pc + kk) + j0, sizeof(float) * jn);
                                          });
      T* b = bias_.ensure(static_cast<std::size_t>(n_));
      for (int r = 0; r < n_; ++r) b[r] = fused_bias(r);
    } else {
      (void)backward;
    }
  }
  /// Adds a packing in precision p (bf16 or int8) of the weight given to pack() or
  /// pack_fused_qkv(), whose source must still be alive (float only; for serving).
  void pack_lowp(Precision p) {
    static_assert(ops::kFast<T>, "low-precision packings are for the float path");
    DYNABERT_REQUIRE(fused_ || w_ != nullptr, InputError, "linear: pack_lowp after the source was forgotten");
    (p == Precision::kInt8 ? s8_ : bf16_).pack(p, n_, k_, [&](int r) { return row(r); });
  }
  /// Adds the int8 packing from rows quantized already (an INT8 checkpoint): q(r) points at row
  /// r's k int8 values, scale(r) is its scale. For a fused Q/K/V weight, row r is fused_row(r).
  template <class RowQ, class RowS>
  void pack_quantized(RowQ&& q, RowS&& scale) {
    static_assert(ops::kFast<T>, "low-precision packings are for the float path");
    s8_.pack_quantized(n_, k_, std::forward<RowQ>(q), std::forward<RowS>(scale));
  }
  /// Row r of a fused Q/K/V weight: part (0 Q, 1 K, 2 V) and the row within it.
  void fused_row(int r, int& part, long& row) const {
    const int h = r / (3 * dh_), i = r % dh_;
    part = (r / dh_) % 3;
    row = static_cast<long>(h) * dh_ + i;
  }
  /// Drops the FP32 packing (a model served only in low precision; float only).
  void drop_fp32() {
    static_assert(ops::kFast<T>, "the reference path reads its weights in place");
    fwd_.resize(0);
    bwd_.resize(0);
    fwd_view_ = bwd_view_ = kernels::PackedView{};
  }
  /// Forgets the source views (after packing, for serving; float only).
  void forget_source() {
    static_assert(ops::kFast<T>, "the reference path reads its weights in place");
    w_ = nullptr;
    q_[0] = q_[1] = q_[2] = nullptr;
    qb_[0] = qb_[1] = qb_[2] = nullptr;
  }

  /// y[M, n] = epilogue(x[M, k] W[:n, :k]^T). With a `sink` (float), the finished rows of y are
  /// handed to it (kernels::RowSink: in a low precision, with the sink's scratch, they may never
  /// be stored in y; y must still be a valid [M, ldy] buffer).
  void forward(T* y, long ldy, const T* x, long ldx, int M, int n, int k, const LinearEpilogue<T>& ep,
               const Compute& c, const kernels::RowSink* sink = nullptr) const {
    DYNABERT_REQUIRE(n >= 0 && n <= n_ && k >= 0 && k <= k_, InputError, "linear: active ", n, "x", k, " exceeds ", n_,
                     "x", k_);
    if constexpr (ops::kFast<T>) {
      const Precision p = c.precision;
      if (p != Precision::kFp32 && has(p) && k > 0) {
        if (M <= 0 || n <= 0) return;
        DYNABERT_REQUIRE(c.lowp != nullptr && c.lowp->fits(M, k, p), InputError, "linear: ", to_string(p),
                         " call without room to convert ", M, " x ", k, " inputs");
        auto& op = c.lowp->op[0];
        const auto a = kernels::convert_a(p, op.a.data(), op.scale.data(), op.corr.data(), x, ldx, M, k, c.th());
        return forward_converted(y, ldy, a, M, n, k, ep, c, sink);
      }
      DYNABERT_REQUIRE(fwd_view_.data != nullptr, InputError, "linear: no FP32 packing (prepared for ",
                       s8_.empty() ? "" : "int8 ", bf16_.empty() ? "" : "bf16 ", "only)");
      kernels::gemm(y, ldy, x, ldx, M, fwd_view_, n, k, epilogue(ep), c.gemm_scratch, c.th());
      if (sink && M > 0 && n > 0) sink->fn(sink->ctx, 0, M, y, ldy);
    } else {
      DYNABERT_REQUIRE(sink == nullptr, InputError, "linear: row sinks are for the float path");
      c.th().for_chunks(M, [&](int, long lo, long hi) {
        for (long m = lo; m < hi; ++m)
          for (int j = 0; j < n; ++j) {
            const T* w = row(j);
            T acc = 0;
            for (int i = 0; i < k; ++i) acc += x[m * ldx + i] * w[i];
            acc *= ep.alpha;
            if (fused_) acc += fused_bias(j);
            else if (ep.bias) acc += ep.bias[j];
            if (ep.pre_activation) ep.pre_activation[m * ep.ld_pre_activation + j] = acc;
            acc = kernels::reference::activate(ep.act, acc);
            if (ep.residual) acc += ep.residual[m * ep.ld_residual + j];
            y[m * ldy + j] = acc;
          }
      });
    }
  }

  /// y[M, n] = epilogue(a W[:n, :k]^T) in precision c.precision, from an input converted already
  /// for it with k columns (float, with a packing of that precision); `sink` as in forward().
  void forward_converted(T* y, long ldy, const kernels::LowpA& a, int M, int n, int k, const LinearEpilogue<T>& ep,
                         const Compute& c, const kernels::RowSink* sink = nullptr) const {
    static_assert(ops::kFast<T>, "converted inputs are for the float path");
    const Precision p = c.precision;
    DYNABERT_REQUIRE(p != Precision::kFp32 && has(p), InputError, "linear: no ", to_string(p), " packing for a converted input");
    if (M <= 0 || n <= 0) return;
    kernels::gemm_lowp(y, ldy, a, M, (p == Precision::kInt8 ? s8_ : bf16_).view(), n, k, epilogue(ep), c.th(),
                       kernels::LowpKernel::kAuto, sink);
  }

  /// dx[M, k] += dy[M, n] W[:n, :k] (needs pack(..., backward = true) for float).
  void backward_input(T* dx, long lddx, const T* dy, long lddy, int M, int n, int k, const Compute& c) const {
    if (M <= 0 || n <= 0 || k <= 0) return;
    if constexpr (ops::kFast<T>) {
      DYNABERT_REQUIRE(bwd_view_.data != nullptr, InputError, "linear: backward without a backward packing");
      kernels::Epilogue acc;
      acc.accumulate = true;
      kernels::gemm(dx, lddx, dy, lddy, M, bwd_view_, k, n, acc, c.gemm_scratch, c.th());
    } else {
      (void)c;
      for (long m = 0; m < M; ++m)
        for (int j = 0; j < n; ++j) {
          const T d = dy[m * lddy + j];
          const T* w = row(j);
          T* out = dx + m * lddx;
          for (int i = 0; i < k; ++i) out[i] += d * w[i];
        }
    }
  }

 private:
  kernels::Epilogue epilogue(const LinearEpilogue<T>& ep) const {
    kernels::Epilogue e;
    e.bias = fused_ ? bias_.data() : ep.bias;
    e.residual = ep.residual;
    e.ld_residual = ep.ld_residual;
    e.act = ep.act;
    e.alpha = ep.alpha;
    e.pre_activation = ep.pre_activation;
    e.ld_pre_activation = ep.ld_pre_activation;
    return e;
  }
  /// Row r of W (fused: the interleaved row of Q, K or V).
  const T* row(int r) const {
    if (!fused_) return w_ + r * ldw_;
    const int h = r / (3 * dh_), part = (r / dh_) % 3, i = r % dh_;
    return q_[part] + (static_cast<long>(h) * dh_ + i) * k_;
  }
  T fused_bias(int r) const {
    const int h = r / (3 * dh_), part = (r / dh_) % 3, i = r % dh_;
    return qb_[part][h * dh_ + i];
  }

  int n_ = 0, k_ = 0;
  const T* w_ = nullptr;
  long ldw_ = 0;
  bool fused_ = false;
  const T* q_[3] = {nullptr, nullptr, nullptr};
  const T* qb_[3] = {nullptr, nullptr, nullptr};
  int dh_ = 0;
  AlignedBuffer<T> fwd_, bwd_, bias_;
  kernels::PackedView fwd_view_, bwd_view_;
  kernels::LowpWeight s8_, bf16_;
};

/// dW[:n, :k] += dy[M, n]^T x[M, k] (row stride lddw), and db[:n] += column sums of dy when db is
/// not null. The reduction over M runs in a fixed order: results do not depend on the threads.
template <class T>
void linear_backward_weight(T* dw, long lddw, T* db, const T* dy, long lddy, const T* x, long ldx, int M, int n, int k,
                            const Compute& c) {
  if (M <= 0 || n <= 0) return;
  if constexpr (ops::kFast<T>) {
    if (k > 0) {
      // dW = A B'^T with A = dy^T (read transposed) and B' = x^T, packed now
      const auto B = kernels::pack_kn(c.train->pack.ensure(kernels::packed_size(k, M)), x, M, k, ldx);
      kernels::Epilogue acc;
      acc.accumulate = true;
      kernels::gemm<true>(dw, lddw, dy, lddy, n, B, k, M, acc, c.gemm_scratch, c.th());
    }
  } else {
    if (k > 0) kernels::reference::linear_backward_weight(dw, lddw, dy, lddy, x, ldx, M, n, k);
  }
  if (db) {
    // column sums in fixed chunks of rows; partial sums added in chunk order
    const long chunks = (M + kReduceChunk - 1) / kReduceChunk;
    if (chunks == 1) {
      ops::add_column_sums(db, dy, M, n, lddy);
      return;
    }
    T* part = c.train->partials<T>(static_cast<std::size_t>(chunks) * n);
    c.th().for_each(chunks, [&](long ch, int) {
      T* p = part + ch * n;
      std::fill(p, p + n, T(0));
      const long m0 = ch * kReduceChunk, m1 = std::min<long>(M, m0 + kReduceChunk);
      ops::add_column_sums(p, dy + m0 * lddy, m1 - m0, n, lddy);
    });
    for (long ch = 0; ch < chunks; ++ch) ops::add(db, part + ch * n, static_cast<std::size_t>(n));
  }
}

}  // namespace dynabert::layers
