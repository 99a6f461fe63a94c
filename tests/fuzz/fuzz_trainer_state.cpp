// The trainer state of a training checkpoint, through Trainer::load_checkpoint on a real checkpoint
// folder (a tiny model saved once): the input is trainer_state.json, and, after its first NUL byte
// if it has one, the `latest` pointer file (else `latest` names the checkpoint). Covers the JSON,
// every field check (types, ranges, phase, seed, batch size, generator state), the choice of the
// checkpoint (latest, or the newest complete one) and the refusal of other runs' checkpoints.
#include <cstdint>
#include <memory>

#include <dynabert/train/trainer.hpp>

#include "fuzz_common.hpp"

using namespace dynabert;
using namespace dynabert::train;

namespace {

struct Fixture {
  std::string dir, checkpoint;
  std::unique_ptr<TrainableBert<float>> model;
  std::unique_ptr<Trainer<float>> trainer;
};

Fixture& fixture() {
  static Fixture f = [] {
    Fixture x;
    BertConfig c;
    c.vocab_size = 16; c.hidden_size = 8; c.num_hidden_layers = 1; c.num_attention_heads = 2;
    c.intermediate_size = 8; c.max_position_embeddings = 8;
    BertWeights<float> w(c, HeadSpec{true, 2});
    w.init_random(3);
    x.model = std::make_unique<TrainableBert<float>>(std::move(w));
    TrainerConfig cfg;
    cfg.phase = Phase::kFineTune; cfg.batch_size = 2; cfg.seed = 7; cfg.epochs = 1;
    x.trainer = std::make_unique<Trainer<float>>(*x.model, nullptr, cfg);
    x.dir = fuzz::folder("run");
    x.trainer->save_checkpoint(x.dir);
    x.checkpoint = x.dir + "/" + Trainer<float>::checkpoint_name(x.dir);
    return x;
  }();
  return f;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Fixture& f = fixture();
  const auto [state, latest] = fuzz::split(fuzz::view(data, size), '\0');
  fuzz::write_file(f.checkpoint + "/trainer_state.json", state);
  const bool own_latest = state.size() < size;
  fuzz::write_file(f.dir + "/latest", own_latest ? latest : std::string_view("step-0\n"));
  try {
    f.trainer->load_checkpoint(f.dir);
    FUZZ_CHECK(f.trainer->step() >= 0);
    fuzz::accepted("Trainer::load_checkpoint");
  } catch (const Error& e) {
    fuzz::rejected("Trainer::load_checkpoint", e);
  }
  return 0;
}
