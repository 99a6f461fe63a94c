// Entry header for programs that load a checkpoint and serve it: the blocks, ElasticBert,
// sub-network export, Session and the budget controller. It pulls neither the trainer nor the
// text stack (utf8proc, iconv); see training.hpp and text.hpp for those, dynabert.hpp for all.
#pragma once
#include "dynabert/core/aligned.hpp"
#include "dynabert/core/error.hpp"
#include "dynabert/core/parallel.hpp"
#include "dynabert/core/params.hpp"
#include "dynabert/core/simd.hpp"
#include "dynabert/core/span.hpp"
#include "dynabert/io/checkpoint.hpp"
#include "dynabert/io/safetensors.hpp"
#include "dynabert/kernels/gemm.hpp"
#include "dynabert/kernels/ops.hpp"
#include "dynabert/layers/batch.hpp"
#include "dynabert/layers/encoder_layer.hpp"
#include "dynabert/layers/embeddings.hpp"
#include "dynabert/layers/heads.hpp"
#include "dynabert/layers/losses.hpp"
#include "dynabert/model/bert.hpp"
#include "dynabert/model/config.hpp"
#include "dynabert/model/elastic.hpp"
#include "dynabert/model/export.hpp"
#include "dynabert/model/weights.hpp"
#include "dynabert/model/workspace.hpp"
#include "dynabert/serve/budget.hpp"
#include "dynabert/serve/session.hpp"

/// Library version.
#define DYNABERT_VERSION_MAJOR 0
#define DYNABERT_VERSION_MINOR 2
#define DYNABERT_VERSION_PATCH 0

#ifdef DYNABERT_EXTERN_TEMPLATES  // the float engine comes compiled (CMake target dynabert::compiled)
#include "dynabert/extern_inference.hpp"
#endif
