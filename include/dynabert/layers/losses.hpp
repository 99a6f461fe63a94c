// Losses as (value, gradient) blocks: each returns the loss and ADDS its gradient (times `weight`)
// into the caller's buffer when that is not null, so several terms (DynaBERT's lambda1 x soft-CE +
// lambda2 x hidden MSE) accumulate into one gradient before a single backward. Allocation-free.
//  - cross_entropy: mean over B rows of -log softmax(logits)[label] (classification; the MLM loss
//    is the same over the predicted rows);
//  - soft_cross_entropy: mean over rows of -sum_c softmax(t / T)_c log softmax(s / T)_c
//    (knowledge distillation; DynaBERT uses T = 1 and no T^2 factor);
//  - mse: mean squared error over n values (regression heads, hidden states).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "dynabert/core/error.hpp"

namespace dynabert::layers {

namespace detail {
/// log-sum-exp of one row of n values divided by `temperature`.
template <class T>
T log_sum_exp(const T* x, int n, T temperature) {
  T mx = x[0] / temperature;
  for (int j = 1; j < n; ++j) mx = std::max(mx, x[j] / temperature);
  T s = 0;
  for (int j = 0; j < n; ++j) s += std::exp(x[j] / temperature - mx);
  return mx + std::log(s);
}
}  // namespace detail

/// Mean cross-entropy of logits [B, C] against integer labels; adds weight x d/dlogits to grad.
template <class T>
T cross_entropy(const T* logits, const std::int32_t* labels, int B, int C, T* grad, T weight = T(1)) {
  T loss = 0;
  for (int b = 0; b < B; ++b) {
    DYNABERT_REQUIRE(labels[b] >= 0 && labels[b] < C, InputError, "label ", labels[b], " of example ", b, " is outside 0..",
                     C - 1);
    const T* row = logits + static_cast<long>(b) * C;
    const T lse = detail::log_sum_exp(row, C, T(1));
    loss -= row[labels[b]] / T(1) - lse;
    if (grad)
      for (int c = 0; c < C; ++c)
        grad[static_cast<long>(b) * C + c] += weight * (std::exp(row[c] / T(1) - lse) - (c == labels[b] ? T(1) : T(0))) / T(B);
  }
  return loss / T(B);
}

/// Mean squared error over n values: mean((x - target)^2).
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

/// Soft cross-entropy against teacher logits: mean_b(-sum_c softmax(t / T)_c log softmax(s / T)_c).
template <class T>
T soft_cross_entropy(const T* student, const T* teacher, int B, int C, T* grad, T temperature = T(1), T weight = T(1)) {
  DYNABERT_REQUIRE(temperature > 0, InputError, "temperature must be positive");
  T loss = 0;
  for (int b = 0; b < B; ++b) {
    const T* s = student + static_cast<long>(b) * C;
    const T* t = teacher + static_cast<long>(b) * C;
    const T ls = detail::log_sum_exp(s, C, temperature), lt = detail::log_sum_exp(t, C, temperature);
    for (int c = 0; c < C; ++c) {
      const T lsc = s[c] / temperature - ls;
      const T pt = std::exp(t[c] / temperature - lt);
      loss -= pt * lsc;
      if (grad) grad[static_cast<long>(b) * C + c] += weight * (std::exp(lsc) - pt) / (temperature * T(B));
    }
  }
  return loss / T(B);
}

}  // namespace dynabert::layers
