// Low-precision GEMM for inference: C = epilogue(A W^T) with W packed once at load in int8 or
// bfloat16 and A converted per call, accumulation in int32 (INT8) or FP32 (BF16), and the FP32
// epilogue of kernels/gemm.hpp (bias, GELU, tanh, residual) applied to the dequantized tile in
// registers.
//
// INT8. W [n, k] is quantized symmetrically per output row at load: s_w[n] = max|W[n, :]| / 127,
// q = round(W / s_w) in [-127, 127], stored biased as u8 = q + 128. A is quantized per call and per
// row (token) the same way into s8 with s_a[m], and its row sums are kept. `vpdpbusd` multiplies
// the u8 weights by the s8 activations, so
//     acc[m][n] = sum_k (q_w + 128) q_a = sum_k q_w q_a + 128 sum_k q_a,
// and the epilogue computes (acc - 128 rowsum_a[m]) * s_a[m] * s_w[n] (the VNNI tile starts its
// accumulators at -128 rowsum_a[m] instead, so its epilogue subtracts nothing): the correction
// depends only on the row of A, so it holds for every prefix of K (every DynaBERT width) with
// nothing stored per width. Products u8 x s8 summed in int32 cannot saturate. CPUs without
// AVX512_VNNI run the same layout with 16-bit intermediate products (`vpmaddwd` on zero-extended
// weights and sign-extended activations: exact, no saturation); others a plain loop.
//
// BF16. W is rounded to bfloat16 (nearest even) at load and packed as pairs of k for `vdpbf16ps`;
// A is rounded per call; FP32 accumulation (28 independent chains per tile, enough to hide the
// instruction's latency). CPUs without AVX512_BF16, and Intel's with it but without AMX (where
// `vdpbf16ps` runs at half the FP32 FMA rate), widen the pairs to FP32 and use FMAs (the same
// products in the same order as the instruction, which computes the odd element of a pair first).
//
// Layout (every width a prefix view, as for FP32): panels of kNR output rows, panel p holding all of
// K, groups of G consecutive k (G = 4 for int8, 2 for bf16); element (n, k) at
//   p * kpad * kNR * E  +  (k / G) * kNR * G * E  +  (n % kNR) * G * E  +  (k % G) * E   bytes
// (E = element bytes, kpad = k rounded up to G). A narrower output width uses the first panels, a
// narrower input width the first groups of each panel (A is zero-padded to the group, so the rest
// of a group multiplies zeros). K is not blocked: an int8 panel of K = 3072 is the size of an FP32
// panel block of 768.
//
// Every kernel has a plain twin in namespace reference below; tests/unit/test_kernels.cpp compares
// them on random shapes.
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "dynabert/core/aligned.hpp"
#include "dynabert/core/error.hpp"
#include "dynabert/core/parallel.hpp"
#include "dynabert/core/simd.hpp"
#include "dynabert/kernels/gemm.hpp"
#include "dynabert/kernels/precision.hpp"
#include "dynabert/kernels/reference.hpp"

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#define DYNABERT_HAS_VNNI512 1
#else
#define DYNABERT_HAS_VNNI512 0
#endif
#if defined(__AVX512BF16__) && defined(__AVX512BW__) && (defined(__x86_64__) || defined(__i386__))
#define DYNABERT_HAS_BF16_512 1
#include <cpuid.h>
#else
#define DYNABERT_HAS_BF16_512 0
#endif
// AMX (Sapphire Rapids and later): the tile kernels, built with -mamx-tile -mamx-int8 -mamx-bf16
// (or -march=native on such a CPU); used when Linux grants the process the tile state.
#if defined(__AMX_TILE__) && defined(__AMX_INT8__) && defined(__AMX_BF16__) && DYNABERT_HAS_VNNI512 && \
    DYNABERT_HAS_BF16_512 && defined(__linux__)
#define DYNABERT_HAS_AMX 1
#include <sys/syscall.h>
#include <unistd.h>
#else
#define DYNABERT_HAS_AMX 0
#endif

namespace dynabert::kernels {

// ---- bfloat16 ------------------------------------------------------------------------------------

/// FP32 -> bfloat16, round to nearest even, as `vcvtneps2bf16` does it: denormal inputs become
/// signed zeros, NaN stays a quiet NaN.
inline std::uint16_t to_bf16(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7F800000u) == 0) return static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}
inline float from_bf16(std::uint16_t h) {
  const std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// ---- layout --------------------------------------------------------------------------------------

/// k per group and bytes per element of a low precision.
inline constexpr int lowp_group(Precision p) { return p == Precision::kInt8 ? 4 : 2; }
inline constexpr int lowp_elem_bytes(Precision p) { return p == Precision::kInt8 ? 1 : 2; }
inline bool amx_enabled();
/// k rounded up to whole groups, and where the AMX kernels run (amx_enabled()) to whole 64-byte
/// steps of K (64 int8 or 32 bf16 values: a tile's row), which they read whole. Operands are zero
/// (A) or weight 0 (W) past k, so any kernel may read them. (Every K of BERT-base and of its
/// DynaBERT widths is a multiple of 64: only other sizes pay for the padding.)
inline int lowp_kpad(int k, Precision p) {
  const int step = amx_enabled() ? 64 / lowp_elem_bytes(p) : lowp_group(p);
  return (k + step - 1) / step * step;
}

/// Row stride (elements) of a converted A operand with k columns: whole 64-byte lines, and not a
/// multiple of 4 KB (rows 4 KB apart would share one L1 set when the tile reads 14 of them).
inline long lowp_a_ld(int k, Precision p) {
  const long e = lowp_elem_bytes(p), line = 64 / e;
  long ld = (lowp_kpad(k, p) + line - 1) / line * line;
  if ((ld * e) % 4096 == 0) ld += line;
  return ld;
}

/// A packed low-precision right-hand side (non-owning), logical W of n x k.
struct LowpView {
  const std::uint8_t* data = nullptr;
  const float* scale = nullptr;  ///< int8: s_w per output row, padded with zeros to whole panels
  int n = 0, k = 0, kpad = 0;
  Precision precision = Precision::kInt8;
  std::size_t panel_bytes() const { return static_cast<std::size_t>(kpad) * kNR * lowp_elem_bytes(precision); }
  const std::uint8_t* panel(int p) const { return data + p * panel_bytes(); }
};

/// Symmetric int8 quantization of n values: returns the scale max|x| / 127 (0 for an all-zero row,
/// NaN when a value is not finite) and writes q = round_half_even(x * 127 / max|x|).
inline float quantize_s8(std::int8_t* q, const float* x, int n) {
  if (n <= 0) return 0.0f;  // (also tells GCC's -Wstringop-overflow that the memsets below are sized)
  float amax = 0.0f;
  bool finite = true;
  for (int i = 0; i < n; ++i) {
    const float a = std::abs(x[i]);
    finite = finite && a <= std::numeric_limits<float>::max();  // false for Inf and NaN
    amax = std::max(amax, a);  // (std::max drops a NaN: hence the flag)
  }
  if (!finite) {  // no meaningful scale
    std::memset(q, 0, static_cast<std::size_t>(n));
    return std::numeric_limits<float>::quiet_NaN();
  }
  if (amax == 0.0f) {
    std::memset(q, 0, static_cast<std::size_t>(n));
    return 0.0f;
  }
  const float inv = 127.0f / amax;
  if (inv <= std::numeric_limits<float>::max()) {
    for (int i = 0; i < n; ++i) {
      const float r = std::nearbyint(x[i] * inv);
      q[i] = static_cast<std::int8_t>(std::min(127.0f, std::max(-127.0f, r)));
    }
  } else {  // max|x| below 127 / FLT_MAX (about 3.7e-37): 127 / max|x| needs double
    const double dinv = 127.0 / static_cast<double>(amax);
    for (int i = 0; i < n; ++i) {
      const double r = std::nearbyint(static_cast<double>(x[i]) * dinv);
      q[i] = static_cast<std::int8_t>(std::min(127.0, std::max(-127.0, r)));
    }
  }
  return amax / 127.0f;
}

/// Packs an n x k matrix quantized to int8 already into `dst` (lowp_packed_bytes(n, k, kInt8)
/// bytes), biased to u8; LowpWeight packs its int8 weights with it, INT8 attention its K and V^T
/// per task. `scale` is the view's weight scales: n values followed by zeros up to whole
/// panels (the caller's). With `transposed`, src(i) is row i of W^T (n values: element (r, c) of W
/// is src(c)[r]); else row i of W (k values).
template <class Src>
inline LowpView pack_s8(std::uint8_t* dst, const float* scale, int n, int k, bool transposed, Src&& src) {
  const int kp = lowp_kpad(k, Precision::kInt8), panels = (n + kNR - 1) / kNR;
  LowpView v{dst, scale, n, k, kp, Precision::kInt8};
  const std::size_t per_panel = static_cast<std::size_t>(kp) * kNR;
  if (n % kNR) std::memset(dst + (panels - 1) * per_panel, 0x80, per_panel);  // weight 0 past n
  if (!transposed) {
    for (int r = 0; r < n; ++r) {  // a row's group of 4 k: one 32-bit word, biased bytewise (q ^ 0x80 = q + 128)
      const auto* row = reinterpret_cast<const std::uint8_t*>(src(r));
      std::uint8_t* d = dst + (r / kNR) * per_panel + (r % kNR) * 4;
      int g = 0;
      for (; 4 * g + 4 <= k; ++g) {
        std::uint32_t w;
        std::memcpy(&w, row + 4 * g, 4);
        w ^= 0x80808080u;
        std::memcpy(d + static_cast<std::size_t>(g) * kNR * 4, &w, 4);
      }
      if (4 * g < k) {  // the last group: weight 0 past k
        for (int t = 0; t < 4; ++t) d[static_cast<std::size_t>(g) * kNR * 4 + t] = 4 * g + t < k ? row[4 * g + t] ^ 0x80 : 0x80;
        ++g;
      }
      for (; 4 * g < kp; ++g) std::memset(d + static_cast<std::size_t>(g) * kNR * 4, 0x80, 4);  // groups past k
    }
    return v;
  }
  static const std::uint8_t zero[kNR] = {};  // a missing row of the last group (q = 0)
  for (int g = 0; g < kp / 4; ++g) {  // k group 4g..4g+3: four rows of W^T, interleaved bytewise
    const std::uint8_t* r[4];
    for (int t = 0; t < 4; ++t) r[t] = 4 * g + t < k ? reinterpret_cast<const std::uint8_t*>(src(4 * g + t)) : nullptr;
    for (int p = 0; p < panels; ++p) {
      std::uint8_t* out = dst + p * per_panel + static_cast<std::size_t>(g) * kNR * 4;
      const int jn = std::min(kNR, n - p * kNR);
      const std::uint8_t* q[4];
      for (int t = 0; t < 4; ++t) q[t] = r[t] ? r[t] + p * kNR : zero;
      int j = 0;
#if defined(__AVX2__)
      // 16 columns at a time: bytes of rows 0/1 and 2/3 interleaved, then their pairs
      const __m128i bias = _mm_set1_epi8(static_cast<char>(0x80));
      for (; j + 16 <= jn; j += 16) {
        __m128i x[4];
        for (int t = 0; t < 4; ++t)
          x[t] = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q[t] + j)), bias);
        const __m128i lo01 = _mm_unpacklo_epi8(x[0], x[1]), hi01 = _mm_unpackhi_epi8(x[0], x[1]);
        const __m128i lo23 = _mm_unpacklo_epi8(x[2], x[3]), hi23 = _mm_unpackhi_epi8(x[2], x[3]);
        auto* o = reinterpret_cast<__m128i*>(out + 4 * j);
        _mm_storeu_si128(o + 0, _mm_unpacklo_epi16(lo01, lo23));
        _mm_storeu_si128(o + 1, _mm_unpackhi_epi16(lo01, lo23));
        _mm_storeu_si128(o + 2, _mm_unpacklo_epi16(hi01, hi23));
        _mm_storeu_si128(o + 3, _mm_unpackhi_epi16(hi01, hi23));
      }
#endif
      for (; j < jn; ++j)
        for (int t = 0; t < 4; ++t) out[4 * j + t] = q[t][j] ^ 0x80;
    }
  }
  return v;
}

