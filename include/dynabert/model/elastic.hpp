// The run-time shape of a sub-network: which layers run, in which order, and how many heads and
// FFN neurons each keeps (always a prefix: after rewiring the most important come first).
// `SubNetwork::dynabert` applies DynaBERT's exact rounding rules (see docs/elastic.md).
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "dynabert/core/error.hpp"
#include "dynabert/kernels/precision.hpp"
#include "dynabert/model/config.hpp"

namespace dynabert {

/// Python 3's round(): nearest integer, ties to even (0.5 -> 0, 1.5 -> 2, 4.5 -> 4).
inline long round_half_even(double x) {
  const double f = std::floor(x);
  const double d = x - f;
  long r = static_cast<long>(f);
  if (d > 0.5 || (d == 0.5 && (r % 2 != 0))) ++r;
  return r;
}

/// Heads DynaBERT keeps at width multiplier m_w: round_half_even(heads * m_w). Throws when m_w is
/// outside (0, 1] or the result is zero heads.
inline int dynabert_heads(int heads, double width) {
  DYNABERT_REQUIRE(width > 0.0 && width <= 1.0, InputError, "width multiplier ", width,
                   " is outside (0, 1]");
  const long n = round_half_even(heads * width);
  DYNABERT_REQUIRE(n >= 1, InputError, "width multiplier ", width, " keeps no head of ", heads,
                   " (round(", heads, " x ", width, ") = 0)");
  return static_cast<int>(n);
}

/// FFN neurons kept with `kept_heads` of `heads`: int(kept_heads / heads * intermediate), at least
/// 1 (the official code's DynaLinear rule: FFN width moves in steps of intermediate / heads).
inline int dynabert_neurons(int kept_heads, int heads, int intermediate) {
  const double eff = static_cast<double>(kept_heads) / static_cast<double>(heads);
  const long n = static_cast<long>(eff * static_cast<double>(intermediate));
  return static_cast<int>(n < 1 ? 1 : n);
}

/// Layers DynaBERT keeps at depth multiplier m_d, 0-based original indices in execution order:
/// depth = round_half_even(layers * m_d), kept[i] = floor(i / m_d) in double arithmetic.
inline std::vector<int> dynabert_layers(int layers, double depth) {
  DYNABERT_REQUIRE(depth > 0.0 && depth <= 1.0, InputError, "depth multiplier ", depth,
                   " is outside (0, 1]");
  const long n = round_half_even(layers * depth);
  DYNABERT_REQUIRE(n >= 1, InputError, "depth multiplier ", depth, " keeps no layer of ", layers,
                   " (round(", layers, " x ", depth, ") = 0)");
  std::vector<int> kept;
  kept.reserve(static_cast<std::size_t>(n));
  for (long i = 0; i < n; ++i) kept.push_back(static_cast<int>(std::floor(static_cast<double>(i) / depth)));
  return kept;
}

/// What to run: the executed layers and, per original layer, kept heads and neurons, plus
/// optional per-head gates. Cheap to build; holds no weights.
struct SubNetwork {
  /// Original layer indices in execution order (strictly increasing).
  std::vector<int> layers;
  /// Kept heads per original layer (size = num_hidden_layers); only executed layers matter.
  std::vector<int> heads;
  /// Kept FFN neurons per original layer.
  std::vector<int> neurons;
  /// Optional gates [num_hidden_layers x num_attention_heads], row-major: gate[l][h] multiplies
  /// head h's attention probabilities in layer l (DynaBERT's head-importance mask). Null = all 1.
  const float* head_gates = nullptr;
  /// Arithmetic of the encoder layers' linear layers (the model must have been prepared for it).
  Precision precision = Precision::kFp32;

  /// The whole model.
  static SubNetwork full(const BertConfig& c) {
    SubNetwork s;
    for (int l = 0; l < c.num_hidden_layers; ++l) {
      s.layers.push_back(l);
      s.heads.push_back(c.layer_heads(l));
      s.neurons.push_back(c.layer_intermediate(l));
    }
    return s;
  }

