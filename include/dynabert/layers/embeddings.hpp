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
  /// With `seq_off` (packed tokens), sequence b's first seq_off[b + 1] - seq_off[b] tokens go to
  /// rows seq_off[b] ... and padding is not computed.
  void forward(T* out, const std::int32_t* ids, const std::int32_t* types, int batch, int seq,
               const Threads& threads, const int* seq_off = nullptr) const {
    const int H = c_.hidden_size;
    const long rows = seq_off ? seq_off[batch] : static_cast<long>(batch) * seq;
    threads.for_chunks(rows, [&](int, long lo, long hi) {
      int b = 0;
      if (seq_off) while (seq_off[b + 1] <= lo) ++b;
      for (long r = lo; r < hi; ++r) {
        if (seq_off) while (seq_off[b + 1] <= r) ++b;
        const int s = static_cast<int>(seq_off ? r - seq_off[b] : r % seq);
        const long t = seq_off ? static_cast<long>(b) * seq + s : r;  // index into ids / types
        const T* w = word_.data() + static_cast<long>(ids[t]) * H;
        const T* p = pos_.data() + static_cast<long>(s) * H;
        const T* ty = type_.data() + static_cast<long>(types ? types[t] : 0) * H;
        T* o = out + r * H;
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