/// A weight matrix packed once in a low precision (owning).
class LowpWeight {
 public:
  LowpWeight() = default;
  bool empty() const { return view_.data == nullptr; }
  const LowpView& view() const { return view_; }
  Precision precision() const { return view_.precision; }
  std::size_t bytes() const { return data_.size() + scale_.size() * sizeof(float); }

  /// Packs W [n, k] in precision p (bf16 or int8); row(r) returns a pointer to W's row r (k floats).
  template <class Row>
  void pack(Precision p, int n, int k, Row&& row) {
    DYNABERT_REQUIRE(p != Precision::kFp32, InputError, "LowpWeight packs bf16 or int8");
    if (p == Precision::kInt8) {
      AlignedBuffer<std::int8_t> q(static_cast<std::size_t>(n) * k);
      start(p, n, k);
      for (int r = 0; r < n; ++r) scale_[r] = quantize_s8(q.data() + static_cast<std::size_t>(r) * k, row(r), k);
      pack_s8(data_.data(), scale_.data(), n, k, false, [&](int r) { return q.data() + static_cast<std::size_t>(r) * k; });
    } else {
      start(p, n, k);
      for (int r = 0; r < n; ++r) {
        const float* w = row(r);
        std::uint16_t* base = reinterpret_cast<std::uint16_t*>(data_.data());
        const int pnl = r / kNR, j = r % kNR;
        for (int kk = 0; kk < k; ++kk)
          base[static_cast<std::size_t>(pnl) * view_.kpad * kNR + (kk / 2) * kNR * 2 + j * 2 + kk % 2] = to_bf16(w[kk]);
      }
    }
  }
  /// Packs int8 rows quantized already (q(r): k values of row r, scale(r) its scale): an INT8
  /// checkpoint is served without re-quantizing.
  template <class RowQ, class RowS>
  void pack_quantized(int n, int k, RowQ&& q, RowS&& scale) {
    start(Precision::kInt8, n, k);
    for (int r = 0; r < n; ++r) scale_[r] = scale(r);
    pack_s8(data_.data(), scale_.data(), n, k, false, q);
  }

 private:
  void start(Precision p, int n, int k) {
    DYNABERT_REQUIRE(n >= 1 && k >= 1, InputError, "low-precision weight of ", n, "x", k);
    const int panels = (n + kNR - 1) / kNR;
    view_ = LowpView{nullptr, nullptr, n, k, lowp_kpad(k, p), p};
    data_.resize(static_cast<std::size_t>(panels) * view_.panel_bytes(), true);
    if (p == Precision::kInt8) {  // (pack_s8 writes every byte, the padding as weight 0)
      scale_.resize(static_cast<std::size_t>(panels) * kNR, true);
      view_.scale = scale_.data();
    } else {
      scale_.resize(0);
    }
    view_.data = data_.data();
  }

  AlignedBuffer<std::uint8_t> data_;
  AlignedBuffer<float> scale_;
  LowpView view_;
};

/// Bytes of an n x k matrix packed in precision p (whole panels).
inline std::size_t lowp_packed_bytes(int n, int k, Precision p) {
  return static_cast<std::size_t>((n + kNR - 1) / kNR) * kNR * lowp_kpad(k, p) * lowp_elem_bytes(p);
}

