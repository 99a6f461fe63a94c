// Linear<T>: one weight matrix prepared for y = act(alpha * x W^T + b) + residual at any active
// prefix width. For float it is packed once into elastic panels (kernels/gemm.hpp); for other
// scalar types it keeps a plain [N, K] copy and runs the reference loops.
#pragma once
#include <cstring>
#include <type_traits>

#include "dynabert/core/aligned.hpp"
#include "dynabert/core/parallel.hpp"
#include "dynabert/kernels/gemm.hpp"
#include "dynabert/kernels/reference.hpp"

namespace dynabert::layers {

template <class T>
class Linear {
 public:
  Linear() = default;
  /// Prepares W [n, k] (row stride ldw).
  Linear(const T* w, int n, int k, long ldw) : n_(n), k_(k) {
    if constexpr (std::is_same_v<T, float>) {
      packed_ = kernels::PackedWeight(w, n, k, ldw);
    } else {
      plain_.resize(static_cast<std::size_t>(n) * k);
      for (int i = 0; i < n; ++i) std::memcpy(plain_.data() + static_cast<long>(i) * k, w + i * ldw, sizeof(T) * k);
    }
  }
  int n() const { return n_; }
  int k() const { return k_; }
  std::size_t bytes() const {
    if constexpr (std::is_same_v<T, float>) return packed_.bytes();
    else return plain_.size() * sizeof(T);
  }

  /// y[M, n] = act(alpha * x[M, k] W[:n, :k]^T + bias) + residual. `scratch` is the workspace's
  /// per-thread GEMM scratch (unused for non-float T).
  void forward(T* y, long ldy, const T* x, long ldx, int M, int n, int k, const T* bias,
               const T* residual, long ldr, Activation act, T alpha, T* scratch,
               const Threads& threads) const {
    if constexpr (std::is_same_v<T, float>) {
      kernels::Epilogue ep{bias, residual, ldr, act, alpha};
      kernels::gemm(y, ldy, x, ldx, M, packed_.view(), n, k, ep, scratch, threads);
    } else {
      (void)scratch;
      threads.for_chunks(M, [&](int, long lo, long hi) {
        kernels::reference::linear(y + lo * ldy, ldy, x + lo * ldx, ldx, plain_.data(), k_,
                                   static_cast<int>(hi - lo), n, k, bias,
                                   residual ? residual + lo * ldr : nullptr, ldr, act, alpha);
      });
    }
  }

 private:
  int n_ = 0, k_ = 0;
  kernels::PackedWeight packed_;
  AlignedBuffer<T> plain_;
};

/// A copy of a small parameter vector (bias, LayerNorm).
template <class T>
AlignedBuffer<T> copy_vector(const T* src, std::size_t n) {
  AlignedBuffer<T> b(n);
  std::memcpy(b.data(), src, n * sizeof(T));
  return b;
}

}  // namespace dynabert::layers
