// Session<T, Dims>: what a host program embeds. It owns the packed weights (shared read-only by
// every call) and a fixed pool of workspaces (one per concurrent call), both allocated when the
// session is built, so that
//  - a call names its sub-network (a SubNetwork, a (width, depth) cell, or a latency budget) and
//    switching between them copies, repacks and allocates nothing;
//  - up to `max_concurrent_calls` threads run calls at once; a further call waits for a
//    workspace;
//  - threads inside a call are the caller's (a count or a tbb::task_arena, via Threads);
//  - memory is fixed and known before the first call: memory().
// With a grid (the checkpoint's "dynabert_grid" metadata or the caller's) and calibrate(), calls
// can instead give a budget in milliseconds: a BudgetController picks the cell and learns from
// every call's measured latency.
#pragma once
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "dynabert/core/error.hpp"
#include "dynabert/core/simd.hpp"
#include "dynabert/io/checkpoint.hpp"
#include "dynabert/io/safetensors.hpp"
#include "dynabert/model/bert.hpp"
#include "dynabert/model/elastic.hpp"
#include "dynabert/model/weights.hpp"
#include "dynabert/serve/budget.hpp"

namespace dynabert {

/// Limits a session is built for.
struct SessionOptions {
  int max_batch = 8;
  int max_seq_len = 128;
  int max_threads = 1;           ///< most threads any single call uses
  int max_concurrent_calls = 1;  ///< workspaces in the pool
  std::vector<double> widths = {1.0, 0.75, 0.5, 0.25};  ///< cells prepared for run(width, depth)
  std::vector<double> depths = {1.0, 0.75, 0.5};
  /// Packings the session holds (FP32, BF16, INT8 of the same weights); a call picks one, and
  /// run(width, depth) uses the first.
  std::vector<Precision> precisions = {Precision::kFp32};
};

/// Bytes a session holds.
struct MemoryReport {
  std::size_t weight_bytes = 0;     ///< packed weights (shared by every call), all precisions
  std::size_t workspace_bytes = 0;  ///< one workspace at the configured limits
  int workspaces = 0;
  std::size_t shared_weight_bytes = 0;  ///< embeddings, pooler, classifier: every precision uses them
  std::size_t fp32_bytes = 0, bf16_bytes = 0, int8_bytes = 0;  ///< encoder layers, per packing held
  std::size_t total() const { return weight_bytes + workspace_bytes * static_cast<std::size_t>(workspaces); }
};

/// What a budgeted call ran.
struct BudgetedCall {
  GridCell cell;
  double predicted_ms = 0, measured_ms = 0;
};

/// What Session::classify returns: per sequence the label and its name, and the probability of
/// every label.
struct Classification {
  int num_labels = 0;
  std::vector<int> labels;               ///< [batch] most probable label
  std::vector<std::string> names;        ///< [batch] its name (config.json's id2label)
  std::vector<float> probabilities;      ///< [batch, num_labels] softmax of the logits
  GridCell cell;                         ///< the cell that ran (the last one, under a budget or a cascade)
  /// classify_early_exit: per sequence the index of the cascade cell that answered; else empty.
  std::vector<int> exit_stage;
  double ms = 0;                         ///< wall time of the whole call
  double predicted_ms = 0;               ///< under a budget: the controller's prediction (last chunk)
  float probability(int b, int label) const { return probabilities[static_cast<std::size_t>(b) * num_labels + label]; }
};

/// Cells written "WIDTHxDEPTH,WIDTHxDEPTH" (e.g. "0.25x0.5,1x1", an early-exit cascade as the
/// programs take it); InputError naming the item that is not a cell.
inline std::vector<std::pair<double, double>> parse_cells(const std::string& spec) {
  std::vector<std::pair<double, double>> cells;
  for (std::size_t at = 0; at <= spec.size();) {
    const std::size_t comma = std::min(spec.find(',', at), spec.size());
    const std::string item = spec.substr(at, comma - at);
    at = comma + 1;
    const std::size_t x = item.find('x');
    std::size_t used_w = 0, used_d = 0;
    double w = 0, d = 0;
    try {
      if (x != std::string::npos) {
        w = std::stod(item.substr(0, x), &used_w);
        d = std::stod(item.substr(x + 1), &used_d);
      }
    } catch (const std::exception&) {
      used_w = 0;
    }
    DYNABERT_REQUIRE(x != std::string::npos && used_w == x && used_d == item.size() - x - 1 && used_d > 0, InputError,
                     "cell '", item, "' of '", spec, "' is not WIDTHxDEPTH (e.g. 0.25x0.5)");
    cells.emplace_back(w, d);
  }
  return cells;
}

/// How Session::embed makes one vector of a sequence's final hidden states: the [CLS] token's,
/// the mean or the element-wise maximum over its tokens (padding excluded).
enum class Pooling { kCls, kMean, kMax };

template <class T = float, class Dims = DynamicDims>
class Session {
 public:
  Session(const BertWeights<T>& weights, SessionOptions opt) : opt_(std::move(opt)), model_(weights, opt_.precisions) {
    warn_about_build();
    DYNABERT_REQUIRE(opt_.max_concurrent_calls >= 1, InputError, "max_concurrent_calls must be >= 1, got ",
                     opt_.max_concurrent_calls);
    for (int i = 0; i < opt_.max_concurrent_calls; ++i) {
      pool_.push_back(model_.make_workspace({opt_.max_batch, opt_.max_seq_len, opt_.max_threads}));
      free_.push_back(i);
    }
    // cells a model cannot run (a width that keeps no head of a small model) are skipped, and
    // listed in skipped_cells(); a width or depth outside (0, 1] is an error
    for (Precision p : opt_.precisions)
      for (double d : opt_.depths)
        for (double w : opt_.widths) {
          DYNABERT_REQUIRE(w > 0 && w <= 1 && d > 0 && d <= 1, InputError, "session cell (width ", w, ", depth ", d,
                           ") is outside (0, 1]");
          if (!runnable(w, d)) {
            if (p == opt_.precisions.front()) skipped_.push_back({w, d});
            continue;
          }
          cells_.push_back({w, d, SubNetwork::dynabert(model_.config(), w, d)});
          cells_.back().net.precision = p;
        }
    DYNABERT_REQUIRE(!cells_.empty(), InputError, "no cell of the session's widths and depths can run on this model");
  }

