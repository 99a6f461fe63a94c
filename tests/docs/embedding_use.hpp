// Harness of docs/embedding.md's excerpt: `dir`, a random checkpoint with ids up to 200.
#pragma once
#include <string>

#include "common.hpp"

#define SNIPPET_ARGS const std::string& dir

#define SNIPPET_MAIN                                                                       \
  int main() {                                                                             \
    doc_harness::Sandbox box("embedding");                                                 \
    doc_harness::write_checkpoint("model");                                                \
    snippet("model");                                                                      \
    return doc_harness::passed("docs/embedding.md");                                       \
  }
