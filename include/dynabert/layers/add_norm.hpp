// AddNorm<T, kH>: y = LayerNorm(dropout(a) + residual) * gamma + beta over rows of H values, the
// post-LayerNorm residual step of BERT's attention and feed-forward blocks. Also the row helpers
// every LayerNorm of the library uses (embeddings, MLM head).
//
//   forward   inference (no cache): y = LN(a + residual); the residual may already be in `a`
//             (the GEMM epilogue adds it), then pass residual = null.
//   forward   training (cache): also dropout on `a` before the residual (mask from the call's
//             key, indexed by token and column so that packed and padded rows agree), and xhat /
//             rstd kept for the backward.
//   backward  ds = LN'(dy); d_residual += ds; d_a = ds * dropout mask; dgamma, dbeta += (in fixed
//             row chunks: bitwise the same for any thread count).
#pragma once
#include <type_traits>
#include <algorithm>
#include <string>

#include "dynabert/core/params.hpp"
#include "dynabert/kernels/dropout.hpp"
#include "dynabert/kernels/ops.hpp"
#include "dynabert/layers/batch.hpp"
#include "dynabert/layers/context.hpp"

namespace dynabert::layers {

/// LayerNorm parameters (P = const T) or gradients (P = T).
template <class P>
struct NormTensors {
  P* gamma = nullptr;
  P* beta = nullptr;
  /// Mutable views convert to read-only ones.
  template <class Q = P, class = std::enable_if_t<!std::is_const_v<Q>>>
  operator NormTensors<const Q>() const { return {gamma, beta}; }
};

/// The dropout multiplier of element (row r, column j) of a [rows, H] activation: indexed by the
/// row's token, so that the mask does not depend on the layout.
template <class T>
inline void dropout_rows(T* x, long ld, int rows, int H, const BatchLayout* lay, const kernels::DropoutKey& key,
                         const Compute& c) {
  if (!key.active() || H <= 0) return;
  c.th().for_chunks(rows, [&](int, long lo, long hi) {
    for (long r = lo; r < hi; ++r) {
      const long tok = lay ? lay->row_token[r] : r;
      ops::dropout_multiply(x + r * ld, static_cast<std::size_t>(H), key, static_cast<std::uint32_t>(tok * H));
    }
  });
}

/// LayerNorm of `rows` rows (in place allowed), caching xhat and rstd when they are not null.
template <int kH = 0, class T>
inline void layernorm_rows(T* y, const T* x, int rows, int H, const T* gamma, const T* beta, double eps, T* xhat, T* rstd,
                           const Compute& c) {
  c.th().for_chunks(rows, [&](int, long lo, long hi) {
    for (long r = lo; r < hi; ++r) {
      if (xhat) ops::layernorm_row_cached<kH>(y + r * H, xhat + r * H, rstd + r, x + r * H, gamma, beta, H, eps);
      else ops::layernorm_row<kH>(y + r * H, x + r * H, gamma, beta, H, eps);
    }
  });
}

/// LayerNorm backward over rows: dx (+)= LN'(dy) (written when !accumulate), dgamma and dbeta
/// accumulated through fixed chunks of rows.
template <class T>
inline void layernorm_backward_rows(T* dx, const T* dy, const T* xhat, const T* rstd, int rows, int H, const T* gamma,
                                    T* dgamma, T* dbeta, bool accumulate, const Compute& c) {
  const long chunks = (rows + kReduceChunk - 1) / kReduceChunk;
  T* part = c.train->partials<T>(static_cast<std::size_t>(chunks) * 2 * H);
  c.th().for_each(chunks, [&](long ch, int) {
    T* pg = part + ch * 2 * H;
    T* pb = pg + H;
    std::fill(pg, pg + 2 * H, T(0));
    const long r0 = ch * kReduceChunk, r1 = std::min<long>(rows, r0 + kReduceChunk);
    for (long r = r0; r < r1; ++r) {
      T* d = dx + r * H;
      if (!accumulate) std::fill(d, d + H, T(0));
      ops::layernorm_backward_row(d, dy + r * H, xhat + r * H, rstd[r], gamma, pg, pb, H);
    }
  });
  for (long ch = 0; ch < chunks; ++ch) {
    ops::add(dgamma, part + ch * 2 * H, static_cast<std::size_t>(H));
    ops::add(dbeta, part + ch * 2 * H + H, static_cast<std::size_t>(H));
  }
}

/// What an AddNorm's backward needs.
template <class T>
struct NormCache {
  AlignedBuffer<T> xhat, rstd;
  kernels::DropoutKey drop;
  int rows = 0;
};

template <class T, int kH = 0>
class AddNorm {
 public:
  using Params = NormTensors<const T>;
  using Grads = NormTensors<T>;
  using Cache = NormCache<T>;