  /// DynaBERT's sub-network at width m_w and depth m_d (both in (0, 1]).
  static SubNetwork dynabert(const BertConfig& c, double width, double depth) {
    SubNetwork s;
    s.layers = dynabert_layers(c.num_hidden_layers, depth);
    for (int l = 0; l < c.num_hidden_layers; ++l) {
      const int h = c.layer_heads(l);
      const int kept = dynabert_heads(h, width);
      s.heads.push_back(kept);
      s.neurons.push_back(dynabert_neurons(kept, h, c.layer_intermediate(l)));
    }
    return s;
  }

  /// Any per-layer shape; validated against `c`.
  static SubNetwork custom(const BertConfig& c, std::vector<int> layers, std::vector<int> heads,
                           std::vector<int> neurons) {
    SubNetwork s{std::move(layers), std::move(heads), std::move(neurons), nullptr};
    s.validate(c);
    return s;
  }

  int depth() const { return static_cast<int>(layers.size()); }

  /// Throws InputError when the shape cannot run on a model with config `c`.
  void validate(const BertConfig& c) const {
    const int L = c.num_hidden_layers;
    DYNABERT_REQUIRE(!layers.empty(), InputError, "sub-network runs no layer");
    DYNABERT_REQUIRE(static_cast<int>(heads.size()) == L && static_cast<int>(neurons.size()) == L,
                     InputError, "sub-network lists ", heads.size(), " head counts and ",
                     neurons.size(), " neuron counts for a model of ", L, " layers");
    for (std::size_t i = 0; i < layers.size(); ++i) {
      const int l = layers[i];
      DYNABERT_REQUIRE(l >= 0 && l < L, InputError, "sub-network layer index ", l,
                       " is outside 0..", L - 1);
      DYNABERT_REQUIRE(i == 0 || l > layers[i - 1], InputError,
                       "sub-network layers must be strictly increasing (", layers[i - 1], " then ", l, ")");
      DYNABERT_REQUIRE(heads[l] >= 1 && heads[l] <= c.layer_heads(l), InputError, "layer ", l,
                       " keeps ", heads[l], " heads; it has ", c.layer_heads(l));
      DYNABERT_REQUIRE(neurons[l] >= 1 && neurons[l] <= c.layer_intermediate(l), InputError,
                       "layer ", l, " keeps ", neurons[l], " FFN neurons; it has ",
                       c.layer_intermediate(l));
    }
  }

  /// Teacher hidden-state indices this student's states are matched to in DynaBERT stage 2:
  /// layers + [L] (state 0 = embeddings, state k = output of layer k-1).
  std::vector<int> teacher_state_indices(const BertConfig& c) const {
    std::vector<int> t(layers);
    t.push_back(c.num_hidden_layers);
    return t;
  }

  /// Floating-point operations of the encoder for one sequence of `seq_len` tokens
  /// (2 x multiply-adds of the linear layers and attention; embeddings/pooler excluded). With
  /// `first_token_last`, the last layer as a logits-only forward runs it (Outputs::
  /// first_token_only): Q, K and V for every token, the rest for the first token alone.
  double encoder_flops(const BertConfig& c, int seq_len, bool first_token_last = false) const {
    const double d = c.hidden_size, dh = c.head_dim(), S = seq_len;
    double macs = 0;
    for (std::size_t i = 0; i < layers.size(); ++i) {
      const int l = layers[i];
      const double a = dh * heads[l];
      if (first_token_last && i + 1 == layers.size())
        macs += S * 3.0 * d * a + (d * a + 2.0 * d * neurons[l]) + 2.0 * S * a;
      else
        macs += S * (4.0 * d * a + 2.0 * d * neurons[l]) + 2.0 * S * S * a;
    }
    return 2.0 * macs;
  }

  /// Encoder parameters this sub-network uses (linear weights, biases and LayerNorms).
  long encoder_params(const BertConfig& c) const {
    const long d = c.hidden_size, dh = c.head_dim();
    long p = 0;
    for (int l : layers) {
      const long a = dh * heads[l];
      p += 3 * (d * a + a) + (a * d + d) + 4 * d + (d * neurons[l] + neurons[l]) + (neurons[l] * d + d);
    }
    return p;
  }
};

}  // namespace dynabert
