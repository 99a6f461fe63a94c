// Reference kernels: plain loops, any scalar type, no SIMD, no blocking. They are the oracle the
// fast kernels are tested against, and the implementation used when the model runs in double.
#pragma once
#include <cmath>
#include <cstddef>

#include "dynabert/kernels/activation.hpp"

namespace dynabert::kernels::reference {

/// Exact GELU: x * 0.5 * (1 + erf(x / sqrt(2))).
template <class T>
inline T gelu_erf(T x) {
  return x * T(0.5) * (T(1) + std::erf(x * T(0.70710678118654752440)));
}
/// tanh GELU ("gelu_new"): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
template <class T>
inline T gelu_tanh(T x) {
  return T(0.5) * x * (T(1) + std::tanh(T(0.79788456080286535588) * (x + T(0.044715) * x * x * x)));
}
template <class T>
inline T activate(Activation a, T x) {
  switch (a) {
    case Activation::kGeluErf: return gelu_erf(x);
    case Activation::kGeluTanh: return gelu_tanh(x);
    case Activation::kTanh: return std::tanh(x);
    default: return x;
  }
}

/// y[m, n] = act(alpha * sum_k x[m, k] w[n, k] + bias[n]) + residual[m, n]   (y = x W^T + b)
/// W is [N, K] (PyTorch Linear layout) with leading dimension ldw; bias/residual may be null.
template <class T>
void linear(T* y, long ldy, const T* x, long ldx, const T* w, long ldw, int M, int N, int K,
            const T* bias = nullptr, const T* residual = nullptr, long ldr = 0,
            Activation act = Activation::kNone, T alpha = T(1)) {
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      T acc = 0;
      for (int k = 0; k < K; ++k) acc += x[m * ldx + k] * w[n * ldw + k];
      acc *= alpha;
      if (bias) acc += bias[n];
      acc = activate(act, acc);
      if (residual) acc += residual[m * ldr + n];
      y[m * ldy + n] = acc;
    }
}

/// Derivative of the activation at x.
template <class T>
inline T activation_grad(Activation act, T x) {
  if (act == Activation::kGeluErf) {
    const T cdf = T(0.5) * (T(1) + std::erf(x * T(0.70710678118654752440)));
    const T pdf = std::exp(T(-0.5) * x * x) * T(0.39894228040143267794);
    return cdf + x * pdf;
  }
  if (act == Activation::kGeluTanh) {
    const T k = T(0.79788456080286535588), c3 = T(0.044715);
    const T th = std::tanh(k * (x + c3 * x * x * x));
    return T(0.5) * (T(1) + th) + T(0.5) * x * (T(1) - th * th) * k * (T(1) + T(3) * c3 * x * x);
  }
  if (act == Activation::kTanh) {
    const T th = std::tanh(x);
    return T(1) - th * th;
  }
  return T(1);
}

/// In place: x[i] = act(x[i]).
template <class T>
void activation(T* x, std::size_t n, Activation act) {
  for (std::size_t i = 0; i < n; ++i) x[i] = activate(act, x[i]);
}

/// Mean and 1/std of one row of H values (biased variance, eps inside the sqrt), two-pass.
template <class T>
void layernorm_stats(const T* x, int H, double eps, T& mean, T& rstd) {
  mean = 0;
  for (int i = 0; i < H; ++i) mean += x[i];
  mean /= T(H);
  T var = 0;
  for (int i = 0; i < H; ++i) var += (x[i] - mean) * (x[i] - mean);
  var /= T(H);
  rstd = T(1) / std::sqrt(var + T(eps));
}

/// One row: y = LayerNorm(x) * gamma + beta over H values.
template <class T>
void layernorm_row(T* y, const T* x, const T* gamma, const T* beta, int H, double eps) {
  T mean, inv;
  layernorm_stats(x, H, eps, mean, inv);
  for (int i = 0; i < H; ++i) y[i] = (x[i] - mean) * inv * gamma[i] + beta[i];
}

