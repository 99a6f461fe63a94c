// Trainer<T>: composes the pieces into DynaBERT's training phases (method doc sections 4-5).
//
//   kFineTune         plain task loss at full size (a teacher, or any model)
//   kWidth (stage 1)  teacher fixed in evaluation mode; per batch, for each width in descending
//                     order: lambda1 * soft-CE(student, teacher) + lambda2 * sum over all hidden
//                     states (embeddings included) of MSE; summed over widths, then one clip and
//                     one AdamW step. Defaults lambda1 = 1, lambda2 = 0.1.
//   kWidthDepth       stage 2: depths outer, widths inner; student state j matched to teacher
//   (stage 2)         state (kept layers + [L])[j]; teacher at full width (the code) or at the
//                     same width (the paper, `teacher_same_width`). Defaults 1 and 1.
//   kFinalFineTune    task loss summed over every (width, depth) cell, no teacher.
//   kPretrainMlm      masked-language-model pretraining at full size (train/mlm.hpp masking; the
//                     model needs an MLM head, labels are ignored, no dev evaluation in fit()).
// Regression heads drop the logit term in the distillation phases (as the reference code).
//
// Progress and evaluation are reported through callbacks; checkpoints hold weights, optimizer
// moments, step, the dropout generator and the data position, are written to a fresh folder and
// published by an atomic rename of a small "latest" file, so a kill at any point leaves the
// previous checkpoint readable; resuming reproduces the uninterrupted run bit for bit.
#pragma once
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "dynabert/io/files.hpp"
#include "dynabert/io/safetensors.hpp"
#include "dynabert/io/json.hpp"
#include "dynabert/train/data.hpp"
#include "dynabert/train/losses.hpp"
#include "dynabert/train/metrics.hpp"
#include "dynabert/train/mlm.hpp"
#include "dynabert/train/optim.hpp"
#include "dynabert/train/trainable_bert.hpp"

namespace dynabert::train {

enum class Phase { kFineTune, kWidth, kWidthDepth, kFinalFineTune, kPretrainMlm };

inline const char* to_string(Phase p) {
  switch (p) {
    case Phase::kFineTune: return "finetune";
    case Phase::kWidth: return "stage1-width";
    case Phase::kWidthDepth: return "stage2-width-depth";
    case Phase::kPretrainMlm: return "pretrain-mlm";
    default: return "final-finetune";
  }
}

/// Every hyper-parameter of a training run.
struct TrainerConfig {
  Phase phase = Phase::kFineTune;
  std::vector<double> widths = {1.0, 0.75, 0.5, 0.25};
  std::vector<double> depths = {1.0, 0.75, 0.5};  ///< used by kWidthDepth and kFinalFineTune
  double lambda1 = 1.0;                           ///< soft-CE weight
  double lambda2 = -1;                            ///< hidden MSE weight; < 0: phase default (0.1 / 1.0)
  double temperature = 1.0;
  bool teacher_same_width = false;
  int epochs = 3;
  int batch_size = 32;
  AdamWConfig adam{};
  /// Fraction of the steps with a linear learning-rate warmup. Unset: the family's default, 0.06
  /// for RoBERTa (the reference code's hard-coded rule for roberta) and 0 for BERT.
  std::optional<double> warmup_ratio;
  double max_grad_norm = 1.0;
  std::uint64_t seed = 42;
  bool batch_by_length = true;
  long eval_every = 0;  ///< steps between evaluations (0: at the end of each epoch)
  long max_total_steps = 0;  ///< > 0: the run (and its learning-rate schedule) ends there, before `epochs`
  /// Pack the tokens of each padded batch (no rows for padding; the hidden-state loss then covers
  /// the real tokens only). Off: the padded layout, with the hidden-state MSE over every position of
  /// the batch as the reference code computes it.
  bool pack_tokens = true;
  MlmConfig mlm{};           ///< masking of kPretrainMlm
  /// When set (and a dev set is given), the weights with the best sum over cells of the first
  /// metric (accuracy; Pearson for regression) are written to this folder (HF layout).
  std::string best_dir;
};

/// One (width, depth) cell.
struct Cell {
  double width = 1, depth = 1;
};

/// Progress of one step.
struct Progress {
  long step = 0, total_steps = 0;
  int epoch = 0;
  double loss = 0;                  ///< summed over cells
  std::vector<double> cell_losses;  ///< per cell, in the order run
  double lr = 0;
  double grad_norm = 0;
  double examples_per_second = 0;
  double eta_seconds = 0;
};

/// Evaluation of one cell.
struct CellMetrics {
  Cell cell;
  Metrics metrics;
};

template <class T>
class Trainer {
 public:
  std::function<void(const Progress&)> on_progress;
  std::function<void(long step, const std::vector<CellMetrics>&)> on_eval;

