// Harness of docs/training.md's excerpt (importance, rewiring, stages 1 and 2): a fine-tuned
// teacher at finetuned/ (random here), and a small labelled task for train_set, dev_set and the
// dev batches.
#pragma once
#include <vector>

#include "common.hpp"

#define SNIPPET_ARGS const std::vector<dynabert::train::Batch>& dev_batches, const dynabert::train::Dataset& train_set, \
                     const dynabert::train::Dataset& dev_set

#define SNIPPET_MAIN                                                                           \
  int main() {                                                                                 \
    doc_harness::Sandbox box("training");                                                      \
    doc_harness::write_checkpoint("finetuned", 200, false);                                    \
    dynabert::train::Dataset train_set, dev_set;                                               \
    for (int i = 0; i < 48; ++i)                                                               \
      (i < 32 ? train_set : dev_set).push_back({{101, 5 + i % 9, 20 + i % 5, 102}, {}, i % 2, 0.0}); \
    std::vector<dynabert::train::Batch> dev_batches;                                           \
    for (const auto& idx : dynabert::train::epoch_batches(dev_set, 8, 0, 0, false, false))     \
      dev_batches.push_back(dynabert::train::make_batch(dev_set, idx, 0, idx.size()));         \
    snippet(dev_batches, train_set, dev_set);                                                  \
    if (!doc_harness::fs::exists("dynabert-best/config.json")) return 1;                       \
    return doc_harness::passed("docs/training.md");                                            \
  }
