// Fast row kernels (xsimd): activations, LayerNorm, softmax with mask, bias. Each has a twin in
// reference.hpp and a randomized test against it (tests/unit/test_kernels.cpp).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>

#include "dynabert/core/simd.hpp"
#include "dynabert/kernels/reference.hpp"

#ifndef DYNABERT_XSIMD_ERF
#define DYNABERT_XSIMD_ERF 0
#endif
#ifndef DYNABERT_ERF_DIVIDE  // 1: the rational erf divides instead of refining a reciprocal estimate
#define DYNABERT_ERF_DIVIDE 0
#endif

namespace dynabert::kernels {

namespace detail {
/// erf for GELU: odd rational minimax approximation p(x) / q(x) (degrees 13 / 8) on x clipped to
/// [-4, 4], where erf is 1 to float precision. About 12 FMAs and one division, against xsimd::erf's
/// two branches, exp and division; in the FFN-in epilogue GELU went from about 6 % to about 1.5 %
/// of the product's time (BM_GemmEpilogue/epilogue:1 against /epilogue:0; -DDYNABERT_XSIMD_ERF=1
/// restores xsimd::erf). Largest error against std::erf is 3.3e-7 with FMA hardware, 4.2e-7
/// without (xsimd::erf: 8.7e-8); tests/unit/test_kernels.cpp checks the bound on a dense sweep.
/// q < 0 everywhere: no poles.
template <class B>
inline B fast_erf(B x) {
  x = xsimd::clip(x, B(-4.0f), B(4.0f));
  const B x2 = x * x;
  B p(-2.72614225801306e-10f);
  p = xsimd::fma(p, x2, B(2.77068142495902e-08f));
  p = xsimd::fma(p, x2, B(-2.10102402082508e-06f));
  p = xsimd::fma(p, x2, B(-5.69250639462346e-05f));
  p = xsimd::fma(p, x2, B(-7.34990630326855e-04f));
  p = xsimd::fma(p, x2, B(-2.95459980854025e-03f));
  p = xsimd::fma(p, x2, B(-1.60960333262415e-02f));
  B q(-1.45660718464996e-05f);
  q = xsimd::fma(q, x2, B(-2.13374055278905e-04f));
  q = xsimd::fma(q, x2, B(-1.68282697438203e-03f));
  q = xsimd::fma(q, x2, B(-7.37332916720468e-03f));
  q = xsimd::fma(q, x2, B(-1.42647390514189e-02f));
#if DYNABERT_ERF_DIVIDE
  return p * x / q;
#else
  // 1 / q from the hardware estimate and one Newton step (two FMAs) instead of a division, which
  // is slow on AVX-512 (the GELU was about 9 % of an INT8 forward; the FMA-only erf keeps the error
  // bound below)
  B r = xsimd::reciprocal(q);
  r = xsimd::fma(r, xsimd::fnma(q, r, B(1.0f)), r);
  return p * x * r;
#endif
}

/// The standard normal CDF Phi(x) = (1 + erf(x / sqrt 2)) / 2 that the erf GELU and its derivative
/// share.
template <class B>
inline B normal_cdf(const B& x) {
#if DYNABERT_XSIMD_ERF  // the previous erf, kept to measure against (docs/performance.md)
  return B(0.5f) * (B(1.0f) + xsimd::erf(x * B(0.70710678118654752440f)));
#else
  return B(0.5f) * (B(1.0f) + fast_erf(x * B(0.70710678118654752440f)));
#endif
}

/// Vector activation on one batch.
template <class B>
inline B activate(Activation a, const B& x) {
  using xsimd::tanh;
  switch (a) {
    case Activation::kGeluErf: return x * normal_cdf(x);
    case Activation::kGeluTanh:
      return B(0.5f) * x * (B(1.0f) + tanh(B(0.79788456080286535588f) * (x + B(0.044715f) * x * x * x)));
    case Activation::kTanh: return tanh(x);
    default: return x;
  }
}

/// Derivative of an activation at one batch of pre-activations.
template <class B>
inline B activation_grad(Activation a, const B& x) {
  if (a == Activation::kGeluErf) {
    const B cdf = normal_cdf(x);
    const B pdf = xsimd::exp(B(-0.5f) * x * x) * B(0.39894228040143267794f);
    return xsimd::fma(x, pdf, cdf);
  }
  if (a == Activation::kGeluTanh) {
    const B k(0.79788456080286535588f), c3(0.044715f);
    const B th = xsimd::tanh(k * (x + c3 * x * x * x));
    return B(0.5f) * (B(1.0f) + th) + B(0.5f) * x * (B(1.0f) - th * th) * k * (B(1.0f) + B(3.0f) * c3 * x * x);
  }
  if (a == Activation::kTanh) {
    const B th = xsimd::tanh(x);
    return B(1.0f) - th * th;
  }
  return B(1.0f);
}
}  // namespace detail

// The element-wise kernels below give every element the same SIMD arithmetic: a partial last
// vector goes through a padded copy. So a value's bits do not depend on where a caller splits an
// array (between threads, rows or calls).

/// out[i] = act(x[i]) for i < n (out may equal x).
inline void activation(float* out, const float* x, std::size_t n, Activation act) {
  using B = simd::Batch;
  std::size_t i = 0;
  for (; i + B::size <= n; i += B::size) detail::activate(act, B::load_unaligned(x + i)).store_unaligned(out + i);
  if (i < n) {
    alignas(64) float t[B::size] = {};
    std::memcpy(t, x + i, sizeof(float) * (n - i));
    detail::activate(act, B::load_aligned(t)).store_aligned(t);
    std::memcpy(out + i, t, sizeof(float) * (n - i));
  }
}

/// d[i] *= act'(x[i]) for i < n (the activation's backward).
inline void activation_backward(float* d, const float* x, std::size_t n, Activation act) {
  using B = simd::Batch;
  std::size_t i = 0;
  for (; i + B::size <= n; i += B::size)
    (B::load_unaligned(d + i) * detail::activation_grad(act, B::load_unaligned(x + i))).store_unaligned(d + i);
  if (i < n) {
    alignas(64) float td[B::size] = {}, tx[B::size] = {};
    std::memcpy(td, d + i, sizeof(float) * (n - i));
    std::memcpy(tx, x + i, sizeof(float) * (n - i));
    (B::load_aligned(td) * detail::activation_grad(act, B::load_aligned(tx))).store_aligned(td);
    std::memcpy(d + i, td, sizeof(float) * (n - i));
  }
}

/// In place: x[i] = act(x[i]) for i < n.
inline void activation(float* x, std::size_t n, Activation act) {
  if (act == Activation::kNone) return;
  activation(x, x, n, act);
}

/// What a row pass found of the row it wrote, for quantizing it next (quantize_a_row_known in
/// kernels/lowp.hpp): max |y| over the values that are not NaN, and whether one was NaN.
struct RowAbsMax {
  float amax = 0.0f;
  bool nan = false;
};

namespace detail {
/// Folds batch v into a running max |.| and NaN mask (max drops a NaN: hence the mask).
inline void absmax_step(simd::Batch& vmax, xsimd::batch_bool<float, simd::Arch>& nan, const simd::Batch& v) {
  vmax = xsimd::max(vmax, xsimd::abs(v));
  nan = nan | xsimd::isnan(v);
}
/// Folds one value into m (a tail past the last whole batch).
inline void absmax_step(RowAbsMax& m, float v) {
  m.nan = m.nan || std::isnan(v);
  m.amax = std::max(m.amax, std::abs(v));
}
/// The RowAbsMax of running batches (then fold the tail in with absmax_step).
inline RowAbsMax absmax_of(const simd::Batch& vmax, const xsimd::batch_bool<float, simd::Arch>& nan) {
  return {simd::reduce_max(vmax), xsimd::any(nan)};
}

/// LayerNorm of one row: two-pass (mean, then centred variance) like PyTorch, accumulated in float
/// lanes. kH > 0 fixes the row length at compile time (the loops then have constant trip counts);
/// with kCache, xhat and rstd are stored for the backward. y is bitwise the same either way.
/// kFused (inference before an int8 product): with a residual, the first pass adds it and writes
/// x + residual to `sum` (which may equal x) for the later passes, and the last pass also finds
/// y's RowAbsMax; y is bitwise add() then LayerNorm.
template <int kH, bool kCache, bool kFused = false>
inline RowAbsMax layernorm_row(float* y, float* xhat, float* rstd, const float* x, const float* gamma, const float* beta,
                               int H_, double eps, float* sum = nullptr, const float* residual = nullptr) {
  using B = simd::Batch;
  using BB = xsimd::batch_bool<float, simd::Arch>;
  constexpr int W = static_cast<int>(B::size);
  const int H = kH > 0 ? kH : H_;
  B s(0.0f);
  int i = 0;
  if constexpr (kFused) {
    if (residual) {
      for (; i + W <= H; i += W) {
        const B v = B::load_unaligned(x + i) + B::load_unaligned(residual + i);
        v.store_unaligned(sum + i);
        s += v;
      }
      for (int t = i; t < H; ++t) sum[t] = x[t] + residual[t];
      x = sum;
    }
  }
  if (!kFused || !residual)
    for (; i + W <= H; i += W) s += B::load_unaligned(x + i);
  float mean = simd::reduce_add(s);
  for (; i < H; ++i) mean += x[i];
  mean /= static_cast<float>(H);
  const B bm(mean);
  B v(0.0f);
  for (i = 0; i + W <= H; i += W) {
    B d = B::load_unaligned(x + i) - bm;
    v = xsimd::fma(d, d, v);
  }
  float var = simd::reduce_add(v);
  for (; i < H; ++i) var += (x[i] - mean) * (x[i] - mean);
  var /= static_cast<float>(H);
  const float inv = 1.0f / std::sqrt(var + static_cast<float>(eps));
  if (kCache) *rstd = inv;
  const B bi(inv);
  B vmax(0.0f);
  BB vnan(false);
  for (i = 0; i + W <= H; i += W) {
    B r = (B::load_unaligned(x + i) - bm) * bi;
    if (kCache) r.store_unaligned(xhat + i);
    const B o = xsimd::fma(r, B::load_unaligned(gamma + i), B::load_unaligned(beta + i));
    o.store_unaligned(y + i);
    if constexpr (kFused) absmax_step(vmax, vnan, o);
  }
  RowAbsMax m;
  if constexpr (kFused) m = absmax_of(vmax, vnan);
  for (; i < H; ++i) {
    const float r = (x[i] - mean) * inv;
    if (kCache) xhat[i] = r;
    y[i] = r * gamma[i] + beta[i];
    if constexpr (kFused) absmax_step(m, y[i]);
  }
  return m;
}
}  // namespace detail

/// y = LayerNorm(x) * gamma + beta over one row of H floats (y may equal x). kH > 0: H fixed at
/// compile time (must equal H).
template <int kH = 0>
inline void layernorm_row(float* y, const float* x, const float* gamma, const float* beta, int H, double eps) {
  detail::layernorm_row<kH, false>(y, nullptr, nullptr, x, gamma, beta, H, eps);
}

/// The same, also storing xhat = (x - mean) * rstd and rstd for the backward (y bitwise equal to
/// layernorm_row's).
template <int kH = 0>
inline void layernorm_row_cached(float* y, float* xhat, float* rstd, const float* x, const float* gamma,
                                 const float* beta, int H, double eps) {
  detail::layernorm_row<kH, true>(y, xhat, rstd, x, gamma, beta, H, eps);
}

/// y = LayerNorm(x + residual) * gamma + beta over one row (residual may be null: then x is only
/// read), bitwise add() then layernorm_row(), writing x + residual back into x; also returns y's
/// max |y| and NaN flag, so that an int8 conversion of y (quantize_a_row_known) needs no pass of
/// its own to find them.
template <int kH = 0>
inline RowAbsMax add_layernorm_row_absmax(float* y, float* x, const float* residual, const float* gamma, const float* beta,
                                          int H, double eps) {
  return detail::layernorm_row<kH, false, true>(y, nullptr, nullptr, x, gamma, beta, H, eps, x, residual);
}

/// LayerNorm backward of one row (twin: reference::layernorm_backward_row): dx += rstd (dxhat -
/// mean(dxhat) - xhat mean(dxhat xhat)), dxhat = dy gamma; dgamma += dy xhat and dbeta += dy when
/// not null.
inline void layernorm_backward_row(float* dx, const float* dy, const float* xhat, float rstd, const float* gamma,
                                   float* dgamma, float* dbeta, int H) {
  using B = simd::Batch;
  constexpr int W = static_cast<int>(B::size);
  B a(0.0f), b(0.0f);
  int i = 0;
  for (; i + W <= H; i += W) {
    const B dxh = B::load_unaligned(dy + i) * B::load_unaligned(gamma + i);
    a += dxh;
    b = xsimd::fma(dxh, B::load_unaligned(xhat + i), b);
  }
  float s1 = simd::reduce_add(a), s2 = simd::reduce_add(b);
  for (; i < H; ++i) {
    const float dxh = dy[i] * gamma[i];
    s1 += dxh;
    s2 += dxh * xhat[i];
  }
  s1 /= static_cast<float>(H);
  s2 /= static_cast<float>(H);
  const B bs1(s1), bs2(s2), br(rstd);
  for (i = 0; i + W <= H; i += W) {
    const B d = B::load_unaligned(dy + i), xh = B::load_unaligned(xhat + i);
    const B dxh = d * B::load_unaligned(gamma + i);
    (B::load_unaligned(dx + i) + br * (dxh - bs1 - xh * bs2)).store_unaligned(dx + i);
    if (dgamma) xsimd::fma(d, xh, B::load_unaligned(dgamma + i)).store_unaligned(dgamma + i);
    if (dbeta) (B::load_unaligned(dbeta + i) + d).store_unaligned(dbeta + i);
  }
  for (; i < H; ++i) {
    dx[i] += rstd * (dy[i] * gamma[i] - s1 - xhat[i] * s2);
    if (dgamma) dgamma[i] += dy[i] * xhat[i];
    if (dbeta) dbeta[i] += dy[i];
  }
}

/// Softmax backward of one row, in place (twin: reference::softmax_backward_row):
/// d <- p (d - <d, p>) * scale.
inline void softmax_backward_row(float* d, const float* p, int n, float scale) {
  using B = simd::Batch;
  constexpr int W = static_cast<int>(B::size);
  B acc(0.0f);
  int j = 0;
  for (; j + W <= n; j += W) acc = xsimd::fma(B::load_unaligned(d + j), B::load_unaligned(p + j), acc);
  float dot = simd::reduce_add(acc);
  for (; j < n; ++j) dot += d[j] * p[j];
  const B bd(dot), bs(scale);
  for (j = 0; j + W <= n; j += W)
    (B::load_unaligned(p + j) * (B::load_unaligned(d + j) - bd) * bs).store_unaligned(d + j);
  for (; j < n; ++j) d[j] = p[j] * (d[j] - dot) * scale;
}

/// db[j] += sum over m < M of dy[m * ld + j], j < n (twin: reference::add_column_sums); rows are
/// added in order, so the result does not depend on how callers split columns.
inline void add_column_sums(float* db, const float* dy, long M, int n, long ld) {
  using B = simd::Batch;
  constexpr int W = static_cast<int>(B::size);
  int j = 0;
  for (; j + 4 * W <= n; j += 4 * W) {
    B a0 = B::load_unaligned(db + j), a1 = B::load_unaligned(db + j + W), a2 = B::load_unaligned(db + j + 2 * W),
      a3 = B::load_unaligned(db + j + 3 * W);
    for (long m = 0; m < M; ++m) {
      const float* r = dy + m * ld + j;
      a0 += B::load_unaligned(r);
      a1 += B::load_unaligned(r + W);
      a2 += B::load_unaligned(r + 2 * W);
      a3 += B::load_unaligned(r + 3 * W);
    }
    a0.store_unaligned(db + j);
    a1.store_unaligned(db + j + W);
    a2.store_unaligned(db + j + 2 * W);
    a3.store_unaligned(db + j + 3 * W);
  }
  for (; j + W <= n; j += W) {
    B a = B::load_unaligned(db + j);
    for (long m = 0; m < M; ++m) a += B::load_unaligned(dy + m * ld + j);
    a.store_unaligned(db + j);
  }
  for (; j < n; ++j) {
    float a = db[j];
    for (long m = 0; m < M; ++m) a += dy[m * ld + j];
    db[j] = a;
  }
}

/// y[i] += x[i] for i < n.
inline void add(float* y, const float* x, std::size_t n) {
  using B = simd::Batch;
  std::size_t i = 0;
  for (; i + B::size <= n; i += B::size) (B::load_unaligned(y + i) + B::load_unaligned(x + i)).store_unaligned(y + i);
  for (; i < n; ++i) y[i] += x[i];
}

namespace detail {
/// softmax_row; kFused: also times colscale[j] after normalizing and returns the row's RowAbsMax.
template <bool kFused>
inline RowAbsMax softmax_row(float* p, int n, float scale, const float* bias, const float* colscale) {
  using B = simd::Batch;
  constexpr int W = static_cast<int>(B::size);
  const B bs(scale);
  B vmax(-INFINITY);
  int j = 0;
  if (!bias && scale == 1.0f)  // p as it is (p * 1 = p): only its max
    for (; j + W <= n; j += W) vmax = xsimd::max(vmax, B::load_unaligned(p + j));
  for (; j + W <= n; j += W) {
    B v = B::load_unaligned(p + j) * bs;
    if (bias) v += B::load_unaligned(bias + j);
    v.store_unaligned(p + j);
    vmax = xsimd::max(vmax, v);
  }
  float mx = simd::reduce_max(vmax);
  for (; j < n; ++j) {
    p[j] = p[j] * scale + (bias ? bias[j] : 0.0f);
    mx = p[j] > mx ? p[j] : mx;
  }
  const B bm(mx);
  B vsum(0.0f);
  for (j = 0; j + W <= n; j += W) {
    B e = xsimd::exp(B::load_unaligned(p + j) - bm);
    e.store_unaligned(p + j);
    vsum += e;
  }
  float sum = simd::reduce_add(vsum);
  for (; j < n; ++j) {
    p[j] = std::exp(p[j] - mx);
    sum += p[j];
  }
  const B binv(1.0f / sum);
  RowAbsMax m;
  if constexpr (kFused) {
    B amax(0.0f);
    xsimd::batch_bool<float, simd::Arch> nan(false);
    for (j = 0; j + W <= n; j += W) {
      const B y = B::load_unaligned(p + j) * binv * B::load_unaligned(colscale + j);
      y.store_unaligned(p + j);
      absmax_step(amax, nan, y);
    }
    m = absmax_of(amax, nan);
  } else {
    for (j = 0; j + W <= n; j += W) (B::load_unaligned(p + j) * binv).store_unaligned(p + j);
  }
  for (; j < n; ++j) {
    p[j] *= 1.0f / sum;
    if constexpr (kFused) {
      p[j] *= colscale[j];
      absmax_step(m, p[j]);
    }
  }
  return m;
}
}  // namespace detail

/// In place over one row of n scores: p = softmax(scale * p + bias); bias (additive mask) may be
/// null.
inline void softmax_row(float* p, int n, float scale, const float* bias = nullptr) {
  detail::softmax_row<false>(p, n, scale, bias, nullptr);
}

/// softmax_row, then p[j] *= colscale[j] (INT8 attention: V's per-key scales), bitwise the two one
/// after the other; also returns the result's max |p| and NaN flag for its int8 conversion
/// (quantize_a_row_known).
inline RowAbsMax softmax_row_scaled_absmax(float* p, int n, const float* colscale, float scale = 1.0f,
                                           const float* bias = nullptr) {
  return detail::softmax_row<true>(p, n, scale, bias, colscale);
}

/// y[i] = x[i] * a (scaling a strided block of rows is done by the caller row by row).
inline void scale(float* x, std::size_t n, float a) {
  using B = simd::Batch;
  std::size_t i = 0;
  const B ba(a);
  for (; i + B::size <= n; i += B::size) (B::load_unaligned(x + i) * ba).store_unaligned(x + i);
  for (; i < n; ++i) x[i] *= a;
}

}  // namespace dynabert::kernels
