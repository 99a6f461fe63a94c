// Packed single-precision GEMM for y = act(alpha * x W^T + bias) + residual, the one product
// every linear layer and attention step uses.
//
// Layout ("elastic panels"): W [N, K] (PyTorch Linear: out x in) is packed once into panels of
// kNR output features, K cut into blocks of kKC rows, stored block-major: element (n, k) lives in
// block b = k / kKC, panel p = n / kNR, at
//   b * kKC * P * kNR  +  p * kc_b * kNR  +  (k % kKC) * kNR  +  n % kNR
// with P the panel count and kc_b the rows of block b. A narrower output width uses the first
// panels of each block; a narrower input width uses the first blocks and a row prefix of the last
// one. Both are prefix views of one packed buffer, so every DynaBERT width runs on the same packed
// weights with no repacking; and within a block the panels a GEMM walks are contiguous, so the
// weight stream from memory is sequential for the hardware prefetcher.
//
// Blocking follows BLIS: one packed B micro-panel (kKC x kNR, 96 KB) is read from L2 by every
// row sliver of A. A is read in place by the register tile (kMR broadcast streams, or kMR
// neighbours of one row when it is transposed) unless its row stride is a multiple of 4 KB, which
// would put the tile's rows in one L1 set: then each block's rows are copied to a stride of
// kc + 16 floats first (whole-row copies; this was 1-5 % faster than the former packing into
// kMR-row slivers, which transposed element by element). C is done kMChunk rows at a time
// over all of K (so C's rows stay in cache between K blocks), a kMR x kNR register tile accumulates in SIMD registers, and the
// epilogue (alpha, bias, activation, residual) is applied in registers at the last K block.
// Threads split the panels, or the rows when there are many (M >= DYNABERT_GEMM_MSPLIT).
#pragma once
#include <algorithm>
#include <array>
#include <cstring>
#include <utility>

#include "dynabert/core/aligned.hpp"
#include "dynabert/core/error.hpp"
#include "dynabert/core/parallel.hpp"
#include "dynabert/core/simd.hpp"
#include "dynabert/kernels/rowwise.hpp"

#ifndef DYNABERT_GEMM_MR512
#define DYNABERT_GEMM_MR512 14
#endif
#ifndef DYNABERT_GEMM_KC
#define DYNABERT_GEMM_KC 768
#endif
#ifndef DYNABERT_GEMM_DIRECT
#define DYNABERT_GEMM_DIRECT 1
#endif
#ifndef DYNABERT_GEMM_PREFETCH_RESIDUAL
#define DYNABERT_GEMM_PREFETCH_RESIDUAL 1
#endif
#ifndef DYNABERT_GEMM_MSPLIT
#define DYNABERT_GEMM_MSPLIT 384
#endif

