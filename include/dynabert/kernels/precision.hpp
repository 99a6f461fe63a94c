// Precision: the arithmetic an inference call's linear layers run in. Lives with the kernels, at the
// bottom of the include graph (like Activation), so that kernels, models, sessions and tools share it.
//   kFp32  the packed SGEMM (kernels/gemm.hpp);
//   kBf16  weights packed as bfloat16 pairs, activations rounded to bfloat16 in the GEMM's A path,
//          FP32 accumulation and epilogues (kernels/lowp.hpp);
//   kInt8  weights int8 per output row (symmetric), activations int8 per token row (dynamic,
//          symmetric), int32 accumulation, dequantization fused into the epilogues.
// Attention's own products, LayerNorm, softmax and the heads stay in FP32 at every precision.
#pragma once
#include <string>

namespace dynabert {

enum class Precision { kFp32, kBf16, kInt8 };

inline const char* to_string(Precision p) {
  switch (p) {
    case Precision::kBf16: return "bf16";
    case Precision::kInt8: return "int8";
    default: return "fp32";
  }
}

/// "fp32" / "bf16" / "int8" -> Precision; false when the name is none of them.
inline bool parse_precision(const std::string& s, Precision& out) {
  if (s == "fp32") out = Precision::kFp32;
  else if (s == "bf16") out = Precision::kBf16;
  else if (s == "int8") out = Precision::kInt8;
  else return false;
  return true;
}

}  // namespace dynabert
