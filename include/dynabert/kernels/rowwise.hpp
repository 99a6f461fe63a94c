// Fast row kernels (xsimd): activations, LayerNorm, softmax with mask, bias. Each has a twin in
// reference.hpp and a randomized test against it (tests/unit/test_kernels.cpp).
#pragma once
#include <cmath>
#include <cstddef>

#include "dynabert/core/simd.hpp"
#include "dynabert/kernels/reference.hpp"

#ifndef DYNABERT_XSIMD_ERF
#define DYNABERT_XSIMD_ERF 0
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
  return p * x / q;
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

/// out[i] = act(x[i]) for i < n (out may equal x).
inline void activation(float* out, const float* x, std::size_t n, Activation act) {
  using B = simd::Batch;
  std::size_t i = 0;
  for (; i + B::size <= n; i += B::size) detail::activate(act, B::load_unaligned(x + i)).store_unaligned(out + i);
  for (; i < n; ++i) out[i] = reference::activate(act, x[i]);
}

/// d[i] *= act'(x[i]) for i < n (the activation's backward).
inline void activation_backward(float* d, const float* x, std::size_t n, Activation act) {
  using B = simd::Batch;
  std::size_t i = 0;
  for (; i + B::size <= n; i += B::size)
    (B::load_unaligned(d + i) * detail::activation_grad(act, B::load_unaligned(x + i))).store_unaligned(d + i);
  for (; i < n; ++i) d[i] *= reference::activation_grad(act, x[i]);
}


/// In place: x[i] = act(x[i]) for i < n.
inline void activation(float* x, std::size_t n, Activation act) {
  using B = simd::Batch;
  if (act == Activation::kNone) return;
  std::size_t i = 0;
  for (; i + B::size <= n; i += B::size)
    detail::activate(act, B::load_unaligned(x + i)).store_unaligned(x + i);
  for (; i < n; ++i) x[i] = reference::activate(act, x[i]);
}

/// y = LayerNorm(x) * gamma + beta over one row of H floats (y may equal x). Two-pass (mean, then
/// centred variance) like PyTorch, accumulated in float lanes.
inline void layernorm_row(float* y, const float* x, const float* gamma, const float* beta, int H,
                          double eps) {
  using B = simd::Batch;
  constexpr int W = static_cast<int>(B::size);
  B s(0.0f);
  int i = 0;
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
  const B bi(inv);
  for (i = 0; i + W <= H; i += W) {
    B r = (B::load_unaligned(x + i) - bm) * bi;
    xsimd::fma(r, B::load_unaligned(gamma + i), B::load_unaligned(beta + i)).store_unaligned(y + i);
  }
  for (; i < H; ++i) y[i] = (x[i] - mean) * inv * gamma[i] + beta[i];
}

/// In place over one row of n scores: p = softmax(scale * p + bias); bias (additive mask) may be
/// null.
inline void softmax_row(float* p, int n, float scale, const float* bias = nullptr) {
  using B = simd::Batch;
  constexpr int W = static_cast<int>(B::size);
  const B bs(scale);
  B vmax(-INFINITY);
  int j = 0;
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
  for (j = 0; j + W <= n; j += W) (B::load_unaligned(p + j) * binv).store_unaligned(p + j);
  for (; j < n; ++j) p[j] *= 1.0f / sum;
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
