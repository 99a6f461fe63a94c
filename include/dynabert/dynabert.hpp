// Umbrella header: inference (load a checkpoint, run any DynaBERT sub-network, serve under a
// budget), training (autodiff-lite blocks, DynaBERT stages, importance and rewiring), text (the
// tokenizer and readers) and TextSession (classify and embed texts in one call). Programs that need less include inference.hpp, training.hpp or text.hpp.
// Including a header instantiates nothing. See docs/architecture.md for where each piece lives.
#pragma once
#include "dynabert/inference.hpp"
#include "dynabert/serve/text_session.hpp"
#include "dynabert/text.hpp"
#include "dynabert/training.hpp"