/// One row, in place: p = softmax(scale * p + bias) over n entries (bias may be null: additive
/// mask, 0 for keys to keep and -10000 for masked ones, as BERT does).
template <class T>
void softmax_row(T* p, int n, T scale, const T* bias = nullptr) {
  T mx = -INFINITY;
  for (int j = 0; j < n; ++j) {
    p[j] = p[j] * scale + (bias ? bias[j] : T(0));
    if (p[j] > mx) mx = p[j];
  }
  T sum = 0;
  for (int j = 0; j < n; ++j) {
    p[j] = std::exp(p[j] - mx);
    sum += p[j];
  }
  for (int j = 0; j < n; ++j) p[j] /= sum;
}

}  // namespace dynabert::kernels::reference

// ---- twins of the training row kernels (rowwise.hpp, dropout.hpp) ---------------------------------
namespace dynabert::kernels::reference {

/// y = LayerNorm(x) * gamma + beta, also storing xhat = (x - mean) * rstd and rstd (the backward's
/// inputs). y may equal x.
template <class T>
void layernorm_row_cached(T* y, T* xhat, T* rstd, const T* x, const T* gamma, const T* beta, int H, double eps) {
  T mean, inv;
  layernorm_stats(x, H, eps, mean, inv);
  *rstd = inv;
  for (int i = 0; i < H; ++i) {
    const T xh = (x[i] - mean) * inv;
    xhat[i] = xh;
    y[i] = xh * gamma[i] + beta[i];
  }
}

/// LayerNorm backward of one row: dx += rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) with
/// dxhat = dy gamma; dgamma += dy xhat, dbeta += dy (either may be null).
template <class T>
void layernorm_backward_row(T* dx, const T* dy, const T* xhat, T rstd, const T* gamma, T* dgamma, T* dbeta, int H) {
  T s1 = 0, s2 = 0;
  for (int i = 0; i < H; ++i) {
    const T dxh = dy[i] * gamma[i];
    s1 += dxh;
    s2 += dxh * xhat[i];
  }
  s1 /= T(H);
  s2 /= T(H);
  for (int i = 0; i < H; ++i) {
    dx[i] += rstd * (dy[i] * gamma[i] - s1 - xhat[i] * s2);
    if (dgamma) dgamma[i] += dy[i] * xhat[i];
    if (dbeta) dbeta[i] += dy[i];
  }
}

/// Softmax backward of one row, in place: d <- p (d - <d, p>) * scale (scale: the factor that
/// multiplied the scores before the softmax).
template <class T>
void softmax_backward_row(T* d, const T* p, int n, T scale) {
  T dot = 0;
  for (int j = 0; j < n; ++j) dot += d[j] * p[j];
  for (int j = 0; j < n; ++j) d[j] = p[j] * (d[j] - dot) * scale;
}

/// db[j] += sum over m < M of dy[m * ld + j], j < n.
template <class T>
void add_column_sums(T* db, const T* dy, long M, int n, long ld) {
  for (long m = 0; m < M; ++m)
    for (int j = 0; j < n; ++j) db[j] += dy[m * ld + j];
}

/// Plain products of a linear layer's backward: dx[M, k] += dy[M, n] W[:n, :k] and
/// dW[:n, :k] += dy^T x (W and dW with row stride ldw, dW may be null).
template <class T>
void linear_backward_input(T* dx, long lddx, const T* dy, long lddy, const T* w, long ldw, long M, int n, int k) {
  for (long m = 0; m < M; ++m)
    for (int i = 0; i < n; ++i) {
      const T d = dy[m * lddy + i];
      const T* wr = w + i * ldw;
      T* out = dx + m * lddx;
      for (int j = 0; j < k; ++j) out[j] += d * wr[j];
    }
}
template <class T>
void linear_backward_weight(T* dw, long lddw, const T* dy, long lddy, const T* x, long ldx, long M, int n, int k) {
  for (long m = 0; m < M; ++m)
    for (int i = 0; i < n; ++i) {
      const T d = dy[m * lddy + i];
      const T* xr = x + m * ldx;
      T* out = dw + i * lddw;
      for (int j = 0; j < k; ++j) out[j] += d * xr[j];
    }
}

}  // namespace dynabert::kernels::reference
