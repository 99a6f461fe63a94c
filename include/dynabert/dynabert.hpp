// Umbrella header: inference (load a checkpoint, run any DynaBERT sub-network), training
// (autodiff-lite, DynaBERT stages), importance and rewiring, and the tokenizer. Including a header
// instantiates nothing. See docs/architecture.md for where each piece lives.
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
#include "dynabert/model/export.hpp"
#include "dynabert/serve/budget.hpp"
#include "dynabert/serve/session.hpp"
#include "dynabert/model/workspace.hpp"
#include "dynabert/importance/importance.hpp"
#include "dynabert/importance/rewire.hpp"
#include "dynabert/text/datasets.hpp"
#include "dynabert/text/mail.hpp"
#include "dynabert/text/tokenizer.hpp"
#include "dynabert/train/data.hpp"
#include "dynabert/train/losses.hpp"
#include "dynabert/train/metrics.hpp"
#include "dynabert/train/mlm.hpp"
#include "dynabert/train/optim.hpp"
#include "dynabert/train/trainable_bert.hpp"
#include "dynabert/train/trainer.hpp"

/// Library version.
#define DYNABERT_VERSION_MAJOR 0
#define DYNABERT_VERSION_MINOR 1
#define DYNABERT_VERSION_PATCH 0
