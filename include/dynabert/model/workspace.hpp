// Workspace<T>: every buffer a forward pass needs, allocated once for a maximum batch, sequence
// length and thread count. A forward pass allocates nothing; one workspace serves one call at a
// time (concurrent calls on one model each bring their own).
#pragma once
#include <algorithm>
#include <cstdint>

#include "dynabert/core/aligned.hpp"
#include "dynabert/kernels/gemm.hpp"
#include "dynabert/model/config.hpp"

namespace dynabert {

/// Limits a workspace is sized for.
struct WorkspaceLimits {
  int max_batch = 1;
  int max_seq_len = 128;
  int max_threads = 1;
};

template <class T>
class Workspace {
 public:
  Workspace() = default;
  Workspace(const BertConfig& c, WorkspaceLimits lim) : lim_(lim) {
    DYNABERT_REQUIRE(lim.max_batch >= 1 && lim.max_seq_len >= 1 && lim.max_threads >= 1, InputError,
                     "workspace limits must be positive (batch ", lim.max_batch, ", length ",
                     lim.max_seq_len, ", threads ", lim.max_threads, ")");
    DYNABERT_REQUIRE(lim.max_seq_len <= c.max_position_embeddings, InputError, "workspace length ",
                     lim.max_seq_len, " exceeds max_position_embeddings ", c.max_position_embeddings);
    const std::size_t T_ = static_cast<std::size_t>(lim.max_batch) * lim.max_seq_len;
    const std::size_t H = c.hidden_size, S = lim.max_seq_len;
    hidden.resize(T_ * H);
    tmp.resize(T_ * H);
    h1.resize(T_ * H);
    ctx.resize(T_ * H);
    qkv.resize(T_ * 3 * H);
    // FFN rows padded by 16 floats when their stride would be a multiple of 4 KB: the GEMM reads
    // A in place, and rows 4 KB apart would all fall into one L1 cache set.
    ffn_ld = c.max_layer_intermediate();
    if ((ffn_ld * sizeof(T)) % 4096 == 0) ffn_ld += 16;
    ffn.resize(T_ * static_cast<std::size_t>(ffn_ld));
    pooled.resize(static_cast<std::size_t>(lim.max_batch) * H);
    mask_bias.resize(T_);
    key_end.resize(static_cast<std::size_t>(lim.max_batch));
    seq_off.resize(static_cast<std::size_t>(lim.max_batch) + 1);
    has_holes.resize(static_cast<std::size_t>(lim.max_batch));
    const int dh = c.head_dim();
    gemm_stride = kernels::gemm_scratch_floats();
    attn_stride = round_up(kernels::packed_size(static_cast<int>(S), dh), 16) +
                  round_up(S * S, 16) + round_up(kernels::packed_size(dh, static_cast<int>(S)), 16);
    gemm_scratch.resize(gemm_stride * lim.max_threads);
    attn_scratch.resize(attn_stride * lim.max_threads);
  }

  const WorkspaceLimits& limits() const { return lim_; }
  /// Bytes held.
  std::size_t bytes() const {
    return sizeof(T) * (hidden.size() + tmp.size() + h1.size() + ctx.size() + qkv.size() + ffn.size() +
                        pooled.size() + mask_bias.size() + gemm_scratch.size() + attn_scratch.size()) +
           sizeof(int) * (key_end.size() + has_holes.size() + seq_off.size());
  }

  // Buffers (public to the layers; users treat the workspace as opaque).
  AlignedBuffer<T> hidden, tmp, h1, ctx, qkv, ffn, pooled, mask_bias;
  AlignedBuffer<int> key_end, has_holes;
  AlignedBuffer<int> seq_off;  ///< packed tokens: first row of each sequence, then the total
  bool packed = false;         ///< the current call packs its tokens (seq_off valid)
  AlignedBuffer<T> gemm_scratch, attn_scratch;
  std::size_t gemm_stride = 0, attn_stride = 0;
  long ffn_ld = 0;  ///< row stride of `ffn`

 private:
  WorkspaceLimits lim_;
};

}  // namespace dynabert
