// What every block's call takes besides its inputs and outputs: the threads, their GEMM scratch,
// and (when training) a grow-only scratch for the backward's temporaries.
#pragma once
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "dynabert/core/aligned.hpp"
#include "dynabert/core/parallel.hpp"
#include "dynabert/kernels/gemm.hpp"
#include "dynabert/kernels/lowp.hpp"
#include "dynabert/kernels/precision.hpp"

namespace dynabert::layers {

/// Grow-only scratch of the training path (packed activations of the weight-gradient products,
/// gradient temporaries). Reused across calls: once it has seen the largest call it stops
/// allocating.
struct TrainScratch {
  AlignedBuffer<float> pack;  ///< packed right-hand sides of dW = dy^T x
  AlignedBuffer<double> dpack;
  AlignedBuffer<float> partial;
  AlignedBuffer<double> dpartial;
  AlignedBuffer<float> ftmp[2];
  AlignedBuffer<double> dtmp[2];
  /// Scratch of type T (float or double) number `i`, at least n values.
  template <class T>
  T* tmp(int i, std::size_t n) {
    if constexpr (std::is_same_v<T, float>) return ftmp[i].ensure(n);
    else return dtmp[i].ensure(n);
  }
  template <class T>
  T* partials(std::size_t n) {
    if constexpr (std::is_same_v<T, float>) return partial.ensure(n);
    else return dpartial.ensure(n);
  }
  std::size_t bytes() const {
    return sizeof(float) * (pack.capacity() + partial.capacity() + ftmp[0].capacity() + ftmp[1].capacity()) +
           sizeof(double) * (dpack.capacity() + dpartial.capacity() + dtmp[0].capacity() + dtmp[1].capacity());
  }
};

/// Where a low-precision product converts its A operand (kernels/lowp.hpp): rows x row stride
/// bytes, plus a scale and a correction per row (int8). Sized once by the workspace.
struct LowpScratch {
  AlignedBuffer<std::uint8_t> a;
  AlignedBuffer<float> scale;
  AlignedBuffer<std::int32_t> corr;
  /// Room for `rows` rows of up to `k` columns in precision p.
  void reserve(long rows, int k, Precision p) {
    const std::size_t need = static_cast<std::size_t>(rows) * kernels::lowp_a_ld(k, p) * kernels::lowp_elem_bytes(p);
    if (need > a.size()) a.resize(need);
    if (static_cast<std::size_t>(rows) > scale.size()) {
      scale.resize(static_cast<std::size_t>(rows));
      corr.resize(static_cast<std::size_t>(rows));
    }
  }
  bool fits(long rows, int k, Precision p) const {
    return static_cast<std::size_t>(rows) * kernels::lowp_a_ld(k, p) * kernels::lowp_elem_bytes(p) <= a.size() &&
           static_cast<std::size_t>(rows) <= scale.size();
  }
  std::size_t bytes() const { return a.size() + (scale.size() + corr.size()) * 4; }
};

/// Threads of a call and their scratch, and the precision of its linear layers.
struct Compute {
  const Threads* threads = nullptr;
  float* gemm_scratch = nullptr;   ///< threads->count() x kernels::gemm_scratch_floats() floats (float path)
  TrainScratch* train = nullptr;   ///< backward passes only
  Precision precision = Precision::kFp32;  ///< linear layers packed in it use it; the rest FP32
  LowpScratch* lowp = nullptr;     ///< needed when precision is not FP32
  const Threads& th() const { return *threads; }
};

/// Rows per chunk of the deterministic reductions (bias, LayerNorm and gate gradients): partial
/// sums over fixed row chunks, added in chunk order, so that gradients are bitwise the same for
/// any thread count.
inline constexpr long kReduceChunk = 64;

}  // namespace dynabert::layers
