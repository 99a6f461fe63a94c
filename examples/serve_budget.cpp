// dynabert_serve: a host program that classifies text read from standard input (one text a line)
// under a latency budget, printing for each line the label, the (width, depth) cell it used and
// the measured latency. The session calibrates every cell of the accuracy grid at start-up (a
// few seconds), then the budget controller follows the machine's load.
//
//   dynabert_serve --model DIR --budget-ms 60 [--precision auto|fp32|bf16|int8] [--threads 2] [--vocab DIR]
//                  [--grid grid.json] [--log calls.csv] [--probabilities] [--json] [--batch N]
//   dynabert_serve --model DIR --width 1 --depth 1 [--precision int8] ...   (a fixed cell, for comparison)
//   dynabert_serve --model DIR --embed mean [--json]        (one embedding per line instead of a label)
//   dynabert_serve --model DIR --early-exit 0.25x0.5,1x1 [--exit-threshold 0.9] [--json]
//                  (per-sample early exit: each line answered by the first cell confident enough)
//
// The grid is the checkpoint's "dynabert_grid" metadata (examples/train_dynabert.cpp writes it,
// with the accuracy of every cell in FP32, BF16 and INT8) or a JSON file
// [{"width":1,"depth":1,"accuracy":0.93,"precision":"int8"}, ...]. With --precision auto (the
// default under a budget) the controller picks the most accurate (width, depth, precision) that
// fits; a fixed precision restricts the grid to it. A line that cannot be classified (NUL or
// other control bytes, invalid UTF-8, longer than --max-line-bytes, no token) is reported on
// stderr with its number and the rest are still classified.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>

#include <dynabert/dynabert.hpp>

using namespace dynabert;