  Trainer(TrainableBert<T>& student, const TrainableBert<T>* teacher, TrainerConfig cfg)
      : s_(student), t_(teacher), cfg_(std::move(cfg)), opt_(student.params(), cfg_.adam), rng_(cfg_.seed) {
    if (cfg_.lambda2 < 0) cfg_.lambda2 = cfg_.phase == Phase::kWidthDepth ? 1.0 : 0.1;
    const bool distill = cfg_.phase == Phase::kWidth || cfg_.phase == Phase::kWidthDepth;
    DYNABERT_REQUIRE(!distill || teacher, InputError, to_string(cfg_.phase), " needs a teacher");
    if (cfg_.phase == Phase::kPretrainMlm)
      DYNABERT_REQUIRE(s_.params().heads().mlm, InputError, "MLM pretraining needs a model with an MLM head");
    else
      DYNABERT_REQUIRE(s_.params().heads().num_labels > 0, InputError, "training needs a classification or regression head");
    std::sort(cfg_.widths.rbegin(), cfg_.widths.rend());
    std::sort(cfg_.depths.rbegin(), cfg_.depths.rend());
    for (const Cell& c : cells()) {
      nets_.push_back(SubNetwork::dynabert(s_.config(), c.width, c.depth));
      same_width_nets_.push_back(SubNetwork::dynabert(s_.config(), c.width, 1.0));
      teacher_idx_.push_back(nets_.back().teacher_state_indices(s_.config()));
    }
    full_ = SubNetwork::full(s_.config());
  }

  const TrainerConfig& config() const { return cfg_; }
  long step() const { return step_; }
  /// Best selection score seen (sum over cells of the first metric), -inf before any evaluation.
  double best_score() const { return best_; }

  /// The cells a step runs, in order.
  std::vector<Cell> cells() const {
    std::vector<Cell> c;
    switch (cfg_.phase) {
      case Phase::kFineTune:
      case Phase::kPretrainMlm: c.push_back({1.0, 1.0}); break;
      case Phase::kWidth: for (double w : cfg_.widths) c.push_back({w, 1.0}); break;
      default: for (double d : cfg_.depths) for (double w : cfg_.widths) c.push_back({w, d});
    }
    return c;
  }