  /// The instruction set the kernels were compiled for ("avx512bw", "avx2", "sse2", "neon"...).
  static const char* simd_arch() { return simd::arch_name(); }
  /// Whether this translation unit was compiled with optimisation and at least AVX2 / NEON.
  static bool fast_build() {
#if defined(__OPTIMIZE__)
    return simd::kLanes >= 8 || (simd::kLanes == 4 && !std::is_same_v<simd::Arch, xsimd::sse2>);
#else
    return false;
#endif
  }
  /// Cells of the options that the model cannot run (they keep no head or no layer), skipped.
  const std::vector<std::pair<double, double>>& skipped_cells() const { return skipped_; }

  /// Loads a checkpoint folder; its "dynabert_grid" metadata, when present, becomes the grid.
  static std::unique_ptr<Session> open(const std::string& dir, SessionOptions opt) {
    auto s = std::make_unique<Session>(BertWeights<T>::load(dir), std::move(opt));
    const auto meta = read_metadata(dir);
    if (auto it = meta.find("dynabert_grid"); it != meta.end()) {
      // the cells in precisions this session holds (a grid may list every precision it was measured in)
      for (auto& c : parse_grid(it->second, dir + " metadata"))
        if (s->model_.has_precision(c.precision)) s->grid_.push_back(c);
    }
    return s;
  }

