// dynabert_run: load a Hugging Face BERT checkpoint folder and a JSON file of token-id sequences,
// run them at a chosen width, depth and thread count, print the logits (or pooled output), and
// optionally write logits and every hidden state to a safetensors file for parity checks.
//
//   dynabert_run --model DIR --inputs ids.json [--width 0.5] [--depth 0.75] [--threads 2]
//                [--output out.safetensors] [--grid] [--repeat 20]
//   dynabert_run --generate DIR --preset tiny|small|base|roberta-base [--labels 2] [--seed 1]
//
// Inputs JSON: [[101, 2023, 102], [101, 102]] (ragged lists are right-padded with pad_token_id and
// masked), or {"input_ids": [[...]], "token_type_ids": [[...]], "attention_mask": [[...]]}.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <CLI/CLI.hpp>

#include <dynabert/dynabert.hpp>

using namespace dynabert;

namespace {

struct Batch {
  int B = 0, S = 0;
  std::vector<std::int32_t> ids, types, mask;
};

/// Rows of a JSON list of integer lists; every row non-empty and at most `max_len` long, the
/// whole at most `max_tokens` values (checked before anything is padded or allocated).
std::vector<std::vector<long>> rows_of(const io::Json& j, const std::string& what, const std::string& file, long max_len,
                                       long max_tokens) {
  DYNABERT_REQUIRE(j.is_array() && !j.empty(), FormatError, file, ": ", what, " must be a non-empty list of lists");
  long total = 0;
  for (std::size_t b = 0; b < j.size(); ++b) {
    DYNABERT_REQUIRE(j[b].is_array(), FormatError, file, ": ", what, "[", b, "] is not a list");
    DYNABERT_REQUIRE(!j[b].empty(), InputError, file, ": ", what, "[", b, "] is empty");
    DYNABERT_REQUIRE(static_cast<long>(j[b].size()) <= max_len, InputError, file, ": ", what, "[", b, "] has ", j[b].size(),
                     " tokens; the model takes at most ", max_len);
    total += static_cast<long>(j[b].size());
  }
  DYNABERT_REQUIRE(static_cast<long>(j.size()) * max_len <= max_tokens || total <= max_tokens, InputError, file, ": ", j.size(),
                   " sequences are more than one call takes");
  std::vector<std::vector<long>> rows;
  for (std::size_t b = 0; b < j.size(); ++b) {
    std::vector<long> r;
    for (std::size_t s = 0; s < j[b].size(); ++s)
      r.push_back(io::json_int(j[b][s], file, what + "[" + std::to_string(b) + "][" + std::to_string(s) + "]"));
    rows.push_back(std::move(r));
  }
  return rows;
}

/// The inputs file: ragged lists of ids (right-padded with pad_id, masked) or an object with
/// input_ids, token_type_ids, attention_mask. Sizes are checked against the model before the
/// padded batch is allocated.
Batch read_inputs(const std::string& file, int pad_id, int max_len) {
  const io::Json j = io::read_json_file(file);
  const io::Json null;
  const io::Json& ids_json = j.is_object() ? (j.find("input_ids") ? j.at("input_ids") : null) : j;
  constexpr long kMaxTokens = 1L << 22;
  auto ids = rows_of(ids_json, "input_ids", file, max_len, kMaxTokens);
  Batch b;
  b.B = static_cast<int>(ids.size());
  for (auto& r : ids) b.S = std::max<int>(b.S, static_cast<int>(r.size()));
  DYNABERT_REQUIRE(static_cast<long>(b.B) * b.S <= kMaxTokens, InputError, file, ": ", b.B, " x ", b.S,
                   " padded tokens are more than one call takes (", kMaxTokens, ")");
  b.ids.assign(static_cast<std::size_t>(b.B) * b.S, pad_id);
  b.types.assign(b.ids.size(), 0);
  b.mask.assign(b.ids.size(), 0);
  for (int i = 0; i < b.B; ++i)
    for (std::size_t s = 0; s < ids[i].size(); ++s) {
      b.ids[i * b.S + s] = static_cast<std::int32_t>(ids[i][s]);
      b.mask[i * b.S + s] = 1;
    }
  auto fill = [&](const char* key, std::vector<std::int32_t>& dst) {
    if (!j.is_object() || !j.contains(key)) return;
    auto rows = rows_of(j.at(key), key, file, max_len, kMaxTokens);
    DYNABERT_REQUIRE(rows.size() == ids.size(), InputError, file, ": ", key, " has ", rows.size(), " rows for ", ids.size(), " sequences");
    for (int i = 0; i < b.B; ++i) {
      DYNABERT_REQUIRE(rows[i].size() == ids[i].size(), InputError, file, ": ", key, "[", i, "] has ", rows[i].size(),
                       " entries for ", ids[i].size(), " tokens");
      for (std::size_t s = 0; s < rows[i].size(); ++s) dst[i * b.S + s] = static_cast<std::int32_t>(rows[i][s]);
    }
  };
  fill("token_type_ids", b.types);
  fill("attention_mask", b.mask);
  return b;
}

BertConfig preset(const std::string& name) {
  BertConfig c;
  if (name == "base") return c;
  if (name == "roberta-base") return BertConfig::roberta_base();
  if (name == "small") { c.hidden_size = 256; c.num_hidden_layers = 4; c.num_attention_heads = 4; c.intermediate_size = 1024; return c; }
  if (name == "tiny") { c.hidden_size = 128; c.num_hidden_layers = 2; c.num_attention_heads = 2; c.intermediate_size = 512; return c; }
  raise<InputError>("unknown preset '", name, "' (tiny, small, base, roberta-base)");
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Run a BERT checkpoint at any DynaBERT width and depth"};
  std::string model_dir, inputs_file, output_file, generate_dir, preset_name = "small", precision_name = "fp32";
  double width = 1.0, depth = 1.0;
  int threads = 1, repeat = 0, labels = 2;
  unsigned long seed = 1;
  bool grid = false;
  app.add_option("--model", model_dir, "checkpoint folder (config.json + model.safetensors)");
  app.add_option("--inputs", inputs_file, "JSON file of token-id sequences");
  app.add_option("--width", width, "width multiplier m_w in (0, 1]");
  app.add_option("--depth", depth, "depth multiplier m_d in (0, 1]");
  app.add_option("--threads", threads, "threads")->check(CLI::Range(1, Threads::kMaxThreads));
  app.add_option("--output", output_file, "write logits and hidden states to this .safetensors file");
  app.add_option("--precision", precision_name, "arithmetic of the encoder's linear layers: fp32, bf16 or int8")
      ->check(CLI::IsMember({"fp32", "bf16", "int8"}));
  app.add_flag("--grid", grid, "time all 12 DynaBERT cells (widths 1, .75, .5, .25 x depths 1, .75, .5)");
  app.add_option("--repeat", repeat, "time this many calls and print the median")->check(CLI::Range(0, 1000000));
  app.add_option("--generate", generate_dir, "write a randomly initialised checkpoint to this folder and exit");
  app.add_option("--preset", preset_name, "size of the generated model: tiny, small, base (BERT) or roberta-base");
  app.add_option("--labels", labels, "classifier outputs of the generated model (0: none)")->check(CLI::Range(0, BertConfig::kMaxLabels));
  app.add_option("--seed", seed, "seed of the generated model");
  CLI11_PARSE(app, argc, argv);

  try {
    if (!generate_dir.empty()) {
      BertWeights<float> w(preset(preset_name), HeadSpec{true, labels});
      w.init_random(seed);
      const io::OutputFolder target = io::plan_output_folder(generate_dir, "", /*force=*/false);
      std::filesystem::remove_all(target.tmp);
      w.save(target.tmp, {{"generator", "dynabert_run --generate"}});  // written whole, then put in place
      io::replace_folder(target);
      std::printf("wrote %s: %zu parameters (%s preset)\n", generate_dir.c_str(), w.num_parameters(), preset_name.c_str());
      return 0;
    }
    DYNABERT_REQUIRE(!model_dir.empty() && !inputs_file.empty(), InputError, "--model and --inputs are required");
    const auto t0 = std::chrono::steady_clock::now();
    Precision precision = Precision::kFp32;
    parse_precision(precision_name, precision);
    ElasticBert<float> model(BertWeights<float>::load(model_dir), {precision});
    const double load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    const auto& cfg = model.config();
    Batch batch = read_inputs(inputs_file, cfg.pad_token_id, cfg.max_tokens());
    Threads th(threads);
    auto ws = model.make_workspace({batch.B, batch.S, threads});
    Inputs in;
    in.input_ids = batch.ids.data();
    in.token_type_ids = batch.types.data();
    in.attention_mask = batch.mask.data();
    in.batch = batch.B;
    in.seq_len = batch.S;
    std::fprintf(stderr, "model: %d layers, hidden %d, %d heads, FFN %d, %d labels; loaded in %.0f ms; %s, %s, %d thread(s)\n",
                 cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size,
                 model.num_labels(), load_ms, to_string(precision), simd::arch_name(), threads);

    auto time_cell = [&](const SubNetwork& net, int reps) {
      std::vector<float> sink(static_cast<std::size_t>(batch.B) * std::max(1, model.num_labels()) * cfg.hidden_size);
      Outputs o;
      if (model.num_labels() > 0) o.logits = sink.data(); else o.pooled = sink.data();
      model.forward(in, net, o, ws, th);
      std::vector<double> ms;
      for (int r = 0; r < reps; ++r) {
        const auto a = std::chrono::steady_clock::now();
        model.forward(in, net, o, ws, th);
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
      }
      return median(ms);
    };

    if (grid) {
      std::printf("| width | depth | heads | FFN | layers | encoder params (M) | GFLOP performed | median ms | GFLOP/s |\n");
      std::printf("|---|---|---|---|---|---|---|---|---|\n");
      for (double wm : {1.0, 0.75, 0.5, 0.25})
        for (double dm : {1.0, 0.75, 0.5}) {
          auto net = SubNetwork::dynabert(cfg, wm, dm);
          net.precision = precision;
          const double ms = time_cell(net, std::max(repeat, 5));
          const double gf = net.encoder_flops(cfg, batch.S, true) * batch.B / 1e9;  // as performed: logits alone
          std::printf("| %.2f | %.2f | %d | %d | %d | %.1f | %.2f | %.2f | %.1f |\n", wm, dm, net.heads[0], net.neurons[0],
                      net.depth(), net.encoder_params(cfg) / 1e6, gf, ms, gf / ms * 1e3);
        }
      return 0;
    }

    auto net = SubNetwork::dynabert(cfg, width, depth);
    net.precision = precision;
    const int C = model.num_labels();
    std::vector<float> logits(static_cast<std::size_t>(batch.B) * std::max(C, 0));
    std::vector<float> pooled(static_cast<std::size_t>(batch.B) * cfg.hidden_size);
    std::vector<float> states;
    Outputs o;
    if (C > 0) o.logits = logits.data();
    else if (model.has_pooler()) o.pooled = pooled.data();
    if (!output_file.empty()) {
      states.resize(static_cast<std::size_t>(net.depth() + 1) * batch.B * batch.S * cfg.hidden_size);
      o.hidden_states = states.data();
    }
    model.forward(in, net, o, ws, th);
    std::printf("width %.4g (%d heads, %d FFN neurons), depth %.4g (layers", width, net.heads[0], net.neurons[0], depth);
    for (int l : net.layers) std::printf(" %d", l);
    std::printf(")\n");
    for (int b = 0; b < batch.B && C > 0; ++b) {
      std::printf("sequence %d logits:", b);
      for (int c = 0; c < C; ++c) std::printf(" %.6f", logits[b * C + c]);
      int best = static_cast<int>(std::max_element(logits.begin() + b * C, logits.begin() + (b + 1) * C) - logits.begin()) - b * C;
      std::printf("  -> %s\n", cfg.id2label.empty() ? std::to_string(best).c_str() : cfg.id2label[best].c_str());
    }
    if (C == 0 && model.has_pooler())
      for (int b = 0; b < batch.B; ++b) {
        const int shown = std::min(4, cfg.hidden_size);
        std::printf("sequence %d pooled[0..%d]:", b, shown - 1);
        for (int i = 0; i < shown; ++i) std::printf(" %.6f", pooled[static_cast<std::size_t>(b) * cfg.hidden_size + i]);
        std::printf("\n");
      }
    if (repeat > 0) std::printf("median of %d calls: %.3f ms\n", repeat, time_cell(net, repeat));
    if (!output_file.empty()) {
      io::SafetensorsWriter w;
      if (C > 0) w.add("logits", {batch.B, C}, logits.data());
      w.add("hidden_states", {net.depth() + 1, batch.B, batch.S, cfg.hidden_size}, states.data());
      w.add_metadata("width", std::to_string(width));
      w.add_metadata("depth", std::to_string(depth));
      w.add_metadata("precision", to_string(precision));
      w.write(output_file);
      std::printf("wrote %s\n", output_file.c_str());
    }
  } catch (const std::exception& e) {  // dynabert::Error with its message, or the system's (memory, ...)
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