  /// Trains until `epochs` are done (continuing from a loaded checkpoint), evaluating on `dev`
  /// if given. Stops early after `max_steps` steps of this call when > 0.
  void fit(const Dataset& train, const Dataset* dev = nullptr, long max_steps = 0) {
    DYNABERT_REQUIRE(!train.empty(), InputError, "empty training set");
    DYNABERT_REQUIRE(cfg_.batch_size >= 1, InputError, "batch size must be >= 1, got ", cfg_.batch_size);
    const long per_epoch = static_cast<long>((train.size() + cfg_.batch_size - 1) / cfg_.batch_size);
    const long total = cfg_.max_total_steps > 0 ? std::min(per_epoch * cfg_.epochs, cfg_.max_total_steps) : per_epoch * cfg_.epochs;
    const double warmup_ratio =
        cfg_.warmup_ratio.value_or(s_.config().model_type == ModelType::kRoberta ? 0.06 : 0.0);
    const long warmup = static_cast<long>(warmup_ratio * total);
    std::size_t longest = 1;
    for (const auto& e : train) longest = std::max(longest, e.ids.size());
    s_.reserve(cfg_.batch_size, static_cast<int>(longest));
    if (t_) t_->reserve(cfg_.batch_size, static_cast<int>(longest));
    const auto start = std::chrono::steady_clock::now();
    long done_here = 0, examples = 0;
    while (step_ < total && (max_steps <= 0 || done_here < max_steps)) {
      const int epoch = static_cast<int>(step_ / per_epoch);
      if (epoch != order_epoch_ || order_data_ != &train || order_size_ != train.size()) {  // the order of an epoch is a function of (seed, epoch)
        order_ = epoch_batches(train, cfg_.batch_size, cfg_.seed, epoch, cfg_.batch_by_length);
        order_epoch_ = epoch;
        order_data_ = &train;
        order_size_ = train.size();
      }
      const auto& idx = order_[static_cast<std::size_t>(step_ % per_epoch)];
      make_batch(batch_, train, idx, 0, idx.size(), s_.config().pad_token_id);
      Progress& p = train_step(batch_);
      const double lr = cfg_.adam.lr * linear_schedule(step_, warmup, total);
      p.grad_norm = clip_grad_norm(s_.grads(), cfg_.max_grad_norm, s_.threads());
      opt_.step(s_.params(), s_.grads(), lr, s_.threads());
      ++step_;
      ++done_here;
      examples += batch_.B;
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      p.step = step_; p.total_steps = total; p.epoch = epoch; p.lr = lr;
      p.examples_per_second = examples / std::max(secs, 1e-9);
      p.eta_seconds = secs / done_here * (total - step_);
      if (on_progress) on_progress(p);
      const bool epoch_end = step_ % per_epoch == 0;
      if (dev && cfg_.phase != Phase::kPretrainMlm && ((cfg_.eval_every > 0 && step_ % cfg_.eval_every == 0) || (cfg_.eval_every <= 0 && epoch_end))) {
        const auto m = evaluate(*dev, cells());
        if (on_eval) on_eval(step_, m);
        select(m);
      }
    }
  }

  /// Gradients of one batch over the phase's cells (zeroes them first). Returns the losses (a
  /// reference to the trainer's own record, valid until the next step).
  Progress& train_step(const Batch& b) {
    s_.zero_grad();
    Progress& p = progress_;
    p.cell_losses.clear();
    p.loss = 0;
    if (cfg_.phase == Phase::kPretrainMlm) {
      const double loss = mlm_step(b, true);
      p.cell_losses.push_back(loss);
      p.loss = loss;
      return p;
    }
    const int C = s_.params().heads().num_labels;
    const bool regression = C == 1;
    const Inputs in = b.inputs();
    const bool distill = cfg_.phase == Phase::kWidth || cfg_.phase == Phase::kWidthDepth;
    // without hidden-state distillation the loss reads the logits only: the last layer runs on
    // the first tokens alone (the same logits, gradients equal to rounding, about a quarter of
    // its cost)
    const ForwardMode train_mode{true, &rng_, cfg_.pack_tokens, !distill};
    if (distill && !cfg_.teacher_same_width) teacher_forward(in, full_);
    for (std::size_t ci = 0; ci < nets_.size(); ++ci) {
      const SubNetwork& net = nets_[ci];
      s_.forward(in, net, scache_, train_mode);
      const std::size_t nl = scache_.logits.size();
      T* dlogits = dlogits_.ensure(nl);
      std::fill(dlogits, dlogits + nl, T(0));
      ds_.clear();
      double loss = 0;
      if (distill) {
        if (cfg_.teacher_same_width) teacher_forward(in, same_width_nets_[ci]);
        if (!regression)
          loss += cfg_.lambda1 * soft_cross_entropy(scache_.logits.data(), tlogits_.data(), b.B, C, dlogits,
                                                    static_cast<T>(cfg_.temperature), static_cast<T>(cfg_.lambda1));
        const std::size_t L = scache_.states.size();
        if (dstates_.size() < L) dstates_.resize(std::max<std::size_t>(L, s_.config().num_hidden_layers + 1));
        const auto& tidx = teacher_idx_[ci];  // student state j <-> teacher state (kept layers + [L])[j]
        for (std::size_t j = 0; j < L; ++j) {
          const auto& st = scache_.states[j];
          const std::size_t tj = static_cast<std::size_t>(tidx[j]);
          T* d = dstates_[j].ensure(st.size());
          std::fill(d, d + st.size(), T(0));
          loss += cfg_.lambda2 * mse(st.data(), tstates_[tj].data(), static_cast<long>(st.size()), d, static_cast<T>(cfg_.lambda2));
          ds_.push_back(d);
        }
      } else if (regression) {
        T* tg = targets_.ensure(static_cast<std::size_t>(b.B));
        for (int i = 0; i < b.B; ++i) tg[i] = static_cast<T>(b.targets[static_cast<std::size_t>(i)]);
        loss = mse(scache_.logits.data(), tg, b.B, dlogits);
      } else {
        loss = cross_entropy(scache_.logits.data(), b.labels.data(), b.B, C, dlogits);
      }
      s_.backward(scache_, dlogits, ds_);
      p.cell_losses.push_back(loss);
      p.loss += loss;
    }
    return p;
  }