/// Packs an n x k matrix already in bfloat16 into `dst` (lowp_packed_bytes(n, k, kBf16) bytes),
/// without owning it (attention packs K and V^T per task this way). With `transposed`, src(i) is
/// row i of W^T (n values; element (r, c) of W is src(c)[r]); else row i of W (k values).
template <class Src>
inline LowpView pack_bf16(std::uint8_t* dst, int n, int k, bool transposed, Src&& src) {
  const int kp = lowp_kpad(k, Precision::kBf16), panels = (n + kNR - 1) / kNR;
  LowpView v{dst, nullptr, n, k, kp, Precision::kBf16};
  auto* d = reinterpret_cast<std::uint16_t*>(dst);
  const std::size_t per_panel = static_cast<std::size_t>(kp) * kNR;
  if (!transposed) {
    for (int p = 0; p < panels; ++p) {
      std::uint16_t* pd = d + p * per_panel;
      const int jn = std::min(kNR, n - p * kNR);
      for (int j = 0; j < jn; ++j) {
        const std::uint16_t* row = src(p * kNR + j);
        for (int g = 0; g < k / 2; ++g)  // pair (2g, 2g + 1) of row j: one 32-bit word
          std::memcpy(pd + (static_cast<std::size_t>(g) * kNR + j) * 2, row + 2 * g, 4);
        if (k % 2) {
          pd[(k / 2) * kNR * 2 + j * 2] = row[k - 1];
          pd[(k / 2) * kNR * 2 + j * 2 + 1] = 0;
        }
        for (int g = (k + 1) / 2; g < kp / 2; ++g) pd[g * kNR * 2 + j * 2] = pd[g * kNR * 2 + j * 2 + 1] = 0;  // past k
      }
      for (int j = jn; j < kNR; ++j)
        for (int g = 0; g < kp / 2; ++g) pd[g * kNR * 2 + j * 2] = pd[g * kNR * 2 + j * 2 + 1] = 0;
    }
  } else {
    for (int g = 0; g < kp / 2; ++g) {  // k pair (2g, 2g + 1): two rows of W^T, interleaved
      const std::uint16_t* r0 = 2 * g < k ? src(2 * g) : nullptr;  // (pairs past k: zeros)
      const std::uint16_t* r1 = 2 * g + 1 < k ? src(2 * g + 1) : nullptr;
      for (int p = 0; p < panels; ++p) {
        std::uint16_t* out = d + p * per_panel + static_cast<std::size_t>(g) * kNR * 2;
        const int jn = std::min(kNR, n - p * kNR);
        for (int j = 0; j < jn; ++j) {
          out[2 * j] = r0 ? r0[p * kNR + j] : 0;
          out[2 * j + 1] = r1 ? r1[p * kNR + j] : 0;
        }
        for (int j = jn; j < kNR; ++j) out[2 * j] = out[2 * j + 1] = 0;
      }
    }
  }
  return v;
}

// ---- the A operand -------------------------------------------------------------------------------

/// A converted left-hand side: `data` [M, ld] in the kernel's element type; for int8 also the row
/// scales s_a and the corrections 128 x (row sum of q_a).
struct LowpA {
  const void* data = nullptr;
  long ld = 0;
  const float* scale = nullptr;
  const std::int32_t* corr = nullptr;
};

/// One row of A in int8 whose max |x| (`amax`, over the values that are not NaN) and whether it
/// holds a NaN (`nan`) the caller found already, e.g. in the pass that wrote the row (LayerNorm,
/// softmax): q[0, kpad) (zero past k), returns s_a and writes corr = 128 x sum q (bitwise
/// quantize_s8's values and scale). `amax` must be exactly that max (a smaller one would saturate
/// q while corr sums the unsaturated values); builds without AVX512BW find it again.
inline float quantize_a_row_known(std::int8_t* q, std::int32_t* corr, const float* x, int k, int kpad, float amax, bool nan) {
#if defined(__AVX512BW__)
  if (nan || !(amax <= std::numeric_limits<float>::max()) || amax == 0.0f) {
    std::memset(q, 0, static_cast<std::size_t>(kpad));
    *corr = 0;
    return amax == 0.0f && !nan ? 0.0f : std::numeric_limits<float>::quiet_NaN();
  }
  const float inv = 127.0f / amax;
  if (inv <= std::numeric_limits<float>::max()) {  // else (max|x| below 3.7e-37) quantize_s8 below
    const __m512 vinv = _mm512_set1_ps(inv);
    __m512i sum = _mm512_setzero_si512();
    int i = 0;
    // every |x| <= amax, so |x * inv| rounds to at most 127: no clamp (the narrowing saturates)
    for (; i + 16 <= k; i += 16) {
      const __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i), vinv));  // nearest even
      sum = _mm512_add_epi32(sum, v);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), _mm512_cvtsepi32_epi8(v));
    }
    std::int32_t s = _mm512_reduce_add_epi32(sum);
    for (; i < k; ++i) {
      const float r = std::nearbyint(x[i] * inv);
      q[i] = static_cast<std::int8_t>(std::min(127.0f, std::max(-127.0f, r)));
      s += q[i];
    }
    for (; i < kpad; ++i) q[i] = 0;
    *corr = 128 * s;
    return amax / 127.0f;
  }
#else
  (void)amax;
  (void)nan;
#endif
  const float sa = quantize_s8(q, x, k);
  std::int32_t s = 0;
  for (int i = 0; i < k; ++i) s += q[i];
  for (int i = k; i < kpad; ++i) q[i] = 0;
  *corr = 128 * s;
  return sa;
}

/// One row of A in int8: q[0, kpad) (zero past k), returns s_a and writes corr = 128 x sum q
/// (bitwise quantize_s8's values and scale).
inline float quantize_a_row(std::int8_t* q, std::int32_t* corr, const float* x, int k, int kpad) {
  float amax = 0.0f;
  bool nan = false;
#if defined(__AVX512BW__)
  __m512 vmax = _mm512_setzero_ps();
  __mmask16 nanm = 0;  // max drops a NaN: found separately
  int i = 0;
  for (; i + 16 <= k; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    nanm |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    vmax = _mm512_max_ps(vmax, _mm512_abs_ps(v));
  }
  amax = _mm512_reduce_max_ps(vmax);
  nan = nanm != 0;
  for (; i < k; ++i) {
    nan = nan || std::isnan(x[i]);
    amax = std::max(amax, std::abs(x[i]));
  }
#endif
  return quantize_a_row_known(q, corr, x, k, kpad, amax, nan);
}

/// One row of A in bfloat16: y[0, kpad) (zero past k).
inline void bf16_a_row(std::uint16_t* y, const float* x, int k, int kpad) {
  int i = 0;
#if DYNABERT_HAS_BF16_512
  for (; i + 16 <= k; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i), reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(_mm512_loadu_ps(x + i))));
#endif
  for (; i < k; ++i) y[i] = to_bf16(x[i]);
  for (; i < kpad; ++i) y[i] = 0;
}

/// Converts rows [m0, m1) of an A operand: x points to row m0 (row stride ldx); row m of `buf`
/// (lowp_a_ld(k, p) elements of the precision per row) and, for int8, scale[m] and corr[m] are
/// written. One thread; the rows of a call may be converted in any split (each row on its own).
inline void convert_a_rows(Precision p, void* buf, float* scale, std::int32_t* corr, const float* x, long ldx, long m0,
                           long m1, int k) {
  const long ld = lowp_a_ld(k, p);
  const int kpad = lowp_kpad(k, p);
  if (p == Precision::kInt8) {
    auto* q = static_cast<std::int8_t*>(buf);
    for (long m = m0; m < m1; ++m) scale[m] = quantize_a_row(q + m * ld, corr + m, x + (m - m0) * ldx, k, kpad);
    return;
  }
  auto* y = static_cast<std::uint16_t*>(buf);
  for (long m = m0; m < m1; ++m) bf16_a_row(y + m * ld, x + (m - m0) * ldx, k, kpad);
}

/// The converted operand that convert_a_rows() writes into `buf` (int8: with its scales and
/// corrections).
inline LowpA lowp_a(Precision p, const void* buf, const float* scale, const std::int32_t* corr, int k) {
  const long ld = lowp_a_ld(k, p);
  return p == Precision::kInt8 ? LowpA{buf, ld, scale, corr} : LowpA{buf, ld, nullptr, nullptr};
}

/// Converts rows [0, M) of x [M, k] (row stride ldx) into `buf` (M x lowp_a_ld(k, p) elements of
/// the precision; for int8 also scale[M] and corr[M]), threads splitting the rows.
inline LowpA convert_a(Precision p, void* buf, float* scale, std::int32_t* corr, const float* x, long ldx, int M, int k,
                       const Threads& th) {
  th.for_chunks(M, [&](int, long lo, long hi) { convert_a_rows(p, buf, scale, corr, x + lo * ldx, ldx, lo, hi, k); });
  return lowp_a(p, buf, scale, corr, k);
}

