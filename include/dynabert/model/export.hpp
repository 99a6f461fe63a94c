// Sub-network export: one cell of an elastic model as a small standalone checkpoint.
//
// extract_subnetwork(weights, net) copies only what `net` runs:
//  - executed layers, renumbered 0..depth-1;
//  - per layer, the kept heads (a prefix of the layer's heads, in the original order) as Q/K/V rows
//    and attention-output columns; every other head of the original model is listed in
//    `pruned_heads` under its ORIGINAL index, exactly as Hugging Face's prune_heads records it, so
//    that BertModel builds the same shapes from config.json;
//  - per layer, the kept FFN neurons; `intermediate_size` is their count when every layer keeps
//    the same number (plain Hugging Face), else the maximum, with the per-layer counts in the
//    dynabert extension `dynabert_intermediate_sizes` (which Hugging Face cannot express);
//  - head gates, when the sub-network has them, folded into the attention-output columns (a gate of
//    exactly 0 prunes its head, as long as the layer keeps one);
//  - embeddings, pooler, classifier and MLM head unchanged.
// The exported model at full size computes what the elastic model computes at `net`.
#pragma once
#include <algorithm>
#include <string>
#include <vector>

#include "dynabert/core/error.hpp"
#include "dynabert/model/elastic.hpp"
#include "dynabert/model/weights.hpp"

namespace dynabert {

/// The weights of sub-network `net` of `w` as a standalone model (see the file comment).
template <class T>
BertWeights<T> extract_subnetwork(const BertWeights<T>& w, const SubNetwork& net) {
  const BertConfig& src = w.config();
  net.validate(src);
  const int NH = src.num_attention_heads, dh = src.head_dim(), H = src.hidden_size;
  const int D = net.depth();
  const float* gates = net.head_gates;

  // Which heads of each executed layer survive (positions among the layer's current heads).
  std::vector<std::vector<int>> keep(D);
  for (int i = 0; i < D; ++i) {
    const int l = net.layers[i];
    for (int h = 0; h < net.heads[l]; ++h)
      if (!gates || gates[l * NH + h] != 0.0f) keep[i].push_back(h);
    if (keep[i].empty()) keep[i].push_back(0);  // every gate 0: keep one head (its output is zeroed below)
  }

  BertConfig cfg = src;
  cfg.num_hidden_layers = D;
  cfg.pruned_heads.clear();
  cfg.layer_intermediate_sizes.clear();
  std::vector<int> neurons(D);
  for (int i = 0; i < D; ++i) {
    const int l = net.layers[i];
    neurons[i] = net.neurons[l];
    // original head ids still present in layer l, in order (Hugging Face keeps them sorted)
    std::vector<int> present;
    const auto pit = src.pruned_heads.find(l);
    for (int h = 0; h < NH; ++h)
      if (pit == src.pruned_heads.end() || std::find(pit->second.begin(), pit->second.end(), h) == pit->second.end())
        present.push_back(h);
    std::vector<int> kept_ids;
    for (int h : keep[i]) kept_ids.push_back(present[static_cast<std::size_t>(h)]);
    std::vector<int> pruned;
    for (int h = 0; h < NH; ++h)
      if (std::find(kept_ids.begin(), kept_ids.end(), h) == kept_ids.end()) pruned.push_back(h);
    if (!pruned.empty()) cfg.pruned_heads[i] = pruned;
  }
  const bool uniform = std::all_of(neurons.begin(), neurons.end(), [&](int n) { return n == neurons[0]; });
  cfg.intermediate_size = *std::max_element(neurons.begin(), neurons.end());
  if (!uniform) cfg.layer_intermediate_sizes = neurons;

  BertWeights<T> out(cfg, w.heads());
  for (const auto& spec : out.specs())  // embeddings and heads: same names, same shapes
    if (spec.name.rfind("encoder.layer.", 0) != 0) std::copy_n(w.tensor(spec.name), spec.numel(), out.tensor(spec.name));
  for (int i = 0; i < D; ++i) {
    const int l = net.layers[i];
    const auto s = w.layer(l);
    auto d = out.layer(i);
    const int a_src = src.layer_heads(l) * dh, I_src = src.layer_intermediate(l);
    const int kh = static_cast<int>(keep[i].size()), a = kh * dh, f = neurons[i];
    for (int k = 0; k < kh; ++k) {
      const long from = static_cast<long>(keep[i][k]) * dh, to = static_cast<long>(k) * dh;
      std::copy_n(s.q_w + from * H, static_cast<long>(dh) * H, d.q_w + to * H);
      std::copy_n(s.k_w + from * H, static_cast<long>(dh) * H, d.k_w + to * H);
      std::copy_n(s.v_w + from * H, static_cast<long>(dh) * H, d.v_w + to * H);
      std::copy_n(s.q_b + from, dh, d.q_b + to);
      std::copy_n(s.k_b + from, dh, d.k_b + to);
      std::copy_n(s.v_b + from, dh, d.v_b + to);
      const T g = gates ? static_cast<T>(gates[l * NH + keep[i][k]]) : T(1);
      for (int r = 0; r < H; ++r)
        for (int j = 0; j < dh; ++j) d.o_w[static_cast<long>(r) * a + to + j] = g * s.o_w[static_cast<long>(r) * a_src + from + j];
    }
    std::copy_n(s.o_b, H, d.o_b);
    std::copy_n(s.ln1_g, H, d.ln1_g);
    std::copy_n(s.ln1_b, H, d.ln1_b);
    std::copy_n(s.i_w, static_cast<long>(f) * H, d.i_w);
    std::copy_n(s.i_b, f, d.i_b);
    for (int r = 0; r < H; ++r) std::copy_n(s.f_w + static_cast<long>(r) * I_src, f, d.f_w + static_cast<long>(r) * f);
    std::copy_n(s.f_b, H, d.f_b);
    std::copy_n(s.ln2_g, H, d.ln2_g);
    std::copy_n(s.ln2_b, H, d.ln2_b);
  }
  return out;
}

}  // namespace dynabert
