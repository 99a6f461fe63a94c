// Compile-time probe: a program that runs the trainer (fine-tuning, then DynaBERT stage 1) on a
// small synthetic task, through the training entry header only.
#include <cstdio>
#include <random>

#include <dynabert/training.hpp>

int main() {
  using namespace dynabert;
  BertConfig c;
  c.vocab_size = 50; c.hidden_size = 32; c.num_hidden_layers = 2; c.num_attention_heads = 4;
  c.intermediate_size = 64; c.max_position_embeddings = 16;
  BertWeights<float> w(c, HeadSpec{true, 2});
  w.init_random(1);
  train::Dataset data;
  std::mt19937 g(2);
  for (int i = 0; i < 64; ++i) {
    train::Example e;
    for (int t = 0; t < 8; ++t) e.ids.push_back(static_cast<std::int32_t>(g() % 50));
    e.label = e.ids[1] % 2;
    data.push_back(e);
  }
  train::TrainableBert<float> teacher(w);
  train::TrainerConfig cfg;
  cfg.epochs = 1;
  cfg.batch_size = 16;
  train::Trainer<float> ft(teacher, nullptr, cfg);
  ft.fit(data);
  train::TrainableBert<float> student(teacher.params());
  cfg.phase = train::Phase::kWidth;
  train::Trainer<float> s1(student, &teacher, cfg);
  s1.on_progress = [](const train::Progress& p) { std::printf("step %ld loss %.4f\n", p.step, p.loss); };
  s1.fit(data, &data);
  return 0;
}
