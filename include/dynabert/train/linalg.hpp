// Training-side products through Eigen, for any scalar type (float for training, double for
// gradient checks): the three orientations a linear layer needs, on row-major pointers with
// leading dimensions. y = x W^T + b, dx += dy W, dW += dy^T x, db += column sums of dy.
#pragma once
#include <Eigen/Core>

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

/// y[M, n] = x[M, k] W[:n, :k]^T (+ bias[:n]); W has row stride ldw.
template <class T>
void linear(T* y, long ldy, const T* x, long ldx, const T* w, long ldw, const T* bias, long M, long n, long k) {
  auto Y = mat(y, M, n, ldy);
  Y.noalias() = cmat(x, M, k, ldx) * cmat(w, n, k, ldw).transpose();
  if (bias) Y.rowwise() += Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(bias, n);
}

/// Backward of linear: dx += dy W (if dx), dW += dy^T x, db += sum_rows dy (if db).
template <class T>
void linear_backward(T* dx, long lddx, T* dw, long lddw, T* db, const T* dy, long lddy, const T* x, long ldx,
                     const T* w, long ldw, long M, long n, long k) {
  const auto DY = cmat(dy, M, n, lddy);
  if (dx) mat(dx, M, k, lddx).noalias() += DY * cmat(w, n, k, ldw);
  mat(dw, n, k, lddw).noalias() += DY.transpose() * cmat(x, M, k, ldx);
  if (db) Eigen::Map<Eigen::Matrix<T, 1, Eigen::Dynamic>>(db, n) += DY.colwise().sum();
}

}  // namespace dynabert::train::linalg
