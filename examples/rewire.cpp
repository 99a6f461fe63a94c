// dynabert_rewire: DynaBERT's importance scoring and network rewiring (method doc section 3) on a
// fine-tuned checkpoint, without writing C++. Head importance is |d loss / d gate| of per-head
// gates on the attention probabilities, neuron importance |sum w dw| of the FFN weights, both
// accumulated over labelled data in evaluation mode; heads and neurons are then permuted, per
// layer, most important first, so that every narrower width keeps the most important ones. At
// full width the rewired model computes the same function.
//
//   dynabert_rewire --model DIR --data FILE --format sentiment|jsonl|tsv|spam --out DIR
//                   [--variant cumulative|paper] [--text-column text] [--label-column label]
//                   [--max-len 128] [--batch 8] [--threads 2] [--max-examples N]
//
// Writes DIR/config.json, DIR/model.safetensors (the rewired weights; metadata records the
// variant and the data), DIR/importance.safetensors (heads [L, NH], neurons [L, I], and the
// permutations applied) and copies the tokenizer files (vocab.txt, or vocab.json + merges.txt, and
// tokenizer_config.json).
#include <cstdio>
#include <filesystem>

#include <CLI/CLI.hpp>

#include <dynabert/text.hpp>
#include <dynabert/training.hpp>

using namespace dynabert;

