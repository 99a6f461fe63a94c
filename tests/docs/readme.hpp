// Harness of the README's excerpt: a random checkpoint with its vocabulary at my-checkpoint/.
#pragma once
#include "common.hpp"

#define SNIPPET_ARGS

#define SNIPPET_MAIN                                                                       \
  int main() {                                                                             \
    doc_harness::Sandbox box("readme");                                                    \
    doc_harness::write_checkpoint("my-checkpoint", 29);                                    \
    snippet();                                                                             \
    return doc_harness::passed("README.md");                                               \
  }
