// BudgetController: picks, per call, the most accurate (width, depth) cell whose latency on this
// machine fits a budget in milliseconds, and follows the machine as it gets busier or freer.
//
// Cost model. Calibration measures each cell at two sizes (tokens = batch x length); a cell's
// latency at any size is the line through those points ("base"). Served calls keep a load factor
// up to date: the median of measured / base over the last `window` calls (a median, so that one
// stray slow call does not move it, while a real change of load does within window / 2 calls).
// The prediction for a cell is base x load.
//
// Choice, with hysteresis so it does not flap:
//  - a cell fits when its prediction is at most `headroom` x budget; the target is the most
//    accurate fitting cell (the cheapest cell when none fits);
//  - when the current cell stops fitting, move down to the target at once;
//  - move up only to a cell that fits within `upgrade_headroom` x budget (a stricter margin), and
//    only after one has for `upgrade_patience` consecutive calls. Between the two margins the
//    controller stays where it is.
// The grid (accuracy per cell) comes from the checkpoint's "dynabert_grid" metadata, written by
// examples/train_dynabert.cpp, or from the caller. choose() and observe() allocate nothing.
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <mutex>
#include <string>
#include <vector>

#include "dynabert/core/error.hpp"
#include "dynabert/io/json.hpp"
#include "dynabert/kernels/precision.hpp"

namespace dynabert {

/// One cell of the accuracy grid: a sub-network (width, depth) in a precision, and its accuracy.
struct GridCell {
  double width = 1.0, depth = 1.0;
  double accuracy = 0.0;  ///< any score where larger is better
  Precision precision = Precision::kFp32;
};

/// The grid of a "dynabert_grid" JSON array ([{"width":..,"depth":..,"accuracy":..[,"precision":"int8"]}, ...]).
inline std::vector<GridCell> parse_grid(const std::string& json_text, const std::string& source = "grid") {
  const io::Json j = io::parse_json(json_text, source);
  DYNABERT_REQUIRE(j.is_array() && !j.empty(), FormatError, source, ": the grid must be a non-empty array");
  std::vector<GridCell> g;
  for (std::size_t i = 0; i < j.size(); ++i) {
    const auto& c = j[i];
    const io::Json *w = c.find("width"), *d = c.find("depth"), *a = c.find("accuracy");
    DYNABERT_REQUIRE(w && d && a && w->is_number() && d->is_number() && a->is_number(), FormatError, source, ": cell ", i,
                     " needs numeric width, depth and accuracy");
    g.push_back({w->as_double(), d->as_double(), a->as_double()});
    if (const io::Json* p = c.find("precision")) {  // optional: "fp32" (default), "bf16", "int8"
      DYNABERT_REQUIRE(p->is_string() && parse_precision(p->as_string(), g.back().precision), FormatError, source, ": cell ",
                       i, " has a precision that is not \"fp32\", \"bf16\" or \"int8\"");
    }
    DYNABERT_REQUIRE(g.back().width > 0 && g.back().width <= 1 && g.back().depth > 0 && g.back().depth <= 1 &&
                         std::isfinite(g.back().accuracy),
                     FormatError, source, ": cell ", i, " has width ", g.back().width, " and depth ", g.back().depth,
                     " outside (0, 1] or an accuracy that is not a number");
  }
  return g;
}

/// Tuning of the controller.
struct BudgetOptions {
  double headroom = 0.9;          ///< a cell fits when predicted <= headroom x budget
  double upgrade_headroom = 0.8;  ///< moving up needs predicted <= this x budget ...
  int upgrade_patience = 8;       ///< ... for this many consecutive calls
  int window = 5;                 ///< calls in the load median (1..16)
};

class BudgetController {
 public:
  /// What a decision was based on.
  struct Decision {
    std::size_t cell = 0;       ///< index into grid()
    double predicted_ms = 0;    ///< base x load for this call
  };

  BudgetController(std::vector<GridCell> grid, BudgetOptions opt = {}) : grid_(std::move(grid)), opt_(opt) {
    DYNABERT_REQUIRE(!grid_.empty(), InputError, "the budget controller needs at least one cell");
    DYNABERT_REQUIRE(opt_.headroom > 0 && opt_.upgrade_headroom > 0 && opt_.upgrade_headroom <= opt_.headroom &&
                         opt_.upgrade_patience >= 0 && opt_.window >= 1 && opt_.window <= kMaxWindow,
                     InputError, "budget options are impossible (need 0 < upgrade_headroom <= headroom, 1 <= window <= 16)");
    base_.assign(grid_.size(), {0.0, 0.0});
    order_.resize(grid_.size());
    for (std::size_t i = 0; i < order_.size(); ++i) order_[i] = i;
  }