  const BertConfig& config() const { return model_.config(); }
  const ElasticBert<T, Dims>& model() const { return model_; }
  const SessionOptions& options() const { return opt_; }
  MemoryReport memory() const {
    MemoryReport r{model_.weight_bytes(), pool_.front().bytes(), static_cast<int>(pool_.size())};
    r.shared_weight_bytes = model_.shared_weight_bytes();
    r.fp32_bytes = model_.weight_bytes(Precision::kFp32);
    r.bf16_bytes = model_.weight_bytes(Precision::kBf16);
    r.int8_bytes = model_.weight_bytes(Precision::kInt8);
    return r;
  }
  /// The accuracy grid (from the checkpoint or set_grid); empty when there is none.
  const std::vector<GridCell>& grid() const { return grid_; }
  void set_grid(std::vector<GridCell> g) {
    for (auto& c : g) {
      (void)SubNetwork::dynabert(config(), c.width, c.depth);  // validates
      DYNABERT_REQUIRE(model_.has_precision(c.precision), InputError, "grid cell (", c.width, ", ", c.depth, ", ",
                       to_string(c.precision), ") needs a precision the session does not hold");
    }
    grid_ = std::move(g);
    budget_.reset();
  }

  /// The prepared sub-network of cell (width, depth) in precision p: one of options().widths x
  /// depths x precisions.
  const SubNetwork& cell(double width, double depth, Precision p) const {
    for (auto& c : cells_)  // matched within 1e-9 (0.1 + 0.65 and 0.75 name the same cell)
      if (std::abs(c.width - width) <= 1e-9 && std::abs(c.depth - depth) <= 1e-9 && c.net.precision == p) return c.net;
    raise<InputError>("cell (width ", width, ", depth ", depth, ", ", to_string(p),
                      ") was not prepared; the session has the widths, depths and precisions of its options");
  }
  /// The same in the session's first precision.
  const SubNetwork& cell(double width, double depth) const { return cell(width, depth, opt_.precisions.front()); }

  /// Runs `net` on `in`. Thread-safe; blocks while every workspace is in use.
  void run(const Inputs& in, const SubNetwork& net, const Outputs& out, const Threads& threads = Threads()) const {
    Lease lease(*this);
    model_.forward(in, net, out, pool_[lease.index], threads);
  }
  void run(const Inputs& in, double width, double depth, const Outputs& out, const Threads& threads = Threads()) const {
    run(in, cell(width, depth), out, threads);
  }
  void run(const Inputs& in, double width, double depth, Precision p, const Outputs& out,
           const Threads& threads = Threads()) const {
    run(in, cell(width, depth, p), out, threads);
  }

  /// Classifies every sequence of `b` (any number: run in chunks of options().max_batch) at `net`.
  /// Thread-safe as run() is; allocates only the result.
  Classification classify(const TokenBatch& b, const SubNetwork& net, const Threads& threads = Threads()) const {
    Classification r = start_classification(b, net);
    const auto a = std::chrono::steady_clock::now();
    for_chunks(b, [&](const Inputs& in, int b0) {
      Outputs o;
      o.logits = r.probabilities.data() + static_cast<std::size_t>(b0) * r.num_labels;
      run(in, net, o, threads);
    });
    r.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count();
    finish_classification(r);
    return r;
  }
  Classification classify(const TokenBatch& b, double width, double depth, const Threads& threads = Threads()) const {
    return classify(b, cell(width, depth), threads);
  }
  /// The same, each chunk at the most accurate cell that fits `budget_ms` (needs calibrate()).
  Classification classify_within(const TokenBatch& b, double budget_ms, const Threads& threads = Threads()) {
    DYNABERT_REQUIRE(budget_, InputError, "classify_within needs calibrate() first");
    Classification r = start_classification(b, grid_nets_.front());
    const auto a = std::chrono::steady_clock::now();
    for_chunks(b, [&](const Inputs& in, int b0) {
      Outputs o;
      o.logits = r.probabilities.data() + static_cast<std::size_t>(b0) * r.num_labels;
      const BudgetedCall c = run_within(in, budget_ms, o, threads);
      r.cell = c.cell;
      r.predicted_ms = c.predicted_ms;
    });
    r.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count();
    finish_classification(r);
    return r;
  }

