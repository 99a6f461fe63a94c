// Compile-time dimension policies that blocks and models are templated on. StaticDims fixes the
// hidden size, head count and FFN width: blocks then get the hidden size and head size as
// constants (LayerNorm rows of constant length, attention's per-head loops), and models check
// config.json against them at load. DynamicDims takes everything from config.json. Width, depth,
// batch and sequence length are always run-time.
#pragma once
#include "dynabert/core/error.hpp"

namespace dynabert {

template <int Hidden, int Heads, int Intermediate>
struct StaticDims {
  static_assert(Hidden % Heads == 0, "hidden size must be a multiple of the head count");
  static constexpr bool kStatic = true;
  static constexpr int kHidden = Hidden;
  static constexpr int kHeads = Heads;
  static constexpr int kHeadDim = Hidden / Heads;
  static constexpr int kIntermediate = Intermediate;
  /// Throws FormatError when a model's sizes are not these.
  static void check(int hidden, int heads, int intermediate) {
    DYNABERT_REQUIRE(hidden == Hidden && heads == Heads && intermediate == Intermediate, FormatError,
                     "model compiled for hidden ", Hidden, ", heads ", Heads, ", intermediate ", Intermediate,
                     " but config has ", hidden, ", ", heads, ", ", intermediate);
  }
};

/// Dimensions read from config.json at run time (0: not fixed).
struct DynamicDims {
  static constexpr bool kStatic = false;
  static constexpr int kHidden = 0;
  static constexpr int kHeads = 0;
  static constexpr int kHeadDim = 0;
  static constexpr int kIntermediate = 0;
  static void check(int, int, int) {}
};

/// BERT-base (768 hidden, 12 heads, 3072 FFN).
using BertBaseDims = StaticDims<768, 12, 3072>;

}  // namespace dynabert
