// Evaluation metrics: accuracy, macro-F1, Matthews correlation (classification), Pearson and
// Spearman correlation (regression).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

namespace dynabert::train {

/// Metrics of one evaluation; classification fills the first three, regression the last two.
struct Metrics {
  double accuracy = 0, macro_f1 = 0, mcc = 0, pearson = 0, spearman = 0;
  long examples = 0;
};

inline Metrics classification_metrics(const std::vector<int>& pred, const std::vector<int>& gold, int classes) {
  Metrics m;
  m.examples = static_cast<long>(pred.size());
  if (pred.empty()) return m;
  std::vector<std::vector<double>> cm(classes, std::vector<double>(classes, 0.0));
  for (std::size_t i = 0; i < pred.size(); ++i) cm[gold[i]][pred[i]] += 1;
  double correct = 0, f1 = 0;
  for (int c = 0; c < classes; ++c) {
    correct += cm[c][c];
    double tp = cm[c][c], fp = 0, fn = 0;
    for (int o = 0; o < classes; ++o)
      if (o != c) { fp += cm[o][c]; fn += cm[c][o]; }
    f1 += (2 * tp + fp + fn) > 0 ? 2 * tp / (2 * tp + fp + fn) : 0.0;
  }
  const double n = static_cast<double>(pred.size());
  m.accuracy = correct / n;
  m.macro_f1 = f1 / classes;
  // multi-class MCC (Gorodkin): (c s - sum_k p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2))
  double sp = 0, st = 0, ptk = 0;
  for (int k = 0; k < classes; ++k) {
    double pk = 0, tk = 0;
    for (int o = 0; o < classes; ++o) { pk += cm[o][k]; tk += cm[k][o]; }
    sp += pk * pk; st += tk * tk; ptk += pk * tk;
  }
  const double den = std::sqrt((n * n - sp) * (n * n - st));
  m.mcc = den > 0 ? (correct * n - ptk) / den : 0.0;
  return m;
}

inline double pearson(const std::vector<double>& a, const std::vector<double>& b) {
  const double n = static_cast<double>(a.size());
  if (n < 2) return 0.0;
  const double ma = std::accumulate(a.begin(), a.end(), 0.0) / n, mb = std::accumulate(b.begin(), b.end(), 0.0) / n;
  double sab = 0, saa = 0, sbb = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    sab += (a[i] - ma) * (b[i] - mb); saa += (a[i] - ma) * (a[i] - ma); sbb += (b[i] - mb) * (b[i] - mb);
  }
  return saa > 0 && sbb > 0 ? sab / std::sqrt(saa * sbb) : 0.0;
}

/// Ranks with ties averaged (as scipy.stats.spearmanr).
inline std::vector<double> ranks(const std::vector<double>& v) {
  std::vector<std::size_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](auto x, auto y) { return v[x] < v[y]; });
  std::vector<double> r(v.size());
  for (std::size_t i = 0; i < idx.size();) {
    std::size_t j = i;
    while (j + 1 < idx.size() && v[idx[j + 1]] == v[idx[i]]) ++j;
    for (std::size_t k = i; k <= j; ++k) r[idx[k]] = (static_cast<double>(i) + static_cast<double>(j)) / 2.0 + 1.0;
    i = j + 1;
  }
  return r;
}

inline Metrics regression_metrics(const std::vector<double>& pred, const std::vector<double>& gold) {
  Metrics m;
  m.examples = static_cast<long>(pred.size());
  m.pearson = pearson(pred, gold);
  m.spearman = pearson(ranks(pred), ranks(gold));
  return m;
}

}  // namespace dynabert::train