namespace dynabert::kernels {

/// Register tile and cache blocking for the instruction set compiled for.
struct GemmShape {
  static constexpr int kLanes = simd::kLanes;
  /// SIMD vectors per tile row: tile width kNR = kNV * lanes (32 floats with AVX-512).
  static constexpr int kNV = 2;
  static constexpr int kNR = kNV * kLanes;
  /// Tile height: AVX-512 has 32 registers (14 x 2 accumulators, 2 for B, 1 broadcast; 14 rows
  /// were 2-8 % faster than 12 on whole models), AVX2/SSE/NEON fewer.
  static constexpr int kMR = kLanes >= 16 ? DYNABERT_GEMM_MR512 : (kLanes == 8 ? 6 : 4);
  static constexpr int kKC = DYNABERT_GEMM_KC;
  static constexpr int kMC = kMR * 16;
  /// Rows of C computed over all of K before the next rows start (large M: C stays in cache).
#ifdef DYNABERT_GEMM_MCHUNK
  static constexpr int kMChunk = DYNABERT_GEMM_MCHUNK;
#else
  static constexpr int kMChunk = kMR * 14;
#endif
};
inline constexpr int kNR = GemmShape::kNR;

/// What happens to a finished tile: y = act(alpha * acc + bias) + residual. Residual must not
/// alias the output. With `accumulate`, the product is added to what C holds (C += A B^T; for the
/// training gradients), which requires alpha == 1 and no activation. With `pre_activation`, the
/// value before the activation (alpha * acc + bias) is also stored there (training keeps it for
/// the activation's backward).
struct Epilogue {
  const float* bias = nullptr;
  const float* residual = nullptr;
  long ld_residual = 0;
  Activation act = Activation::kNone;
  float alpha = 1.0f;
  bool accumulate = false;
  float* pre_activation = nullptr;
  long ld_pre_activation = 0;
  /// Anything to do after the product is stored?
  bool trivial() const { return !bias && !residual && act == Activation::kNone && alpha == 1.0f && !pre_activation; }
};

/// A packed right-hand side (non-owning): logical W of n x k in the layout above.
struct PackedView {
  const float* data = nullptr;
  int n = 0;
  int k = 0;
  /// Start of micro-panel p of the K block starting at row pc.
  const float* micro_panel(int pc, int p) const {
    const long panels = (n + kNR - 1) / kNR;
    const long kc = std::min(GemmShape::kKC, k - pc);
    return data + static_cast<long>(pc) * panels * kNR + static_cast<long>(p) * kc * kNR;
  }
};

/// Floats needed to pack an n x k matrix.
inline std::size_t packed_size(int n, int k) {
  return static_cast<std::size_t>((n + kNR - 1) / kNR) * kNR * static_cast<std::size_t>(k);
}

namespace detail {
/// Packs element (j, kk) = get(j, kk) of an n x k matrix into dst.
template <class Get>
inline PackedView pack(float* dst, int n, int k, Get&& get) {
  PackedView v{dst, n, k};
  const int panels = (n + kNR - 1) / kNR;
  for (int pc = 0; pc < k; pc += GemmShape::kKC) {
    const int kc = std::min(GemmShape::kKC, k - pc);
    for (int p = 0; p < panels; ++p) {
      float* d = const_cast<float*>(v.micro_panel(pc, p));
      const int j_end = std::min(kNR, n - p * kNR);
      get(d, p * kNR, j_end, pc, kc);
      for (int kk = 0; kk < kc; ++kk)
        for (int j = j_end; j < kNR; ++j) d[kk * kNR + j] = 0.0f;
    }
  }
  return v;
}
}  // namespace detail

/// Packs W [n, k] (row stride ldw) into `dst` (packed_size(n, k) floats).
inline PackedView pack_nk(float* dst, const float* w, int n, int k, long ldw) {
  return detail::pack(dst, n, k, [&](float* d, int j0, int jn, int pc, int kc) {
    for (int j = 0; j < jn; ++j) {
      const float* src = w + static_cast<long>(j0 + j) * ldw + pc;
      for (int kk = 0; kk < kc; ++kk) d[kk * kNR + j] = src[kk];
    }
  });
}

/// Packs B [k, n] (row-major, row stride ldb; i.e. W = B^T) into `dst`.
inline PackedView pack_kn(float* dst, const float* b, int k, int n, long ldb) {
  return detail::pack(dst, n, k, [&](float* d, int j0, int jn, int pc, int kc) {
    for (int kk = 0; kk < kc; ++kk) std::memcpy(d + kk * kNR, b + (pc + kk) * ldb + j0, sizeof(float) * jn);
  });
}

/// A weight matrix packed once at load (owning).
class PackedWeight {
 public:
  PackedWeight() = default;
  /// Packs W [n, k] with row stride ldw.
  PackedWeight(const float* w, int n, int k, long ldw) : buf_(packed_size(n, k)) {
    view_ = pack_nk(buf_.data(), w, n, k, ldw);
  }
  const PackedView& view() const { return view_; }
  int n() const { return view_.n; }
  int k() const { return view_.k; }
  std::size_t bytes() const { return buf_.size() * sizeof(float); }