/// Consumes the rows of a low-precision product as they are finished, while they are still in
/// cache: the next layer's LayerNorm and conversion run on a chunk of rows right after the
/// product stored it, instead of on the whole output afterwards (at batch 8 an FFN's
/// intermediate output is 12 MB; written whole and read back, it went through memory).
///
/// `fn(ctx, m0, m1, rows, ld)` is called exactly once for every row of the product, in ranges
/// [m0, m1), with `rows` pointing to row m0's n values (row stride ld), each after every column of
/// those rows is stored; it may overwrite them. Calls for disjoint ranges may run concurrently on
/// the product's threads.
/// With `scratch`, rows whose thread computes all their columns (one thread, or threads splitting
/// the rows) are stored there instead of in C: each worker owns `scratch_stride` floats at
/// scratch + worker * scratch_stride, at least sink_scratch_floats(n). Otherwise (threads splitting
/// the columns) the product is stored in C and fn then reads C. The scratch holds threads.count()
/// x scratch_stride floats.
struct RowSink {
  void (*fn)(void* ctx, long m0, long m1, float* rows, long ld) = nullptr;
  void* ctx = nullptr;
  float* scratch = nullptr;
  std::size_t scratch_stride = 0;
};

#ifndef DYNABERT_LOWP_SPLIT_ROWS
/// Rows per thread from which threads split an INT8 product's rows rather than its columns (four
/// tiles: batch 1 with 128 tokens on two threads splits rows), and always from DYNABERT_GEMM_MSPLIT
/// rows. BF16 products split rows from DYNABERT_GEMM_MSPLIT rows, as FP32 ones
/// (docs/architecture.md, "Threads").
#define DYNABERT_LOWP_SPLIT_ROWS 56
#endif
#ifndef DYNABERT_SINK_CHUNK_BYTES  // bytes of output rows a sink's chunk keeps in L2
#define DYNABERT_SINK_CHUNK_BYTES (384 * 1024)
#endif
/// Rows of a chunk handed to a sink, for n output columns: a whole number of tiles of `mr` rows
/// whose FP32 output fits DYNABERT_SINK_CHUNK_BYTES, at least one tile and at most eight.
inline long sink_chunk_rows(int n, int mr) {
  const long tiles = static_cast<long>(DYNABERT_SINK_CHUNK_BYTES) / (static_cast<long>(mr) * n * 4);
  return mr * std::clamp<long>(tiles, 1, 8);
}
/// Row stride of a sink's scratch for n columns: n rounded up to whole lines, not a multiple of 4 KB.
inline long sink_ld(int n) {
  long ld = (n + 15) / 16 * 16;
  if ((ld * 4) % 4096 == 0) ld += 16;
  return ld;
}
/// Rows of the tallest low-precision tile (the AMX kernels' in builds that have them).
inline constexpr int kLowpMaxMR = DYNABERT_HAS_AMX ? 32 : 16;
/// Floats of one worker's sink scratch for products of up to n columns (any kernel's tile).
inline std::size_t sink_scratch_floats(int n) { return static_cast<std::size_t>(8) * kLowpMaxMR * sink_ld(n); }

// ---- micro-kernels -------------------------------------------------------------------------------
// Each computes one MR x kNR tile over all groups of K, dequantizes it into FP32 batches and hands
// it to store_tile (kernels/gemm.hpp), which applies the epilogue. a: the tile's first row of A;
// sa, corr: its rows' scales and corrections (int8); sw: the panel's weight scales (int8).

