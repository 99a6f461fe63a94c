// dynabert_export: one sub-network of an elastic checkpoint as a small standalone checkpoint that
// Hugging Face's BertModel (and tools/torch_reference.py) loads as is.
//
//   dynabert_export --model DIR --width 0.5 --depth 0.5 --out SMALL_DIR [--precision int8]
//   dynabert_export --model DIR --layers 0,2,5 --heads 8,4,4 --neurons 2048,1024,1024 --out SMALL_DIR
//
// The second form keeps the listed layers with per-layer head and neuron counts (one entry per
// listed layer). The tokenizer files (vocab.txt or vocab.json + merges.txt, tokenizer_config.json)
// are copied when the source has them. With
// --precision int8 the encoder layers' linear weights are written as int8 with per-row scales
// (docs/formats.md): a quarter of their FP32 size, served in INT8 without re-quantizing.
#include <cstdio>
#include <filesystem>

#include <CLI/CLI.hpp>

#include <dynabert/dynabert.hpp>
#include <dynabert/model/export.hpp>

using namespace dynabert;

int main(int argc, char** argv) {
  CLI::App app{"Export one DynaBERT sub-network as a standalone Hugging Face checkpoint"};
  std::string model_dir, out_dir;
  double width = 1.0, depth = 1.0;
  std::vector<int> layers, heads, neurons;
  std::string precision = "fp32";
  bool force = false;
  app.add_option("--model", model_dir, "elastic checkpoint folder")->required();
  app.add_option("--out", out_dir, "folder to write")->required();
  app.add_option("--width", width, "width multiplier m_w in (0, 1]");
  app.add_option("--depth", depth, "depth multiplier m_d in (0, 1]");
  app.add_option("--layers", layers, "kept layers (original indices, increasing)")->delimiter(',');
  app.add_option("--heads", heads, "kept heads per listed layer")->delimiter(',');
  app.add_option("--neurons", neurons, "kept FFN neurons per listed layer")->delimiter(',');
  app.add_option("--precision", precision, "weights of the encoder layers: fp32 (default) or int8")
      ->check(CLI::IsMember({"fp32", "int8"}));
  app.add_flag("--force", force, "replace an existing --out folder even when it does not hold a checkpoint");
  CLI11_PARSE(app, argc, argv);
  try {
    namespace fs = std::filesystem;
    // checked before anything is read or written: not overlapping the input, not a folder of other files
    const io::OutputFolder target = io::plan_output_folder(out_dir, model_dir, force);
    const auto w = BertWeights<float>::load(model_dir);
    const auto& cfg = w.config();
    SubNetwork net;
    std::string what;
    if (!layers.empty()) {
      DYNABERT_REQUIRE(heads.size() == layers.size() && neurons.size() == layers.size(), InputError, "--layers lists ",
                       layers.size(), " layers but --heads ", heads.size(), " and --neurons ", neurons.size(), " entries");
      auto full = SubNetwork::full(cfg);
      for (std::size_t i = 0; i < layers.size(); ++i) {
        DYNABERT_REQUIRE(layers[i] >= 0 && layers[i] < cfg.num_hidden_layers, InputError, "--layers names layer ", layers[i],
                         " of a ", cfg.num_hidden_layers, "-layer model");
        full.heads[layers[i]] = heads[i];
        full.neurons[layers[i]] = neurons[i];
      }
      net = SubNetwork::custom(cfg, layers, full.heads, full.neurons);
      what = "custom per-layer shape";
    } else {
      net = SubNetwork::dynabert(cfg, width, depth);
      what = "width " + std::to_string(width) + ", depth " + std::to_string(depth);
    }
    const auto small = extract_subnetwork(w, net);
    // written whole into a hidden temporary folder beside --out, then put in place: a folder named
    // --out is always complete, and the previous one is removed only once the new one is there
    const std::string& tmp = target.tmp;
    fs::remove_all(tmp);
    small.save(tmp, {{"dynabert_exported_from", fs::absolute(model_dir).string()}, {"dynabert_subnetwork", what}},
               precision == "int8");
    for (const char* f : {"vocab.txt", "vocab.json", "merges.txt", "tokenizer_config.json"})
      if (fs::exists(fs::path(model_dir) / f)) {
        std::error_code ec;
        fs::copy_file(fs::path(model_dir) / f, fs::path(tmp) / f, fs::copy_options::overwrite_existing, ec);
        DYNABERT_REQUIRE(!ec, IoError, (fs::path(tmp) / f).string(), ": cannot copy (", ec.message(), ")");
        io::sync_path((fs::path(tmp) / f).string());
      }
    io::replace_folder(target);
    const auto src_bytes = fs::file_size(fs::path(model_dir) / "model.safetensors");
    const auto out_bytes = fs::file_size(fs::path(target.final) / "model.safetensors");
    std::printf("exported %s (%s): %d of %d layers, %zu of %zu parameters (%.1f %%), model.safetensors %.2f MB (source %.2f MB)\n",
                what.c_str(), precision.c_str(), net.depth(), cfg.num_hidden_layers, small.num_parameters(), w.num_parameters(),
                100.0 * small.num_parameters() / w.num_parameters(), out_bytes / 1e6, src_bytes / 1e6);
  } catch (const std::exception& e) {  // dynabert::Error with its message, or the system's
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
