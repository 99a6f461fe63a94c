// Harness of docs/budget.md's first excerpt (a session, a fixed cell, calibration, a budgeted
// call): a checkpoint with an accuracy grid at out/spam/checkpoint, one sequence of 10 tokens.
#pragma once
#include <vector>

#include "common.hpp"

#define SNIPPET_ARGS const dynabert::Inputs& inputs, const dynabert::Outputs& outputs

#define SNIPPET_MAIN                                                                       \
  int main() {                                                                             \
    doc_harness::Sandbox box("budget_session");                                            \
    doc_harness::write_checkpoint("out/spam/checkpoint");                                  \
    std::vector<std::int32_t> ids = {101, 7, 8, 9, 10, 11, 12, 13, 14, 102};               \
    dynabert::Inputs in;                                                                   \
    in.input_ids = ids.data(); in.batch = 1; in.seq_len = 10;                              \
    std::vector<float> logits(2);                                                          \
    dynabert::Outputs out;                                                                 \
    out.logits = logits.data();                                                            \
    snippet(in, out);                                                                      \
    return doc_harness::passed("docs/budget.md (session)");                                \
  }