namespace lowp {

using TileFn = void (*)(int groups, const void* a, long lda, const std::uint8_t* b, const float* sa,
                        const std::int32_t* corr, const float* sw, float* c, long ldc, int n_valid, const Epilogue* ep,
                        long row0, long col0);

inline std::int32_t load4(const void* p) {
  std::int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

/// x as computed: GCC may not fuse the multiply that produced it with a later addition into an FMA
/// (which rounds once: the dequantizing store's fast paths would then differ from its generic
/// path, and from earlier builds, in the last bit).
[[gnu::always_inline]] inline simd::Batch rounded(simd::Batch x) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __asm__("" : "+v"(x.data));
#elif defined(__GNUC__) && (defined(__aarch64__) || defined(__arm__))
  __asm__("" : "+w"(x.data));
#elif defined(__GNUC__)  // other targets: through memory
  __asm__("" : "+m"(x.data));
#endif
  return x;
}

/// Dequantizes an int32 tile (row i, column j at acc[i * kNR + j]) into batches and stores it.
/// Not inlined into the tiles: their accumulator loops keep every register. kCorrected: the tile
/// started its accumulators at -corr[i], so acc holds sum q_w q_a already (the same integers).
template <int MR, bool kCorrected = false>
[[gnu::noinline]] inline void store_s8_tile(const std::int32_t* acc, const float* sa, const std::int32_t* corr, const float* sw, float* c,
                          long ldc, int n_valid, const Epilogue* ep, long row0, long col0) {
  using B = simd::Batch;
  using I = xsimd::batch<std::int32_t, simd::Arch>;
  constexpr int L = simd::kLanes, NV = GemmShape::kNV;
  B w[NV];
  for (int v = 0; v < NV; ++v) w[v] = B::load_unaligned(sw + v * L);
  if (n_valid == kNR) {  // row by row: dequantize, then the epilogue, in registers
    auto rows = [&](auto store) {
      for (int i = 0; i < MR; ++i) {
        const I ci(kCorrected ? 0 : corr[i]);
        const B si(sa[i]);
        B f[NV];
        for (int v = 0; v < NV; ++v) {
          const I q = I::load_aligned(acc + i * kNR + v * L);
          f[v] = rounded(xsimd::to_float(kCorrected ? q : q - ci) * (si * w[v]));
        }
        store(f, c + i * ldc, row0 + i);
      }
    };
    // The epilogues of inference (a bias, or a scale alpha; no residual or pre-activation; no
    // activation or the erf GELU) with the fields read once per tile: through `ep`, GCC reloaded
    // and tested every field for every vector (a store to C may alias them), which made the store
    // twice as many instructions. The same arithmetic as store_row / store_row_act.
    const Activation act = ep ? ep->act : Activation::kNone;
    if (!ep || (!ep->pre_activation && !ep->residual && (act == Activation::kNone || act == Activation::kGeluErf) &&
                (!ep->bias || ep->alpha == 1.0f))) {
      const float* bias = ep && ep->bias ? ep->bias + col0 : nullptr;
      const B alpha(ep ? ep->alpha : 1.0f);
      auto plain = [&](auto gelu, auto with_bias) {
        rows([&](B(&f)[NV], float* crow, long) {
          for (int v = 0; v < NV; ++v) {
            B r = f[v];
            if constexpr (with_bias) r += B::load_unaligned(bias + v * L);
            else r *= alpha;  // exact for alpha = 1
            if constexpr (gelu) r = detail::activate(Activation::kGeluErf, r);
            r.store_unaligned(crow + v * L);
          }
        });
      };
      using T = std::true_type;
      using F = std::false_type;
      if (act == Activation::kGeluErf) return bias ? plain(T{}, T{}) : plain(T{}, F{});
      return bias ? plain(F{}, T{}) : plain(F{}, F{});
    }
    switch (act) {  // the activation in registers too
      case Activation::kGeluErf:
        return rows([&](B(&f)[NV], float* crow, long row) { detail::store_row_act<Activation::kGeluErf>(f, crow, *ep, row, col0); });
      case Activation::kGeluTanh:
        return rows([&](B(&f)[NV], float* crow, long row) { detail::store_row_act<Activation::kGeluTanh>(f, crow, *ep, row, col0); });
      case Activation::kTanh:
        return rows([&](B(&f)[NV], float* crow, long row) { detail::store_row_act<Activation::kTanh>(f, crow, *ep, row, col0); });
      default:
        return rows([&](B(&f)[NV], float* crow, long row) { detail::store_row(f, crow, false, ep, row, col0); });
    }
  }
  B f[MR][NV];
  for (int i = 0; i < MR; ++i) {
    const I ci(kCorrected ? 0 : corr[i]);
    const B si(sa[i]);
    for (int v = 0; v < NV; ++v) {
      const I q = I::load_aligned(acc + i * kNR + v * L);
      f[i][v] = xsimd::to_float(kCorrected ? q : q - ci) * (si * w[v]);
    }
  }
  detail::store_tile<MR>(f, c, ldc, n_valid, false, ep, row0, col0);
}

/// INT8, plain loops over the packed layout (any CPU).
struct S8Scalar {
  static constexpr int kMR = 4, kGroup = 4;
  static constexpr Precision kPrecision = Precision::kInt8;
  template <int MR>
  static void tile(int groups, const void* av, long lda, const std::uint8_t* b, const float* sa, const std::int32_t* corr,
                   const float* sw, float* c, long ldc, int n_valid, const Epilogue* ep, long row0, long col0) {
    const auto* a = static_cast<const std::int8_t*>(av);
    alignas(64) std::int32_t acc[MR * kNR] = {};
    for (int g = 0; g < groups; ++g)
      for (int i = 0; i < MR; ++i) {
        const std::int8_t* ar = a + i * lda + 4 * g;
        for (int j = 0; j < kNR; ++j) {
          const std::uint8_t* bj = b + static_cast<long>(g) * kNR * 4 + j * 4;
          acc[i * kNR + j] += bj[0] * ar[0] + bj[1] * ar[1] + bj[2] * ar[2] + bj[3] * ar[3];
        }
      }
    store_s8_tile<MR>(acc, sa, corr, sw, c, ldc, n_valid, ep, row0, col0);
  }
};

#if defined(__AVX2__)
/// INT8 without VNNI (AVX2, and AVX-512 CPUs before VNNI): weights zero-extended and activations
/// sign-extended to 16 bits, `vpmaddwd` into int32 pairs (exact: 255 x 127 x 2 fits), pairs added
/// at the end. About the FP32 FMA rate in multiply-adds.
struct S8Madd16 {
  static constexpr int kMR = 2, kGroup = 4;
  static constexpr Precision kPrecision = Precision::kInt8;
  template <int MR>
  static void tile(int groups, const void* av, long lda, const std::uint8_t* b, const float* sa, const std::int32_t* corr,
                   const float* sw, float* c, long ldc, int n_valid, const Epilogue* ep, long row0, long col0) {
    const auto* a = static_cast<const std::int8_t*>(av);
    constexpr int C8 = kNR / 8;  // 8-column chunks: 32 bytes of a group
    __m256i acc[MR][C8][2];
    for (int i = 0; i < MR; ++i)
      for (int ch = 0; ch < C8; ++ch) acc[i][ch][0] = acc[i][ch][1] = _mm256_setzero_si256();
    for (int g = 0; g < groups; ++g) {
      const std::uint8_t* bg = b + static_cast<long>(g) * kNR * 4;
      __m256i a16[MR];
      for (int i = 0; i < MR; ++i) {
        const __m128i x = _mm_cvtepi8_epi16(_mm_cvtsi32_si128(load4(a + i * lda + 4 * g)));
        a16[i] = _mm256_set1_epi64x(_mm_cvtsi128_si64(x));  // (a0, a1, a2, a3) in every 64 bits
      }
      for (int ch = 0; ch < C8; ++ch) {
        const __m256i lo = _mm256_cvtepu8_epi16(_mm_load_si128(reinterpret_cast<const __m128i*>(bg + ch * 32)));
        const __m256i hi = _mm256_cvtepu8_epi16(_mm_load_si128(reinterpret_cast<const __m128i*>(bg + ch * 32 + 16)));
        for (int i = 0; i < MR; ++i) {
          acc[i][ch][0] = _mm256_add_epi32(acc[i][ch][0], _mm256_madd_epi16(lo, a16[i]));
          acc[i][ch][1] = _mm256_add_epi32(acc[i][ch][1], _mm256_madd_epi16(hi, a16[i]));
        }
      }
    }
    // lanes hold (column, pair) half sums: [c0 p01, c0 p23, c1 p01, ...]; add the pairs
    alignas(64) std::int32_t out[MR * kNR];
    for (int i = 0; i < MR; ++i)
      for (int ch = 0; ch < C8; ++ch) {
        const __m256i h = _mm256_hadd_epi32(acc[i][ch][0], acc[i][ch][1]);  // c0 c1 c4 c5 c2 c3 c6 c7
        _mm256_store_si256(reinterpret_cast<__m256i*>(out + i * kNR + ch * 8), _mm256_permute4x64_epi64(h, 0xD8));
      }
    store_s8_tile<MR>(out, sa, corr, sw, c, ldc, n_valid, ep, row0, col0);
  }
};
#endif

#if DYNABERT_HAS_VNNI512
/// INT8 with AVX512_VNNI: 14 rows x 32 columns, 28 int32 accumulators, `vpdpbusd` with the u8
/// weights in registers and the four s8 activations of a row broadcast from memory.
struct S8Vnni512 {
  static constexpr int kMR = GemmShape::kMR, kGroup = 4;
  static constexpr Precision kPrecision = Precision::kInt8;
  static_assert(GemmShape::kNV == 2 && simd::kLanes == 16, "the VNNI tile is two zmm wide");
  template <int MR>
  static void tile(int groups, const void* av, long lda, const std::uint8_t* __restrict b, const float* sa,
                   const std::int32_t* corr, const float* sw, float* c, long ldc, int n_valid, const Epilogue* ep, long row0,
                   long col0) {
    const auto* __restrict a = static_cast<const std::int8_t*>(av);
    // the accumulators start at -128 x (row sum of q_a): they end at sum q_w q_a, and the store
    // subtracts nothing (vpdpbusd wraps, so the integers are those of starting at zero)
    __m512i acc[MR][2];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_set1_epi32(-corr[i]);
    // row i at r[i / 3] + (i % 3) x lda: five moving pointers and lda in the addressing modes,
    // instead of a register per row (with 14 rows GCC spilled row offsets inside the loop)
    constexpr int NP = (MR + 2) / 3;
    const std::int8_t* r[NP];
#pragma GCC unroll 8
    for (int j = 0; j < NP; ++j) r[j] = a + 3 * j * lda;
    for (int g = 0; g < groups; ++g) {
      const __m512i b0 = _mm512_load_si512(b + g * 128), b1 = _mm512_load_si512(b + g * 128 + 64);
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        const __m512i ai = _mm512_set1_epi32(load4(r[i / 3] + (i % 3) * lda));
        acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], b0, ai);
        acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], b1, ai);
      }
#pragma GCC unroll 8
      for (int j = 0; j < NP; ++j) r[j] += 4;
    }
    // through memory to the shared dequantizing store: with the epilogue inlined here, GCC 12
    // spilled the accumulators inside the loop above (about 70 % of the instruction's peak
    // instead of 90 %)
    alignas(64) std::int32_t out[MR * kNR];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      _mm512_store_si512(out + i * kNR, acc[i][0]);
      _mm512_store_si512(out + i * kNR + 16, acc[i][1]);
    }
    store_s8_tile<MR, true>(out, sa, corr, sw, c, ldc, n_valid, ep, row0, col0);
  }
};
#endif

/// The two bfloat16 values of each 32-bit lane of `u` widened to FP32: the even (low) element and
/// the odd (high) one.
template <class B, class U>
inline void widen_bf16_pairs(const U& u, B& even, B& odd) {
  even = xsimd::bitwise_cast<B>(u << 16);
  odd = xsimd::bitwise_cast<B>(u & U(0xFFFF0000u));
}

/// BF16 with FP32 FMAs (any CPU; the default where `vdpbf16ps` is slow): the weight pairs widened
/// to FP32 in registers (shift / mask), the tile's rows of A widened kKB pairs at a time into a
/// small buffer from which each FMA broadcasts its operand, so that the inner loop is the FP32
/// kernel's (no conversion per row). Two FMAs per pair, odd element first (the order of
/// `vdpbf16ps`): each product of two bfloat16 values is exact in FP32 (barring underflow). The
/// results match `vdpbf16ps`'s except for denormal inputs or results, which that flushes to zero.
struct Bf16Emulated {
  static constexpr int kMR = simd::kLanes >= 16 ? 12 : 4, kGroup = 2;
  static constexpr int kKB = 128;  // pairs of A widened at a time: 2 x MR x 128 floats (12 KB at MR 12)
  static constexpr Precision kPrecision = Precision::kBf16;
  template <int MR>
  static void tile(int groups, const void* av, long lda, const std::uint8_t* b, const float*, const std::int32_t*,
                   const float*, float* c, long ldc, int n_valid, const Epilogue* ep, long row0, long col0) {
    using B = simd::Batch;
    using U = xsimd::batch<std::uint32_t, simd::Arch>;
    constexpr int L = simd::kLanes, NV = GemmShape::kNV;
    const auto* a = static_cast<const std::uint16_t*>(av);
    const auto* bw = reinterpret_cast<const std::uint32_t*>(b);
    alignas(64) float ae[MR][kKB], ao[MR][kKB];  // row i's even and odd elements of the block's pairs
    B acc[MR][NV];
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < NV; ++v) acc[i][v] = B(0.0f);
    for (int g0 = 0; g0 < groups; g0 += kKB) {
      const int gn = std::min(kKB, groups - g0);
      for (int i = 0; i < MR; ++i) {
        const std::uint16_t* ar = a + i * lda + 2 * g0;
        int g = 0;
        for (; g + L <= gn; g += L) {
          B e, o;
          widen_bf16_pairs(xsimd::bitwise_cast<U>(xsimd::batch<std::uint16_t, simd::Arch>::load_unaligned(ar + 2 * g)), e, o);
          e.store_aligned(&ae[i][g]);
          o.store_aligned(&ao[i][g]);
        }
        for (; g < gn; ++g) {
          const auto u = static_cast<std::uint32_t>(load4(ar + 2 * g));
          ae[i][g] = from_bf16(static_cast<std::uint16_t>(u & 0xFFFFu));
          ao[i][g] = from_bf16(static_cast<std::uint16_t>(u >> 16));
        }
      }
      for (int g = 0; g < gn; ++g) {
        B even[NV], odd[NV];
        for (int v = 0; v < NV; ++v) widen_bf16_pairs(U::load_aligned(bw + static_cast<long>(g0 + g) * kNR + v * L), even[v], odd[v]);
        for (int i = 0; i < MR; ++i) {
          const B e(ae[i][g]), o(ao[i][g]);
          for (int v = 0; v < NV; ++v) acc[i][v] = xsimd::fma(e, even[v], xsimd::fma(o, odd[v], acc[i][v]));
        }
      }
    }
    detail::store_tile<MR>(acc, c, ldc, n_valid, false, ep, row0, col0);
  }
};