  AddNorm() = default;
  AddNorm(int hidden, double eps, Params p) : H_(hidden), eps_(eps), p_(p) {
    DYNABERT_REQUIRE(kH == 0 || kH == hidden, InputError, "AddNorm compiled for ", kH, " features, bound to ", hidden);
  }
  /// Declares `prefix`weight and `prefix`bias of H values.
  static void declare(Schema& s, const std::string& prefix, int H) {
    s.add(prefix + "weight", {H});
    s.add(prefix + "bias", {H});
  }
  void bind(Params p) { p_ = p; }
  const Params& params() const { return p_; }
  int hidden() const { return H_; }

  /// y = LN(x) of one row of H values (inference), bitwise forward()'s without a residual.
  void forward_row(T* y, const T* x) const { ops::layernorm_row<kH>(y, x, p_.gamma, p_.beta, H_, eps_); }

  /// y = LN(x + residual) of one row (inference, float; residual may be null), bitwise
  /// forward_row() after adding the residual into x (x then holds x + residual); also returns y's
  /// max |y| and NaN flag for an int8 conversion of y.
  kernels::RowAbsMax forward_row_absmax(float* y, float* x, const float* residual) const {
    static_assert(ops::kFast<T>, "the fused LayerNorm is for the float path");
    return kernels::add_layernorm_row_absmax<kH>(y, x, residual, p_.gamma, p_.beta, H_, eps_);
  }

  /// y = LN(a + residual) (inference; residual may be null); y may equal a.
  void forward(T* y, const T* a, const T* residual, int rows, const Compute& c) const {
    if (residual) {
      c.th().for_chunks(rows, [&](int, long lo, long hi) {
        for (long r = lo; r < hi; ++r) {
          T* dst = y + r * H_;
          const T* src = a + r * H_;
          const T* res = residual + r * H_;
          for (int i = 0; i < H_; ++i) dst[i] = src[i] + res[i];
          ops::layernorm_row<kH>(dst, dst, p_.gamma, p_.beta, H_, eps_);
        }
      });
      return;
    }
    layernorm_rows<kH>(y, a, rows, H_, p_.gamma, p_.beta, eps_, static_cast<T*>(nullptr), static_cast<T*>(nullptr), c);
  }

  /// Training: y = LN(dropout(a) + residual), caching what the backward needs. `a` is modified
  /// (dropped, then summed) unless the residual is null and dropout is off. With dropout on, the
  /// residual must be given (it cannot have been added before the dropout).
  void forward(T* y, T* a, const T* residual, const BatchLayout& lay, const kernels::DropoutKey& drop, Cache& cache,
               const Compute& c) const {
    DYNABERT_REQUIRE(residual || !drop.active(), InputError, "AddNorm: dropout needs the residual separately");
    const int rows = lay.rows;
    cache.drop = drop;
    cache.rows = rows;
    if (drop.active()) dropout_rows(a, H_, rows, H_, &lay, drop, c);
    if (residual)
      c.th().for_chunks(rows, [&](int, long lo, long hi) { ops::add(a + lo * H_, residual + lo * H_, static_cast<std::size_t>((hi - lo) * H_)); });
    layernorm_rows<kH>(y, a, rows, H_, p_.gamma, p_.beta, eps_, cache.xhat.ensure(static_cast<std::size_t>(rows) * H_),
                       cache.rstd.ensure(static_cast<std::size_t>(rows)), c);
  }

  /// d_a = LN'(dy) * mask (written), d_residual += LN'(dy) when not null; dgamma, dbeta +=.
  void backward(T* d_a, T* d_residual, const T* dy, const BatchLayout& lay, const Cache& cache, Grads g,
                const Compute& c) const {
    const int rows = cache.rows;
    layernorm_backward_rows(d_a, dy, cache.xhat.data(), cache.rstd.data(), rows, H_, p_.gamma, g.gamma, g.beta, false, c);
    if (d_residual)
      c.th().for_chunks(rows, [&](int, long lo, long hi) { ops::add(d_residual + lo * H_, d_a + lo * H_, static_cast<std::size_t>((hi - lo) * H_)); });
    dropout_rows(d_a, H_, rows, H_, &lay, cache.drop, c);
  }

 private:
  int H_ = 0;
  double eps_ = 1e-12;
  Params p_;
};

}  // namespace dynabert::layers