 private:
  AlignedBuffer<float> buf_;
  PackedView view_;
};

/// Scratch floats one thread needs to copy its A blocks (kMC rows of kKC + 16).
inline constexpr std::size_t gemm_scratch_floats() {
  return static_cast<std::size_t>(GemmShape::kMC) * (GemmShape::kKC + 16);
}

namespace detail {

/// How the register tile reads A: row-major (a[i * lda + k]) or transposed (A^T row-major:
/// a[k * lda + i], the 14 values of one k side by side).
enum class AMode { kRows, kColumns };

/// The epilogue on a finished tile of C (rows x cols at row0, col0 of the whole product): read
/// back from L1 once, in SIMD (a partial last vector goes through a padded copy, so every column
/// gets the same arithmetic).
template <int = 0>
inline void apply_epilogue(float* c, long ldc, int rows, int cols, long row0, long col0, const Epilogue& ep) {
  using B = simd::Batch;
  constexpr int L = simd::kLanes;
  for (int i = 0; i < rows; ++i) {
    float* crow = c + i * ldc;
    const float* res = ep.residual ? ep.residual + (row0 + i) * ep.ld_residual + col0 : nullptr;
    float* pre = ep.pre_activation ? ep.pre_activation + (row0 + i) * ep.ld_pre_activation + col0 : nullptr;
    const float* bias = ep.bias ? ep.bias + col0 : nullptr;
    auto one = [&](float* dst, const float* bsrc, const float* rsrc, float* psrc) {
      B r = B::load_unaligned(dst);
      if (ep.alpha != 1.0f) r *= B(ep.alpha);
      if (bsrc) r += B::load_unaligned(bsrc);
      if (psrc) r.store_unaligned(psrc);
      r = kernels::detail::activate(ep.act, r);
      if (rsrc) r += B::load_unaligned(rsrc);
      r.store_unaligned(dst);
    };
    int j = 0;
    for (; j + L <= cols; j += L) one(crow + j, bias ? bias + j : nullptr, res ? res + j : nullptr, pre ? pre + j : nullptr);
    if (j < cols) {
      const int n = cols - j;
      alignas(64) float t[L] = {}, tb[L] = {}, tr[L] = {}, tp[L];
      std::memcpy(t, crow + j, sizeof(float) * n);
      if (bias) std::memcpy(tb, bias + j, sizeof(float) * n);
      if (res) std::memcpy(tr, res + j, sizeof(float) * n);
      one(t, bias ? tb : nullptr, res ? tr : nullptr, pre ? tp : nullptr);
      std::memcpy(crow + j, t, sizeof(float) * n);
      if (pre) std::memcpy(pre + j, tp, sizeof(float) * n);
    }
  }
}

/// Stores one full row of a finished tile (kNR columns of C at `crow`, row `row` and column col0
/// of the product): C (+)= r, then the epilogue's scale, bias, pre-activation and (without an
/// activation) residual in registers. An activation is left to activation_tile().
[[gnu::always_inline]] inline void store_row(simd::Batch (&r0)[GemmShape::kNV], float* __restrict crow, bool accumulate,
                                             const Epilogue* ep, long row, long col0) {
  using B = simd::Batch;
  constexpr int L = simd::kLanes;
  constexpr int NV = GemmShape::kNV;
  const bool act = ep && ep->act != Activation::kNone;
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    B r = accumulate ? r0[v] + B::load_unaligned(crow + v * L) : r0[v];
    if (ep) {
      if (ep->alpha != 1.0f) r *= B(ep->alpha);
      if (ep->bias) r += B::load_unaligned(ep->bias + col0 + v * L);
      if (ep->pre_activation) r.store_unaligned(ep->pre_activation + row * ep->ld_pre_activation + col0 + v * L);
      if (!act && ep->residual) r += B::load_unaligned(ep->residual + row * ep->ld_residual + col0 + v * L);
    }
    r.store_unaligned(crow + v * L);
  }
}

template <Activation A>
inline void activation_rows(float* c, long ldc, int rows, const Epilogue& ep, long row0, long col0) {
  using B = simd::Batch;
  constexpr int L = simd::kLanes;
  constexpr int NV = GemmShape::kNV;
  for (int i = 0; i < rows; ++i) {
    float* crow = c + i * ldc;
    const float* rr = ep.residual ? ep.residual + (row0 + i) * ep.ld_residual + col0 : nullptr;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      B x = detail::activate(A, B::load_unaligned(crow + v * L));
      if (rr) x += B::load_unaligned(rr + v * L);
      x.store_unaligned(crow + v * L);
    }
  }
}

/// store_row with activation A applied in registers (no accumulation): for callers outside the
/// register tile (the low-precision dequantizing store), whose code size does not matter.
template <Activation A>
[[gnu::always_inline]] inline void store_row_act(simd::Batch (&r0)[GemmShape::kNV], float* __restrict crow, const Epilogue& ep,
                                                 long row, long col0) {
  using B = simd::Batch;
  constexpr int L = simd::kLanes;
  constexpr int NV = GemmShape::kNV;
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    B r = r0[v];
    if (ep.alpha != 1.0f) r *= B(ep.alpha);
    if (ep.bias) r += B::load_unaligned(ep.bias + col0 + v * L);
    if (ep.pre_activation) r.store_unaligned(ep.pre_activation + row * ep.ld_pre_activation + col0 + v * L);
    r = detail::activate(A, r);
    if (ep.residual) r += B::load_unaligned(ep.residual + row * ep.ld_residual + col0 + v * L);
    r.store_unaligned(crow + v * L);
  }
}

