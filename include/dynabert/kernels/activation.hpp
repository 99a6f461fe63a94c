// Activation: the element-wise functions the kernels apply (FFN GELU, pooler tanh). Lives with the
// kernels, at the bottom of the include graph, so that kernels, io and models all share it.
#pragma once

namespace dynabert {

/// Activation of a linear layer's epilogue (config.json `hidden_act` for the FFN).
enum class Activation { kNone, kGeluErf, kGeluTanh, kTanh };

inline const char* to_string(Activation a) {
  switch (a) {
    case Activation::kGeluErf: return "gelu";
    case Activation::kGeluTanh: return "gelu_new";
    case Activation::kTanh: return "tanh";
    default: return "none";
  }
}

}  // namespace dynabert
