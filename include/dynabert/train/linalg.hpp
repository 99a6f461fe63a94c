// Training-side products for any scalar type: the three orientations a linear layer needs, on
// row-major pointers with leading dimensions. y = x W^T + b, dx += dy W, dW += dy^T x,
// db += column sums of dy. float runs on the packed kernel (kernels/gemm.hpp: the weight or the
// activations are packed per call, A^T is read by the transposed A packing, and gradients are
// accumulated in the epilogue); other types (double for gradient checks) go through Eigen.
#pragma once
#include <type_traits>

#include <Eigen/Core>

#include "dynabert/core/aligned.hpp"
#include "dynabert/core/parallel.hpp"
#include "dynabert/kernels/gemm.hpp"

namespace dynabert::train::linalg {

template <class T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using Map = Eigen::Map<RowMat<T>, 0, Eigen::OuterStride<>>;
template <class T>
using CMap = Eigen::Map<const RowMat<T>, 0, Eigen::OuterStride<>>;

template <class T>
Map<T> mat(T* p, long rows, long cols, long ld) { return Map<T>(p, rows, cols, Eigen::OuterStride<>(ld)); }
template <class T>
CMap<T> cmat(const T* p, long rows, long cols, long ld) { return CMap<T>(p, rows, cols, Eigen::OuterStride<>(ld)); }

namespace detail {
/// Per-thread scratch that only grows (no allocation once the largest shape has been seen).
inline float* scratch(std::size_t n, int slot) {
  thread_local AlignedBuffer<float> bufs[2];
  if (bufs[slot].size() < n) bufs[slot].resize(n);
  return bufs[slot].data();
}
inline float* gemm_scratch(const Threads& th) {
  return scratch(kernels::gemm_scratch_floats() * static_cast<std::size_t>(th.count()), 1);
}
}  // namespace detail

/// y[M, n] = x[M, k] W[:n, :k]^T (+ bias[:n]); W has row stride ldw.
template <class T>
void linear(T* y, long ldy, const T* x, long ldx, const T* w, long ldw, const T* bias, long M, long n, long k,
            const Threads& th = Threads()) {
  if constexpr (std::is_same_v<T, float>) {
    const auto B = kernels::pack_nk(detail::scratch(kernels::packed_size(n, k), 0), w, n, k, ldw);
    kernels::Epilogue ep;
    ep.bias = bias;
    kernels::gemm(y, ldy, x, ldx, M, B, n, k, ep, detail::gemm_scratch(th), th);
  } else {
    auto Y = mat(y, M, n, ldy);
    Y.noalias() = cmat(x, M, k, ldx) * cmat(w, n, k, ldw).transpose();
    if (bias) Y.rowwise() += Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(bias, n);
  }
}

/// Backward of linear: dx += dy W (if dx), dW += dy^T x, db += sum_rows dy (if db).
template <class T>
void linear_backward(T* dx, long lddx, T* dw, long lddw, T* db, const T* dy, long lddy, const T* x, long ldx,
                     const T* w, long ldw, long M, long n, long k, const Threads& th = Threads()) {
  if constexpr (std::is_same_v<T, float>) {
    kernels::Epilogue acc;
    acc.accumulate = true;
    float* gs = detail::gemm_scratch(th);
    if (dx) {  // dx[M, k] += dy[M, n] W[n, k]: W read as B^T
      const auto B = kernels::pack_kn(detail::scratch(kernels::packed_size(k, n), 0), w, n, k, ldw);
      kernels::gemm(dx, lddx, dy, lddy, M, B, k, n, acc, gs, th);
    }
    // dW[n, k] += dy^T[n, M] x[M, k]: A = dy read transposed, x read as B^T
    const auto B = kernels::pack_kn(detail::scratch(kernels::packed_size(k, M), 0), x, M, k, ldx);
    kernels::gemm(dw, lddw, dy, lddy, n, B, k, M, acc, gs, th, /*a_trans=*/true);
    if (db)
      for (long m = 0; m < M; ++m)
        for (long j = 0; j < n; ++j) db[j] += dy[m * lddy + j];
  } else {
    const auto DY = cmat(dy, M, n, lddy);
    if (dx) mat(dx, M, k, lddx).noalias() += DY * cmat(w, n, k, ldw);
    mat(dw, n, k, lddw).noalias() += DY.transpose() * cmat(x, M, k, ldx);
    if (db) Eigen::Map<Eigen::Matrix<T, 1, Eigen::Dynamic>>(db, n) += DY.colwise().sum();
  }
}

}  // namespace dynabert::train::linalg