  /// Metrics of `student` on `data` at each cell (evaluation mode, on the serving forward).
  std::vector<CellMetrics> evaluate(const Dataset& data, const std::vector<Cell>& cells, int batch_size = 32) const {
    std::vector<CellMetrics> out;
    const int C = s_.params().heads().num_labels;
    const auto batches = epoch_batches(data, batch_size, 0, 0, false, false);
    Batch b;
    std::vector<T> logits;
    for (const Cell& cell : cells) {
      const auto net = SubNetwork::dynabert(s_.config(), cell.width, cell.depth);
      std::vector<int> pred, gold;
      std::vector<double> rp, rg;
      for (const auto& idx : batches) {
        make_batch(b, data, idx, 0, idx.size(), s_.config().pad_token_id);
        logits.resize(static_cast<std::size_t>(b.B) * C);
        s_.infer(b.inputs(), net, true, logits.data());
        for (int i = 0; i < b.B; ++i) {
          if (C == 1) { rp.push_back(static_cast<double>(logits[i])); rg.push_back(b.targets[i]); continue; }
          const T* l = logits.data() + static_cast<long>(i) * C;
          pred.push_back(static_cast<int>(std::max_element(l, l + C) - l));
          gold.push_back(b.labels[i]);
        }
      }
      out.push_back({cell, C == 1 ? regression_metrics(rp, rg) : classification_metrics(pred, gold, C)});
    }
    return out;
  }

  /// Masked-token loss and accuracy on `data` with masks drawn from `seed` (the same for every
  /// call with that seed), in evaluation mode, at full size.
  std::pair<double, double> evaluate_mlm(const Dataset& data, std::uint64_t seed = 0, int batch_size = 32) {
    std::mt19937_64 rng(seed);
    double loss = 0;
    long right = 0, count = 0;
    for (const auto& idx : epoch_batches(data, batch_size, 0, 0, false, false)) {
      Batch b = make_batch(data, idx, 0, idx.size(), s_.config().pad_token_id);
      std::vector<std::int32_t> labels;
      const long n = mask_tokens(b, labels, cfg_.mlm, s_.config().vocab_size, rng);
      if (n == 0) continue;
      s_.forward(b.inputs(), full_, scache_, ForwardMode{false, nullptr, cfg_.pack_tokens}, false);
      std::vector<T> d_last;
      std::vector<std::int32_t> predicted;
      loss += static_cast<double>(s_.mlm_loss(scache_, labels.data(), d_last, T(1), &predicted, false)) * n;
      for (std::size_t t = 0, m = 0; t < labels.size(); ++t)
        if (labels[t] != -100) right += predicted[m++] == labels[t];
      count += n;
    }
    DYNABERT_REQUIRE(count > 0, InputError, "no maskable tokens in the evaluation set");
    return {loss / count, static_cast<double>(right) / count};
  }