  /// Per-sample early exit, as a confidence cascade over cells (ordered cheapest first, e.g.
  /// {(0.25, 0.5), (0.5, 0.75), (1, 1)}): every sequence runs at cascade[0]; a sequence whose most
  /// probable label has probability >= `threshold` stops there, and only the others run again at
  /// cascade[1], packed together (finished sequences cost nothing more), and so on; the last cell
  /// answers for whatever is left. DynaBERT's depths keep every other layer rather than a prefix,
  /// so a later cell recomputes from the embeddings: the saving comes from the sequences that stop
  /// early (the stage-2 classifiers are trained for every cell, so each stage's answer is a real
  /// one). exit_stage[i] says which cell answered sequence i; `cell` is the last cell that ran.
  /// Thread-safe as run() is; allocates the result and one compacted copy of a chunk's ids.
  Classification classify_early_exit(const TokenBatch& b, const std::vector<const SubNetwork*>& cascade, double threshold,
                                     const Threads& threads = Threads()) const {
    DYNABERT_REQUIRE(!cascade.empty(), InputError, "an early-exit cascade needs at least one cell");
    for (const SubNetwork* n : cascade) DYNABERT_REQUIRE(n != nullptr, InputError, "an early-exit cascade holds a null cell");
    DYNABERT_REQUIRE(threshold >= 0.0 && threshold <= 1.0, InputError, "early-exit threshold ", threshold,
                     " is not a probability in [0, 1]");
    Classification r = start_classification(b, *cascade.back());
    r.exit_stage.assign(static_cast<std::size_t>(b.batch), -1);
    const int C = r.num_labels;
    const std::size_t chunk = static_cast<std::size_t>(std::min(opt_.max_batch, std::max(b.batch, 1)));
    std::vector<std::int32_t> ids(chunk * static_cast<std::size_t>(b.seq_len)), types(b.type_ids.empty() ? 0 : ids.size()),
        lengths(chunk);
    std::vector<int> left(chunk), next(chunk);
    std::vector<float> logits(chunk * static_cast<std::size_t>(C));
    const auto a = std::chrono::steady_clock::now();
    int last_stage = 0;
    for_chunks(b, [&](const Inputs& in, int b0) {
      int n = in.batch;
      for (int i = 0; i < n; ++i) left[i] = i;
      for (std::size_t s = 0; s < cascade.size() && n > 0; ++s) {
        for (int j = 0; j < n; ++j) {  // the sequences still running, packed at the front
          const long src = static_cast<long>(left[j]) * in.seq_len, dst = static_cast<long>(j) * in.seq_len;
          std::copy(in.input_ids + src, in.input_ids + src + in.seq_len, ids.begin() + dst);
          if (!types.empty()) std::copy(in.token_type_ids + src, in.token_type_ids + src + in.seq_len, types.begin() + dst);
          lengths[j] = in.lengths[left[j]];
        }
        Inputs sub = in;
        sub.input_ids = ids.data();
        sub.token_type_ids = types.empty() ? nullptr : types.data();
        sub.lengths = lengths.data();
        sub.batch = n;
        Outputs o;
        o.logits = logits.data();
        run(sub, *cascade[s], o, threads);
        last_stage = std::max(last_stage, static_cast<int>(s));
        const bool last = s + 1 == cascade.size();
        int kept = 0;
        for (int j = 0; j < n; ++j) {
          float* p = logits.data() + static_cast<std::size_t>(j) * C;
          const float top = softmax_row(p, C);  // the reported probability decides
          if (last || top >= threshold) {
            const std::size_t i = static_cast<std::size_t>(b0 + left[j]);
            std::copy(p, p + C, r.probabilities.begin() + static_cast<long>(i * C));
            r.exit_stage[i] = static_cast<int>(s);
          } else {
            next[kept++] = left[j];
          }
        }
        std::swap(left, next);
        n = kept;
      }
    });
    r.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count();
    for (auto& c : cells_)
      if (&c.net == cascade[static_cast<std::size_t>(last_stage)]) r.cell = {c.width, c.depth, 0.0, c.net.precision};
    name_labels(r);  // the rows are probabilities already
    return r;
  }
  /// The same with the session's prepared cells, cheapest first: {{0.25, 0.5}, {1, 1}} etc.
  Classification classify_early_exit(const TokenBatch& b, const std::vector<std::pair<double, double>>& cells, double threshold,
                                     const Threads& threads = Threads()) const {
    std::vector<const SubNetwork*> nets;
    for (auto& [w, d] : cells) nets.push_back(&cell(w, d));
    return classify_early_exit(b, nets, threshold, threads);
  }

