// Harness of docs/budget.md's early-exit excerpt: a session `s` on a random checkpoint and a
// batch of three texts.
#pragma once
#include <memory>

#include "common.hpp"

#define SNIPPET_ARGS std::unique_ptr<dynabert::Session<float>>& s, const dynabert::TokenBatch& batch

#define SNIPPET_MAIN                                                                       \
  int main() {                                                                             \
    doc_harness::Sandbox box("budget_early_exit");                                         \
    doc_harness::write_checkpoint("ckpt");                                                 \
    auto s = dynabert::Session<float>::open("ckpt", {});                                   \
    const auto tok = dynabert::text::Tokenizer::from_folder("ckpt");                       \
    const auto batch = tok.encode_batch({"hello world", "the cafes", "naive"}, 16);        \
    snippet(s, batch);                                                                     \
    return doc_harness::passed("docs/budget.md (early exit)");                             \
  }
