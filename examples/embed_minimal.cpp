// The smallest host program (docs/embedding.md): load a checkpoint once, then serve calls at
// whatever width and depth the moment allows, with no copy and no allocation per switch.
//
//   embed_minimal CHECKPOINT_DIR
#include <cstdio>
#include <vector>

#include <dynabert/dynabert.hpp>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CHECKPOINT_DIR\n", argv[0]);
    return 2;
  }
  try {
    // 1. Load and pack once (config.json + model.safetensors, or sharded safetensors).
    const dynabert::ElasticBert<float> model(dynabert::BertWeights<float>::load(argv[1]));
    // 2. One workspace per concurrent caller, sized for the largest call it will make.
    dynabert::Threads threads(2);
    auto ws = model.make_workspace({/*max_batch=*/2, /*max_seq_len=*/16, /*max_threads=*/2});

    // Two sequences, the second padded after 3 tokens.
    std::vector<std::int32_t> ids = {101, 7, 8, 9, 102, 0,  101, 5, 102, 0, 0, 0};
    std::vector<std::int32_t> lengths = {5, 3};
    dynabert::Inputs in;
    in.input_ids = ids.data();
    in.lengths = lengths.data();
    in.batch = 2;
    in.seq_len = 6;

    std::vector<float> logits(2 * std::max(1, model.num_labels()));
    dynabert::Outputs out;
    out.logits = logits.data();
    // 3. Any (width, depth) per call.
    for (double width : {1.0, 0.5, 0.25})
      for (double depth : {1.0, 0.5}) {
        const auto net = dynabert::SubNetwork::dynabert(model.config(), width, depth);
        model.forward(in, net, out, ws, threads);
        std::printf("width %.2f depth %.2f: logits[0] = %+.5f, %+.5f\n", width, depth, logits[0], logits[1]);
      }
  } catch (const dynabert::Error& e) {  // bad files and bad inputs end up here, with a message
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
