// The smallest host program (docs/embedding.md): load a checkpoint once, tokenize text, then serve
// calls at whatever width and depth the moment allows (no copy, no allocation per switch), and
// under a latency budget. It includes only the inference and text headers.
//
//   embed_minimal CHECKPOINT_DIR [VOCAB_DIR]     (VOCAB_DIR defaults to CHECKPOINT_DIR)
#include <cstdio>
#include <string>
#include <vector>

#include <dynabert/inference.hpp>
#include <dynabert/text/tokenizer.hpp>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CHECKPOINT_DIR [VOCAB_DIR]\n", argv[0]);
    return 2;
  }
  try {
    // 1. Load and pack once (config.json + model.safetensors, or sharded safetensors); a session
    //    holds one workspace per concurrent caller, sized for the largest call it will make.
    dynabert::SessionOptions opt;
    opt.max_batch = 4;
    opt.max_seq_len = 32;
    opt.max_threads = 2;
    const auto session = dynabert::Session<float>::open(argv[1], opt);
    const auto tok = dynabert::text::BertTokenizer::from_folder(argc > 2 ? argv[2] : argv[1]);
    const int C = std::max(1, session->model().num_labels());

    // 2. Tokenize a batch, right-padded, with per-sequence lengths.
    const std::vector<std::string> texts = {"The food was wonderful.", "Worst phone I have ever owned.",
                                            "I would not recommend it.", "Works exactly as described."};
    std::vector<dynabert::text::Encoding> enc;
    int S = 0;
    for (auto& t : texts) {
      enc.push_back(tok.encode(t, std::nullopt, opt.max_seq_len));
      S = std::max(S, static_cast<int>(enc.back().ids.size()));
    }
    std::vector<std::int32_t> ids(texts.size() * S, 0), lengths;
    for (std::size_t b = 0; b < enc.size(); ++b) {
      std::copy(enc[b].ids.begin(), enc[b].ids.end(), ids.begin() + static_cast<long>(b) * S);
      lengths.push_back(static_cast<std::int32_t>(enc[b].ids.size()));
    }
    dynabert::Inputs in;
    in.input_ids = ids.data();
    in.lengths = lengths.data();
    in.batch = static_cast<int>(texts.size());
    in.seq_len = S;
    std::vector<float> logits(texts.size() * C);
    dynabert::Outputs out;
    out.logits = logits.data();

    // 3. Any (width, depth) per call, on 2 threads.
    const dynabert::Threads threads(2);
    for (auto [width, depth] : {std::pair{1.0, 1.0}, {0.5, 0.5}}) {
      session->run(in, width, depth, out, threads);
      std::printf("width %.2f depth %.2f: logits[0] = %+.5f, %+.5f\n", width, depth, logits[0], C > 1 ? logits[1] : 0.0f);
    }
    // 4. Under a latency budget: the most accurate cell that fits (the grid comes from the
    //    checkpoint's metadata; a plain checkpoint gets one here, accuracy rising with size).
    if (session->grid().empty()) {
      std::vector<dynabert::GridCell> grid;
      for (double d : {1.0, 0.5})
        for (double w : {1.0, 0.5}) grid.push_back({w, d, w * d});
      session->set_grid(grid);
    }
    session->calibrate(threads, 3, 8);
    const auto r = session->run_within(in, 5.0, out, threads);
    std::printf("budget 5 ms: width %.2f depth %.2f, %.2f ms (predicted %.2f)\n", r.cell.width, r.cell.depth, r.measured_ms,
                r.predicted_ms);
  } catch (const std::exception& e) {  // bad files and inputs (dynabert::Error, with a message), or the system's
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
