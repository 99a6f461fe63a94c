// Losses as (value, gradient) pairs: each returns the loss and ADDS its gradient (times `weight`)
// into the caller's buffer, so several terms (DynaBERT's lambda1 x soft-CE + lambda2 x hidden MSE)
// accumulate into one gradient before a single backward.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "dynabert/core/error.hpp"

namespace dynabert::train {

namespace detail {
/// log_softmax of one row of n values, scaled by 1/temperature.
template <class T>
void log_softmax(const T* x, T* out, int n, T temperature) {
  T mx = x[0] / temperature;
  for (int j = 1; j < n; ++j) mx = std::max(mx, x[j] / temperature);
  T s = 0;
  for (int j = 0; j < n; ++j) s += std::exp(x[j] / temperature - mx);
  const T lse = mx + std::log(s);
  for (int j = 0; j < n; ++j) out[j] = x[j] / temperature - lse;
}
}  // namespace detail

/// Mean cross-entropy of logits [B, C] against integer labels; adds weight * d/dlogits to grad.
template <class T>
T cross_entropy(const T* logits, const std::int32_t* labels, int B, int C, T* grad, T weight = T(1)) {
  std::vector<T> ls(C);
  T loss = 0;
  for (int b = 0; b < B; ++b) {
    DYNABERT_REQUIRE(labels[b] >= 0 && labels[b] < C, InputError, "label ", labels[b], " of example ", b,
                     " is outside 0..", C - 1);
    detail::log_softmax(logits + b * C, ls.data(), C, T(1));
    loss -= ls[labels[b]];
    if (grad)
      for (int c = 0; c < C; ++c) grad[b * C + c] += weight * (std::exp(ls[c]) - (c == labels[b] ? T(1) : T(0))) / T(B);
  }
  return loss / T(B);
}

/// Mean squared error over n values (regression head, hidden states): mean((x - target)^2).
template <class T>
T mse(const T* x, const T* target, long n, T* grad, T weight = T(1)) {
  T loss = 0;
  for (long i = 0; i < n; ++i) {
    const T d = x[i] - target[i];
    loss += d * d;
    if (grad) grad[i] += weight * T(2) * d / T(n);
  }
  return loss / T(n);
}

/// Soft cross-entropy against teacher logits (knowledge distillation):
/// mean_b( - sum_c softmax(t / T)_c log_softmax(s / T)_c ). DynaBERT uses T = 1 and no T^2 factor.
template <class T>
T soft_cross_entropy(const T* student, const T* teacher, int B, int C, T* grad, T temperature = T(1), T weight = T(1)) {
  DYNABERT_REQUIRE(temperature > 0, InputError, "temperature must be positive");
  std::vector<T> ls(C), lt(C);
  T loss = 0;
  for (int b = 0; b < B; ++b) {
    detail::log_softmax(student + b * C, ls.data(), C, temperature);
    detail::log_softmax(teacher + b * C, lt.data(), C, temperature);
    for (int c = 0; c < C; ++c) {
      const T pt = std::exp(lt[c]);
      loss -= pt * ls[c];
      if (grad) grad[b * C + c] += weight * (std::exp(ls[c]) - pt) / (temperature * T(B));
    }
  }
  return loss / T(B);
}

}  // namespace dynabert::train
