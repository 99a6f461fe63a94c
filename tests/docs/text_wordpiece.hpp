// Harness of docs/text-and-data.md's WordPiece excerpt: .data/vocab holds the small fixture
// vocabulary (the ids in the excerpt's comment are bert-base-uncased's).
#pragma once
#include "common.hpp"

#define SNIPPET_ARGS

#define SNIPPET_MAIN                                                                       \
  int main() {                                                                             \
    doc_harness::Sandbox box("text_wordpiece");                                            \
    doc_harness::copy_fixture("wordpiece", ".data/vocab");                                 \
    snippet();                                                                             \
    return doc_harness::passed("docs/text-and-data.md (WordPiece)");                       \
  }
