// xsimd compatibility layer: one place that knows which xsimd version and instruction set we
// compile for. Kernels use `simd::Batch` (the widest float batch the build enables: AVX-512,
// AVX2, NEON...) and the helpers below, which paper over xsimd 8 versus newer API differences.
#pragma once
#include <xsimd/xsimd.hpp>

namespace dynabert::simd {

/// Instruction set the fast kernels are compiled for (best enabled by the compiler flags).
using Arch = xsimd::default_arch;
/// Widest float batch for Arch.
using Batch = xsimd::batch<float, Arch>;
/// Lanes in a Batch (16 with AVX-512, 8 with AVX2, 4 with SSE/NEON).
inline constexpr int kLanes = static_cast<int>(Batch::size);

/// Horizontal sum (xsimd 8 calls it `hadd`, newer versions `reduce_add`).
template <class B>
inline auto reduce_add(const B& b) {
#if XSIMD_VERSION_MAJOR >= 9
  return xsimd::reduce_add(b);
#else
  return xsimd::hadd(b);
#endif
}

/// Horizontal max.
template <class B>
inline auto reduce_max(const B& b) {
#if XSIMD_VERSION_MAJOR >= 9
  return xsimd::reduce_max(b);
#else
  alignas(64) typename B::value_type tmp[B::size];
  b.store_aligned(tmp);
  auto m = tmp[0];
  for (std::size_t i = 1; i < B::size; ++i) m = tmp[i] > m ? tmp[i] : m;
  return m;
#endif
}

/// Name of the instruction set, for benchmark labels and logs.
inline const char* arch_name() { return Arch::name(); }

}  // namespace dynabert::simd