  /// Writes a resumable checkpoint into a fresh folder `dir`/step-N (step-N.1, ... when that name
  /// is taken) and points `dir`/latest at it. Crash-consistent at every step: the files are
  /// written and synced in "<name>.tmp", the folder is renamed into place and synced, then `latest`
  /// is replaced atomically, and only then are older checkpoints and orphans removed. A kill at
  /// any point leaves `latest` naming a complete checkpoint (the old or the new one).
  void save_checkpoint(const std::string& dir) const {
    static_assert(std::is_same_v<T, float>, "training checkpoints are F32");
    namespace fs = std::filesystem;
    io::create_folders(dir);
    std::string name = "step-" + std::to_string(step_);
    for (int v = 1; fs::exists(fs::path(dir) / name); ++v) name = "step-" + std::to_string(step_) + "." + std::to_string(v);
    const fs::path final_dir = fs::path(dir) / name, tmp_dir = fs::path(dir) / (name + ".tmp");
    fs::remove_all(tmp_dir);
    io::create_folders(tmp_dir.string());
    s_.params().save(tmp_dir.string(), {{"dynabert_phase", to_string(cfg_.phase)}, {"dynabert_step", std::to_string(step_)}});
    io::SafetensorsWriter opt;
    opt.add("adam.m", {static_cast<std::int64_t>(opt_.first_moment().size())}, opt_.first_moment().data());
    opt.add("adam.v", {static_cast<std::int64_t>(opt_.second_moment().size())}, opt_.second_moment().data());
    opt.write((tmp_dir / "optimizer.safetensors").string());
    std::ostringstream rng;
    rng << rng_;
    const io::Json state = {{"step", step_}, {"adam_step", opt_.step_count()}, {"rng", rng.str()},
                            {"phase", to_string(cfg_.phase)}, {"seed", cfg_.seed}, {"batch_size", cfg_.batch_size},
                            {"epochs", cfg_.epochs}};
    io::write_atomically((tmp_dir / "trainer_state.json").string(), [&](std::ofstream& o) { o << state.dump(2); });
    io::publish_folder(tmp_dir.string(), final_dir.string());
    io::write_atomically((fs::path(dir) / "latest").string(), [&](std::ofstream& o) { o << name << "\n"; });
    std::error_code ec;
    for (auto& e : fs::directory_iterator(dir, ec))  // older checkpoints of this run, now unreferenced
      if (e.is_directory(ec) && e.path().filename().string().rfind("step-", 0) == 0 && e.path().filename() != name &&
          e.path().extension() != ".tmp")
        fs::remove_all(e.path(), ec);
    io::remove_orphans(dir);
  }