/// The activation (then the residual) on the stored rows of a full tile, in the same SIMD
/// arithmetic as kernels::activation. One call per tile, not inlined into the register tile: its
/// rows' independent vectors overlap in the core (one call per row of 32 columns cost the INT8
/// product with its GELU about twice as much).
[[gnu::noinline]] inline void activation_tile(float* c, long ldc, int rows, const Epilogue& ep, long row0, long col0) {
  switch (ep.act) {
    case Activation::kGeluErf: return activation_rows<Activation::kGeluErf>(c, ldc, rows, ep, row0, col0);
    case Activation::kGeluTanh: return activation_rows<Activation::kGeluTanh>(c, ldc, rows, ep, row0, col0);
    case Activation::kTanh: return activation_rows<Activation::kTanh>(c, ldc, rows, ep, row0, col0);
    default: return;
  }
}

/// Stores a finished register tile (MR rows x kNR columns of C at row0, col0 of the product;
/// only the first n_valid columns exist): C (+)= acc, then the epilogue. A full tile applies
/// scale, bias, pre-activation and residual in registers and an activation on the stored rows, in
/// the same SIMD arithmetic as everywhere; a partial tile goes through apply_epilogue. Shared by the
/// FP32 micro-kernel and the low-precision ones (kernels/lowp.hpp), which hand over dequantized
/// accumulators.
template <int MR>
[[gnu::always_inline]] inline void store_tile(simd::Batch (&acc)[MR][GemmShape::kNV], float* __restrict c, long ldc,
                                              int n_valid, bool accumulate, const Epilogue* ep, long row0, long col0) {
  constexpr int L = simd::kLanes;
  constexpr int NV = GemmShape::kNV;
  if (n_valid == kNR) {
    for (int i = 0; i < MR; ++i) store_row(acc[i], c + i * ldc, accumulate, ep, row0 + i, col0);
    if (ep && ep->act != Activation::kNone) activation_tile(c, ldc, MR, *ep, row0, col0);
    return;
  }
  alignas(64) float tmp[kNR];
  for (int i = 0; i < MR; ++i) {
    float* crow = c + i * ldc;
    for (int v = 0; v < NV; ++v) acc[i][v].store_aligned(tmp + v * L);
    if (accumulate)
      for (int j = 0; j < n_valid; ++j) crow[j] = tmp[j] + crow[j];
    else
      std::memcpy(crow, tmp, sizeof(float) * n_valid);
  }
  if (ep) apply_epilogue(c, ldc, MR, n_valid, row0, col0, *ep);  // a partial tile: the generic pass
}

/// The register tile: C[MR x kNR] (+)= A_sliver * B_panel over kc. Only the first n_valid
/// columns of C are written.
template <int MR, AMode kMode>
inline void micro_kernel(int kc, const float* __restrict a, long lda, const float* __restrict b, float* __restrict c,
                         long ldc, int n_valid, bool accumulate, const float* prefetch, const Epilogue* ep, long row0,
                         long col0) {
  using B = simd::Batch;
  constexpr int L = simd::kLanes;
  constexpr int NV = GemmShape::kNV;
  B acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = B(0.0f);
  for (int k = 0; k < kc; ++k) {
    if (prefetch) {  // pull the next micro-panel towards L1 while this one computes
      __builtin_prefetch(prefetch + k * kNR, 0, 3);
      __builtin_prefetch(prefetch + k * kNR + 16, 0, 3);
    }
    B bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = B::load_aligned(b + k * kNR + v * L);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const B ai(kMode == AMode::kRows ? a[i * lda + k] : a[k * lda + i]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = xsimd::fma(ai, bv[v], acc[i][v]);
    }
  }
  store_tile<MR>(acc, c, ldc, n_valid, accumulate, ep, row0, col0);
}

using MicroKernel = void (*)(int, const float*, long, const float*, float*, long, int, bool, const float*,
                             const Epilogue*, long, long);

