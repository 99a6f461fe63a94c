// Counter-based dropout: element i of a call keyed by `key` is kept with probability 1 - p, from a
// hash of (key, i) alone. One generator draw per call gives the key, so a call's mask does not
// depend on how its elements are visited (threads, packed or padded rows), and the backward
// recomputes the mask instead of storing it. The hash is two rounds of a 32-bit mixer ("lowbias32",
// Wellons): 24 of its bits are compared with p * 2^24. Indices are 32-bit: callers keep the
// elements of one key below 2^32 (and check it).
//
// `dropout_multiply` (SIMD) and `reference::dropout_multiply` (scalar) give identical masks.
#pragma once
#include <cstdint>
#include <cstring>

#include "dynabert/core/simd.hpp"

namespace dynabert::kernels {

/// The per-call part of a dropout: key, threshold and the scale 1 / (1 - p) of kept values.
struct DropoutKey {
  std::uint32_t lo = 0, hi = 0;
  std::uint32_t threshold = 0;  ///< keep when hash >> 8 >= threshold; 0: keep everything
  float scale = 1.0f;
  bool active() const { return threshold != 0; }
  /// A key for p in [0, 1) from a 64-bit draw.
  static DropoutKey make(double p, std::uint64_t draw) {
    DropoutKey k;
    if (p <= 0.0) return k;
    k.lo = static_cast<std::uint32_t>(draw);
    k.hi = static_cast<std::uint32_t>(draw >> 32);
    k.threshold = static_cast<std::uint32_t>(p * 16777216.0);
    if (k.threshold == 0) k.threshold = 1;
    k.scale = static_cast<float>(1.0 / (1.0 - p));
    return k;
  }
  /// A derived key for sub-stream `s` (one per attention (sequence, head) task).
  DropoutKey derive(std::uint32_t s) const {
    DropoutKey k = *this;
    k.lo = mix(lo ^ mix(s + 0x9E3779B9u));
    return k;
  }
  static std::uint32_t mix(std::uint32_t h) {
    h ^= h >> 16;
    h *= 0x7feb352dU;
    h ^= h >> 15;
    h *= 0x846ca68bU;
    h ^= h >> 16;
    return h;
  }
  /// Whether element i is kept.
  bool keep(std::uint32_t i) const { return (mix(mix(i ^ lo) + hi) >> 8) >= threshold; }
};

namespace reference {
/// x[j] *= (kept(index0 + j) ? scale : 0) for j < n, in any scalar type.
template <class T>
void dropout_multiply(T* x, std::size_t n, const DropoutKey& key, std::uint32_t index0) {
  if (!key.active()) return;
  const T s = static_cast<T>(key.scale);
  for (std::size_t j = 0; j < n; ++j) x[j] *= key.keep(index0 + static_cast<std::uint32_t>(j)) ? s : T(0);
}
}  // namespace reference

namespace detail {
template <class B>
inline B mix_batch(B h) {
  h ^= h >> 16;
  h *= B(0x7feb352dU);
  h ^= h >> 15;
  h *= B(0x846ca68bU);
  h ^= h >> 16;
  return h;
}
}  // namespace detail

/// x[j] *= (kept(index0 + j) ? scale : 0) for j < n (float, SIMD).
inline void dropout_multiply(float* x, std::size_t n, const DropoutKey& key, std::uint32_t index0) {
  if (!key.active()) return;
  using F = simd::Batch;
  using U = xsimd::batch<std::uint32_t, simd::Arch>;
  constexpr std::size_t L = F::size;
  alignas(64) std::uint32_t lane[L];
  for (std::size_t j = 0; j < L; ++j) lane[j] = static_cast<std::uint32_t>(j);
  const U iota = U::load_aligned(lane), lo(key.lo), hi(key.hi), th(key.threshold);
  const U scale_bits = xsimd::bitwise_cast<U>(F(key.scale));
  std::size_t j = 0;
  for (; j + L <= n; j += L) {
    const U idx = iota + U(index0 + static_cast<std::uint32_t>(j));
    const U h = detail::mix_batch(detail::mix_batch(idx ^ lo) + hi);
    const F f = xsimd::bitwise_cast<F>(xsimd::select((h >> 8) >= th, scale_bits, U(0u)));
    (F::load_unaligned(x + j) * f).store_unaligned(x + j);
  }
  for (; j < n; ++j) x[j] *= key.keep(index0 + static_cast<std::uint32_t>(j)) ? key.scale : 0.0f;
}

}  // namespace dynabert::kernels
