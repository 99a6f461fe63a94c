// What every block's call takes besides its inputs and outputs: the threads, their GEMM scratch,
// and (when training) a grow-only scratch for the backward's temporaries.
#pragma once
#include <algorithm>
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

/// A converted A operand of a low-precision product (kernels/lowp.hpp): rows x row stride bytes,
/// plus a scale and a correction per row (int8).
struct LowpOperand {
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
  /// Converts rows [m0, m1) of an FP32 input (x: row m0, stride ldx, k columns) in place here.
  void convert_rows(Precision p, const float* x, long ldx, long m0, long m1, int k) {
    kernels::convert_a_rows(p, a.data(), scale.data(), corr.data(), x, ldx, m0, m1, k);
  }
  /// Converts row m of an FP32 input to int8 (x: its k values) in place here, given the row's max |x|
  /// and NaN flag (kernels::quantize_a_row_known): bitwise convert_rows' int8 row.
  void quantize_row(long m, const float* x, int k, float amax, bool nan) {
    constexpr Precision i8 = Precision::kInt8;
    auto* q = reinterpret_cast<std::int8_t*>(a.data()) + m * kernels::lowp_a_ld(k, i8);
    scale[static_cast<std::size_t>(m)] =
        kernels::quantize_a_row_known(q, corr.data() + m, x, k, kernels::lowp_kpad(k, i8), amax, nan);
  }
  /// The operand as converted with k columns.
  kernels::LowpA view(Precision p, int k) const { return kernels::lowp_a(p, a.data(), scale.data(), corr.data(), k); }
  std::size_t bytes() const { return a.size() + (scale.size() + corr.size()) * 4; }
};

/// Where low-precision products convert their inputs. Sized once by the workspace.
///   op[0]      Linear::forward converts its FP32 input here;
///   op[0..1]   the fused layer forward (EncoderLayer) alternates them: a product reads one while
///              its row sink converts the next product's input into the other;
///   rows       each worker's kernels::RowSink scratch (rows_stride floats each);
///   qkv        the fused layer's Q/K/V projections in bfloat16 (AttentionBuffers::qkv_bf16), or
///              in INT8 calls in int8 (AttentionBuffers::qkv_s8: the first half of its bytes),
///              with qkv_scale and qkv_corr per (row, head, part).
/// A scratch without room for the sinks (rows_stride 0) runs a layer's products one after another.
struct LowpScratch {
  LowpOperand op[2];
  AlignedBuffer<float> rows;
  std::size_t rows_stride = 0;
  AlignedBuffer<std::uint16_t> qkv;
  AlignedBuffer<float> qkv_scale;
  AlignedBuffer<std::int32_t> qkv_corr;
  /// Room for `rows` rows of up to `k` columns in precision p.
  void reserve(long rows_, int k, Precision p) {
    op[0].reserve(rows_, k, p);
    op[1].reserve(rows_, k, p);
  }
  /// Room for the fused layer: sink scratch for `threads` workers and products of up to n
  /// columns, `qkv_values` bfloat16 (or int8) projections and, for int8, `qkv_segments` scales
  /// and corrections (rows x 3 x heads).
  void reserve_fused(int threads, int n, std::size_t qkv_values, std::size_t qkv_segments = 0) {
    rows_stride = std::max(rows_stride, kernels::sink_scratch_floats(n));
    const std::size_t need = rows_stride * static_cast<std::size_t>(threads);
    if (need > rows.size()) rows.resize(need);
    if (qkv_values > qkv.size()) qkv.resize(qkv_values);
    if (qkv_segments > qkv_scale.size()) {
      qkv_scale.resize(qkv_segments);
      qkv_corr.resize(qkv_segments);
    }
  }
  bool fits(long rows_, int k, Precision p) const { return op[0].fits(rows_, k, p) && op[1].fits(rows_, k, p); }
  /// Whether `threads` workers have sink scratch for products of n columns.
  bool fits_sink(int threads, int n) const {
    return rows_stride >= kernels::sink_scratch_floats(n) && rows.size() >= rows_stride * static_cast<std::size_t>(threads);
  }
  /// The sink scratch of `fits_sink`, for kernels::RowSink.
  float* sink_scratch() { return rows.data(); }
  std::size_t bytes() const {
    return op[0].bytes() + op[1].bytes() + rows.size() * 4 + qkv.size() * 2 + (qkv_scale.size() + qkv_corr.size()) * 4;
  }
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
