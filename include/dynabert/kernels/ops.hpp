// Scalar-type dispatch: float goes to the fast SIMD kernels, any other type (double for gradient
// checks and oracles) to the reference loops. Layers call these, so one layer template serves both.
#pragma once
#include <type_traits>

#include "dynabert/kernels/reference.hpp"
#include "dynabert/kernels/rowwise.hpp"

namespace dynabert::ops {

template <class T>
inline void layernorm_row(T* y, const T* x, const T* g, const T* b, int H, double eps) {
  if constexpr (std::is_same_v<T, float>) kernels::layernorm_row(y, x, g, b, H, eps);
  else kernels::reference::layernorm_row(y, x, g, b, H, eps);
}
template <class T>
inline void softmax_row(T* p, int n, T scale, const T* bias) {
  if constexpr (std::is_same_v<T, float>) kernels::softmax_row(p, n, scale, bias);
  else kernels::reference::softmax_row(p, n, scale, bias);
}
template <class T>
inline void activation(T* x, std::size_t n, Activation a) {
  if constexpr (std::is_same_v<T, float>) kernels::activation(x, n, a);
  else kernels::reference::activation(x, n, a);
}

/// out = act(x) over n values.
template <class T>
inline void activation(T* out, const T* x, std::size_t n, Activation a) {
  if constexpr (std::is_same_v<T, float>) kernels::activation(out, x, n, a);
  else for (std::size_t i = 0; i < n; ++i) out[i] = kernels::reference::activate(a, x[i]);
}
/// d *= act'(x) over n values.
template <class T>
inline void activation_backward(T* d, const T* x, std::size_t n, Activation a) {
  if constexpr (std::is_same_v<T, float>) kernels::activation_backward(d, x, n, a);
  else for (std::size_t i = 0; i < n; ++i) d[i] *= kernels::reference::activation_grad(a, x[i]);
}

}  // namespace dynabert::ops