template <AMode kMode, int... I>
constexpr std::array<MicroKernel, sizeof...(I)> make_kernel_table(std::integer_sequence<int, I...>) {
  return {&micro_kernel<I + 1, kMode>...};
}
/// micro_kernel<mr> for mr = 1..kMR (tail tiles use the exact row count, wasting no FMA). A
/// function template, so that the kernels are compiled only by programs that multiply.
template <AMode kMode>
inline MicroKernel micro_kernel_for(int mr) {
  static constexpr auto table = make_kernel_table<kMode>(std::make_integer_sequence<int, GemmShape::kMR>{});
  return table[mr - 1];
}

/// One thread's share: panels [p0, p1) of C = A * B^T over all of M and K. With kTrans, `a`
/// holds A^T.
template <bool kTrans>
inline void gemm_panels(float* c, long ldc, const float* a, long lda, int M, const PackedView& B, int n, int k,
                        const Epilogue& ep, float* scratch, int p0, int p1) {
  constexpr int MR = GemmShape::kMR, KC = GemmShape::kKC, MC = GemmShape::kMC;
  // A is read in place when its rows do not alias in L1 (a stride that is a multiple of 4 KB
  // would put all MR rows in one cache set); else its rows are copied to a stride that does not
  // (-DDYNABERT_GEMM_DIRECT=0 copies every A). A transposed A is always read in place (each k
  // reads MR neighbouring values of one row of A^T).
  const bool direct = kTrans || (DYNABERT_GEMM_DIRECT && (lda * 4) % 4096 != 0);
  const bool epilogue = !ep.trivial();
  for (int pc = 0; pc < k; pc += KC) {
    const int kc = std::min(KC, k - pc);
    const bool first = pc == 0, last = pc + kc == k;
    for (int ic = 0; ic < M; ic += MC) {
      const int mc = std::min(MC, M - ic);
      // rows of A whose stride aliases in L1 are copied (whole rows, vectorised) to a stride that
      // does not: kc + 16 floats; the tile then reads them in place like any other A
      const long ldp = kc + 16;
      if (!direct)
        for (int i = 0; i < mc; ++i) std::memcpy(scratch + i * ldp, a + (ic + i) * lda + pc, sizeof(float) * kc);
      for (int p = p0; p < p1; ++p) {
        const float* bp = B.micro_panel(pc, p);
        const float* next = p + 1 < p1 ? B.micro_panel(pc, p + 1) : nullptr;
        const int col0 = p * kNR;
        const int nv = std::min(kNR, n - col0);
        for (int i0 = 0; i0 < mc; i0 += MR) {
          const int mr = std::min(MR, mc - i0);
          float* ctile = c + (ic + i0) * ldc + col0;
          // The tile's rows of the residual, read by the epilogue, are strided lines that the
          // hardware prefetcher does not foresee. Asked for now, towards L2, they arrive while the
          // tile computes: the residual epilogue went from about 13 % to about 9 % of a 1,024-row
          // product (BM_GemmEpilogue/epilogue:2 against /epilogue:0;
          // -DDYNABERT_GEMM_PREFETCH_RESIDUAL=0 turns it off). (Prefetching C for writing as well
          // was slower: on this core it pulls the lines into L1.)
          if (DYNABERT_GEMM_PREFETCH_RESIDUAL && last && ep.residual)
            for (int i = 0; i < mr; ++i)
              for (int j = 0; j < nv; j += 64 / static_cast<int>(sizeof(float)))
                __builtin_prefetch(ep.residual + (ic + i0 + i) * ep.ld_residual + col0 + j, 0, 2);
          const float* pf = i0 == 0 ? next : nullptr;
          const bool acc = !first || ep.accumulate;
          const Epilogue* e = last && epilogue ? &ep : nullptr;
          if (!direct)
            micro_kernel_for<AMode::kRows>(mr)(kc, scratch + i0 * ldp, ldp, bp, ctile, ldc, nv, acc, pf, e, ic + i0, col0);
          else if constexpr (kTrans)
            micro_kernel_for<AMode::kColumns>(mr)(kc, a + pc * lda + ic + i0, lda, bp, ctile, ldc, nv, acc, pf, e, ic + i0, col0);
          else
            micro_kernel_for<AMode::kRows>(mr)(kc, a + (ic + i0) * lda + pc, lda, bp, ctile, ldc, nv, acc, pf, e, ic + i0, col0);
        }
      }
    }
  }
}

