// EncoderLayer<T, Dims>: multi-head self-attention and the feed-forward block with post-LayerNorm
// residuals, run at any prefix of heads and FFN neurons.
//
// Q, K and V are fused into one matrix whose rows are interleaved per head ([q_h | k_h | v_h] for
// h = 0, 1, ...), so the first n heads are the first 3 * n * head_dim rows: a width is a prefix of
// the packed panels. The attention output projection and the second FFN matrix shrink along
// their input dimension, again a prefix. Attention runs as (sequence, head) tasks: S = Q K^T with
// the 1/sqrt(d) scale in the GEMM epilogue, masked softmax, then context = P V with the head gate
// in the epilogue. Keys past a sequence's last valid token are skipped (their probability is
// exactly 0 with BERT's -10000 additive mask); masked holes inside use the additive mask.
#pragma once
#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>

#include "dynabert/core/parallel.hpp"
#include "dynabert/kernels/gemm.hpp"
#include "dynabert/kernels/ops.hpp"
#include "dynabert/layers/linear.hpp"
#include "dynabert/model/config.hpp"
#include "dynabert/model/weights.hpp"
#include "dynabert/model/workspace.hpp"

namespace dynabert::layers {

/// Per-call shape of one layer: active heads/neurons and gates.
template <class T>
struct LayerCall {
  int batch = 0, seq = 0;
  int heads = 0;             ///< active heads (prefix)
  int neurons = 0;           ///< active FFN neurons (prefix)
  const float* gates = nullptr;  ///< [heads] multipliers on attention probabilities, or null
  /// Packed tokens: sequence b occupies rows [seq_off[b], seq_off[b + 1]) with no padding rows
  /// (null: padded layout, sequence b at rows b * seq ...).
  const int* seq_off = nullptr;
  int rows() const { return seq_off ? seq_off[batch] : batch * seq; }
};

template <class T, class Dims>
class EncoderLayer {
 public:
  EncoderLayer(const BertWeights<T>& w, int l, const Dims& dims)
      : dims_(dims), H_(w.config().hidden_size), heads_(w.config().layer_heads(l)),
        I_(w.config().layer_intermediate(l)), eps_(w.config().layer_norm_eps), act_(w.config().hidden_act) {
    const int dh = dims_.head_dim();
    const auto p = w.layer(l);
    // Interleave Q/K/V per head.
    AlignedBuffer<T> fused(static_cast<std::size_t>(3) * heads_ * dh * H_);
    qkv_b_.resize(static_cast<std::size_t>(3) * heads_ * dh);
    for (int h = 0; h < heads_; ++h)
      for (int part = 0; part < 3; ++part) {
        const T* src_w = part == 0 ? p.q_w : part == 1 ? p.k_w : p.v_w;
        const T* src_b = part == 0 ? p.q_b : part == 1 ? p.k_b : p.v_b;
        for (int r = 0; r < dh; ++r) {
          const long dst_row = (static_cast<long>(h) * 3 + part) * dh + r;
          std::memcpy(fused.data() + dst_row * H_, src_w + (static_cast<long>(h) * dh + r) * H_, sizeof(T) * H_);
          qkv_b_[dst_row] = src_b[h * dh + r];
        }
      }
    qkv_ = Linear<T>(fused.data(), 3 * heads_ * dh, H_, H_);
    out_ = Linear<T>(p.o_w, H_, heads_ * dh, heads_ * dh);
    out_b_ = copy_vector(p.o_b, H_);
    ln1_g_ = copy_vector(p.ln1_g, H_);
    ln1_b_ = copy_vector(p.ln1_b, H_);
    ffn_in_ = Linear<T>(p.i_w, I_, H_, H_);
    ffn_in_b_ = copy_vector(p.i_b, I_);
    ffn_out_ = Linear<T>(p.f_w, H_, I_, I_);
    ffn_out_b_ = copy_vector(p.f_b, H_);
    ln2_g_ = copy_vector(p.ln2_g, H_);
    ln2_b_ = copy_vector(p.ln2_b, H_);
  }

  int heads() const { return heads_; }
  int intermediate() const { return I_; }
  std::size_t bytes() const {
    return qkv_.bytes() + out_.bytes() + ffn_in_.bytes() + ffn_out_.bytes() +
           sizeof(T) * (qkv_b_.size() + out_b_.size() + ln1_g_.size() + ln1_b_.size() + ffn_in_b_.size() +
                        ffn_out_b_.size() + ln2_g_.size() + ln2_b_.size());
  }

