// The losses (layers/losses.hpp) under their training names.
#pragma once
#include "dynabert/layers/losses.hpp"

namespace dynabert::train {
using layers::cross_entropy;
using layers::mse;
using layers::soft_cross_entropy;
}  // namespace dynabert::train