namespace {
/// Why a line of input is not classified: "" when it is fine, else what is wrong with it (invalid
/// UTF-8, or control bytes other than tab: text meant for a classifier has neither).
std::string line_problem(const std::string& line) {
  const auto* p = reinterpret_cast<const unsigned char*>(line.data());
  const std::size_t n = line.size();
  for (std::size_t i = 0; i < n;) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      if ((c < 0x20 && c != '\t') || c == 0x7F) return "holds control byte " + std::to_string(c) + " at byte " + std::to_string(i);
      ++i;
      continue;
    }
    const int len = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 0;
    bool ok = len > 0 && i + len <= n;
    for (int k = 1; ok && k < len; ++k) ok = (p[i + k] & 0xC0) == 0x80;
    if (ok && len == 3) ok = !(c == 0xE0 && p[i + 1] < 0xA0) && !(c == 0xED && p[i + 1] >= 0xA0);  // overlong, surrogate
    if (ok && len == 4) ok = !(c == 0xF0 && p[i + 1] < 0x90) && !(c == 0xF4 && p[i + 1] >= 0x90);  // overlong, > U+10FFFF
    if (!ok) return "invalid UTF-8 at byte " + std::to_string(i);
    i += static_cast<std::size_t>(len);
  }
  return "";
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Classify lines of standard input under a latency budget"};
  std::string model_dir, vocab_dir, grid_file, log_file, precision_name;
  double budget_ms = 0, width = 1.0, depth = 1.0;
  int threads = 1, max_len = 128, reps = 3;
  std::size_t max_line = 1 << 20;
  bool probabilities = false, json = false, no_normalize = false;
  std::string embed_mode;
  long batch = 1;
  std::string early_exit;
  double exit_threshold = 0.9;
  app.add_option("--model", model_dir, "checkpoint folder")->required();
  app.add_option("--vocab", vocab_dir, "folder with the tokenizer files, vocab.txt or vocab.json + merges.txt (default: the model folder)");
  auto* budget = app.add_option("--budget-ms", budget_ms, "latency budget per call in ms (without it: the fixed --width/--depth cell)")
                     ->check(CLI::PositiveNumber);
  app.add_option("--width", width, "fixed cell width (without --budget-ms)");
  app.add_option("--depth", depth, "fixed cell depth (without --budget-ms)");
  app.add_option("--threads", threads)->check(CLI::Range(1, Threads::kMaxThreads));
  app.add_option("--max-len", max_len, "tokens per text (longer texts are truncated)")->check(CLI::Range(3, 1 << 20));
  app.add_option("--max-line-bytes", max_line, "longest line read; a longer one is reported and skipped")->check(CLI::Range(1, 1 << 30));
  app.add_flag("--probabilities", probabilities, "also print the softmax probability of every label");
  app.add_option("--grid", grid_file, "accuracy grid JSON (default: the checkpoint's metadata)");
  app.add_option("--calibration-reps", reps, "timed calls per cell and size at start-up")->check(CLI::Range(1, 10000));
  app.add_option("--log", log_file, "write one CSV row per call here");
  app.add_flag("--json", json, "one JSON object a line: label, label_id, probabilities, cell, precision, ms (or the error)");
  app.add_option("--embed", embed_mode, "print an embedding of each line instead of a label: cls, mean or max pooling")
      ->check(CLI::IsMember({"cls", "mean", "max"}));
  app.add_flag("--no-normalize", no_normalize, "with --embed: do not L2-normalise the embeddings");
  app.add_option("--early-exit", early_exit,
                 "per-sample early exit over cells, cheapest first: 0.25x0.5,1x1 (a line stops at the first cell whose "
                 "top probability reaches --exit-threshold)");
  app.add_option("--exit-threshold", exit_threshold, "confidence that stops a line in --early-exit (default 0.9)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--batch", batch, "run up to this many lines as one call (results in input order)")->check(CLI::Range(1, 4096));
  app.add_option("--precision", precision_name,
                 "arithmetic: fp32, bf16, int8, or auto (under a budget: the controller picks it per call; default)")
      ->check(CLI::IsMember({"auto", "fp32", "bf16", "int8"}));
  CLI11_PARSE(app, argc, argv);
  if (budget->count() == 0) budget_ms = 0;
  if (precision_name.empty()) precision_name = budget_ms > 0 ? "auto" : "fp32";
  try {
    const auto tok = text::Tokenizer::from_folder(vocab_dir.empty() ? model_dir : vocab_dir);  // WordPiece or BPE
    DYNABERT_REQUIRE(budget_ms > 0 || precision_name != "auto", InputError, "--precision auto needs --budget-ms");
    SessionOptions opt;
    DYNABERT_REQUIRE(embed_mode.empty() || budget_ms == 0, InputError, "--embed runs the fixed --width/--depth cell, not a budget");
    const Pooling pooling = embed_mode == "cls" ? Pooling::kCls : embed_mode == "max" ? Pooling::kMax : Pooling::kMean;
    opt.max_batch = static_cast<int>(batch); opt.max_seq_len = max_len; opt.max_threads = threads;
    opt.widths = {width};  // the fixed cell (budgeted calls use the grid's cells)
    opt.depths = {depth};
    std::vector<std::pair<double, double>> cascade;  // --early-exit: its cells are prepared too
    DYNABERT_REQUIRE(early_exit.empty() || (budget_ms == 0 && embed_mode.empty()), InputError,
                     "--early-exit classifies at its own cells: not with --budget-ms or --embed");
    if (!early_exit.empty()) cascade = parse_cells(early_exit);
    for (auto [w, d] : cascade) {
      if (std::find(opt.widths.begin(), opt.widths.end(), w) == opt.widths.end()) opt.widths.push_back(w);
      if (std::find(opt.depths.begin(), opt.depths.end(), d) == opt.depths.end()) opt.depths.push_back(d);
    }
    Precision fixed_precision = Precision::kFp32;
    if (precision_name == "auto") {
      opt.precisions = {Precision::kFp32, Precision::kBf16, Precision::kInt8};
    } else {
      parse_precision(precision_name, fixed_precision);
      opt.precisions = {fixed_precision};
    }
    auto session = Session<float>::open(model_dir, opt);
    check_tokenizer_fits(tok, session->config());
    const auto& cfg = session->config();
    DYNABERT_REQUIRE(!embed_mode.empty() || session->model().num_labels() > 0, InputError, model_dir,
                     ": the model has no classifier head (--embed works without one)");
    const Threads th(threads);
    const auto mem = session->memory();
    std::fprintf(stderr,
                 "session: %d layers, hidden %d; weights %.1f MB (shared %.1f, fp32 %.1f, bf16 %.1f, int8 %.1f), workspace %.1f MB; "
                 "%d thread(s); kernels for %s\n",
                 cfg.num_hidden_layers, cfg.hidden_size, mem.weight_bytes / 1e6, mem.shared_weight_bytes / 1e6, mem.fp32_bytes / 1e6,
                 mem.bf16_bytes / 1e6, mem.int8_bytes / 1e6, mem.workspace_bytes / 1e6, threads, simd::arch_name());
    if (budget_ms > 0) {
      if (!grid_file.empty()) {
        std::ifstream f(grid_file);
        DYNABERT_REQUIRE(f.good(), InputError, grid_file, ": cannot open");
        std::stringstream ss;
        ss << f.rdbuf();
        std::vector<GridCell> g;
        for (auto& c : parse_grid(ss.str(), grid_file))
          if (session->model().has_precision(c.precision)) g.push_back(c);
        session->set_grid(g);
      }
      DYNABERT_REQUIRE(!session->grid().empty(), InputError, "the accuracy grid has no cell in ", precision_name,
                       " (a grid lists each cell's precision; one written before the low-precision paths is FP32 only)");
      const auto a = std::chrono::steady_clock::now();
      session->calibrate(th, reps);
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count();
      std::fprintf(stderr, "calibrated %zu cells in %.1f s (%d-token and %d-token calls):\n", session->grid().size(), secs, 16,
                   max_len);
      for (std::size_t c = 0; c < session->grid().size(); ++c)
        std::fprintf(stderr, "  width %.2f depth %.2f %s  accuracy %.4f  %7.2f ms at %d tokens\n", session->grid()[c].width,
                     session->grid()[c].depth, to_string(session->grid()[c].precision), session->grid()[c].accuracy,
                     session->budget()->base_ms(c, max_len), max_len);
    }
    const SubNetwork& fixed = session->cell(width, depth, fixed_precision);
    std::ofstream log;
    if (!log_file.empty()) {
      log.open(log_file);
      DYNABERT_REQUIRE(log.good(), InputError, log_file, ": cannot write");
      log << "call,seconds,tokens,width,depth,precision,predicted_ms,measured_ms,label\n";
    }
    const int C = session->model().num_labels();
    const auto start = std::chrono::steady_clock::now();
    // Lines are read with a cap (a stream without newlines cannot grow memory without end); a line
    // that cannot be classified is reported on stderr with its number and the rest go on. Up to
    // --batch good lines are run as one call; results are printed in input order.
    struct Item {
      long line;
      std::string text, error;
    };
    std::vector<Item> pending;
    long n = 0, bad = 0, call = 0;
    auto flush = [&]() {
      std::vector<std::string> texts;
      for (auto& it : pending)
        if (it.error.empty()) texts.push_back(it.text);
      Classification r;
      std::vector<float> emb;
      if (!texts.empty()) {
        const TokenBatch b = tok.encode_batch(texts, max_len);
        const auto a = std::chrono::steady_clock::now();
        if (!embed_mode.empty()) {
          emb = session->embed(b, fixed, pooling, !no_normalize, th);
          r.cell = {width, depth, 0.0, fixed_precision};
        } else {
          r = budget_ms > 0         ? session->classify_within(b, budget_ms, th)
              : !cascade.empty() ? session->classify_early_exit(b, cascade, exit_threshold, th)
                                 : session->classify(b, fixed, th);
        }
        r.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count();
        if (log.is_open()) {
          const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
          log << call << ',' << t << ',' << b.seq_len << ',' << r.cell.width << ',' << r.cell.depth << ','
              << to_string(r.cell.precision) << ',' << r.predicted_ms << ',' << r.ms << ','
              << (r.names.empty() ? std::string("-") : r.names.front()) << '\n';
        }
        ++call;
      }
      const int H = cfg.hidden_size;
      std::size_t k = 0;  // index among the good lines
      for (auto& it : pending) {
        if (!it.error.empty()) {
          std::fprintf(stderr, "line %ld: %s\n", it.line, it.error.c_str());
          if (json) std::printf("%s\n", io::Json({{"line", it.line}, {"error", it.error}}).dump().c_str());
          else std::printf("-\t(line %ld not classified: %s)\n", it.line, it.error.c_str());
          continue;
        }
        if (json) {
          io::Json j = {{"line", it.line}, {"width", r.cell.width}, {"depth", r.cell.depth},
                        {"precision", to_string(r.cell.precision)}, {"ms", r.ms}, {"batch", static_cast<long>(texts.size())}};
          if (!embed_mode.empty()) {
            io::Json v = io::Json::array();
            for (int x = 0; x < H; ++x) v.push_back(static_cast<double>(emb[k * H + x]));
            j["embedding"] = v;
          } else {
            j["label"] = r.names[k];
            j["label_id"] = static_cast<long>(r.labels[k]);
            io::Json pr = io::Json::object();
            for (int c = 0; c < C; ++c)
              pr[c < cfg.num_labels() ? cfg.id2label[c] : std::to_string(c)] = static_cast<double>(r.probability(static_cast<int>(k), c));
            j["probabilities"] = pr;
            if (budget_ms > 0) j["over_budget"] = r.ms > budget_ms;
            if (!r.exit_stage.empty()) {  // the cell that answered this line
              const auto& c = cascade[static_cast<std::size_t>(r.exit_stage[k])];
              j["width"] = c.first;
              j["depth"] = c.second;
              j["exit_stage"] = static_cast<long>(r.exit_stage[k]);
            }
          }
          std::printf("%s\n", j.dump().c_str());
        } else if (!embed_mode.empty()) {
          for (int x = 0; x < H; ++x) std::printf(x ? " %.6g" : "%.6g", static_cast<double>(emb[k * H + x]));
          std::printf("\n");
        } else {
          GridCell shown = r.cell;  // under --early-exit: the cell that answered this line
          if (!r.exit_stage.empty()) {
            shown.width = cascade[static_cast<std::size_t>(r.exit_stage[k])].first;
            shown.depth = cascade[static_cast<std::size_t>(r.exit_stage[k])].second;
          }
          std::printf("%s\twidth %.2f depth %.2f %s\t%.2f ms%s", r.names[k].c_str(), shown.width, shown.depth,
                      to_string(shown.precision), r.ms, budget_ms > 0 && r.ms > budget_ms ? "\tover budget" : "");
          if (probabilities)
            for (int c = 0; c < C; ++c)
              std::printf("\t%s=%.4f", (c < cfg.num_labels() ? cfg.id2label[c] : std::to_string(c)).c_str(),
                          r.probability(static_cast<int>(k), c));
          std::printf("\n");
        }
        ++k;
      }
      std::fflush(stdout);
      pending.clear();
    };
    std::string line;
    auto next_line = [&](std::string& out) {  // 0 at the end; 2 when a too long line was cut
      out.clear();
      bool too_long = false;
      int ch;
      while ((ch = std::cin.get()) != EOF && ch != '\n') {
        if (out.size() < max_line) out.push_back(static_cast<char>(ch));
        else too_long = true;
      }
      if (ch == EOF && out.empty() && !too_long) return 0;
      return too_long ? 2 : 1;
    };
    for (int got; (got = next_line(line)) != 0;) {
      ++n;
      Item it{n, {}, {}};
      if (got == 2) it.error = "longer than " + std::to_string(max_line) + " bytes (--max-line-bytes)";
      else {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.find('\0') != std::string::npos) it.error = "holds a NUL byte";
        else it.error = line_problem(line);
        if (it.error.empty()) {
          try {
            if (tok.tokenize(line).empty()) it.error = "no token (empty, white space or control characters only)";
          } catch (const Error& e) {
            it.error = e.what();
          }
        }
      }
      if (!it.error.empty()) ++bad;
      else it.text = line;
      pending.push_back(std::move(it));
      long good = 0;
      for (auto& p : pending) good += p.error.empty();
      if (good >= batch || (good == 0 && pending.size() >= 64)) flush();
    }
    flush();
    if (bad) std::fprintf(stderr, "%ld of %ld lines not classified\n", bad, n);
  } catch (const std::exception& e) {  // dynabert::Error with its message, or the system's
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