  /// Restores weights, optimizer, step and generator from `dir`: the checkpoint `latest` names,
  /// or, when that is missing or incomplete, the newest complete one. FormatError naming the file
  /// when a checkpoint is malformed or belongs to another run.
  void load_checkpoint(const std::string& dir) {
    static_assert(std::is_same_v<T, float>, "training checkpoints are F32");
    namespace fs = std::filesystem;
    const fs::path ck = fs::path(dir) / checkpoint_name(dir);
    const std::string sf = (ck / "trainer_state.json").string();
    const io::Json state = io::read_json_file(sf, 1 << 20);
    auto field = [&](const char* k) -> const io::Json& { return io::json_field(state, k, sf); };
    const io::Json &phase = field("phase"), &seed = field("seed"), &rng_state = field("rng");
    DYNABERT_REQUIRE(phase.is_string() && seed.is_integer() && seed.is_unsigned() && rng_state.is_string(), FormatError, sf,
                     ": phase, seed and rng must be a string, an unsigned integer and a string");
    const long long batch = io::json_int(field("batch_size"), sf, "batch_size", 1, 1 << 30);
    DYNABERT_REQUIRE(phase.as_string() == to_string(cfg_.phase) && seed.uint_value() == cfg_.seed && batch == cfg_.batch_size,
                     FormatError, ck.string(), ": checkpoint was written by a run with another phase, seed or batch size");
    const long step = static_cast<long>(io::json_int(field("step"), sf, "step", 0, std::numeric_limits<long long>::max()));
    const long adam_step = static_cast<long>(io::json_int(field("adam_step"), sf, "adam_step", 0, std::numeric_limits<long long>::max()));
    std::mt19937_64 rng;
    std::istringstream rs(rng_state.as_string());
    rs >> rng;
    DYNABERT_REQUIRE(!rs.fail(), FormatError, sf, ": unreadable generator state");
    auto w = BertWeights<float>::load(ck.string());
    DYNABERT_REQUIRE(w.same_layout(s_.params()), FormatError, ck.string(), ": model shape differs from the model being trained");
    io::SafetensorsFile opt((ck / "optimizer.safetensors").string());
    for (const char* n : {"adam.m", "adam.v"})
      DYNABERT_REQUIRE(opt.contains(n) && opt.info(n).numel() == opt_.first_moment().size(), FormatError, opt.path(),
                       ": tensor '", n, "' is missing or has the wrong size");
    // everything read and checked: now change the trainer
    opt.read("adam.m", opt_.first_moment().data(), opt_.first_moment().size());
    opt.read("adam.v", opt_.second_moment().data(), opt_.second_moment().size());
    s_.params() = std::move(w);
    opt_.set_step_count(adam_step);
    step_ = step;
    rng_ = rng;
  }

  /// The checkpoint folder to resume from in `dir` (see load_checkpoint).
  static std::string checkpoint_name(const std::string& dir) {
    namespace fs = std::filesystem;
    auto complete = [&](const std::string& n) {
      std::error_code ec;
      const fs::path p = fs::path(dir) / n;
      const bool unpublished = n.size() >= 4 && n.compare(n.size() - 4, 4, ".tmp") == 0;  // a save killed before its rename
      return !n.empty() && !unpublished && n.find('/') == std::string::npos && n != "." && n != ".." &&
             fs::is_regular_file(p / "trainer_state.json", ec) && fs::is_regular_file(p / "model.safetensors", ec) &&
             fs::is_regular_file(p / "optimizer.safetensors", ec) && fs::is_regular_file(p / "config.json", ec);
    };
    std::string name;
    {
      std::ifstream latest(fs::path(dir) / "latest");
      latest >> name;
    }
    if (complete(name)) return name;
    // fall back to the newest complete checkpoint folder (step-N or step-N.v)
    long best_step = -1, best_v = -1;
    std::string best;
    std::error_code ec;
    for (auto& e : fs::directory_iterator(dir, ec)) {
      const std::string n = e.path().filename().string();
      if (n.rfind("step-", 0) != 0 || !complete(n)) continue;
      long st = -1, v = 0;
      if (std::sscanf(n.c_str(), "step-%ld.%ld", &st, &v) < 1) continue;
      if (st > best_step || (st == best_step && v > best_v)) {
        best_step = st;
        best_v = v;
        best = n;
      }
    }
    DYNABERT_REQUIRE(!best.empty(), FormatError, dir, ": no complete checkpoint ('latest' names '", name, "')");
    return best;
  }

