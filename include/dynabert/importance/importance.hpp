// Head and FFN-neuron importance (DynaBERT, method doc section 3), accumulated over a dataset in
// evaluation mode at full width and depth with the task loss:
//  - head importance: |d loss / d gate| for per-head gates on the attention probabilities;
//  - neuron j of layer l: | sum_i W1[j,i] dW1[j,i] + b1[j] db1[j] | + | sum_k W2[k,j] dW2[k,j] |.
// Two variants: the official code never zeroes gradients between batches and adds |running sum|
// after every batch (kCumulative, the default, for reproduction); the paper's Algorithm 1 sums
// the gradients over all batches and takes |.| once (kPaper).
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "dynabert/core/error.hpp"
#include "dynabert/train/losses.hpp"
#include "dynabert/train/trainable_bert.hpp"

namespace dynabert::importance {

enum class Variant { kCumulative, kPaper };

/// Scores per layer: heads[l][h] and neurons[l][j].
struct Scores {
  std::vector<std::vector<double>> heads;
  std::vector<std::vector<double>> neurons;
};

/// Accumulates importance over batches. Uses (and leaves dirty) the model's gradient buffers.
template <class T>
class Scorer {
 public:
  Scorer(train::TrainableBert<T>& model, Variant variant = Variant::kCumulative)
      : model_(model), variant_(variant) {
    const auto& c = model.config();
    DYNABERT_REQUIRE(model.params().heads().num_labels > 0, InputError, "importance needs a classification or regression head");
    gates_.assign(static_cast<std::size_t>(c.num_hidden_layers) * c.num_attention_heads, 1.0f);
    gate_grad_.assign(gates_.size(), T(0));
    scores_.heads.assign(c.num_hidden_layers, std::vector<double>(c.num_attention_heads, 0.0));
    scores_.neurons.resize(c.num_hidden_layers);
    for (int l = 0; l < c.num_hidden_layers; ++l) scores_.neurons[l].assign(c.layer_intermediate(l), 0.0);
    model_.zero_grad();
  }

  /// One batch: labels are class ids (classification) or, with a regression head, targets in
  /// `targets`. Loss = mean cross-entropy / MSE, as the reference code.
  void add_batch(const Inputs& in, const std::int32_t* labels, const T* targets = nullptr) {
    const auto& c = model_.config();
    auto net = SubNetwork::full(c);
    net.head_gates = gates_.data();
    model_.forward(in, net, cache_, {});  // evaluation mode: no dropout
    const int C = model_.params().heads().num_labels;
    std::vector<T> d(static_cast<std::size_t>(in.batch) * C, T(0));
    if (C == 1) {
      DYNABERT_REQUIRE(targets, InputError, "a regression head needs targets");
      train::mse(cache_.logits.data(), targets, in.batch, d.data());
    } else {
      DYNABERT_REQUIRE(labels, InputError, "a classification head needs labels");
      train::cross_entropy(cache_.logits.data(), labels, in.batch, C, d.data());
    }
    model_.backward(cache_, d.data(), {}, gate_grad_.data());  // gradients keep accumulating
    ++batches_;
    if (variant_ == Variant::kCumulative) accumulate();
  }

  long batches() const { return batches_; }

  /// The scores (for kPaper computed now from the summed gradients).
  Scores result() {
    if (variant_ == Variant::kPaper) {
      for (auto& l : scores_.heads) std::fill(l.begin(), l.end(), 0.0);
      for (auto& l : scores_.neurons) std::fill(l.begin(), l.end(), 0.0);
      accumulate();
    }
    return scores_;
  }

 private:
  void accumulate() {
    const auto& c = model_.config();
    const int NH = c.num_attention_heads, H = c.hidden_size;
    for (int l = 0; l < c.num_hidden_layers; ++l) {
      for (int h = 0; h < c.layer_heads(l); ++h) scores_.heads[l][h] += std::abs(static_cast<double>(gate_grad_[l * NH + h]));
      const auto w = model_.params().layer(l);
      const auto g = model_.grads().layer(l);
      const int I = c.layer_intermediate(l);
      for (int j = 0; j < I; ++j) {
        double in = static_cast<double>(w.i_b[j]) * g.i_b[j], out = 0;
        for (int i = 0; i < H; ++i) in += static_cast<double>(w.i_w[static_cast<long>(j) * H + i]) * g.i_w[static_cast<long>(j) * H + i];
        for (int k = 0; k < H; ++k) out += static_cast<double>(w.f_w[static_cast<long>(k) * I + j]) * g.f_w[static_cast<long>(k) * I + j];
        scores_.neurons[l][j] += std::abs(in) + std::abs(out);
      }
    }
  }

  train::TrainableBert<T>& model_;
  Variant variant_;
  std::vector<float> gates_;
  std::vector<T> gate_grad_;
  train::TrainCache<T> cache_;
  Scores scores_;
  long batches_ = 0;
};

}  // namespace dynabert::importance
