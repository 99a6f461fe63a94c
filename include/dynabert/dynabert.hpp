// Umbrella header: everything a host program needs to load a BERT checkpoint and run any
// DynaBERT sub-network. See docs/architecture.md for where each piece lives.
#pragma once
#include "dynabert/core/aligned.hpp"
#include "dynabert/core/error.hpp"
#include "dynabert/core/parallel.hpp"
#include "dynabert/core/simd.hpp"
#include "dynabert/io/checkpoint.hpp"
#include "dynabert/io/safetensors.hpp"
#include "dynabert/kernels/gemm.hpp"
#include "dynabert/kernels/reference.hpp"
#include "dynabert/kernels/rowwise.hpp"
#include "dynabert/model/bert.hpp"
#include "dynabert/model/config.hpp"
#include "dynabert/model/elastic.hpp"
#include "dynabert/model/weights.hpp"
#include "dynabert/model/workspace.hpp"

/// Library version.
#define DYNABERT_VERSION_MAJOR 0
#define DYNABERT_VERSION_MINOR 1
#define DYNABERT_VERSION_PATCH 0
