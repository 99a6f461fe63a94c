// dynabert_train: the whole DynaBERT method on real text, end to end, resumable after a kill.
//   0. optional MLM pretraining of the small BERT (--pretrain-steps) on the Brown corpus and the
//      mail bodies of the SpamAssassin training split (15 % masking, 80/10/10), or --init from a
//      Hugging Face checkpoint instead;
//   1. the task (--task sentiment: the UCI sentences; --task spam: the SpamAssassin mails, cleaned
//      by text/mail.hpp, de-duplicated), seeded 80/10/10 split, bert-base-uncased WordPiece, or with
//      --arch roberta a RoBERTa (positions from 2, one token type, LayerNorm eps 1e-5, RoBERTa's
//      classification and LM heads, 6 % warmup in every phase) on GPT-2's byte-level BPE;
//   2. the teacher fine-tuned at full size;
//   3. head and neuron importance on the dev split, rewiring;
//   4. DynaBERT stage 1 (widths) and stage 2 (widths x depths), optional final fine-tuning;
//   5. every (width, depth) cell evaluated on the test split (accuracy, macro-F1) and timed with the
//      inference engine (batch 1, median), next to three ablations on the same data and budget:
//      the same cells taken from the teacher without DynaBERT training, DynaBERT without rewiring,
//      and a model of exactly the cell's size trained directly (--no-ablations skips the last two);
//   6. outputs in --out: the elastic checkpoint (Hugging Face layout; metadata holds the trained
//      widths/depths and the measured grid), results.md, results.csv; tools/plot_grid.py draws the
//      accuracy-latency plot from results.csv.
// Every training phase checkpoints into --out/state/<phase> every --checkpoint-every steps; run the
// same command again after a kill and it continues where it stopped (finished phases are loaded,
// not rerun). Every option can also come from a config file (--config run.toml, "key = value").
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

/// Runs `t` on `data` with checkpoints in `dir`: a finished phase is loaded instead of rerun, an
/// interrupted one continues from its last checkpoint.
void run_phase(train::Trainer<float>& t, const train::Dataset& data, const std::string& dir, long every,
               const std::string& label) {
  namespace fs = std::filesystem;
  if (fs::exists(dir + "/latest")) {
    t.load_checkpoint(dir);
    if (fs::exists(dir + "/done")) {
      std::fprintf(stderr, "%-14s finished earlier: loaded %s\n", label.c_str(), dir.c_str());
      return;
    }
    std::fprintf(stderr, "%-14s resuming at step %ld from %s\n", label.c_str(), t.step(), dir.c_str());
  }
  t.on_progress = [&](const train::Progress& p) {
    progress(label.c_str(), p);
    if (every > 0 && p.step % every == 0 && p.step != p.total_steps) t.save_checkpoint(dir);
  };
  t.fit(data);
  t.save_checkpoint(dir);
  io::write_atomically(dir + "/done", [&](std::ofstream& f) { f << t.step() << "\n"; });
}

/// Copies every tensor of `src` whose name and shape exist in `dst` (the classifier excepted).
std::size_t copy_matching(const BertWeights<float>& src, BertWeights<float>& dst) {
  std::size_t copied = 0;
  for (const auto& spec : src.specs())
    if (dst.has(spec.name) && dst.spec(spec.name).shape == spec.shape && spec.name.rfind("classifier.", 0) != 0) {
      std::copy_n(src.tensor(spec.name), spec.numel(), dst.tensor(spec.name));
      ++copied;
    }
  return copied;
}