#if DYNABERT_HAS_BF16_512
/// BF16 with AVX512_BF16: 14 rows x 32 columns, 28 FP32 accumulator chains, `vdpbf16ps` with the
/// weight pairs in registers and a row's activation pair broadcast.
struct Bf16Native512 {
  static constexpr int kMR = GemmShape::kMR, kGroup = 2;
  static constexpr Precision kPrecision = Precision::kBf16;
  static_assert(GemmShape::kNV == 2 && simd::kLanes == 16, "the BF16 tile is two zmm wide");
  template <int MR>
  static void tile(int groups, const void* av, long lda, const std::uint8_t* __restrict b, const float*, const std::int32_t*,
                   const float*, float* c, long ldc, int n_valid, const Epilogue* ep, long row0, long col0) {
    const auto* __restrict a = static_cast<const std::uint16_t*>(av);
    __m512 acc[MR][2];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (int g = 0; g < groups; ++g) {
      const __m512bh b0 = reinterpret_cast<__m512bh>(_mm512_load_si512(b + g * 128));
      const __m512bh b1 = reinterpret_cast<__m512bh>(_mm512_load_si512(b + g * 128 + 64));
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        const __m512bh ai = reinterpret_cast<__m512bh>(_mm512_set1_epi32(load4(a + i * lda + 2 * g)));
        acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
        acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
      }
    }
    simd::Batch f[MR][2];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      f[i][0] = acc[i][0];
      f[i][1] = acc[i][1];
    }
    detail::store_tile<MR>(f, c, ldc, n_valid, false, ep, row0, col0);
  }
};
#endif

#if DYNABERT_HAS_AMX
/// Whether Linux lets this process use AMX tile data: asked once per process
/// (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA); the grant holds for every thread).
inline bool amx_permitted() {
  static const bool ok = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
  return ok;
}

/// The tile configuration this thread loaded (0: none): rows of the C and A tiles of the first
/// (tiles 0, 1, 4) and second (2, 3, 5) 16-row half of a tile of the kernels below, as r0 * 32 + r1.
inline int& amx_config_key() {
  thread_local int key = 0;
  return key;
}
/// Loads the tile configuration for a tile of r0 + r1 rows (r0 <= 16, r1 <= 16) unless it is loaded:
/// every tile 64 bytes wide; C tiles 0-3 and A tiles 4-5 of r0 or r1 rows, B tiles 6-7 of 16 rows
/// (16 groups of K).
inline void amx_use_rows(int r0, int r1) {
  const int key = r0 * 32 + r1;
  int& cur = amx_config_key();
  if (cur == key) return;
  struct alignas(64) Config {
    std::uint8_t palette = 1, start_row = 0, reserved[14] = {};
    std::uint16_t colsb[16] = {};
    std::uint8_t rows[16] = {};
  } cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = static_cast<std::uint8_t>(t == 0 || t == 1 || t == 4 ? r0 : t < 6 ? std::max(r1, 1) : 16);
  }
  _tile_loadconfig(&cfg);
  cur = key;
}
/// A worker's stretch of AMX tiles (run_panels): configured lazily by the tiles, released at the
/// end, so that the thread carries no tile state (and a context switch saves none) afterwards.
struct AmxScope {
  AmxScope() = default;
  AmxScope(const AmxScope&) = delete;
  AmxScope& operator=(const AmxScope&) = delete;
  ~AmxScope() {
    if (amx_config_key() != 0) _tile_release();
    amx_config_key() = 0;
  }
};

/// INT8 with AMX: 32 (or 16) rows x 32 columns as four (two) 16 x 16 int32 tiles, `tdpbsud` (s8
/// activations x u8 weights) over 64 k per step, the A tile read from A's rows and the B tiles
/// straight from the packed panel (16 groups of a half panel: 64 bytes, 128 apart). The integer
/// sums are exact, so the results are bitwise those of the VNNI tile, which also takes the rows
/// past the last whole 16 (no tile reconfiguration for them).
struct S8Amx {
  static constexpr int kMR = 32, kGroup = 4;
  static constexpr Precision kPrecision = Precision::kInt8;
  using Scope = AmxScope;
  template <int MR>
  static void tile(int groups, const void* av, long lda, const std::uint8_t* b, const float* sa, const std::int32_t* corr,
                   const float* sw, float* c, long ldc, int n_valid, const Epilogue* ep, long row0, long col0) {
    constexpr int full = MR >= 32 ? 32 : MR >= 16 ? 16 : 0, rem = MR - full;
    const auto* a = static_cast<const std::int8_t*>(av);
    if constexpr (full > 0) {
      amx_use_rows(16, 16);
      const int steps = (groups + 15) / 16;
      _tile_zero(0);
      _tile_zero(1);
      if constexpr (full == 32) {
        _tile_zero(2);
        _tile_zero(3);
      }
      for (int s = 0; s < steps; ++s) {
        const std::uint8_t* bs = b + static_cast<long>(s) * 16 * kNR * 4;
        _tile_loadd(6, bs, kNR * 4);
        _tile_loadd(7, bs + 64, kNR * 4);
        _tile_loadd(4, a + 64L * s, lda);
        _tile_dpbsud(0, 4, 6);
        _tile_dpbsud(1, 4, 7);
        if constexpr (full == 32) {
          _tile_loadd(5, a + 16 * lda + 64L * s, lda);
          _tile_dpbsud(2, 5, 6);
          _tile_dpbsud(3, 5, 7);
        }
      }
      alignas(64) std::int32_t out[full * kNR];
      _tile_stored(0, out, kNR * 4);
      _tile_stored(1, out + 16, kNR * 4);
      if constexpr (full == 32) {
        _tile_stored(2, out + 16 * kNR, kNR * 4);
        _tile_stored(3, out + 16 * kNR + 16, kNR * 4);
      }
      store_s8_tile<full>(out, sa, corr, sw, c, ldc, n_valid, ep, row0, col0);
    }
    if constexpr (rem > 0) {  // at most 15 rows: the VNNI tile, in one or two pieces
      constexpr int r1 = rem > S8Vnni512::kMR ? S8Vnni512::kMR : rem;
      S8Vnni512::tile<r1>(groups, a + full * lda, lda, b, sa + full, corr + full, sw, c + full * ldc, ldc, n_valid, ep,
                          row0 + full, col0);
      if constexpr (rem > r1)
        S8Vnni512::tile<rem - r1>(groups, a + (full + r1) * lda, lda, b, sa + full + r1, corr + full + r1, sw,
                                  c + (full + r1) * ldc, ldc, n_valid, ep, row0 + full + r1, col0);
    }
  }
};