  /// ws.hidden (tokens x H) -> ws.hidden, in place through the workspace's other buffers.
  void forward(const LayerCall<T>& call, Workspace<T>& ws, const Threads& threads) const {
    const int dh = dims_.head_dim();
    const int M = call.rows();
    const int a = call.heads * dh;
    const long ldq = 3L * heads_ * dh;
    T* gs = ws.gemm_scratch.data();
    // 1. fused Q/K/V for the active heads
    qkv_.forward(ws.qkv.data(), ldq, ws.hidden.data(), H_, M, 3 * a, H_, qkv_b_.data(), nullptr, 0,
                 Activation::kNone, T(1), gs, threads);
    // 2. attention per (sequence, head)
    attention(call, ws, threads, ldq);
    // 3. output projection + bias + residual, then LayerNorm
    out_.forward(ws.tmp.data(), H_, ws.ctx.data(), H_, M, H_, a, out_b_.data(), ws.hidden.data(), H_,
                 Activation::kNone, T(1), gs, threads);
    layernorm_rows(ws.h1.data(), ws.tmp.data(), ln1_g_.data(), ln1_b_.data(), M, threads);
    // 4. FFN: GELU(h1 W1^T + b1) W2^T + b2 + h1, then LayerNorm
    ffn_in_.forward(ws.ffn.data(), ws.ffn_ld, ws.h1.data(), H_, M, call.neurons, H_, ffn_in_b_.data(), nullptr, 0,
                    act_, T(1), gs, threads);
    ffn_out_.forward(ws.tmp.data(), H_, ws.ffn.data(), ws.ffn_ld, M, H_, call.neurons, ffn_out_b_.data(),
                     ws.h1.data(), H_, Activation::kNone, T(1), gs, threads);
    layernorm_rows(ws.hidden.data(), ws.tmp.data(), ln2_g_.data(), ln2_b_.data(), M, threads);
  }

 private:
  void layernorm_rows(T* y, const T* x, const T* g, const T* b, int M, const Threads& threads) const {
    threads.for_chunks(M, [&](int, long lo, long hi) {
      for (long r = lo; r < hi; ++r) ops::layernorm_row(y + r * H_, x + r * H_, g, b, H_, eps_);
    });
  }

  void attention(const LayerCall<T>& call, Workspace<T>& ws, const Threads& threads, long ldq) const {
    const int dh = dims_.head_dim();
    const int S = call.seq;
    const T scale = T(1) / std::sqrt(static_cast<T>(dh));
    threads.for_each(static_cast<long>(call.batch) * call.heads, [&](long task, int worker) {
      const int b = static_cast<int>(task / call.heads), h = static_cast<int>(task % call.heads);
      const int kend = ws.key_end[b];
      const T* bias = ws.has_holes[b] ? ws.mask_bias.data() + static_cast<long>(b) * S : nullptr;
      const long r0 = call.seq_off ? call.seq_off[b] : static_cast<long>(b) * S;  // first row of the sequence
      const int nq = call.seq_off ? kend : S;                                       // query rows computed
      const T* q = ws.qkv.data() + r0 * ldq + static_cast<long>(h) * 3 * dh;
      const T* k = q + dh;
      const T* v = q + 2 * dh;
      T* ctx = ws.ctx.data() + r0 * H_ + static_cast<long>(h) * dh;
      const T gate = call.gates ? static_cast<T>(call.gates[h]) : T(1);
      T* scratch = ws.attn_scratch.data() + worker * ws.attn_stride;
      if constexpr (std::is_same_v<T, float>) {
        const std::size_t lim = static_cast<std::size_t>(ws.limits().max_seq_len);
        float* packk = scratch;
        float* scores = packk + round_up(kernels::packed_size(static_cast<int>(lim), dh), 16);
        float* packv = scores + round_up(lim * lim, 16);
        float* gsc = ws.gemm_scratch.data() + worker * ws.gemm_stride;
        const auto kv = kernels::pack_nk(packk, k, kend, dh, ldq);
        kernels::Epilogue ep_s;
        ep_s.alpha = scale;
        kernels::gemm(scores, kend, q, ldq, nq, kv, kend, dh, ep_s, gsc);
        for (int i = 0; i < nq; ++i) kernels::softmax_row(scores + static_cast<long>(i) * kend, kend, 1.0f, bias);
        const auto vv = kernels::pack_kn(packv, v, kend, dh, ldq);
        kernels::Epilogue ep_c;
        ep_c.alpha = gate;
        kernels::gemm(ctx, H_, scores, kend, nq, vv, dh, kend, ep_c, gsc);
      } else {
        T* p = scratch;
        for (int i = 0; i < nq; ++i) {
          T* row = p + static_cast<long>(i) * kend;
          for (int j = 0; j < kend; ++j) {
            T acc = 0;
            for (int d = 0; d < dh; ++d) acc += q[i * ldq + d] * k[j * ldq + d];
            row[j] = acc;
          }
          ops::softmax_row(row, kend, scale, bias);
          for (int d = 0; d < dh; ++d) {
            T acc = 0;
            for (int j = 0; j < kend; ++j) acc += row[j] * v[j * ldq + d];
            ctx[static_cast<long>(i) * H_ + d] = acc * gate;
          }
        }
      }
    });
  }

  Dims dims_;
  int H_, heads_, I_;
  double eps_;
  Activation act_;
  Linear<T> qkv_, out_, ffn_in_, ffn_out_;
  AlignedBuffer<T> qkv_b_, out_b_, ln1_g_, ln1_b_, ffn_in_b_, ffn_out_b_, ln2_g_, ln2_b_;
};

}  // namespace dynabert::layers
