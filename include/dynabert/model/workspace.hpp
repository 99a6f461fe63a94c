// Workspace<T>: every buffer an inference call needs, allocated once for a maximum batch, sequence
// length and thread count. A forward pass allocates nothing; one workspace serves one call at a
// time (concurrent calls on one model each bring their own).
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "dynabert/core/aligned.hpp"
#include "dynabert/kernels/gemm.hpp"
#include "dynabert/layers/attention.hpp"
#include "dynabert/layers/batch.hpp"
#include "dynabert/layers/context.hpp"
#include "dynabert/layers/encoder_layer.hpp"
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
  /// `precisions`: those the model's calls may use (a low precision adds room to convert the
  /// linear layers' inputs).
  Workspace(const BertConfig& c, WorkspaceLimits lim, const std::vector<Precision>& precisions = {}) : lim_(lim) {
    DYNABERT_REQUIRE(lim.max_batch >= 1 && lim.max_seq_len >= 1 && lim.max_threads >= 1, InputError,
                     "workspace limits must be positive (batch ", lim.max_batch, ", length ", lim.max_seq_len,
                     ", threads ", lim.max_threads, ")");
    DYNABERT_REQUIRE(lim.max_seq_len <= c.max_tokens(), InputError, "workspace length ", lim.max_seq_len,
                     " exceeds max_position_embeddings ", c.max_tokens(),
                     c.position_offset() ? " (positions start at pad_token_id + 1)" : "");
    const std::size_t T_ = static_cast<std::size_t>(lim.max_batch) * lim.max_seq_len;
    const std::size_t H = c.hidden_size;
    hidden_size = c.hidden_size;
    hidden.resize(T_ * H);
    tmp.resize(T_ * H);
    h1.resize(T_ * H);
    ctx.resize(T_ * H);
    qkv_ld = 3L * c.max_layer_heads() * c.head_dim();
    qkv.resize(T_ * static_cast<std::size_t>(qkv_ld));
    // FFN rows padded by 16 values when their stride would be a multiple of 4 KB: the GEMM reads
    // A in place, and rows 4 KB apart would all fall into one L1 cache set.
    ffn_ld = c.max_layer_intermediate();
    if ((ffn_ld * sizeof(T)) % 4096 == 0) ffn_ld += 16;
    ffn.resize(T_ * static_cast<std::size_t>(ffn_ld));
    pooled.resize(static_cast<std::size_t>(lim.max_batch) * H);
    gather.resize(static_cast<std::size_t>(lim.max_batch) * H);
    layout.reserve(lim.max_batch, lim.max_seq_len);
    gemm_stride = kernels::gemm_scratch_floats();
    attn_stride = layers::SelfAttention<T>::scratch_size(lim.max_seq_len, c.head_dim(), false);
    gemm_scratch.resize(gemm_stride * lim.max_threads);
    attn_scratch.resize(attn_stride * lim.max_threads);
    const int kmax = std::max({c.hidden_size, c.max_layer_intermediate(), c.max_layer_heads() * c.head_dim()});
    // the fused low-precision layer (EncoderLayer::fused) hands the rows of its products to row
    // sinks (scratch for every thread) and keeps Q/K/V in bfloat16 (int8 with its scales in INT8)
    const int sink_n = std::max({c.hidden_size, c.max_layer_intermediate(), static_cast<int>(qkv_ld)});
    for (Precision p : precisions)
      if (p != Precision::kFp32) {
        lowp.reserve(static_cast<long>(T_), kmax, p);
        if (DYNABERT_LOWP_FUSE)
          lowp.reserve_fused(lim.max_threads, sink_n, T_ * static_cast<std::size_t>(qkv_ld),
                             p == Precision::kInt8 && DYNABERT_INT8_ATTENTION
                                 ? T_ * 3 * static_cast<std::size_t>(c.max_layer_heads())
                                 : 0);
      }
  }

  const WorkspaceLimits& limits() const { return lim_; }
  /// Bytes held.
  std::size_t bytes() const {
    return sizeof(T) * (hidden.size() + tmp.size() + h1.size() + ctx.size() + qkv.size() + ffn.size() + pooled.size() +
                        gather.size() + attn_scratch.size()) +
           sizeof(float) * gemm_scratch.size() + layout.bytes() + lowp.bytes();
  }

  /// The buffers of one encoder layer's call.
  layers::EncoderBuffers<T> layer_buffers() {
    layers::EncoderBuffers<T> b;
    b.tmp = tmp.data();
    b.h1 = h1.data();
    b.ffn = ffn.data();
    b.ld_ffn = ffn_ld;
    b.attention = {qkv.data(), qkv_ld, ctx.data(), hidden_size, attn_scratch.data(), attn_stride};
    return b;
  }

  // Buffers (public to the models; users treat the workspace as opaque).
  AlignedBuffer<T> hidden, tmp, h1, ctx, qkv, ffn, pooled, gather;
  LayoutStorage layout;
  BatchLayout current;    ///< the layout of the last call
  bool packed = false;    ///< the last call packed its tokens
  AlignedBuffer<float> gemm_scratch;
  AlignedBuffer<T> attn_scratch;
  layers::LowpScratch lowp;  ///< low-precision calls convert the linear layers' inputs here
  std::size_t gemm_stride = 0, attn_stride = 0;
  long ffn_ld = 0;  ///< row stride of `ffn`
  long qkv_ld = 0;  ///< row stride of `qkv`
  long hidden_size = 0;

 private:
  WorkspaceLimits lim_;
};

}  // namespace dynabert