/// Rows [m0, m0 + M) at a time: C's rows of one chunk stay in cache across the K blocks.
template <bool kTrans>
inline void gemm_panels_chunked(float* c, long ldc, const float* a, long lda, int M, const PackedView& B, int n, int k,
                                const Epilogue& ep, float* scratch, int p0, int p1) {
  constexpr bool a_trans = kTrans;
  constexpr int kChunk = GemmShape::kMChunk;
  for (int m0 = 0; m0 < M; m0 += kChunk) {
    Epilogue e = ep;
    if (e.residual) e.residual += static_cast<long>(m0) * e.ld_residual;
    if (e.pre_activation) e.pre_activation += static_cast<long>(m0) * e.ld_pre_activation;
    gemm_panels<kTrans>(c + static_cast<long>(m0) * ldc, ldc, a_trans ? a + m0 : a + static_cast<long>(m0) * lda, lda,
                        std::min(kChunk, M - m0), B, n, k, e, scratch, p0, p1);
  }
}

}  // namespace detail

/// C[M, n] = epilogue(A[M, k] * W[:n, :k]^T) with W packed in `B` (n <= B.n, k <= B.k).
/// `scratch` holds threads.count() * gemm_scratch_floats() floats. Threads split the panels (or
/// the rows when there are many); every element is computed the same way for any thread count.
/// With kTransA (gemm<true>), `a` holds A^T ([k, M], row stride lda). A function template:
/// instantiated by programs that call it (and the transposed kernels only by those that call
/// gemm<true>), not by including the header.
template <bool kTransA = false>
inline void gemm(float* c, long ldc, const float* a, long lda, int M, const PackedView& B, int n, int k,
                 const Epilogue& ep, float* scratch, const Threads& threads = Threads()) {
  constexpr bool a_trans = kTransA;
  DYNABERT_REQUIRE(n >= 0 && n <= B.n && k >= 0 && k <= B.k, InputError, "gemm: active ", n, "x", k,
                   " exceeds packed ", B.n, "x", B.k);
  DYNABERT_REQUIRE(!ep.accumulate || (ep.alpha == 1.0f && ep.act == Activation::kNone), InputError,
                   "gemm: accumulating into C needs alpha 1 and no activation");
  if (M <= 0 || n <= 0) return;
  if (k == 0 && ep.accumulate && !ep.bias && !ep.residual) return;  // C += 0
  if (k == 0) {  // no inner product: the epilogue applied to zero
    for (int m = 0; m < M; ++m)
      for (int j = 0; j < n; ++j) {
        float r = ep.bias ? ep.bias[j] : 0.0f;
        if (ep.pre_activation) ep.pre_activation[m * ep.ld_pre_activation + j] = r;
        r = reference::activate(ep.act, r);
        if (ep.residual) r += ep.residual[m * ep.ld_residual + j];
        c[m * ldc + j] = ep.accumulate ? c[m * ldc + j] + r : r;
      }
    return;
  }
  const int panels = (n + kNR - 1) / kNR;
  if (threads.count() > 1 && M >= DYNABERT_GEMM_MSPLIT) {
    // Many rows: threads split M (in whole register tiles), each over every panel; B is shared
    // through L3 and each thread packs only its own rows of A.
    const long tiles = (M + GemmShape::kMR - 1) / GemmShape::kMR;
    threads.for_chunks(tiles, [&](int worker, long t0, long t1) {
      const long m0 = t0 * GemmShape::kMR, m1 = std::min<long>(M, t1 * GemmShape::kMR);
      if (m1 <= m0) return;
      Epilogue e = ep;
      if (e.residual) e.residual += m0 * e.ld_residual;
      if (e.pre_activation) e.pre_activation += m0 * e.ld_pre_activation;
      detail::gemm_panels_chunked<a_trans>(c + m0 * ldc, ldc, a_trans ? a + m0 : a + m0 * lda, lda, static_cast<int>(m1 - m0), B, n,
                                   k, e, scratch + static_cast<std::size_t>(worker) * gemm_scratch_floats(), 0, panels);
    });
    return;
  }
  threads.for_chunks(panels, [&](int worker, long p0, long p1) {
    detail::gemm_panels_chunked<a_trans>(c, ldc, a, lda, M, B, n, k, ep, scratch + static_cast<std::size_t>(worker) * gemm_scratch_floats(),
                                 static_cast<int>(p0), static_cast<int>(p1));
  });
}

}  // namespace dynabert::kernels