 private:
  /// MLM loss of one batch (masked with the run's generator); gradients accumulate when `train`.
  double mlm_step(const Batch& clean, bool train) {
    mlm_batch_ = clean;  // copy-assignment reuses the arrays' capacity
    mask_tokens(mlm_batch_, mlm_labels_, cfg_.mlm, s_.config().vocab_size, rng_);
    const ForwardMode mode{train, &rng_, cfg_.pack_tokens};
    s_.forward(mlm_batch_.inputs(), full_, scache_, mode, false);
    std::fill(d_last_.begin(), d_last_.end(), T(0));
    const double loss = static_cast<double>(s_.mlm_loss(scache_, mlm_labels_.data(), d_last_));
    if (train && !d_last_.empty()) {
      ds_.assign(scache_.states.size(), nullptr);
      ds_.back() = d_last_.data();
      s_.backward(scache_, nullptr, ds_);
    }
    return loss;
  }

  /// The teacher's logits and every hidden state on `in` (serving forward, same token layout as
  /// the student's).
  void teacher_forward(const Inputs& in, const SubNetwork& net) {
    const int C = t_->params().heads().num_labels;
    const std::size_t L = static_cast<std::size_t>(t_->config().num_hidden_layers) + 1;
    if (tstates_.size() < L) tstates_.resize(L);
    t_->infer(in, net, cfg_.pack_tokens, C > 0 ? tlogits_.ensure(static_cast<std::size_t>(in.batch) * C) : nullptr,
              [&](std::size_t j, const T* hidden, const BatchLayout& lay) {
                const std::size_t n = static_cast<std::size_t>(lay.rows) * t_->config().hidden_size;
                std::memcpy(tstates_[j].ensure(n), hidden, n * sizeof(T));
              });
  }

  /// Keeps the best weights by DynaBERT's rule: the sum over cells of the first metric.
  void select(const std::vector<CellMetrics>& m) {
    double score = 0;
    for (auto& c : m) score += s_.params().heads().num_labels == 1 ? c.metrics.pearson : c.metrics.accuracy;
    if (score <= best_) return;
    best_ = score;
    if (cfg_.best_dir.empty()) return;
    if constexpr (std::is_same_v<T, float>) {
      namespace fs = std::filesystem;
      const fs::path tmp = cfg_.best_dir + ".tmp", old = cfg_.best_dir + ".old";
      fs::remove_all(tmp);
      s_.params().save(tmp.string(), {{"dynabert_phase", to_string(cfg_.phase)}, {"dynabert_step", std::to_string(step_)},
                                      {"dynabert_selection_score", std::to_string(score)}});
      fs::remove_all(old);
      std::error_code ec;
      if (fs::exists(cfg_.best_dir)) fs::rename(cfg_.best_dir, old, ec);
      DYNABERT_REQUIRE(!ec, IoError, cfg_.best_dir, ": cannot move the previous best aside (", ec.message(), ")");
      io::publish_folder(tmp.string(), cfg_.best_dir);
      fs::remove_all(old, ec);
    }
  }

  TrainableBert<T>& s_;
  const TrainableBert<T>* t_;
  TrainerConfig cfg_;
  AdamW<T> opt_;
  std::mt19937_64 rng_;
  long step_ = 0;
  double best_ = -std::numeric_limits<double>::infinity();
  // reused between steps (no allocation once they have seen the largest batch)
  std::vector<SubNetwork> nets_, same_width_nets_;
  std::vector<std::vector<int>> teacher_idx_;
  SubNetwork full_;
  std::vector<std::vector<std::size_t>> order_;
  long order_epoch_ = -1;
  const Dataset* order_data_ = nullptr;
  std::size_t order_size_ = 0;
  Batch batch_, mlm_batch_;
  std::vector<std::int32_t> mlm_labels_;
  std::vector<T> d_last_;
  TrainCache<T> scache_;
  std::vector<AlignedBuffer<T>> tstates_, dstates_;
  AlignedBuffer<T> tlogits_, dlogits_, targets_;
  std::vector<const T*> ds_;
  Progress progress_;
};

}  // namespace dynabert::train
