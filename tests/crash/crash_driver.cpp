// Driver of the checkpoint crash-consistency test (tests/crash/crash_test.py, docs/hardening.md).
//
//   crash_driver run DIR STEPS     resumes from the checkpoint in DIR when there is a complete one
//                                  (else starts a fresh tiny model), trains STEPS more steps (0: none)
//                                  and saves a checkpoint into DIR. Writes nothing else: every
//                                  file-system call after the marker access("DIR/.save-begins")
//                                  belongs to Trainer::save_checkpoint, up to access("DIR/.save-ends").
//   crash_driver fingerprint DIR   loads DIR into a trainer whose model starts from other weights and
//                                  prints "step S params P next N": the step, a hash of the loaded
//                                  parameters' bits, and of the parameters after one more step (which
//                                  depends on every part of the state: optimizer moments and step
//                                  count, dropout generator, data position); "none" when DIR holds
//                                  no complete checkpoint. A second line names the checkpoint
//                                  folder it was loaded from.
// Single-threaded (no TBB arena), so every run makes the same system calls in the same order.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>

#include <unistd.h>

#include <dynabert/train/trainer.hpp>

#include "../unit/synthetic_task.hpp"

using namespace dynabert;
using namespace dynabert::train;

namespace {

BertWeights<float> tiny_model(std::uint64_t seed) {
  BertConfig c;
  c.vocab_size = 24; c.hidden_size = 16; c.num_hidden_layers = 2; c.num_attention_heads = 2;
  c.intermediate_size = 24; c.max_position_embeddings = 16;
  c.hidden_dropout_prob = 0.1; c.attention_probs_dropout_prob = 0.1;
  BertWeights<float> w(c, HeadSpec{true, 2});
  w.init_random(seed, 0.2);
  return w;
}

TrainerConfig run_config() {
  TrainerConfig cfg;
  cfg.phase = Phase::kFineTune; cfg.epochs = 50; cfg.batch_size = 4; cfg.seed = 11; cfg.adam.lr = 1e-3;
  cfg.warmup_ratio = 0.05;
  return cfg;
}

/// The trainer tests' synthetic task (label 1 iff token 5 occurs), 24 examples of 3 to 10 tokens.
Dataset data() { return dynabert::testing::synthetic_task(24, 5, 8); }

std::uint64_t fnv(const float* p, std::size_t n) {
  std::uint64_t h = 1469598103934665603ull;
  const auto* b = reinterpret_cast<const unsigned char*>(p);
  for (std::size_t i = 0; i < n * sizeof(float); ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

bool has_checkpoint(const std::string& dir) {
  try {
    (void)Trainer<float>::checkpoint_name(dir);
    return true;
  } catch (const FormatError&) {
    return false;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: crash_driver run DIR STEPS | fingerprint DIR\n");
    return 2;
  }
  const std::string mode = argv[1], dir = argv[2];
  try {
    const Dataset train = data();
    if (mode == "run" && argc == 4) {
      TrainableBert<float> model(tiny_model(1));
      Trainer<float> trainer(model, nullptr, run_config());
      if (has_checkpoint(dir)) trainer.load_checkpoint(dir);
      const long steps = std::strtol(argv[3], nullptr, 10);
      if (steps > 0) trainer.fit(train, nullptr, steps);
      (void)::access((dir + "/.save-begins").c_str(), F_OK);
      trainer.save_checkpoint(dir);
      (void)::access((dir + "/.save-ends").c_str(), F_OK);
      return 0;
    }
    if (mode == "fingerprint") {
      if (!has_checkpoint(dir)) {
        std::printf("none\n");
        return 0;
      }
      TrainableBert<float> model(tiny_model(99));  // other weights: the checkpoint must replace them all
      Trainer<float> trainer(model, nullptr, run_config());
      const std::string name = Trainer<float>::checkpoint_name(dir);
      trainer.load_checkpoint(dir);
      auto hash = [&] { return static_cast<unsigned long long>(fnv(model.params().buffer().data(), model.params().buffer().size())); };
      const unsigned long long loaded = hash();
      const long step = trainer.step();
      trainer.fit(train, nullptr, 1);
      std::printf("step %ld params %016llx next %016llx\nfrom %s\n", step, loaded, hash(), name.c_str());
      return 0;
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "crash_driver: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "crash_driver: unknown mode '%s'\n", mode.c_str());
  return 2;
}