  /// One vector per sequence of `b` ([batch, hidden], row-major) at `net`: the final hidden states
  /// pooled (padding excluded), L2-normalised when `normalize`. Thread-safe as run() is; the
  /// hidden states are read in the workspace, so only the result is allocated.
  std::vector<float> embed(const TokenBatch& b, const SubNetwork& net, Pooling pooling = Pooling::kMean, bool normalize = true,
                           const Threads& threads = Threads()) const {
    const int H = config().hidden_size;
    std::vector<float> out(static_cast<std::size_t>(b.batch) * H, 0.0f);
    for_chunks(b, [&](const Inputs& in, int b0) {
      Lease lease(*this);
      Workspace<T>& ws = pool_[lease.index];
      model_.forward(in, net, Outputs{}, ws, threads);  // no output asked: tokens packed, states stay in ws
      const BatchLayout& lay = ws.current;
      for (int i = 0; i < in.batch; ++i) {
        float* v = out.data() + static_cast<std::size_t>(b0 + i) * H;
        const int r0 = lay.row_off[i], r1 = lay.row_off[i + 1];
        DYNABERT_REQUIRE(r1 > r0, InputError, "embed: sequence ", b0 + i, " has no token");
        for (int r = r0; r < r1; ++r) {
          if (lay.packed == false && lay.position(r) >= lay.key_end[i]) continue;
          const T* h = ws.hidden.data() + static_cast<std::size_t>(r) * H;
          for (int j = 0; j < H; ++j) {
            const float x = static_cast<float>(h[j]);
            if (pooling == Pooling::kMax) v[j] = r == r0 ? x : std::max(v[j], x);
            else if (pooling == Pooling::kMean) v[j] += x;
            else if (r == r0) v[j] = x;
          }
        }
        if (pooling == Pooling::kMean)
          for (int j = 0; j < H; ++j) v[j] /= static_cast<float>(r1 - r0);
        if (normalize) {
          double n2 = 0;
          for (int j = 0; j < H; ++j) n2 += static_cast<double>(v[j]) * v[j];
          const float inv = n2 > 0 ? static_cast<float>(1.0 / std::sqrt(n2)) : 0.0f;
          for (int j = 0; j < H; ++j) v[j] *= inv;
        }
      }
    });
    return out;
  }
  std::vector<float> embed(const TokenBatch& b, double width, double depth, Pooling pooling = Pooling::kMean,
                           bool normalize = true, const Threads& threads = Threads()) const {
    return embed(b, cell(width, depth), pooling, normalize, threads);
  }

