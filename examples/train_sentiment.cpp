// dynabert_train_sentiment: the whole DynaBERT method on real text, end to end.
//   1. the UCI sentiment sentences (scripts/fetch-data.sh vocab sentiment), seeded 80/10/10 split,
//      bert-base-uncased WordPiece;
//   2. a small BERT trained from scratch as the teacher (plain fine-tuning);
//   3. head and neuron importance on the dev split, rewiring;
//   4. DynaBERT stage 1 (widths) and stage 2 (widths x depths), teacher = the previous model;
//   5. every (width, depth) cell evaluated on the test split (accuracy, macro-F1) and timed with the
//      inference engine (batch 1, median), next to three ablations on the same data and budget:
//      the same cells taken from the teacher without DynaBERT training, DynaBERT without rewiring,
//      and a model of exactly the cell's size trained directly (--no-ablations skips the last two);
// Every option can also come from a config file (--config run.toml, "key = value" lines), and
// --init starts the teacher from a Hugging Face checkpoint instead of random weights.
//   6. outputs in --out: the elastic checkpoint (Hugging Face layout; metadata holds the trained
//      widths/depths and the measured grid), results.md, results.csv; tools/plot_grid.py draws the
//      accuracy-latency plot from results.csv.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <CLI/CLI.hpp>

#include <dynabert/dynabert.hpp>

using namespace dynabert;

