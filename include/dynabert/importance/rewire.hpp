// Network rewiring (DynaBERT, method doc section 3.5): per layer, heads and FFN neurons are
// permuted by descending importance so that "the first n" means "the n most important". Heads move
// as blocks of head_dim rows of Q, K, V (and columns of the attention output projection); neurons
// as rows of the first FFN matrix and its bias (and columns of the second). At full width the
// rewired model computes exactly the same function.
#pragma once
#include <algorithm>
#include <numeric>
#include <vector>

#include "dynabert/importance/importance.hpp"
#include "dynabert/model/weights.hpp"

namespace dynabert::importance {

/// Indices sorting `score` in descending order (ties keep their order).
inline std::vector<int> descending_order(const std::vector<double>& score) {
  std::vector<int> idx(score.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return score[a] > score[b]; });
  return idx;
}

/// The permutations rewiring applies: heads[l][new] = old head, neurons[l][new] = old neuron.
struct Permutation {
  std::vector<std::vector<int>> heads, neurons;
};

inline Permutation ranking(const Scores& s) {
  Permutation p;
  for (auto& h : s.heads) p.heads.push_back(descending_order(h));
  for (auto& n : s.neurons) p.neurons.push_back(descending_order(n));
  return p;
}

/// Permutes `w` in place by `perm` (layer heads must not be pruned).
template <class T>
void apply(BertWeights<T>& w, const Permutation& perm) {
  const auto& c = w.config();
  const int H = c.hidden_size, dh = c.head_dim();
  DYNABERT_REQUIRE(static_cast<int>(perm.heads.size()) == c.num_hidden_layers &&
                       static_cast<int>(perm.neurons.size()) == c.num_hidden_layers,
                   InputError, "rewiring: permutation does not cover every layer");
  std::vector<T> tmp;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const int NH = c.layer_heads(l), I = c.layer_intermediate(l), a = NH * dh;
    const auto& ph = perm.heads[l];
    const auto& pn = perm.neurons[l];
    DYNABERT_REQUIRE(static_cast<int>(ph.size()) == NH && static_cast<int>(pn.size()) == I, InputError,
                     "rewiring: layer ", l, " permutation sizes ", ph.size(), "/", pn.size(), " for ", NH, " heads and ", I, " neurons");
    auto p = w.layer(l);
    // rows of a [rows, cols] matrix: new row r <- old row src(r)
    auto permute_rows = [&](T* m, int rows, int cols, auto src) {
      tmp.assign(m, m + static_cast<long>(rows) * cols);
      for (int r = 0; r < rows; ++r) std::copy_n(tmp.data() + static_cast<long>(src(r)) * cols, cols, m + static_cast<long>(r) * cols);
    };
    auto permute_cols = [&](T* m, int rows, int cols, auto src) {
      tmp.assign(m, m + static_cast<long>(rows) * cols);
      for (int r = 0; r < rows; ++r)
        for (int col = 0; col < cols; ++col) m[static_cast<long>(r) * cols + col] = tmp[static_cast<long>(r) * cols + src(col)];
    };
    auto head_row = [&](int r) { return ph[r / dh] * dh + r % dh; };
    for (T* m : {p.q_w, p.k_w, p.v_w}) permute_rows(m, a, H, head_row);
    for (T* b : {p.q_b, p.k_b, p.v_b}) permute_rows(b, a, 1, head_row);
    permute_cols(p.o_w, H, a, head_row);
    auto neuron = [&](int r) { return pn[r]; };
    permute_rows(p.i_w, I, H, neuron);
    permute_rows(p.i_b, I, 1, neuron);
    permute_cols(p.f_w, H, I, neuron);
  }
}

/// Rewires `w` by descending importance and returns the permutation applied.
template <class T>
Permutation rewire(BertWeights<T>& w, const Scores& s) {
  auto p = ranking(s);
  apply(w, p);
  return p;
}

}  // namespace dynabert::importance
