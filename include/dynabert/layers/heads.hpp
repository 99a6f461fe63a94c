// Pooler (tanh(W h[CLS] + b)) and the classification / regression head (W pooled + b).
#pragma once
#include "dynabert/layers/linear.hpp"
#include "dynabert/model/weights.hpp"

namespace dynabert::layers {

/// pooled[b] = tanh(W_p h[b, 0] + b_p).
template <class T>
class Pooler {
 public:
  Pooler() = default;
  explicit Pooler(const BertWeights<T>& w) : H_(w.config().hidden_size) {
    dense_ = Linear<T>(w.tensor("pooler.dense.weight"), H_, H_, H_);
    bias_ = copy_vector(w.tensor("pooler.dense.bias"), H_);
  }
  /// `hidden` holds batch x seq rows; the first row of each sequence is pooled into `out` [batch, H].
  void forward(T* out, const T* hidden, int batch, int seq, T* scratch, const Threads& threads) const {
    dense_.forward(out, H_, hidden, static_cast<long>(seq) * H_, batch, H_, H_, bias_.data(), nullptr, 0,
                   Activation::kTanh, T(1), scratch, threads);
  }
  std::size_t bytes() const { return dense_.bytes() + bias_.size() * sizeof(T); }

 private:
  int H_ = 0;
  Linear<T> dense_;
  AlignedBuffer<T> bias_;
};

/// logits[b] = W_c pooled[b] + b_c (one output: regression).
template <class T>
class Classifier {
 public:
  Classifier() = default;
  explicit Classifier(const BertWeights<T>& w)
      : H_(w.config().hidden_size), C_(w.heads().num_labels) {
    dense_ = Linear<T>(w.tensor("classifier.weight"), C_, H_, H_);
    bias_ = copy_vector(w.tensor("classifier.bias"), C_);
  }
  int num_labels() const { return C_; }
  void forward(T* logits, const T* pooled, int batch, T* scratch, const Threads& threads) const {
    dense_.forward(logits, C_, pooled, H_, batch, C_, H_, bias_.data(), nullptr, 0, Activation::kNone, T(1),
                   scratch, threads);
  }
  std::size_t bytes() const { return dense_.bytes() + bias_.size() * sizeof(T); }

 private:
  int H_ = 0, C_ = 0;
  Linear<T> dense_;
  AlignedBuffer<T> bias_;
};

}  // namespace dynabert::layers
