// dynabert_early_exit: per-sample early exit measured on a trained checkpoint. On the test split
// of the task the checkpoint was trained on (the same seeded 80/10/10 split and tokenizer as
// dynabert_train), it times every fixed (width, depth) cell and early-exit cascades over cells at a
// range of confidence thresholds, one text per call (batch 1, as a server answering requests), and
// writes one CSV row per configuration: accuracy, mean latency per text, and how many texts
// answered at each stage. tools/plot_early_exit.py draws accuracy against mean latency.
//
//   dynabert_early_exit --model out/sentiment/checkpoint --task sentiment --out early-exit.csv
//                       [--data .data] [--max-len 64] [--threads 1] [--rounds 3] [--seed 42]
//
// A cascade is written "0.25x0.5,1x1" (width x depth, cheapest first); --cascade may be repeated.
// Each configuration is timed in --rounds passes over the test set, alternating with the others;
// the CSV holds the median of the passes' mean latencies.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <CLI/CLI.hpp>

#include <dynabert/dynabert.hpp>

using namespace dynabert;

namespace {

struct Config {
  std::string name;  ///< "cell" or the cascade's spec
  std::vector<std::pair<double, double>> cells;
  double threshold = 1.0;
  std::vector<double> pass_ms;  ///< mean latency of each pass
  double accuracy = 0;
  std::vector<long> exits;  ///< texts answered per stage
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Per-sample early exit against fixed cells on a trained checkpoint's test split"};
  std::string model_dir, task = "sentiment", data = ".data", out;
  std::vector<std::string> cascades = {"0.25x0.5,1x1", "0.25x0.5,0.5x0.75,1x1"};
  std::vector<double> thresholds = {0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999};
  int max_len = 0, threads = 1, rounds = 3;
  std::uint64_t seed = 42;
  app.add_option("--model", model_dir, "checkpoint folder written by dynabert_train")->required();
  app.add_option("--task", task, "sentiment or spam (the task the checkpoint was trained on)")
      ->check(CLI::IsMember({"sentiment", "spam"}));
  app.add_option("--data", data, "folder filled by scripts/fetch-data.sh");
  app.add_option("--out", out, "CSV file to write")->required();
  app.add_option("--cascade", cascades, "cells, cheapest first: 0.25x0.5,1x1 (repeatable)");
  app.add_option("--thresholds", thresholds, "confidence thresholds (probability of the top label)");
  app.add_option("--max-len", max_len, "tokens per text (default: dynabert_train's, 64 for sentiment, 128 for spam)")
      ->check(CLI::Range(0, 4096));
  app.add_option("--threads", threads)->check(CLI::Range(1, 256));
  app.add_option("--rounds", rounds)->check(CLI::Range(1, 100));
  app.add_option("--seed", seed, "the split's seed (dynabert_train --seed)");
  CLI11_PARSE(app, argc, argv);
  if (max_len <= 0) max_len = task == "spam" ? 128 : 64;
  try {
    std::vector<text::LabelledText> all;
    if (task == "spam") {
      all = text::read_spam_assassin(data + "/spam/package/data");
    } else {
      for (const char* f : {"amazon", "imdb", "yelp"}) {
        auto part = text::read_sentiment_json(data + "/sentiment/package/test/fixtures/" + f + ".json");
        all.insert(all.end(), part.begin(), part.end());
      }
    }
    const auto sp = text::split(all.size(), 0.8, 0.1, seed);
    const auto tok = text::Tokenizer::from_folder(model_dir);
    const auto test = train::to_dataset(tok, all, sp.test, max_len);
    SessionOptions so;
    so.max_batch = 1;
    so.max_seq_len = max_len;
    so.max_threads = threads;
    auto session = Session<float>::open(model_dir, so);
    DYNABERT_REQUIRE(session->model().num_labels() > 0, InputError, model_dir, " has no classifier head");
    const Threads th(threads);

    std::vector<Config> configs;
    for (double d : so.depths)
      for (double w : so.widths) configs.push_back({"cell", {{w, d}}, 1.0, {}, 0, {}});
    for (const auto& c : cascades)
      for (double t : thresholds) configs.push_back({c, parse_cells(c), t, {}, 0, {}});
    for (auto& c : configs)
      for (auto& [w, d] : c.cells) (void)session->cell(w, d);  // every cell prepared: fail before timing

    // one text per call, as a server answering requests; texts pre-tokenized (tokenizing is the same for all)
    std::vector<TokenBatch> texts;
    for (const auto& e : test) {
      TokenBatch b;
      b.batch = 1;
      b.seq_len = static_cast<int>(e.ids.size());
      b.ids = e.ids;
      b.type_ids = e.types.empty() ? std::vector<std::int32_t>(e.ids.size(), 0) : e.types;
      b.lengths = {b.seq_len};
      texts.push_back(std::move(b));
    }
    std::fprintf(stderr, "%s: %zu test texts, %zu configurations, %d rounds\n", task.c_str(), texts.size(), configs.size(), rounds);
    for (const auto& b : texts) (void)session->classify(b, 1.0, 1.0, th);  // warm-up
    for (int round = 0; round < rounds; ++round) {
      for (auto& c : configs) {
        long correct = 0;
        c.exits.assign(c.cells.size(), 0);
        double total_ms = 0;
        for (std::size_t i = 0; i < texts.size(); ++i) {
          const auto a = std::chrono::steady_clock::now();
          const Classification r = c.name == "cell" ? session->classify(texts[i], c.cells[0].first, c.cells[0].second, th)
                                                    : session->classify_early_exit(texts[i], c.cells, c.threshold, th);
          total_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count();
          correct += r.labels[0] == test[i].label;
          ++c.exits[r.exit_stage.empty() ? 0 : static_cast<std::size_t>(r.exit_stage[0])];
        }
        c.accuracy = static_cast<double>(correct) / static_cast<double>(texts.size());
        c.pass_ms.push_back(total_ms / static_cast<double>(texts.size()));
      }
      std::fprintf(stderr, "round %d/%d done\n", round + 1, rounds);
    }
    std::ostringstream csv;
    csv << "kind,cascade,threshold,width,depth,accuracy,mean_ms,n_test,exits\n";
    for (auto& c : configs) {
      std::sort(c.pass_ms.begin(), c.pass_ms.end());
      const double ms = c.pass_ms[c.pass_ms.size() / 2];
      std::string exits;
      for (std::size_t s = 0; s < c.exits.size(); ++s) exits += (s ? "/" : "") + std::to_string(c.exits[s]);
      char line[512];
      if (c.name == "cell")
        std::snprintf(line, sizeof line, "cell,,,%g,%g,%.4f,%.4f,%zu,%s\n", c.cells[0].first, c.cells[0].second, c.accuracy, ms,
                      texts.size(), exits.c_str());
      else
        std::snprintf(line, sizeof line, "cascade,\"%s\",%g,,,%.4f,%.4f,%zu,%s\n", c.name.c_str(), c.threshold, c.accuracy, ms,
                      texts.size(), exits.c_str());
      csv << line;
    }
    io::write_atomically(out, [&](std::ofstream& f) { f << csv.str(); });
    std::printf("%s", csv.str().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