  const std::vector<GridCell>& grid() const { return grid_; }

  /// Sets the base latency of `cell`: ms_a at tokens_a and ms_b at tokens_b (tokens_a < tokens_b).
  void set_base(std::size_t cell, long tokens_a, double ms_a, long tokens_b, double ms_b) {
    DYNABERT_REQUIRE(cell < grid_.size() && tokens_a > 0 && tokens_b > tokens_a && ms_a > 0 && ms_b > 0, InputError,
                     "calibration point of cell ", cell, " is impossible");
    const double slope = std::max(0.0, (ms_b - ms_a) / static_cast<double>(tokens_b - tokens_a));
    base_[cell] = {ms_a - slope * static_cast<double>(tokens_a), slope};
    calibrated_ = true;
    // most accurate first; ties: cheaper first
    std::sort(order_.begin(), order_.end(), [&](std::size_t a, std::size_t b) {
      if (grid_[a].accuracy != grid_[b].accuracy) return grid_[a].accuracy > grid_[b].accuracy;
      return base_ms(a, 128) < base_ms(b, 128);
    });
  }

  /// Calibrated latency of `cell` for `tokens` tokens on an idle machine.
  double base_ms(std::size_t cell, long tokens) const {
    return std::max(1e-6, base_[cell].first + base_[cell].second * static_cast<double>(tokens));
  }
  double load() const {
    std::lock_guard<std::mutex> g(m_);
    return load_;
  }
  std::size_t current() const {
    std::lock_guard<std::mutex> g(m_);
    return current_;
  }

  /// The cell to run a call of `tokens` tokens under `budget_ms`.
  Decision choose(double budget_ms, long tokens) {
    DYNABERT_REQUIRE(calibrated_, InputError, "the budget controller has not been calibrated");
    DYNABERT_REQUIRE(budget_ms > 0 && std::isfinite(budget_ms), InputError, "latency budget ", budget_ms, " ms is not positive");
    std::lock_guard<std::mutex> g(m_);
    auto pred = [&](std::size_t c) { return base_ms(c, tokens) * load_; };
    std::size_t cheapest = 0;
    for (std::size_t c = 1; c < grid_.size(); ++c)
      if (base_ms(c, tokens) < base_ms(cheapest, tokens)) cheapest = c;
    // most accurate cell within a margin (the cheapest when none is)
    auto best_within = [&](double margin) {
      for (std::size_t c : order_)
        if (pred(c) <= margin * budget_ms) return c;
      return cheapest;
    };
    const std::size_t target = best_within(opt_.headroom);
    if (!started_) {
      current_ = target;
      started_ = true;
    } else if (pred(current_) > opt_.headroom * budget_ms) {  // over budget: down at once
      current_ = target;
      streak_ = 0;
    } else if (const std::size_t up = best_within(opt_.upgrade_headroom); rank(up) < rank(current_)) {
      // a better cell fits with the stricter margin: move after `upgrade_patience` such calls in a row
      if (++streak_ >= opt_.upgrade_patience) {
        current_ = up;
        streak_ = 0;
      }
    } else {
      streak_ = 0;
    }
    return {current_, pred(current_)};
  }

  /// Reports that a call of `tokens` tokens ran `cell` in `ms` milliseconds.
  void observe(std::size_t cell, long tokens, double ms) {
    if (cell >= grid_.size() || !(ms > 0) || !calibrated_) return;
    std::lock_guard<std::mutex> g(m_);
    ratios_[seen_ % static_cast<std::size_t>(opt_.window)] = ms / base_ms(cell, tokens);
    ++seen_;
    const std::size_t n = std::min<std::size_t>(seen_, static_cast<std::size_t>(opt_.window));
    std::array<double, kMaxWindow> sorted{};
    std::copy_n(ratios_.begin(), n, sorted.begin());
    std::sort(sorted.begin(), sorted.begin() + static_cast<long>(n));
    load_ = sorted[(n - 1) / 2];  // the lower middle value while fewer than `window` calls are in
  }

 private:
  static constexpr int kMaxWindow = 16;
  std::size_t rank(std::size_t cell) const {
    return static_cast<std::size_t>(std::find(order_.begin(), order_.end(), cell) - order_.begin());
  }

  std::vector<GridCell> grid_;
  BudgetOptions opt_;
  std::vector<std::pair<double, double>> base_;  ///< intercept (ms), slope (ms per token)
  std::vector<std::size_t> order_;
  bool calibrated_ = false, started_ = false;
  mutable std::mutex m_;
  double load_ = 1.0;
  std::array<double, kMaxWindow> ratios_{};
  std::size_t seen_ = 0;
  std::size_t current_ = 0;
  int streak_ = 0;
};

}  // namespace dynabert