namespace {

/// One-line progress with loss, rate and ETA.
void progress(const char* phase, const train::Progress& p) {
  if (p.step % 10 != 0 && p.step != p.total_steps) return;
  std::fprintf(stderr, "\r%-14s step %5ld/%-5ld loss %8.4f  %6.1f ex/s  ETA %5.0f s   ", phase, p.step, p.total_steps, p.loss,
               p.examples_per_second, p.eta_seconds);
  if (p.step == p.total_steps) std::fprintf(stderr, "\n");
}

double median_latency_ms(const ElasticBert<float>& m, const SubNetwork& net, const train::Dataset& test, int reps) {
  auto ws = m.make_workspace({1, 128, 1});
  std::vector<double> t;
  float logits[8];
  Outputs o;
  o.logits = logits;
  for (int r = 0; r < reps; ++r) {
    const auto& e = test[static_cast<std::size_t>(r) % test.size()];
    Inputs in;
    in.input_ids = e.ids.data();
    in.token_type_ids = e.types.data();
    in.batch = 1;
    in.seq_len = static_cast<int>(e.ids.size());
    const auto a = std::chrono::steady_clock::now();
    m.forward(in, net, o, ws);
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"DynaBERT end to end on the UCI sentiment sentences"};
  std::string data = ".data", out = "out/sentiment", init_dir;
  int layers = 4, hidden = 128, heads = 4, ffn = 512, batch = 32, max_len = 64, threads = 2;
  int teacher_epochs = 6, stage1_epochs = 3, stage2_epochs = 3;
  double lr = 1e-3, distill_lr = 5e-4;
  std::uint64_t seed = 42;
  bool ablations = true;
  app.add_option("--data", data, "folder filled by scripts/fetch-data.sh");
  app.add_option("--out", out, "output folder");
  app.add_option("--layers", layers);
  app.add_option("--hidden", hidden);
  app.add_option("--heads", heads);
  app.add_option("--ffn", ffn);
  app.add_option("--batch", batch);
  app.add_option("--max-len", max_len);
  app.add_option("--threads", threads);
  app.add_option("--teacher-epochs", teacher_epochs);
  app.add_option("--stage1-epochs", stage1_epochs);
  app.add_option("--stage2-epochs", stage2_epochs);
  app.add_option("--lr", lr, "teacher learning rate");
  app.add_option("--distill-lr", distill_lr, "learning rate of stages 1 and 2");
  app.add_option("--seed", seed);
  app.add_flag("!--no-ablations", ablations, "skip the no-rewiring and trained-directly ablations");
  app.add_option("--init", init_dir, "start the teacher from this Hugging Face checkpoint folder instead of random weights");
  app.set_config("--config", "", "read any of these options from a TOML/INI file (key = value)");
  CLI11_PARSE(app, argc, argv);
  try {
    namespace fs = std::filesystem;
    const auto t0 = std::chrono::steady_clock::now();
    // 1. data
    const auto tok = text::BertTokenizer::from_folder(data + "/vocab");
    std::vector<text::LabelledText> all;
    for (const char* f : {"amazon", "imdb", "yelp"}) {
      auto part = text::read_sentiment_json(data + "/sentiment/package/test/fixtures/" + f + ".json");
      all.insert(all.end(), part.begin(), part.end());
    }
    const auto sp = text::split(all.size(), 0.8, 0.1, seed);
    const auto train_set = text::to_dataset(tok, all, sp.train, max_len);
    const auto dev_set = text::to_dataset(tok, all, sp.dev, max_len);
    const auto test_set = text::to_dataset(tok, all, sp.test, max_len);
    std::fprintf(stderr, "data: %zu train, %zu dev, %zu test sentences\n", train_set.size(), dev_set.size(), test_set.size());

    // 2. teacher
    BertConfig cfg;
    cfg.vocab_size = tok.vocab().size();
    cfg.hidden_size = hidden; cfg.num_hidden_layers = layers; cfg.num_attention_heads = heads;
    cfg.intermediate_size = ffn; cfg.max_position_embeddings = std::max(128, max_len);
    cfg.id2label = {"negative", "positive"};
    BertWeights<float> init(cfg, HeadSpec{true, 2});
    init.init_random(seed);
    if (!init_dir.empty()) {  // a Hugging Face checkpoint: its architecture, a fresh 2-label head if needed
      const auto ckpt = BertWeights<float>::load(init_dir);
      DYNABERT_REQUIRE(ckpt.config().vocab_size == tok.vocab().size(), FormatError, init_dir, ": vocabulary of ",
                       ckpt.config().vocab_size, " tokens, the tokenizer has ", tok.vocab().size());
      cfg = ckpt.config();
      cfg.id2label = {"negative", "positive"};
      init = BertWeights<float>(cfg, HeadSpec{true, 2});
      init.init_random(seed);
      std::size_t copied = 0;
      for (const auto& spec : ckpt.specs())
        if (init.has(spec.name) && init.spec(spec.name).shape == spec.shape && spec.name.rfind("classifier.", 0) != 0) {
          std::copy_n(ckpt.tensor(spec.name), spec.numel(), init.tensor(spec.name));
          ++copied;
        }
      std::fprintf(stderr, "init: %zu tensors from %s (%d layers, hidden %d)\n", copied, init_dir.c_str(),
                   cfg.num_hidden_layers, cfg.hidden_size);
    }
    train::TrainableBert<float> teacher(init);
    teacher.set_threads(Threads(threads));
    train::TrainerConfig tc;
    tc.phase = train::Phase::kFineTune; tc.epochs = teacher_epochs; tc.batch_size = batch; tc.adam.lr = lr;
    tc.warmup_ratio = 0.1; tc.seed = seed;
    train::Trainer<float> ft(teacher, nullptr, tc);
    ft.on_progress = [](const train::Progress& p) { progress("teacher", p); };
    ft.fit(train_set);
    const double teacher_acc = ft.evaluate(test_set, {{1.0, 1.0}})[0].metrics.accuracy;
    std::fprintf(stderr, "teacher test accuracy %.4f\n", teacher_acc);

    // 3. importance on dev + rewiring
    train::TrainableBert<float> scoring(teacher.params());
    importance::Scorer<float> scorer(scoring);
    for (const auto& idx : train::epoch_batches(dev_set, 8, 0, 0, false, false)) {
      const auto b = train::make_batch(dev_set, idx, 0, idx.size());
      scorer.add_batch(b.inputs(), b.labels.data());
    }
    auto rewired = teacher.params();
    importance::rewire(rewired, scorer.result());

    // 4. stage 1 and stage 2 (a function: the no-rewiring ablation runs it too)
    train::TrainerConfig s1 = tc;
    s1.phase = train::Phase::kWidth; s1.epochs = stage1_epochs; s1.adam.lr = distill_lr; s1.warmup_ratio = 0.0;
    train::TrainerConfig s2 = s1;
    s2.phase = train::Phase::kWidthDepth; s2.epochs = stage2_epochs;
    auto dynabert_stages = [&](train::TrainableBert<float>& student, const char* tag) {
      student.set_threads(Threads(threads));
      train::Trainer<float> st1(student, &teacher, s1);
      const std::string p1 = std::string(tag) + "stage 1", p2 = std::string(tag) + "stage 2";
      st1.on_progress = [&](const train::Progress& p) { progress(p1.c_str(), p); };
      st1.fit(train_set);
      train::TrainableBert<float> stage1_model(student.params());
      train::Trainer<float> st2(student, &stage1_model, s2);
      st2.on_progress = [&](const train::Progress& p) { progress(p2.c_str(), p); };
      st2.fit(train_set);
      return st2.evaluate(test_set, st2.cells());
    };
    train::TrainableBert<float> student(rewired);
    const auto dyn = dynabert_stages(student, "");
    std::vector<train::Cell> cells;
    for (auto& m : dyn) cells.push_back(m.cell);

    // 5. evaluation of every cell and the ablations
    const auto base = ft.evaluate(test_set, cells);
    std::vector<double> no_rewire(cells.size(), NAN), direct(cells.size(), NAN);
    if (ablations) {
      train::TrainableBert<float> plain(teacher.params());  // DynaBERT without rewiring
      const auto nr = dynabert_stages(plain, "no-rewire ");
      for (std::size_t i = 0; i < cells.size(); ++i) no_rewire[i] = nr[i].metrics.accuracy;
      for (std::size_t i = 0; i < cells.size(); ++i) {  // the cell's size, trained directly
        const auto net = SubNetwork::dynabert(cfg, cells[i].width, cells[i].depth);
        BertConfig sc = cfg;
        sc.num_hidden_layers = net.depth();
        sc.num_attention_heads = net.heads[0];
        sc.hidden_size = cfg.hidden_size;  // DynaBERT keeps the hidden size; so does this model
        sc.intermediate_size = net.neurons[0];
        // heads keep their size (hidden / heads of the full model): express it through pruned heads
        sc.num_attention_heads = cfg.num_attention_heads;
        for (int l = 0; l < sc.num_hidden_layers; ++l)
          for (int h = net.heads[0]; h < cfg.num_attention_heads; ++h) sc.pruned_heads[l].push_back(h);
        if (net.heads[0] == cfg.num_attention_heads) sc.pruned_heads.clear();
        BertWeights<float> w(sc, HeadSpec{true, 2});
        w.init_random(seed + 1 + i);
        train::TrainableBert<float> small(w);
        small.set_threads(Threads(threads));
        train::Trainer<float> t(small, nullptr, tc);
        char tag[64];
        std::snprintf(tag, sizeof tag, "direct %.2f/%.2f", cells[i].width, cells[i].depth);
        t.on_progress = [&](const train::Progress& p) { progress(tag, p); };
        t.fit(train_set);
        direct[i] = t.evaluate(test_set, {{1.0, 1.0}})[0].metrics.accuracy;
      }
    }
    const ElasticBert<float> engine(student.params());
    fs::create_directories(out);
    std::ostringstream md, csv;
    md << "| width | depth | encoder params (M) | GFLOP (seq 32) | latency ms (batch 1) | accuracy | macro-F1 |"
          " teacher's cell, no DynaBERT | DynaBERT without rewiring | same size trained directly |\n"
       << "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    csv << "width,depth,params_m,gflop_seq32,latency_ms,accuracy,macro_f1,baseline_accuracy,no_rewiring_accuracy,direct_accuracy\n";
    nlohmann::json grid = nlohmann::json::array();
    double mean_dyn = 0, mean_base = 0, mean_nr = 0, mean_direct = 0;
    for (std::size_t i = 0; i < cells.size(); ++i) {
      const auto net = SubNetwork::dynabert(cfg, cells[i].width, cells[i].depth);
      const double ms = median_latency_ms(engine, net, test_set, 101);
      const double params = net.encoder_params(cfg) / 1e6, gf = net.encoder_flops(cfg, 32) / 1e9;
      char line[320];
      std::snprintf(line, sizeof line, "| %.2f | %.2f | %.2f | %.3f | %.3f | %.4f | %.4f | %.4f | %.4f | %.4f |\n", cells[i].width,
                    cells[i].depth, params, gf, ms, dyn[i].metrics.accuracy, dyn[i].metrics.macro_f1, base[i].metrics.accuracy,
                    no_rewire[i], direct[i]);
      md << line;
      std::snprintf(line, sizeof line, "%g,%g,%.4f,%.5f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f\n", cells[i].width, cells[i].depth, params,
                    gf, ms, dyn[i].metrics.accuracy, dyn[i].metrics.macro_f1, base[i].metrics.accuracy, no_rewire[i], direct[i]);
      csv << line;
      mean_nr += no_rewire[i] / cells.size();
      mean_direct += direct[i] / cells.size();
      grid.push_back({{"width", cells[i].width}, {"depth", cells[i].depth}, {"accuracy", dyn[i].metrics.accuracy},
                      {"macro_f1", dyn[i].metrics.macro_f1}, {"latency_ms", ms}});
      mean_dyn += dyn[i].metrics.accuracy / cells.size();
      mean_base += base[i].metrics.accuracy / cells.size();
    }
    // 6. outputs
    student.params().save(out + "/checkpoint", {{"dynabert_widths", "[1.0, 0.75, 0.5, 0.25]"},
                                                {"dynabert_depths", "[1.0, 0.75, 0.5]"},
                                                {"dynabert_grid", grid.dump()}});
    std::filesystem::copy_file(data + "/vocab/vocab.txt", out + "/checkpoint/vocab.txt", fs::copy_options::overwrite_existing);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::ostringstream summary;
    summary << "Teacher (full size) test accuracy " << teacher_acc << "; DynaBERT full-size cell " << dyn[0].metrics.accuracy
            << "; mean over the 12 cells: DynaBERT " << mean_dyn << ", teacher's sub-networks without DynaBERT " << mean_base
            << ", DynaBERT without rewiring " << mean_nr << ", same size trained directly " << mean_direct << ". " << train_set.size() << " training sentences, " << secs << " s on " << threads << " thread(s).\n";
    io::write_atomically(out + "/results.md", [&](std::ofstream& f) { f << md.str() << "\n" << summary.str(); });
    io::write_atomically(out + "/results.csv", [&](std::ofstream& f) { f << csv.str(); });
    std::printf("%s\n%s", md.str().c_str(), summary.str().c_str());
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
