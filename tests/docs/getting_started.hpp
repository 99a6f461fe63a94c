// Harness of the excerpt of docs/getting-started.md: a small random checkpoint (2 labels, a
// WordPiece vocabulary, positions up to 128) written to a temporary folder as `checkpoint`, and a
// main that runs the excerpt on it.
#pragma once
#include <cstdio>
#include <filesystem>
#include <string>
#include <unistd.h>

#include <dynabert/dynabert.hpp>

#define SNIPPET_ARGS const std::string& checkpoint

#define SNIPPET_MAIN                                                                                  \
  int main() {                                                                                        \
    namespace fs = std::filesystem;                                                                   \
    const fs::path dir = fs::temp_directory_path() / ("dynabert_getting_started_" + std::to_string(::getpid())); \
    dynabert::BertConfig c;                                                                           \
    c.vocab_size = 29; c.hidden_size = 32; c.num_hidden_layers = 4; c.num_attention_heads = 4;        \
    c.intermediate_size = 64; c.max_position_embeddings = 128;                                        \
    c.id2label = {"negative", "positive"};                                                            \
    dynabert::BertWeights<float> w(c, dynabert::HeadSpec{true, 2});                                   \
    w.init_random(3);                                                                                 \
    w.save(dir.string());                                                                             \
    fs::copy_file(std::string(DYNABERT_FIXTURES_DIR) + "/wordpiece/vocab.txt", dir / "vocab.txt");   \
    snippet(dir.string());                                                                            \
    fs::remove_all(dir);                                                                              \
    std::printf("docs/getting-started.md excerpt: 1 passed, 0 failed\n");                             \
    return 0;                                                                                         \
  }