int main(int argc, char** argv) {
  CLI::App app{"Score head and neuron importance on labelled data and write the rewired checkpoint"};
  std::string model_dir, data_file, format, out_dir, variant = "cumulative", text_col = "text", label_col = "label", vocab_dir;
  int max_len = 128, batch = 8, threads = 1;
  long max_examples = 0;
  bool force = false;
  app.add_option("--model", model_dir, "fine-tuned checkpoint folder (with a classification or regression head)")->required();
  app.add_option("--data", data_file, "labelled data: a file, or the SpamAssassin data folder for --format spam")->required();
  app.add_option("--format", format, "sentiment (JSON array of {text, class}), jsonl, tsv or spam")
      ->required()->check(CLI::IsMember({"sentiment", "jsonl", "tsv", "spam"}));
  app.add_option("--out", out_dir, "folder to write")->required();
  app.add_option("--variant", variant, "cumulative (the reference code) or paper (Algorithm 1)")
      ->check(CLI::IsMember({"cumulative", "paper"}));
  app.add_option("--text-column", text_col, "text field of jsonl / tsv");
  app.add_option("--label-column", label_col, "label field of jsonl / tsv");
  app.add_option("--vocab", vocab_dir, "folder with vocab.txt (default: the model folder)");
  app.add_option("--max-len", max_len, "tokens per example")->check(CLI::Range(3, 100000));
  app.add_option("--batch", batch)->check(CLI::Range(1, 4096));
  app.add_option("--threads", threads)->check(CLI::Range(1, 256));
  app.add_option("--max-examples", max_examples, "score on the first N examples only (0: all)")->check(CLI::NonNegativeNumber);
  app.add_flag("--force", force, "replace an existing --out folder even when it does not hold a checkpoint");
  CLI11_PARSE(app, argc, argv);
  try {
    namespace fs = std::filesystem;
    // checked before anything is read or written: not overlapping the input, not a folder of other files
    const io::OutputFolder target = io::plan_output_folder(out_dir, model_dir, force);
    auto weights = BertWeights<float>::load(model_dir);
    const int C = weights.heads().num_labels;
    DYNABERT_REQUIRE(C > 0, InputError, model_dir, ": importance needs a classification or regression head");
    const bool regression = C == 1;
    const auto tok = text::Tokenizer::from_folder(vocab_dir.empty() ? model_dir : vocab_dir);  // WordPiece or BPE
    std::vector<text::LabelledText> rows;
    if (format == "sentiment") rows = text::read_sentiment_json(data_file);
    else if (format == "jsonl") rows = text::read_jsonl(data_file, text_col, label_col, regression);
    else if (format == "tsv") rows = text::read_tsv(data_file, text_col, label_col, regression);
    else rows = text::read_spam_assassin(data_file);
    if (max_examples > 0 && static_cast<std::size_t>(max_examples) < rows.size()) rows.resize(static_cast<std::size_t>(max_examples));
    DYNABERT_REQUIRE(!rows.empty(), InputError, data_file, ": no labelled examples");
    for (std::size_t i = 0; i < rows.size(); ++i)
      DYNABERT_REQUIRE(regression || (rows[i].label >= 0 && rows[i].label < C), InputError, data_file, ": example ", i,
                       " has label ", rows[i].label, "; the model has ", C, " labels");
    const auto data = train::to_dataset(tok, rows, {}, max_len);

    train::TrainableBert<float> model(weights);
    model.set_threads(Threads(threads));
    importance::Scorer<float> scorer(model, variant == "paper" ? importance::Variant::kPaper : importance::Variant::kCumulative);
    const auto batches = train::epoch_batches(data, batch, 0, 0, false, false);
    std::size_t done = 0;
    for (const auto& idx : batches) {
      const auto b = train::make_batch(data, idx, 0, idx.size(), weights.config().pad_token_id);
      std::vector<float> targets(b.targets.begin(), b.targets.end());
      scorer.add_batch(b.inputs(), b.labels.data(), regression ? targets.data() : nullptr);
      done += idx.size();
      std::fprintf(stderr, "\rscoring: %zu / %zu examples", done, data.size());
    }
    std::fprintf(stderr, "\n");
    const auto scores = scorer.result();
    const auto perm = importance::rewire(weights, scores);

    // scores and permutations as safetensors
    const auto& cfg = weights.config();
    const int L = cfg.num_hidden_layers, NH = cfg.num_attention_heads, I = cfg.max_layer_intermediate();
    std::vector<float> heads(static_cast<std::size_t>(L) * NH, 0.0f), neurons(static_cast<std::size_t>(L) * I, 0.0f),
        head_perm(heads.size(), -1.0f), neuron_perm(neurons.size(), -1.0f);
    for (int l = 0; l < L; ++l) {
      for (std::size_t h = 0; h < scores.heads[l].size(); ++h) heads[l * NH + h] = static_cast<float>(scores.heads[l][h]);
      for (std::size_t j = 0; j < scores.neurons[l].size(); ++j) neurons[static_cast<std::size_t>(l) * I + j] = static_cast<float>(scores.neurons[l][j]);
      for (std::size_t h = 0; h < perm.heads[l].size(); ++h) head_perm[l * NH + h] = static_cast<float>(perm.heads[l][h]);
      for (std::size_t j = 0; j < perm.neurons[l].size(); ++j) neuron_perm[static_cast<std::size_t>(l) * I + j] = static_cast<float>(perm.neurons[l][j]);
    }
    const std::string& tmp = target.tmp;  // filled whole, then put in place of --out
    fs::remove_all(tmp);
    const std::map<std::string, std::string> meta = {{"dynabert_rewired", variant},
                                                     {"dynabert_importance_data", fs::absolute(data_file).string()},
                                                     {"dynabert_importance_examples", std::to_string(data.size())}};
    weights.save(tmp, meta);
    io::SafetensorsWriter w;
    w.add("heads", {L, NH}, heads.data());
    w.add("neurons", {L, I}, neurons.data());
    w.add("head_permutation", {L, NH}, head_perm.data());
    w.add("neuron_permutation", {L, I}, neuron_perm.data());
    for (auto& [k, v] : meta) w.add_metadata(k, v);
    w.add_metadata("description", "importance scores per layer (heads, neurons; -1 or 0 past a layer's size) and the "
                                  "permutations applied: new position -> original index");
    w.write((fs::path(tmp) / "importance.safetensors").string());
    for (const char* f : {"vocab.txt", "vocab.json", "merges.txt", "tokenizer_config.json"})
      if (fs::exists(fs::path(model_dir) / f)) {
        std::error_code ec;
        fs::copy_file(fs::path(model_dir) / f, fs::path(tmp) / f, fs::copy_options::overwrite_existing, ec);
        DYNABERT_REQUIRE(!ec, IoError, (fs::path(tmp) / f).string(), ": cannot copy (", ec.message(), ")");
        io::sync_path((fs::path(tmp) / f).string());
      }
    io::replace_folder(target);
    std::printf("scored %zu examples (%s variant); rewired %d layers; wrote %s\n", data.size(), variant.c_str(), L, target.final.c_str());
    for (int l = 0; l < L; ++l) {
      std::printf("layer %d heads, most important first:", l);
      for (int h : perm.heads[l]) std::printf(" %d", h);
      std::printf("\n");
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
