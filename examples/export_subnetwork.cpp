// dynabert_export: one sub-network of an elastic checkpoint as a small standalone checkpoint that
// Hugging Face's BertModel (and tools/torch_reference.py) loads as is.
//
//   dynabert_export --model DIR --width 0.5 --depth 0.5 --out SMALL_DIR
//   dynabert_export --model DIR --layers 0,2,5 --heads 8,4,4 --neurons 2048,1024,1024 --out SMALL_DIR
//
// The second form keeps the listed layers with per-layer head and neuron counts (one entry per
// listed layer). vocab.txt and tokenizer_config.json are copied when the source has them.
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
  app.add_option("--model", model_dir, "elastic checkpoint folder")->required();
  app.add_option("--out", out_dir, "folder to write")->required();
  app.add_option("--width", width, "width multiplier m_w in (0, 1]");
  app.add_option("--depth", depth, "depth multiplier m_d in (0, 1]");
  app.add_option("--layers", layers, "kept layers (original indices, increasing)")->delimiter(',');
  app.add_option("--heads", heads, "kept heads per listed layer")->delimiter(',');
  app.add_option("--neurons", neurons, "kept FFN neurons per listed layer")->delimiter(',');
  CLI11_PARSE(app, argc, argv);
  try {
    namespace fs = std::filesystem;
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
    small.save(out_dir, {{"dynabert_exported_from", fs::absolute(model_dir).string()}, {"dynabert_subnetwork", what}});
    for (const char* f : {"vocab.txt", "tokenizer_config.json"})
      if (fs::exists(fs::path(model_dir) / f))
        fs::copy_file(fs::path(model_dir) / f, fs::path(out_dir) / f, fs::copy_options::overwrite_existing);
    const auto src_bytes = fs::file_size(fs::path(model_dir) / "model.safetensors");
    const auto out_bytes = fs::file_size(fs::path(out_dir) / "model.safetensors");
    std::printf("exported %s: %d of %d layers, %zu of %zu parameters (%.1f %%), model.safetensors %.2f MB (source %.2f MB)\n",
                what.c_str(), net.depth(), cfg.num_hidden_layers, small.num_parameters(), w.num_parameters(),
                100.0 * small.num_parameters() / w.num_parameters(), out_bytes / 1e6, src_bytes / 1e6);
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