  /// (Call before serving: not safe to run while other threads call run_within.)
  /// Measures every grid cell at two sizes (batch 1 x `short_len` and batch 1 x max_seq_len
  /// tokens, median of `reps`) and arms the budget controller. Needs a grid.
  void calibrate(const Threads& threads = Threads(), int reps = 3, int short_len = 16, BudgetOptions bo = {}) {
    DYNABERT_REQUIRE(!grid_.empty(), InputError, "calibration needs an accuracy grid (checkpoint metadata or set_grid)");
    DYNABERT_REQUIRE(reps >= 1 && short_len >= 1 && short_len < opt_.max_seq_len, InputError,
                     "calibration needs reps >= 1 and 1 <= short length < max_seq_len");
    auto ctl = std::make_unique<BudgetController>(grid_, bo);
    grid_nets_.clear();
    for (auto& g : grid_) {
      grid_nets_.push_back(SubNetwork::dynabert(config(), g.width, g.depth));
      grid_nets_.back().precision = g.precision;
    }
    std::vector<std::int32_t> ids(static_cast<std::size_t>(opt_.max_seq_len), 1000 % config().vocab_size);
    std::vector<T> sink(static_cast<std::size_t>(std::max(1, model_.num_labels())) * config().hidden_size);
    Outputs o;
    if (model_.num_labels() > 0) o.logits = sink.data(); else if (model_.has_pooler()) o.pooled = sink.data();
    auto time = [&](const SubNetwork& net, int len) {
      Inputs in;
      in.input_ids = ids.data(); in.batch = 1; in.seq_len = len;
      run(in, net, o, threads);  // warm-up
      std::vector<double> ms;
      for (int r = 0; r < reps; ++r) {
        const auto a = std::chrono::steady_clock::now();
        run(in, net, o, threads);
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
      }
      std::sort(ms.begin(), ms.end());
      return ms[ms.size() / 2];
    };
    for (std::size_t c = 0; c < grid_.size(); ++c)
      ctl->set_base(c, short_len, time(grid_nets_[c], short_len), opt_.max_seq_len, time(grid_nets_[c], opt_.max_seq_len));
    budget_ = std::move(ctl);
  }
  BudgetController* budget() { return budget_.get(); }
  const BudgetController* budget() const { return budget_.get(); }

  /// Runs `in` at the most accurate cell predicted to fit `budget_ms`, timing the call and
  /// feeding the measurement back. Needs calibrate().
  BudgetedCall run_within(const Inputs& in, double budget_ms, const Outputs& out, const Threads& threads = Threads()) {
    DYNABERT_REQUIRE(budget_, InputError, "run_within needs calibrate() first");
    const long tokens = static_cast<long>(in.batch) * in.seq_len;
    const auto d = budget_->choose(budget_ms, tokens);
    const auto a = std::chrono::steady_clock::now();
    run(in, grid_nets_[d.cell], out, threads);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count();
    budget_->observe(d.cell, tokens, ms);
    return {grid_[d.cell], d.predicted_ms, ms};
  }

 private:
  struct Cell {
    double width, depth;
    SubNetwork net;
  };
  /// A workspace taken from the pool for one call.
  struct Lease {
    const Session& s;
    int index;
    explicit Lease(const Session& session) : s(session) {
      std::unique_lock<std::mutex> g(s.m_);
      s.cv_.wait(g, [&] { return !s.free_.empty(); });
      index = s.free_.back();
      s.free_.pop_back();
    }
    ~Lease() {
      {
        std::lock_guard<std::mutex> g(s.m_);
        s.free_.push_back(index);  // capacity reserved at construction: no allocation
      }
      s.cv_.notify_one();
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
  };

