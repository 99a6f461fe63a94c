// Explicit instantiation declarations of the float training engine (see extern_inference.hpp).
#pragma once
#include "dynabert/extern_inference.hpp"
#include "dynabert/training.hpp"

namespace dynabert {
namespace train {
extern template class TrainableBert<float, DynamicDims>;
extern template class Trainer<float>;
extern template class AdamW<float>;
}  // namespace train
namespace importance {
extern template class Scorer<float>;
}  // namespace importance
}  // namespace dynabert
