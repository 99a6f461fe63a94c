// Harness of docs/text-and-data.md's byte-level BPE excerpt: .data/roberta-bpe holds the small
// fixture vocabulary and merges (the ids in the excerpt's comment are the real files').
#pragma once
#include "common.hpp"

#define SNIPPET_ARGS

#define SNIPPET_MAIN                                                                       \
  int main() {                                                                             \
    doc_harness::Sandbox box("text_bpe");                                                  \
    doc_harness::copy_fixture("bpe", ".data/roberta-bpe");                                 \
    snippet();                                                                             \
    return doc_harness::passed("docs/text-and-data.md (BPE)");                             \
  }