/// BF16 with AMX: up to 32 rows x 32 columns as 16 x 16 FP32 tiles, `tdpbf16ps` over 32 k per
/// step. Every row is computed by the tiles (a tile of fewer rows loads a configuration of fewer
/// rows), so a value's bits do not depend on how the rows are split between tiles or threads.
struct Bf16Amx {
  static constexpr int kMR = 32, kGroup = 2;
  static constexpr Precision kPrecision = Precision::kBf16;
  using Scope = AmxScope;
  template <int MR>
  static void tile(int groups, const void* av, long lda, const std::uint8_t* b, const float*, const std::int32_t*,
                   const float*, float* c, long ldc, int n_valid, const Epilogue* ep, long row0, long col0) {
    constexpr int r0 = MR >= 16 ? 16 : MR, r1 = MR - r0;
    const auto* a = static_cast<const std::uint8_t*>(av);
    const long ldb = lda * 2;  // bytes
    amx_use_rows(r0, r1);
    const int steps = (groups + 15) / 16;
    _tile_zero(0);
    _tile_zero(1);
    if constexpr (r1 > 0) {
      _tile_zero(2);
      _tile_zero(3);
    }
    for (int s = 0; s < steps; ++s) {
      const std::uint8_t* bs = b + static_cast<long>(s) * 16 * kNR * 4;
      _tile_loadd(6, bs, kNR * 4);
      _tile_loadd(7, bs + 64, kNR * 4);
      _tile_loadd(4, a + 64L * s, ldb);
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      if constexpr (r1 > 0) {
        _tile_loadd(5, a + 16 * ldb + 64L * s, ldb);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
    }
    alignas(64) float out[MR * kNR];
    _tile_stored(0, out, kNR * 4);
    _tile_stored(1, out + 16, kNR * 4);
    if constexpr (r1 > 0) {
      _tile_stored(2, out + 16 * kNR, kNR * 4);
      _tile_stored(3, out + 16 * kNR + 16, kNR * 4);
    }
    simd::Batch f[MR][2];
    for (int i = 0; i < MR; ++i) {
      f[i][0] = simd::Batch::load_aligned(out + i * kNR);
      f[i][1] = simd::Batch::load_aligned(out + i * kNR + 16);
    }
    detail::store_tile<MR>(f, c, ldc, n_valid, false, ep, row0, col0);
  }
};
#endif

/// What a kernel needs around a worker's stretch of tiles (AMX: the tile state); nothing for most.
template <class K, class = void>
struct KernelScope {
  struct type {};
};
template <class K>
struct KernelScope<K, std::void_t<typename K::Scope>> {
  using type = typename K::Scope;
};

template <class K, int... I>
constexpr std::array<TileFn, sizeof...(I)> make_tile_table(std::integer_sequence<int, I...>) {
  return {&K::template tile<I + 1>...};
}
/// K::tile<mr> for mr = 1..K::kMR.
template <class K>
inline TileFn tile_for(int mr) {
  static constexpr auto table = make_tile_table<K>(std::make_integer_sequence<int, K::kMR>{});
  return table[mr - 1];
}

/// Rows [m0, m1) x panels [p0, p1) of C, rows a chunk at a time (the chunk's A stays in L2 while
/// the panels stream past it). With a sink (and every panel), each chunk goes to the sink once its
/// panels are done, stored in the worker's scratch when the sink has one.
template <class K>
inline void run_panels(float* c, long ldc, const LowpA& a, long m0, long m1, const LowpView& B, int n, int k,
                       const Epilogue* ep, int p0, int p1, const RowSink* sink = nullptr, int worker = 0) {
  static_assert(K::kMR <= kLowpMaxMR, "a sink's scratch holds eight tiles of at most kLowpMaxMR rows");
  const long chunk = sink ? sink_chunk_rows(n, K::kMR) : K::kMR * 8;
  const int groups = (k + K::kGroup - 1) / K::kGroup;
  const long esize = lowp_elem_bytes(K::kPrecision);
  const auto* A = static_cast<const std::uint8_t*>(a.data);
  float* scratch = sink && sink->scratch ? sink->scratch + static_cast<std::size_t>(worker) * sink->scratch_stride : nullptr;
  const long lds = scratch ? sink_ld(n) : ldc;
  [[maybe_unused]] const typename KernelScope<K>::type scope;
  for (long mc0 = m0; mc0 < m1; mc0 += chunk) {
    const long mc1 = std::min(m1, mc0 + chunk);
    float* cc = scratch ? scratch : c + mc0 * ldc;  // row mc0 of the output
    for (int p = p0; p < p1; ++p) {
      const std::uint8_t* bp = B.panel(p);
      const int col0 = p * kNR, nv = std::min(kNR, n - col0);
      const float* sw = B.scale ? B.scale + col0 : nullptr;
      for (long i0 = mc0; i0 < mc1; i0 += K::kMR) {
        const int mr = static_cast<int>(std::min<long>(K::kMR, mc1 - i0));
        tile_for<K>(mr)(groups, A + i0 * a.ld * esize, a.ld, bp, a.scale ? a.scale + i0 : nullptr,
                        a.corr ? a.corr + i0 : nullptr, sw, cc + (i0 - mc0) * lds + col0, lds, nv, ep, i0, col0);
      }
    }
    if (sink) sink->fn(sink->ctx, mc0, mc1, cc, lds);
  }
}

}  // namespace lowp

/// The kernels a build has: the default is the fastest of them on this CPU (default_lowp_kernel);
/// tests run every one this CPU can execute.
enum class LowpKernel { kAuto, kScalar, kMadd16, kVnni512, kEmulated, kNative512, kAmxInt8, kAmxBf16 };

inline const char* to_string(LowpKernel k) {
  switch (k) {
    case LowpKernel::kScalar: return "int8 scalar";
    case LowpKernel::kMadd16: return "int8 AVX2 vpmaddwd";
    case LowpKernel::kVnni512: return "int8 AVX512_VNNI vpdpbusd";
    case LowpKernel::kEmulated: return "bf16 FP32 FMAs";
    case LowpKernel::kNative512: return "bf16 AVX512_BF16 vdpbf16ps";
    case LowpKernel::kAmxInt8: return "int8 AMX tdpbsud";
    case LowpKernel::kAmxBf16: return "bf16 AMX tdpbf16ps";
    default: return "auto";
  }
}
namespace lowp {
/// A switch from the environment: on when `name` is set to anything but "" or "0", off when set
/// to "0", `fallback` when unset or empty.
inline bool env_switch(const char* name, bool fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strcmp(v, "0") != 0 : fallback;
}
}  // namespace lowp

/// Whether the AMX kernels run here: built with AMX, the OS grants the tile state, and
/// DYNABERT_NO_AMX is not set (to a value other than 0) in the environment. They are then the default,
/// and low-precision operands are packed with K in whole 64-byte steps (lowp_kpad), which they need.
inline bool amx_enabled() {
#if DYNABERT_HAS_AMX
  static const bool on = !lowp::env_switch("DYNABERT_NO_AMX", false) && lowp::amx_permitted();
  return on;
#else
  return false;
#endif
}

/// Whether the BF16 default (without AMX) is `vdpbf16ps` rather than FP32 FMAs on widened pairs:
/// the instruction is fast on AMD (Zen 4 and 5: twice the FP32 FMA rate in operations) and slow on
/// Intel's CPUs (half that rate, measured on an Emerald Rapids, where the FP32-FMA kernel is 1.65x
/// faster; Cooper Lake and Sapphire Rapids are assumed alike, not measured), so the CPU's vendor
/// decides. DYNABERT_BF16_NATIVE=1 or 0 in the environment overrides it (builds with AVX512_BF16).
inline bool bf16_native_default() {
#if DYNABERT_HAS_BF16_512
  static const bool native = lowp::env_switch("DYNABERT_BF16_NATIVE", [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return true;
    return !(b == 0x756e6547u && d == 0x49656e69u && c == 0x6c65746eu);  // not "GenuineIntel"
  }());
  return native;
#else
  return false;
#endif
}

