// Embeddings<T>: word + position + token-type embeddings followed by LayerNorm, one row per token.
#pragma once
#include <cstdint>

#include "dynabert/core/error.hpp"
#include "dynabert/core/parallel.hpp"
#include "dynabert/kernels/ops.hpp"
#include "dynabert/layers/linear.hpp"
#include "dynabert/model/weights.hpp"

namespace dynabert::layers {

template <class T>
class Embeddings {
 public:
  Embeddings() = default;
  explicit Embeddings(const BertWeights<T>& w) : c_(w.config()) {
    const std::size_t H = c_.hidden_size;
    word_ = copy_vector(w.tensor("embeddings.word_embeddings.weight"), H * c_.vocab_size);
    pos_ = copy_vector(w.tensor("embeddings.position_embeddings.weight"), H * c_.max_position_embeddings);
    type_ = copy_vector(w.tensor("embeddings.token_type_embeddings.weight"), H * c_.type_vocab_size);
    gamma_ = copy_vector(w.tensor("embeddings.LayerNorm.weight"), H);
    beta_ = copy_vector(w.tensor("embeddings.LayerNorm.bias"), H);
  }

  /// Throws InputError naming the first token id or type id out of range.
  void check_inputs(const std::int32_t* ids, const std::int32_t* types, int batch, int seq) const {
    for (int b = 0; b < batch; ++b)
      for (int s = 0; s < seq; ++s) {
        const std::int32_t id = ids[b * seq + s];
        DYNABERT_REQUIRE(id >= 0 && id < c_.vocab_size, InputError, "input_ids[", b, "][", s, "] = ", id,
                         " is outside the vocabulary (0..", c_.vocab_size - 1, ")");
        if (types) {
          const std::int32_t t = types[b * seq + s];
          DYNABERT_REQUIRE(t >= 0 && t < c_.type_vocab_size, InputError, "token_type_ids[", b, "][", s,
                           "] = ", t, " is outside 0..", c_.type_vocab_size - 1);
        }
      }
  }

  /// out[(b*seq + s), :] = LN(word[id] + pos[s] + type[t]). Inputs must have been checked.
  void forward(T* out, const std::int32_t* ids, const std::int32_t* types, int batch, int seq,
               const Threads& threads) const {
    const int H = c_.hidden_size;
    threads.for_chunks(static_cast<long>(batch) * seq, [&](int, long lo, long hi) {
      for (long t = lo; t < hi; ++t) {
        const int s = static_cast<int>(t % seq);
        const T* w = word_.data() + static_cast<long>(ids[t]) * H;
        const T* p = pos_.data() + static_cast<long>(s) * H;
        const T* ty = type_.data() + static_cast<long>(types ? types[t] : 0) * H;
        T* o = out + t * H;
        for (int i = 0; i < H; ++i) o[i] = w[i] + p[i] + ty[i];
        ops::layernorm_row(o, o, gamma_.data(), beta_.data(), H, c_.layer_norm_eps);
      }
    });
  }
  std::size_t bytes() const {
    return sizeof(T) * (word_.size() + pos_.size() + type_.size() + gamma_.size() + beta_.size());
  }

 private:
  BertConfig c_;
  AlignedBuffer<T> word_, pos_, type_, gamma_, beta_;
};

}  // namespace dynabert::layers
