// Shared by the harnesses of the docs' excerpts: a temporary working directory (the excerpts use
// relative paths such as "out/spam/checkpoint" or ".data/vocab", which then resolve inside it) and
// small random checkpoints to put there.
#pragma once
#include <cstdio>
#include <filesystem>
#include <string>
#include <unistd.h>

#include <dynabert/dynabert.hpp>

namespace doc_harness {
namespace fs = std::filesystem;

/// Creates a fresh temporary folder and makes it the working directory until destroyed.
struct Sandbox {
  fs::path dir, old = fs::current_path();
  explicit Sandbox(const std::string& name)
      : dir(fs::temp_directory_path() / ("dynabert_doc_" + name + "_" + std::to_string(::getpid()))) {
    fs::remove_all(dir);
    fs::create_directories(dir);
    fs::current_path(dir);
  }
  ~Sandbox() {
    fs::current_path(old);
    fs::remove_all(dir);
  }
};

/// A random 4-layer BERT (hidden 32, 4 heads, 2 labels, 128 positions) written to `dir` with the
/// WordPiece fixture's vocab.txt and, when `grid`, an accuracy grid of two cells in its metadata.
inline void write_checkpoint(const fs::path& dir, int vocab = 200, bool grid = true) {
  dynabert::BertConfig c;
  c.vocab_size = vocab; c.hidden_size = 32; c.num_hidden_layers = 4; c.num_attention_heads = 4;
  c.intermediate_size = 64; c.max_position_embeddings = 128;
  c.id2label = {"negative", "positive"};
  dynabert::BertWeights<float> w(c, dynabert::HeadSpec{true, 2});
  w.init_random(3);
  std::map<std::string, std::string> meta;
  if (grid)
    meta["dynabert_grid"] = R"([{"width":1,"depth":1,"accuracy":0.9},{"width":0.5,"depth":0.5,"accuracy":0.8}])";
  w.save(dir.string(), meta);
  fs::copy_file(std::string(DYNABERT_FIXTURES_DIR) + "/wordpiece/vocab.txt", dir / "vocab.txt");
}

/// Copies a fixture folder (tests/fixtures/NAME) to `to`.
inline void copy_fixture(const std::string& name, const fs::path& to) {
  fs::create_directories(to);
  fs::copy(std::string(DYNABERT_FIXTURES_DIR) + "/" + name, to, fs::copy_options::recursive);
}

inline int passed(const char* page) {
  std::printf("%s excerpt: 1 passed, 0 failed\n", page);
  return 0;
}
}  // namespace doc_harness