/// The default kernel of a precision in this build (and, for AMX and BF16, on this CPU and OS).
inline LowpKernel default_lowp_kernel(Precision p) {
  if (amx_enabled()) return p == Precision::kInt8 ? LowpKernel::kAmxInt8 : LowpKernel::kAmxBf16;
  if (p == Precision::kInt8) {
#if DYNABERT_HAS_VNNI512
    return LowpKernel::kVnni512;
#elif defined(__AVX2__)
    return LowpKernel::kMadd16;
#else
    return LowpKernel::kScalar;
#endif
  }
  return bf16_native_default() ? LowpKernel::kNative512 : LowpKernel::kEmulated;
}
/// Whether this build has kernel `k` (for precision p) and it runs here.
inline bool has_lowp_kernel(LowpKernel k, Precision p) {
#if DYNABERT_HAS_AMX
  if (k == (p == Precision::kInt8 ? LowpKernel::kAmxInt8 : LowpKernel::kAmxBf16)) return amx_enabled();
#endif
  if (p == Precision::kInt8) {
    if (k == LowpKernel::kScalar) return true;
#if defined(__AVX2__)
    if (k == LowpKernel::kMadd16) return true;
#endif
#if DYNABERT_HAS_VNNI512
    if (k == LowpKernel::kVnni512) return true;
#endif
    return k == LowpKernel::kAuto;
  }
  if (k == LowpKernel::kEmulated || k == LowpKernel::kAuto) return true;
#if DYNABERT_HAS_BF16_512
  if (k == LowpKernel::kNative512) return true;
#endif
  return false;
}

namespace lowp {
template <class K>
inline void gemm_with(float* c, long ldc, const LowpA& a, int M, const LowpView& B, int n, int k, const Epilogue& ep,
                      const Threads& threads, const RowSink* sink) {
  const Epilogue* e = ep.trivial() ? nullptr : &ep;
  const int panels = (n + kNR - 1) / kNR;
  const long split_rows = K::kPrecision == Precision::kInt8
                              ? std::min<long>(static_cast<long>(threads.count()) * DYNABERT_LOWP_SPLIT_ROWS, DYNABERT_GEMM_MSPLIT)
                              : DYNABERT_GEMM_MSPLIT;
  if (threads.count() > 1 && M >= split_rows) {
    // enough rows: each thread takes an equal share of them over every panel, and its sink
    // finishes them where they were computed (no output crosses between cores)
    threads.for_chunks(M, [&](int worker, long m0, long m1) {
      run_panels<K>(c, ldc, a, m0, m1, B, n, k, e, 0, panels, sink, worker);
    });
    return;
  }
  if (threads.count() == 1) return run_panels<K>(c, ldc, a, 0, M, B, n, k, e, 0, panels, sink, 0);
  threads.for_chunks(panels, [&](int, long p0, long p1) {
    run_panels<K>(c, ldc, a, 0, M, B, n, k, e, static_cast<int>(p0), static_cast<int>(p1));
  });
  if (sink)  // the columns were split: the rows are finished only now
    threads.for_chunks(M, [&](int, long lo, long hi) { sink->fn(sink->ctx, lo, hi, c + lo * ldc, ldc); });
}
}  // namespace lowp

/// C[M, n] = epilogue(A[M, k] W[:n, :k]^T) with W packed in `B` (int8 or bf16) and A converted by
/// convert_a() for B's precision (with the same k). `kernel` picks a specific kernel (tests,
/// benchmarks); kAuto the default (default_lowp_kernel). Epilogue.accumulate is not supported (inference only).
/// With a `sink`, the finished rows are handed to it (RowSink): C must still be a valid [M, ldc]
/// buffer (threads splitting the columns, or a sink without scratch, store the product there),
/// but with scratch it may be left unwritten.
inline void gemm_lowp(float* c, long ldc, const LowpA& a, int M, const LowpView& B, int n, int k, const Epilogue& ep,
                      const Threads& threads = Threads(), LowpKernel kernel = LowpKernel::kAuto,
                      const RowSink* sink = nullptr) {
  DYNABERT_REQUIRE(B.data != nullptr, InputError, "gemm_lowp: no packed weight");
  DYNABERT_REQUIRE(n >= 1 && n <= B.n && k >= 1 && k <= B.k, InputError, "gemm_lowp: active ", n, "x", k,
                   " exceeds packed ", B.n, "x", B.k);
  DYNABERT_REQUIRE(!ep.accumulate, InputError, "gemm_lowp: accumulating into C is not supported");
  DYNABERT_REQUIRE(has_lowp_kernel(kernel, B.precision), InputError, "gemm_lowp: kernel '", to_string(kernel),
                   "' is not in this build for ", to_string(B.precision));
  DYNABERT_REQUIRE(!sink || (sink->fn && (!sink->scratch || sink->scratch_stride >= sink_scratch_floats(n))), InputError,
                   "gemm_lowp: a row sink needs a function and, with a scratch, ", sink_scratch_floats(n),
                   " floats per worker");
  if (M <= 0) return;
  if (kernel == LowpKernel::kAuto) kernel = default_lowp_kernel(B.precision);
  DYNABERT_REQUIRE((kernel != LowpKernel::kAmxInt8 && kernel != LowpKernel::kAmxBf16) ||
                       B.kpad % (64 / lowp_elem_bytes(B.precision)) == 0,
                   InputError, "gemm_lowp: the AMX kernels need K packed in whole 64-byte steps (lowp_kpad)");
  switch (kernel) {
#if DYNABERT_HAS_AMX
    case LowpKernel::kAmxInt8: return lowp::gemm_with<lowp::S8Amx>(c, ldc, a, M, B, n, k, ep, threads, sink);
    case LowpKernel::kAmxBf16: return lowp::gemm_with<lowp::Bf16Amx>(c, ldc, a, M, B, n, k, ep, threads, sink);
#endif
#if DYNABERT_HAS_VNNI512
    case LowpKernel::kVnni512: return lowp::gemm_with<lowp::S8Vnni512>(c, ldc, a, M, B, n, k, ep, threads, sink);
#endif
#if defined(__AVX2__)
    case LowpKernel::kMadd16: return lowp::gemm_with<lowp::S8Madd16>(c, ldc, a, M, B, n, k, ep, threads, sink);
#endif
#if DYNABERT_HAS_BF16_512
    case LowpKernel::kNative512: return lowp::gemm_with<lowp::Bf16Native512>(c, ldc, a, M, B, n, k, ep, threads, sink);
#endif
    case LowpKernel::kEmulated: return lowp::gemm_with<lowp::Bf16Emulated>(c, ldc, a, M, B, n, k, ep, threads, sink);
    default: return lowp::gemm_with<lowp::S8Scalar>(c, ldc, a, M, B, n, k, ep, threads, sink);
  }
}

// ---- plain twins ---------------------------------------------------------------------------------
namespace reference {

/// INT8 linear on unpacked operands: y = act(alpha * float(sum_k qa qw) * (sa * sw) + bias) +
/// residual (the fast kernels compute the same integer sums exactly).
inline void linear_s8(float* y, long ldy, const std::int8_t* qa, long lda, const float* sa, const std::int8_t* qw, long ldw,
                      const float* sw, int M, int n, int k, const Epilogue& ep) {
  for (int m = 0; m < M; ++m)
    for (int j = 0; j < n; ++j) {
      std::int64_t s = 0;
      for (int i = 0; i < k; ++i) s += static_cast<std::int64_t>(qa[m * lda + i]) * qw[j * ldw + i];
      float r = static_cast<float>(s) * (sa[m] * sw[j]) * ep.alpha;
      if (ep.bias) r += ep.bias[j];
      if (ep.pre_activation) ep.pre_activation[m * ep.ld_pre_activation + j] = r;
      r = activate(ep.act, r);
      if (ep.residual) r += ep.residual[m * ep.ld_residual + j];
      y[m * ldy + j] = r;
    }
}

/// BF16 linear on unpacked bf16 operands, accumulated in double.
inline void linear_bf16(float* y, long ldy, const std::uint16_t* a, long lda, const std::uint16_t* w, long ldw, int M, int n,
                        int k, const Epilogue& ep) {
  for (int m = 0; m < M; ++m)
    for (int j = 0; j < n; ++j) {
      double s = 0;
      for (int i = 0; i < k; ++i) s += static_cast<double>(from_bf16(a[m * lda + i])) * from_bf16(w[j * ldw + i]);
      float r = static_cast<float>(s) * ep.alpha;
      if (ep.bias) r += ep.bias[j];
      if (ep.pre_activation) ep.pre_activation[m * ep.ld_pre_activation + j] = r;
      r = activate(ep.act, r);
      if (ep.residual) r += ep.residual[m * ep.ld_residual + j];
      y[m * ldy + j] = r;
    }
}

}  // namespace reference

}  // namespace dynabert::kernels