  /// The checkpoint's metadata: of model.safetensors, or of the first shard of a sharded one.
  static std::map<std::string, std::string> read_metadata(const std::string& dir) {
    return io::CheckpointReader(dir).metadata();
  }
  /// Calls f(inputs, first) on slices of `b` of at most options().max_batch sequences.
  template <class F>
  void for_chunks(const TokenBatch& b, F&& f) const {
    DYNABERT_REQUIRE(b.batch >= 0 && b.ids.size() == static_cast<std::size_t>(b.batch) * b.seq_len &&
                         b.lengths.size() == static_cast<std::size_t>(b.batch) &&
                         (b.type_ids.empty() || b.type_ids.size() == b.ids.size()),
                     InputError, "token batch of ", b.batch, " x ", b.seq_len, " has arrays of other sizes");
    const Inputs all = inputs_of(b);
    for (int b0 = 0; b0 < b.batch; b0 += opt_.max_batch) {
      Inputs in = all;
      const long off = static_cast<long>(b0) * b.seq_len;
      in.input_ids += off;
      if (in.token_type_ids) in.token_type_ids += off;
      in.lengths += b0;
      in.batch = std::min(opt_.max_batch, b.batch - b0);
      f(in, b0);
    }
  }
  Classification start_classification(const TokenBatch& b, const SubNetwork& net) const {
    DYNABERT_REQUIRE(model_.num_labels() > 0, InputError, "classify needs a model with a classifier head");
    Classification r;
    r.num_labels = model_.num_labels();
    r.labels.resize(static_cast<std::size_t>(b.batch));
    r.names.resize(static_cast<std::size_t>(b.batch));
    r.probabilities.resize(static_cast<std::size_t>(b.batch) * r.num_labels);
    r.cell = {0.0, 0.0, 0.0, net.precision};
    for (auto& c : cells_)
      if (&c.net == &net) r.cell = {c.width, c.depth, 0.0, net.precision};
    return r;
  }
  /// Softmax of one row of logits in place; returns the largest probability.
  static float softmax_row(float* p, int C) {
    const float mx = *std::max_element(p, p + C);
    double sum = 0;
    for (int c = 0; c < C; ++c) sum += (p[c] = std::exp(p[c] - mx));
    for (int c = 0; c < C; ++c) p[c] = static_cast<float>(p[c] / sum);
    return *std::max_element(p, p + C);
  }
  /// r.probabilities holds logits: softmax, then labels and names.
  void finish_classification(Classification& r) const {
    for (std::size_t b = 0; b < r.labels.size(); ++b) softmax_row(r.probabilities.data() + b * r.num_labels, r.num_labels);
    name_labels(r);
  }
  /// The most probable label of each row of r.probabilities, and its name.
  void name_labels(Classification& r) const {
    const int C = r.num_labels;
    for (std::size_t b = 0; b < r.labels.size(); ++b) {
      const float* p = r.probabilities.data() + b * C;
      r.labels[b] = static_cast<int>(std::max_element(p, p + C) - p);
      r.names[b] = r.labels[b] < config().num_labels() ? config().id2label[static_cast<std::size_t>(r.labels[b])]
                                                      : std::to_string(r.labels[b]);
    }
  }

  /// Once per process, on stderr (unless DYNABERT_QUIET is set): a build without optimisation or
  /// with only SSE2 runs tens to hundreds of times slower than it should.
  static void warn_about_build() {
    static std::once_flag once;
    std::call_once(once, [] {
      if (fast_build() || std::getenv("DYNABERT_QUIET")) return;
      std::fprintf(stderr,
                   "dynabert: this program was compiled %s for %s: expect it to run far slower than it can "
                   "(compile with -O2 or -O3 and -march=native; docs/embedding.md)\n",
#if defined(__OPTIMIZE__)
                   "with optimisation",
#else
                   "without optimisation",
#endif
                   simd::arch_name());
    });
  }
  bool runnable(double w, double d) const {
    const auto& c = model_.config();
    for (int l = 0; l < c.num_hidden_layers; ++l)
      if (round_half_even(c.layer_heads(l) * w) < 1) return false;
    return round_half_even(c.num_hidden_layers * d) >= 1;
  }

  SessionOptions opt_;
  ElasticBert<T, Dims> model_;
  mutable std::vector<Workspace<T>> pool_;
  mutable std::vector<int> free_;
  mutable std::mutex m_;
  mutable std::condition_variable cv_;
  std::vector<Cell> cells_;
  std::vector<std::pair<double, double>> skipped_;
  std::vector<GridCell> grid_;
  std::vector<SubNetwork> grid_nets_;
  std::unique_ptr<BudgetController> budget_;
};

}  // namespace dynabert