/// Accuracy and macro-F1 of the serving engine at `net` (any precision it holds) on a labelled
/// set, in batches of 32 (padded, tokens packed).
train::Metrics engine_metrics(const ElasticBert<float>& m, const SubNetwork& net, const train::Dataset& test, int classes,
                              const Threads& threads) {
  int S = 1;
  for (auto& e : test) S = std::max(S, static_cast<int>(e.ids.size()));
  const int B = 32;
  auto ws = m.make_workspace({B, S, threads.count()});
  std::vector<int> pred, gold;
  std::vector<float> logits(static_cast<std::size_t>(B) * classes);
  for (std::size_t i0 = 0; i0 < test.size(); i0 += B) {
    const int b = static_cast<int>(std::min<std::size_t>(B, test.size() - i0));
    std::vector<std::int32_t> ids(static_cast<std::size_t>(b) * S, 0), types(ids.size(), 0), lengths(b);
    for (int j = 0; j < b; ++j) {
      const auto& e = test[i0 + j];
      std::copy(e.ids.begin(), e.ids.end(), ids.begin() + static_cast<long>(j) * S);
      if (!e.types.empty()) std::copy(e.types.begin(), e.types.end(), types.begin() + static_cast<long>(j) * S);
      lengths[j] = static_cast<std::int32_t>(e.ids.size());
      gold.push_back(e.label);
    }
    Inputs in;
    in.input_ids = ids.data(); in.token_type_ids = types.data(); in.lengths = lengths.data(); in.batch = b; in.seq_len = S;
    Outputs o;
    o.logits = logits.data();
    m.forward(in, net, o, ws, threads);
    for (int j = 0; j < b; ++j)
      pred.push_back(static_cast<int>(std::max_element(logits.begin() + j * classes, logits.begin() + (j + 1) * classes) -
                                      (logits.begin() + j * classes)));
  }
  return train::classification_metrics(pred, gold, classes);
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
  CLI::App app{"DynaBERT end to end on real text: pretraining, teacher, importance, rewiring, stages 1 and 2, the grid"};
  std::string data = ".data", out, init_dir, task = "sentiment", pretrain_corpus = "brown,mail", arch = "bert";
  int layers = 4, hidden = 128, heads = 4, ffn = 512, batch = 32, max_len = 0, threads = 2;
  int teacher_epochs = 6, stage1_epochs = 3, stage2_epochs = 3, final_epochs = 0, pretrain_batch = 32, pretrain_len = 128;
  long pretrain_steps = 0, checkpoint_every = 100;
  double lr = 1e-3, distill_lr = 5e-4, pretrain_lr = 1e-3;
  std::uint64_t seed = 42;
  bool ablations = true, fresh = false, deterministic = false;
  // a learning rate: finite and positive
  const CLI::Validator rate([](std::string& v) {
    try {
      const double x = std::stod(v);
      if (std::isfinite(x) && x > 0) return std::string();
    } catch (...) {}
    return "must be a finite positive number, got " + v;
  }, "RATE");
  app.add_option("--task", task, "sentiment (UCI sentences) or spam (SpamAssassin mails)")->check(CLI::IsMember({"sentiment", "spam"}));
  app.add_option("--arch", arch, "bert (WordPiece) or roberta (byte-level BPE, RoBERTa's embeddings and heads)")
      ->check(CLI::IsMember({"bert", "roberta"}));
  app.add_option("--data", data, "folder filled by scripts/fetch-data.sh");
  app.add_option("--out", out, "output folder (its state/ subfolder holds the resumable checkpoints)")->required();
  app.add_option("--layers", layers)->check(CLI::Range(1, 48));
  app.add_option("--hidden", hidden)->check(CLI::Range(1, 8192));
  app.add_option("--heads", heads)->check(CLI::Range(1, 256));
  app.add_option("--ffn", ffn)->check(CLI::Range(1, 65536));
  app.add_option("--batch", batch)->check(CLI::Range(1, 65536));
  app.add_option("--max-len", max_len, "tokens per example (default: 64 for sentiment, 128 for spam)")->check(CLI::Range(0, 4096));
  app.add_option("--threads", threads)->check(CLI::Range(1, 256));
  app.add_option("--pretrain-steps", pretrain_steps, "MLM pretraining steps before the teacher (0: none)");
  app.add_option("--pretrain-corpus", pretrain_corpus, "comma-separated: brown, mail (the spam training split's mails)");
  app.add_option("--pretrain-lr", pretrain_lr)->check(rate);
  app.add_option("--pretrain-batch", pretrain_batch)->check(CLI::Range(1, 65536));
  app.add_option("--pretrain-max-len", pretrain_len)->check(CLI::Range(3, 4096));
  app.add_option("--teacher-epochs", teacher_epochs)->check(CLI::Range(1, 100000));
  app.add_option("--stage1-epochs", stage1_epochs)->check(CLI::Range(1, 100000));
  app.add_option("--stage2-epochs", stage2_epochs)->check(CLI::Range(1, 100000));
  app.add_option("--final-epochs", final_epochs, "final fine-tuning of every cell on the task loss (0: none)")->check(CLI::Range(0, 100000));
  app.add_option("--lr", lr, "teacher learning rate")->check(rate);
  app.add_option("--distill-lr", distill_lr, "learning rate of stages 1 and 2 (and the final fine-tuning)")->check(rate);
  app.add_option("--seed", seed);
  app.add_option("--checkpoint-every", checkpoint_every, "steps between resumable checkpoints (0: phase ends only)")
      ->check(CLI::Range(0L, 1L << 40));
  app.add_flag("--deterministic", deterministic,
               "measure no latency: results and checkpoints are then the same bytes for the same options");
  app.add_flag("--fresh", fresh, "discard the checkpoints of an earlier run in --out/state");
  app.add_flag("!--no-ablations", ablations, "skip the no-rewiring and trained-directly ablations");
  app.add_option("--init", init_dir, "start the teacher from this Hugging Face checkpoint folder instead of random weights");
  app.set_config("--config", "", "read any of these options from a TOML/INI file (key = value)");
  app.allow_config_extras(CLI::config_extras_mode::error);  // a misspelt key is an error, not ignored
  for (int i = 1; i < argc; ++i) {  // a --config that is not text is refused before CLI11 reads it
    const std::string arg = argv[i];
    std::string file;
    if (arg == "--config" && i + 1 < argc) file = argv[i + 1];
    else if (arg.rfind("--config=", 0) == 0) file = arg.substr(9);
    if (!file.empty()) {
      std::ifstream f(file, std::ios::binary);
      std::string head(4096, '\0');
      f.read(head.data(), static_cast<std::streamsize>(head.size()));
      head.resize(static_cast<std::size_t>(f.gcount()));
      if (!f.bad() && head.find('\0') != std::string::npos) {
        std::fprintf(stderr, "error: --config %s is not a text file\n", file.c_str());
        return 2;
      }
    }
  }
  CLI11_PARSE(app, argc, argv);
  if (max_len <= 0) max_len = task == "spam" ? 128 : 64;
  try {
    namespace fs = std::filesystem;
    const auto t0 = std::chrono::steady_clock::now();
    const std::string state = out + "/state";
    if (fresh) fs::remove_all(state);
    if (fs::exists(state + "/run.txt")) std::fprintf(stderr, "resuming the run in %s (--fresh starts over)\n", out.c_str());
    io::create_folders(state);
    {  // checkpoints are only reused by the same run: everything that changes the weights must match
      std::ostringstream fp;
      fp << "task=" << task << (arch == "bert" ? "" : " arch=" + arch) << " data=" << fs::absolute(data).string() << " init=" << init_dir << " layers=" << layers
         << " hidden=" << hidden << " heads=" << heads << " ffn=" << ffn << " batch=" << batch << " max_len=" << max_len
         << " pretrain=" << pretrain_steps << "/" << pretrain_corpus << "/" << pretrain_lr << "/" << pretrain_batch << "/"
         << pretrain_len << " epochs=" << teacher_epochs << "/" << stage1_epochs << "/" << stage2_epochs << "/" << final_epochs
         << " lr=" << lr << "/" << distill_lr << " seed=" << seed << "\n";
      const std::string run_file = state + "/run.txt";
      if (fs::exists(run_file)) {
        std::ifstream f(run_file);
        std::stringstream old;
        old << f.rdbuf();
        DYNABERT_REQUIRE(old.str() == fp.str(), InputError, state, " holds checkpoints of another configuration (",
                         old.str().substr(0, old.str().size() - 1), "); pass --fresh to discard them or choose another --out");
      } else {
        io::write_atomically(run_file, [&](std::ofstream& f) { f << fp.str(); });
      }
    }
    // 1. data
    const bool roberta = arch == "roberta";
    // WordPiece (bert-base-uncased) or GPT-2's byte-level BPE as a RoBERTa vocabulary (fetch-data.sh bpe)
    const std::string tok_dir = roberta ? data + "/roberta-bpe" : data + "/vocab";
    const auto tok = text::Tokenizer::from_folder(tok_dir);
    std::vector<text::LabelledText> all, mails;
    auto load_mails = [&] {
      text::SpamAssassinStats st;
      mails = text::read_spam_assassin(data + "/spam/package/data", &st);
      std::fprintf(stderr, "spam: %zu mails (%zu ham, %zu spam) after dropping %zu duplicates and %zu without text; %zu files were not UTF-8\n",
                   mails.size(), st.ham, st.spam, st.duplicates, st.empty, st.not_utf8);
    };
    if (task == "spam") {
      load_mails();
      all = mails;
    } else {
      for (const char* f : {"amazon", "imdb", "yelp"}) {
        auto part = text::read_sentiment_json(data + "/sentiment/package/test/fixtures/" + f + ".json");
        all.insert(all.end(), part.begin(), part.end());
      }
    }
    const auto sp = text::split(all.size(), 0.8, 0.1, seed);
    const auto train_set = train::to_dataset(tok, all, sp.train, max_len);
    const auto dev_set = train::to_dataset(tok, all, sp.dev, max_len);
    const auto test_set = train::to_dataset(tok, all, sp.test, max_len);
    std::fprintf(stderr, "%s: %zu train, %zu dev, %zu test examples (max %d tokens)\n", task.c_str(), train_set.size(),
                 dev_set.size(), test_set.size(), max_len);

    // 2. the starting weights: random, a Hugging Face checkpoint, or MLM pretraining
    const std::vector<std::string> labels = task == "spam" ? std::vector<std::string>{"ham", "spam"}
                                                           : std::vector<std::string>{"negative", "positive"};
    BertConfig cfg;
    if (roberta) {  // RoBERTa's embeddings: positions from pad_token_id + 1, one token type
      cfg.model_type = ModelType::kRoberta;
      cfg.type_vocab_size = 1;
      cfg.pad_token_id = tok.pad_id();
      cfg.layer_norm_eps = 1e-5;
    }
    cfg.vocab_size = tok.vocab_size();
    cfg.hidden_size = hidden; cfg.num_hidden_layers = layers; cfg.num_attention_heads = heads;
    cfg.intermediate_size = ffn;
    cfg.max_position_embeddings = std::max({128, max_len, pretrain_len}) + cfg.position_offset();
    cfg.id2label = labels;
    BertWeights<float> init(cfg, HeadSpec{true, 2});
    init.init_random(seed);
    std::string pretrain_note = "none (random initialisation)";
    if (!init_dir.empty()) {  // a Hugging Face checkpoint: its architecture, a fresh 2-label head
      const auto ckpt = BertWeights<float>::load(init_dir);
      DYNABERT_REQUIRE((ckpt.config().model_type == ModelType::kRoberta) == roberta, FormatError, init_dir, ": a ",
                       ckpt.config().names().type, " checkpoint, but --arch is ", arch);
      DYNABERT_REQUIRE(ckpt.config().vocab_size == tok.vocab_size(), FormatError, init_dir, ": vocabulary of ",
                       ckpt.config().vocab_size, " tokens, the tokenizer has ", tok.vocab_size());
      cfg = ckpt.config();
      cfg.id2label = labels;
      init = BertWeights<float>(cfg, HeadSpec{true, 2});
      init.init_random(seed);
      const std::size_t copied = copy_matching(ckpt, init);
      std::fprintf(stderr, "init: %zu tensors from %s (%d layers, hidden %d)\n", copied, init_dir.c_str(),
                   cfg.num_hidden_layers, cfg.hidden_size);
      pretrain_note = "loaded from " + init_dir;
    } else if (pretrain_steps > 0) {
      std::vector<std::string> corpus;
      std::size_t n_brown = 0, n_mail = 0;
      if (pretrain_corpus.find("brown") != std::string::npos) {
        corpus = text::read_brown_sentences(data + "/brown/package");
        n_brown = corpus.size();
      }
      if (pretrain_corpus.find("mail") != std::string::npos) {  // the spam task's training split only
        if (mails.empty()) load_mails();
        const auto msp = text::split(mails.size(), 0.8, 0.1, seed);
        for (auto i : msp.train) corpus.push_back(mails[i].text);
        n_mail = msp.train.size();
      }
      DYNABERT_REQUIRE(!corpus.empty(), InputError, "--pretrain-corpus '", pretrain_corpus, "' names no corpus (brown, mail)");
      const auto mlm_set = train::to_mlm_dataset(tok, corpus, pretrain_len);
      std::fprintf(stderr, "pretraining corpus: %zu Brown sentences, %zu mails -> %zu sequences\n", n_brown, n_mail, mlm_set.size());
      BertWeights<float> mw(cfg, HeadSpec{true, 0, true});
      mw.init_random(seed);
      train::TrainableBert<float> mlm_model(std::move(mw));
      mlm_model.set_threads(Threads(threads));
      train::TrainerConfig pc;
      pc.phase = train::Phase::kPretrainMlm; pc.batch_size = pretrain_batch; pc.adam.lr = pretrain_lr;
      pc.warmup_ratio = 0.06; pc.seed = seed; pc.max_total_steps = pretrain_steps;
      pc.epochs = static_cast<int>(pretrain_steps * pretrain_batch / std::max<std::size_t>(mlm_set.size(), 1) + 1);
      pc.mlm.mask_id = tok.mask_id();
      pc.mlm.special_ids = tok.special_ids();
      train::Trainer<float> pt(mlm_model, nullptr, pc);
      const train::Dataset probe(mlm_set.begin(), mlm_set.begin() + std::min<std::size_t>(mlm_set.size(), 512));
      run_phase(pt, mlm_set, state + "/pretrain", checkpoint_every, "MLM pretrain");
      const auto [loss, acc] = pt.evaluate_mlm(probe, seed);
      std::fprintf(stderr, "MLM after %ld steps: masked-token loss %.3f, accuracy %.3f (first 512 sequences)\n", pt.step(),
                   loss, acc);
      copy_matching(mlm_model.params(), init);
      char note[256];
      std::snprintf(note, sizeof note, "MLM, %ld steps of %d sequences (%zu Brown sentences + %zu mails); masked-token accuracy %.3f",
                    pt.step(), pretrain_batch, n_brown, n_mail, acc);
      pretrain_note = note;
    }

    // 3. teacher
    train::TrainableBert<float> teacher(init);
    teacher.set_threads(Threads(threads));
    train::TrainerConfig tc;
    tc.phase = train::Phase::kFineTune; tc.epochs = teacher_epochs; tc.batch_size = batch; tc.adam.lr = lr;
    tc.seed = seed;
    if (!roberta) tc.warmup_ratio = 0.1;  // RoBERTa: the trainer's default for it (6 %)
    train::Trainer<float> ft(teacher, nullptr, tc);
    run_phase(ft, train_set, state + "/teacher", checkpoint_every, "teacher");
    const auto teacher_m = ft.evaluate(test_set, {{1.0, 1.0}})[0].metrics;
    std::fprintf(stderr, "teacher test accuracy %.4f, macro-F1 %.4f\n", teacher_m.accuracy, teacher_m.macro_f1);

    // 4. importance on dev + rewiring
    train::TrainableBert<float> scoring(teacher.params());
    importance::Scorer<float> scorer(scoring);
    for (const auto& idx : train::epoch_batches(dev_set, 8, 0, 0, false, false)) {
      const auto b = train::make_batch(dev_set, idx, 0, idx.size());
      scorer.add_batch(b.inputs(), b.labels.data());
    }
    auto rewired = teacher.params();
    importance::rewire(rewired, scorer.result());

    // 5. stage 1, stage 2, optional final fine-tuning (a function: the no-rewiring ablation runs it too)
    train::TrainerConfig s1 = tc;
    s1.phase = train::Phase::kWidth; s1.epochs = stage1_epochs; s1.adam.lr = distill_lr;
    s1.warmup_ratio.reset();  // the family's default: none for BERT, 6 % for RoBERTa
    train::TrainerConfig s2 = s1;
    s2.phase = train::Phase::kWidthDepth; s2.epochs = stage2_epochs;
    train::TrainerConfig s3 = s1;
    s3.phase = train::Phase::kFinalFineTune; s3.epochs = final_epochs;
    auto dynabert_stages = [&](train::TrainableBert<float>& student, const std::string& tag) {
      student.set_threads(Threads(threads));
      train::Trainer<float> st1(student, &teacher, s1);
      run_phase(st1, train_set, state + "/" + tag + "stage1", checkpoint_every, tag + "stage 1");
      train::TrainableBert<float> stage1_model(student.params());
      train::Trainer<float> st2(student, &stage1_model, s2);
      run_phase(st2, train_set, state + "/" + tag + "stage2", checkpoint_every, tag + "stage 2");
      if (final_epochs > 0) {
        train::Trainer<float> st3(student, nullptr, s3);
        run_phase(st3, train_set, state + "/" + tag + "final", checkpoint_every, tag + "final FT");
      }
      return st2.evaluate(test_set, st2.cells());
    };
    train::TrainableBert<float> student(rewired);
    const auto dyn = dynabert_stages(student, "");
    std::vector<train::Cell> cells;
    for (auto& m : dyn) cells.push_back(m.cell);

    // 6. evaluation of every cell and the ablations
    const auto base = ft.evaluate(test_set, cells);
    std::vector<double> no_rewire(cells.size(), NAN), direct(cells.size(), NAN);
    if (ablations) {
      train::TrainableBert<float> plain(teacher.params());  // DynaBERT without rewiring
      const auto nr = dynabert_stages(plain, "no-rewire-");
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
        copy_matching(init, w);  // the teacher's starting weights wherever the shapes agree (embeddings at least)
        train::TrainableBert<float> small(w);
        small.set_threads(Threads(threads));
        train::Trainer<float> t(small, nullptr, tc);
        char tag[64];
        std::snprintf(tag, sizeof tag, "direct %.2f/%.2f", cells[i].width, cells[i].depth);
        run_phase(t, train_set, state + "/direct-" + std::to_string(i), checkpoint_every, tag);
        direct[i] = t.evaluate(test_set, {{1.0, 1.0}})[0].metrics.accuracy;
      }
    }
    // the serving engine in every precision: each cell's test accuracy in BF16 and INT8 beside FP32
    const ElasticBert<float> engine(student.params(), {Precision::kFp32, Precision::kBf16, Precision::kInt8});
    const int classes = std::max(2, student.params().heads().num_labels);
    io::create_folders(out);
    std::ostringstream md, csv;
    // the ablation columns only when the ablations ran (no columns of nan)
    md << "| width | depth | encoder params (M) | GFLOP (seq 32) | latency ms (batch 1) | accuracy % (95 % CI) | macro-F1 |"
          " BF16 accuracy % | INT8 accuracy % | INT8 latency ms | teacher's cell, no DynaBERT % |"
       << (ablations ? " DynaBERT without rewiring % | same size trained directly % |" : "") << "\n"
       << "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" << (ablations ? "---:|---:|" : "") << "\n";
    csv << "width,depth,params_m,gflop_seq32,latency_ms,accuracy,macro_f1,baseline_accuracy,no_rewiring_accuracy,direct_accuracy,"
           "bf16_accuracy,int8_accuracy,bf16_latency_ms,int8_latency_ms,n_test,teacher_accuracy\n";
    const double n_test = static_cast<double>(test_set.size());
    // Wilson's 95 % interval of an accuracy measured on n_test examples, as "a (lo-hi)" in %
    auto with_ci = [&](double acc) {
      const double z = 1.96, n = n_test, c = (acc + z * z / (2 * n)) / (1 + z * z / n);
      const double h = z * std::sqrt(acc * (1 - acc) / n + z * z / (4 * n * n)) / (1 + z * z / n);
      char b[64];
      std::snprintf(b, sizeof b, "%.1f (%.1f-%.1f)", 100 * acc, 100 * (c - h), 100 * (c + h));
      return std::string(b);
    };
    io::Json grid = io::Json::array();
    double mean_dyn = 0, mean_base = 0, mean_nr = 0, mean_direct = 0, worst_bf16 = 0, worst_int8 = 0;
    const Threads eval_threads(threads);
    for (std::size_t i = 0; i < cells.size(); ++i) {
      auto net = SubNetwork::dynabert(cfg, cells[i].width, cells[i].depth);
      const double ms = deterministic ? NAN : median_latency_ms(engine, net, test_set, 101);
      const double params = net.encoder_params(cfg) / 1e6, gf = net.encoder_flops(cfg, 32) / 1e9;
      // the trainer's figure is FP32 through the same blocks; the low precisions through the engine
      double acc[3] = {dyn[i].metrics.accuracy, 0, 0}, f1[3] = {dyn[i].metrics.macro_f1, 0, 0}, lat[3] = {ms, NAN, NAN};
      for (int p = 1; p < 3; ++p) {
        net.precision = p == 1 ? Precision::kBf16 : Precision::kInt8;
        const auto m = engine_metrics(engine, net, test_set, classes, eval_threads);
        acc[p] = m.accuracy;
        f1[p] = m.macro_f1;
        if (!deterministic) lat[p] = median_latency_ms(engine, net, test_set, 101);
      }
      worst_bf16 = std::max(worst_bf16, std::abs(acc[1] - acc[0]));
      worst_int8 = std::max(worst_int8, std::abs(acc[2] - acc[0]));
      char line[400];
      std::snprintf(line, sizeof line, "| %.2f | %.2f | %.2f | %.3f | %.3f | %s | %.4f | %.1f | %.1f | %.3f | %.1f |",
                    cells[i].width, cells[i].depth, params, gf, ms, with_ci(acc[0]).c_str(), f1[0], 100 * acc[1],
                    100 * acc[2], lat[2], 100 * base[i].metrics.accuracy);
      md << line;
      if (ablations) {
        std::snprintf(line, sizeof line, " %.1f | %.1f |", 100 * no_rewire[i], 100 * direct[i]);
        md << line;
      }
      md << "\n";
      std::snprintf(line, sizeof line, "%g,%g,%.4f,%.5f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.0f,%.4f\n", cells[i].width,
                    cells[i].depth, params, gf, ms, acc[0], f1[0], base[i].metrics.accuracy, no_rewire[i], direct[i], acc[1],
                    acc[2], lat[1], lat[2], n_test, teacher_m.accuracy);
      csv << line;
      mean_nr += no_rewire[i] / cells.size();
      mean_direct += direct[i] / cells.size();
      for (int p = 0; p < 3; ++p) {  // the grid the budget controller chooses from: every cell in every precision
        io::Json cell = {{"width", cells[i].width}, {"depth", cells[i].depth}, {"accuracy", acc[p]}, {"macro_f1", f1[p]},
                         {"precision", p == 0 ? "fp32" : p == 1 ? "bf16" : "int8"}};
        if (!deterministic) cell["latency_ms"] = lat[p];
        grid.push_back(cell);
      }
      mean_dyn += dyn[i].metrics.accuracy / cells.size();
      mean_base += base[i].metrics.accuracy / cells.size();
    }
    // 6. outputs
    // the checkpoint is written whole into a hidden folder beside it, then put in place: a folder
    // named checkpoint is always complete (weights, config.json, the tokenizer's files)
    const io::OutputFolder ck = io::plan_output_folder(out + "/checkpoint", "", /*force=*/false);
    fs::remove_all(ck.tmp);
    student.params().save(ck.tmp, {{"dynabert_widths", "[1.0, 0.75, 0.5, 0.25]"},
                                   {"dynabert_depths", "[1.0, 0.75, 0.5]"},
                                   {"dynabert_grid", grid.dump()}});
    for (const char* f : {"vocab.txt", "vocab.json", "merges.txt", "tokenizer_config.json"}) {  // the tokenizer's files
      if (!fs::exists(tok_dir + "/" + f)) continue;
      fs::copy_file(tok_dir + "/" + f, ck.tmp + "/" + f, fs::copy_options::overwrite_existing);
      io::sync_path(ck.tmp + "/" + f);
    }
    io::replace_folder(ck);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::ostringstream summary;
    double mean_f1 = 0;
    for (auto& m : dyn) mean_f1 += m.metrics.macro_f1 / dyn.size();
    summary << "Task " << task << (roberta ? " (RoBERTa, byte-level BPE)" : "") << ", pretraining: " << pretrain_note << ". Teacher (full size) test accuracy " << teacher_m.accuracy
            << " (macro-F1 " << teacher_m.macro_f1 << "); DynaBERT full-size cell " << dyn[0].metrics.accuracy
            << "; mean over the 12 cells: DynaBERT " << mean_dyn << ", teacher's sub-networks without DynaBERT " << mean_base;
    if (ablations) summary << ", DynaBERT without rewiring " << mean_nr << ", same size trained directly " << mean_direct;
    summary << "; DynaBERT mean macro-F1 " << mean_f1
            << "; largest change of a cell's accuracy against FP32: BF16 " << worst_bf16 * 100 << " points, INT8 " << worst_int8 * 100
            << " points (" << test_set.size() << " test examples). " << train_set.size() << " training sentences";
    if (deterministic) summary << " (--deterministic: no latency or time measured).\n";
    else summary << ", " << secs << " s on " << threads << " thread(s).\n";
    io::write_atomically(out + "/results.md", [&](std::ofstream& f) { f << md.str() << "\n" << summary.str(); });
    io::write_atomically(out + "/results.csv", [&](std::ofstream& f) { f << csv.str(); });
    std::printf("%s\n%s", md.str().c_str(), summary.str().c_str());
  } catch (const std::exception& e) {  // dynabert::Error with its message, or the system's
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
