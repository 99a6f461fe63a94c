// Scalar-type dispatch: float goes to the fast SIMD kernels, any other type (double for gradient
// checks and oracles) to the reference loops. Blocks call these, so one block template serves both.
#pragma once
#include <cstdint>
#include <type_traits>

#include "dynabert/kernels/dropout.hpp"
#include "dynabert/kernels/reference.hpp"
#include "dynabert/kernels/rowwise.hpp"

namespace dynabert::ops {

template <class T>
inline constexpr bool kFast = std::is_same_v<T, float>;

/// One LayerNorm row; kH > 0 fixes H at compile time for the fast kernel.
template <int kH = 0, class T>
inline void layernorm_row(T* y, const T* x, const T* g, const T* b, int H, double eps) {
  if constexpr (kFast<T>) kernels::layernorm_row<kH>(y, x, g, b, H, eps);
  else kernels::reference::layernorm_row(y, x, g, b, H, eps);
}
template <int kH = 0, class T>
inline void layernorm_row_cached(T* y, T* xhat, T* rstd, const T* x, const T* g, const T* b, int H, double eps) {
  if constexpr (kFast<T>) kernels::layernorm_row_cached<kH>(y, xhat, rstd, x, g, b, H, eps);
  else kernels::reference::layernorm_row_cached(y, xhat, rstd, x, g, b, H, eps);
}
template <class T>
inline void layernorm_backward_row(T* dx, const T* dy, const T* xhat, T rstd, const T* g, T* dg, T* db, int H) {
  if constexpr (kFast<T>) kernels::layernorm_backward_row(dx, dy, xhat, rstd, g, dg, db, H);
  else kernels::reference::layernorm_backward_row(dx, dy, xhat, rstd, g, dg, db, H);
}
template <class T>
inline void softmax_row(T* p, int n, T scale, const float* bias) {
  if constexpr (kFast<T>) kernels::softmax_row(p, n, scale, bias);
  else {
    if (!bias) {
      kernels::reference::softmax_row(p, n, scale, static_cast<const T*>(nullptr));
      return;
    }
    // bias is float (0 or -10000, exact in any type): apply it in T
    T mx = -INFINITY;
    for (int j = 0; j < n; ++j) {
      p[j] = p[j] * scale + static_cast<T>(bias[j]);
      if (p[j] > mx) mx = p[j];
    }
    T sum = 0;
    for (int j = 0; j < n; ++j) {
      p[j] = std::exp(p[j] - mx);
      sum += p[j];
    }
    for (int j = 0; j < n; ++j) p[j] /= sum;
  }
}
template <class T>
inline void softmax_backward_row(T* d, const T* p, int n, T scale) {
  if constexpr (kFast<T>) kernels::softmax_backward_row(d, p, n, scale);
  else kernels::reference::softmax_backward_row(d, p, n, scale);
}
template <class T>
inline void activation(T* x, std::size_t n, Activation a) {
  if constexpr (kFast<T>) kernels::activation(x, n, a);
  else kernels::reference::activation(x, n, a);
}
/// out = act(x) over n values.
template <class T>
inline void activation(T* out, const T* x, std::size_t n, Activation a) {
  if constexpr (kFast<T>) kernels::activation(out, x, n, a);
  else for (std::size_t i = 0; i < n; ++i) out[i] = kernels::reference::activate(a, x[i]);
}
/// d *= act'(x) over n values.
template <class T>
inline void activation_backward(T* d, const T* x, std::size_t n, Activation a) {
  if constexpr (kFast<T>) kernels::activation_backward(d, x, n, a);
  else for (std::size_t i = 0; i < n; ++i) d[i] *= kernels::reference::activation_grad(a, x[i]);
}
/// x[j] *= dropout multiplier of element index0 + j.
template <class T>
inline void dropout_multiply(T* x, std::size_t n, const kernels::DropoutKey& key, std::uint32_t index0) {
  if constexpr (kFast<T>) kernels::dropout_multiply(x, n, key, index0);
  else kernels::reference::dropout_multiply(x, n, key, index0);
}
template <class T>
inline void add_column_sums(T* db, const T* dy, long M, int n, long ld) {
  if constexpr (kFast<T>) kernels::add_column_sums(db, dy, M, n, ld);
  else kernels::reference::add_column_sums(db, dy, M, n, ld);
}
/// y += x over n values.
template <class T>
inline void add(T* y, const T* x, std::size_t n) {
  if constexpr (kFast<T>) kernels::add(y, x, n);
  else for (std::size_t i = 0; i < n; ++i) y[i] += x[i];
}

}  // namespace dynabert::ops
