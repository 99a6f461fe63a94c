// Entry header for programs that train: everything of inference.hpp plus TrainableBert, losses,
// AdamW, data batching, MLM masking, the DynaBERT Trainer, importance scoring and rewiring.
#pragma once
#include "dynabert/inference.hpp"
#include "dynabert/importance/importance.hpp"
#include "dynabert/importance/rewire.hpp"
#include "dynabert/train/data.hpp"
#include "dynabert/train/losses.hpp"
#include "dynabert/train/metrics.hpp"
#include "dynabert/train/mlm.hpp"
#include "dynabert/train/optim.hpp"
#include "dynabert/train/trainable_bert.hpp"
#include "dynabert/train/trainer.hpp"

#ifdef DYNABERT_EXTERN_TEMPLATES  // the float engine comes compiled (CMake target dynabert::compiled)
#include "dynabert/extern_training.hpp"
#endif
