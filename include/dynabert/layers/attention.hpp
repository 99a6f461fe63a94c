// SelfAttention<T, kHeadDim>: BERT's multi-head self-attention with its output projection,
// y = (softmax(Q K^T / sqrt(d) + mask) V, per head, times the head's gate) W_o^T + b_o (+ residual),
// at any prefix of heads.
//
// Q, K and V are one fused GEMM whose weight rows are interleaved per head ([q_h | k_h | v_h] for
// h = 0, 1, ...), so the first h heads are the first 3 h d rows: a width is a prefix of the packed
// panels. Attention runs as (sequence, head) tasks on the same packed GEMM: S = Q K^T with the
// scale in the epilogue, masked softmax, then context = P V with the gate in the epilogue. Keys
// past a sequence's last attended token are skipped (their probability is exactly 0 with BERT's
// -10000 additive mask); masked holes inside use the additive mask. With packed tokens each
// sequence's rows start at its row offset.
//
//   forward (inference)  writes qkv and ctx into the caller's buffers, stores nothing; in BF16
//                        calls both products of a task run in BF16, in INT8 calls in INT8 (Q and
//                        K per row and head, V per key with its scale folded into P before P is
//                        quantized per row: forward_task_s8);
//   forward (training)   keeps qkv, the probabilities and the context in the cache, with dropout
//                        on the probabilities (mask by (task, query position, key)), so the mask
//                        does not depend on the layout;
//   backward             per task: dV = g Pd^T dC, dP = g dC V^T (x mask), dS = softmax'(dP),
//                        dQ = dS K, dK = dS^T Q, all on the packed GEMM; then the fused Q/K/V and
//                        output products. d(gate) per head (DynaBERT's head importance) is summed
//                        per task and then in task order: bitwise the same for any thread count.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <string>
#include <type_traits>

#include "dynabert/core/params.hpp"
#include "dynabert/kernels/dropout.hpp"
#include "dynabert/kernels/gemm.hpp"
#include "dynabert/kernels/ops.hpp"
#include "dynabert/layers/batch.hpp"
#include "dynabert/layers/context.hpp"
#include "dynabert/layers/linear.hpp"

#ifndef DYNABERT_LOWP_ATTENTION  // 0: attention's own products stay FP32 in BF16 and INT8 calls
#define DYNABERT_LOWP_ATTENTION 1
#endif
#ifndef DYNABERT_INT8_ATTENTION  // 0: INT8 calls run attention's own products in BF16
#define DYNABERT_INT8_ATTENTION 1
#endif

namespace dynabert::layers {

/// Attention parameters (P = const T) or gradients (P = T), Hugging Face layout: Q, K, V [a, H]
/// with rows head-major (a = heads x head_dim), output [H, a].
template <class P>
struct AttentionTensors {
  P *q_w = nullptr, *q_b = nullptr, *k_w = nullptr, *k_b = nullptr, *v_w = nullptr, *v_b = nullptr;
  P *o_w = nullptr, *o_b = nullptr;
  template <class Q = P, class = std::enable_if_t<!std::is_const_v<Q>>>
  operator AttentionTensors<const Q>() const { return {q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b}; }
};

/// Sizes of an attention block: hidden size, stored heads, head size.
struct AttentionShape {
  int hidden = 0, heads = 0, head_dim = 0;
};

/// Where an attention call keeps its intermediates.
template <class T>
struct AttentionBuffers {
  T* qkv = nullptr;  ///< [rows, >= 3 a] fused projections
  long ld_qkv = 0;
  T* ctx = nullptr;  ///< [rows, >= a] context, the output projection's input
  long ld_ctx = 0;
  T* scratch = nullptr;  ///< per worker: scratch_size() values each
  std::size_t scratch_stride = 0;
  /// [rows, ld_qkv] the projections in bfloat16, or null. Set (by the fused low-precision layer),
  /// Q/K/V's finished rows are converted here by a row sink instead of being stored in FP32 in
  /// qkv (which then is used only when threads split the product's columns), and the BF16
  /// attention tasks read them without converting.
  std::uint16_t* qkv_bf16 = nullptr;
  /// INT8 calls: the projections quantized to int8, or null. Set (by the fused low-precision
  /// layer), Q/K/V's finished rows are quantized by a row sink, each (row, head, part) segment of
  /// head_dim values on its own (kernels::quantize_a_row): the values at the same places as in
  /// qkv (row stride ld_qkv bytes), the scale and correction of segment s = 3 h + part (0 Q, 1 K,
  /// 2 V) of row m at [s * ld_seg + m].
  std::int8_t* qkv_s8 = nullptr;
  float* qkv_scale = nullptr;
  std::int32_t* qkv_corr = nullptr;
  long ld_seg = 0;
};

/// What an attention block's backward needs.
template <class T>
struct AttentionCache {
  AlignedBuffer<T> qkv;          ///< [rows, 3a]
  AlignedBuffer<T> probs;        ///< per task: query rows x key_end softmax outputs
  AlignedBuffer<long> prob_off;  ///< [tasks + 1]
  AlignedBuffer<T> ctx;          ///< [rows, a], gated
  AlignedBuffer<T> ctx_raw;      ///< [rows, a], before the gates (only with gates)
  AlignedBuffer<float> gates;    ///< [heads] gates used, empty without
  kernels::DropoutKey drop;
  int heads = 0, rows = 0;
  int out_rows = 0;    ///< rows of ctx and of the output: rows, or batch with `first`
  bool first = false;  ///< only each sequence's first row was queried (first-row forward)
};

template <class T, int kHeadDim = 0>
class SelfAttention {
 public:
  using Params = AttentionTensors<const T>;
  using Grads = AttentionTensors<T>;
  using Cache = AttentionCache<T>;

  SelfAttention() = default;
  SelfAttention(const AttentionShape& s, Params p) : s_(s), p_(p) {
    DYNABERT_REQUIRE(s.heads >= 1 && s.head_dim >= 1 && s.hidden >= 1, InputError, "attention needs positive sizes");
    DYNABERT_REQUIRE(kHeadDim == 0 || kHeadDim == s.head_dim, InputError, "attention compiled for head size ", kHeadDim,
                     ", bound to ", s.head_dim);
  }
  /// Declares the Hugging Face tensors of a layer under `prefix` ("encoder.layer.3.").
  static void declare(Schema& sc, const std::string& prefix, const AttentionShape& s) {
    const std::int64_t a = static_cast<std::int64_t>(s.heads) * s.head_dim, H = s.hidden;
    for (const char* part : {"query", "key", "value"}) {
      sc.add(prefix + "attention.self." + part + ".weight", {a, H});
      sc.add(prefix + "attention.self." + part + ".bias", {a});
    }
    sc.add(prefix + "attention.output.dense.weight", {H, a});
    sc.add(prefix + "attention.output.dense.bias", {H});
  }
  template <class Set>
  static auto tensors(Set& set, const std::string& prefix) {
    using P = std::remove_reference_t<decltype(*set.view(""))>;
    AttentionTensors<P> t;
    t.q_w = set.view(prefix + "attention.self.query.weight");
    t.q_b = set.view(prefix + "attention.self.query.bias");
    t.k_w = set.view(prefix + "attention.self.key.weight");
    t.k_b = set.view(prefix + "attention.self.key.bias");
    t.v_w = set.view(prefix + "attention.self.value.weight");
    t.v_b = set.view(prefix + "attention.self.value.bias");
    t.o_w = set.view(prefix + "attention.output.dense.weight");
    t.o_b = set.view(prefix + "attention.output.dense.bias");
    return t;
  }
  void bind(Params p) { p_ = p; }
  const AttentionShape& shape() const { return s_; }
  int head_dim() const { return kHeadDim > 0 ? kHeadDim : s_.head_dim; }

  /// (Re)prepares the weights from the bound parameters; with `backward`, also for dx = dy W.
  void pack(bool backward) {
    const int dh = head_dim(), nh = s_.heads, H = s_.hidden;
    qkv_.pack_fused_qkv(p_.q_w, p_.k_w, p_.v_w, p_.q_b, p_.k_b, p_.v_b, nh, dh, H, backward);
    o_.pack(p_.o_w, H, nh * dh, static_cast<long>(nh) * dh, backward);
  }
  /// Adds int8 or bf16 packings of the fused Q/K/V and output weights (serving; before
  /// forget_matrices()); drop_fp32() then frees the FP32 ones when only low precision is served.
  void pack_lowp(Precision p) {
    qkv_.pack_lowp(p);
    o_.pack_lowp(p);
  }
  void drop_fp32() {
    qkv_.drop_fp32();
    o_.drop_fp32();
  }
  bool has(Precision p) const { return qkv_.has(p) && o_.has(p); }
  std::size_t bytes(Precision p) const { return qkv_.bytes(p) + o_.bytes(p); }
  Linear<T>& qkv_linear() { return qkv_; }
  Linear<T>& output_linear() { return o_; }
  /// Drops the views of the weight matrices (serving keeps only the packed copies; float).
  void forget_matrices() {
    p_.q_w = p_.k_w = p_.v_w = p_.o_w = nullptr;
    qkv_.forget_source();
    o_.forget_source();
  }
  std::size_t bytes() const { return qkv_.bytes() + o_.bytes() + sizeof(T) * static_cast<std::size_t>(s_.hidden); }

  /// Per-worker scratch (values of T) for sequences up to S tokens and heads of size dh.
  static std::size_t scratch_size(int S, int head_dim, bool training) {
    const std::size_t s = static_cast<std::size_t>(S), dh = static_cast<std::size_t>(head_dim);
    if constexpr (ops::kFast<T>) {
      const std::size_t pk = round_up(kernels::packed_size(S, static_cast<int>(dh)), 16),
                        pv = round_up(kernels::packed_size(static_cast<int>(dh), S), 16), ss = round_up(s * s, 16);
      return training ? 2 * ss + pk + 3 * pv : std::max(pk + ss + pv, lowp_scratch_size(S, head_dim));
    } else {
      return training ? 2 * s * s : s * s;
    }
  }

  /// Floats of a worker's scratch for one (sequence, head) task in low precision (inference in
  /// BF16 or INT8): the larger of the two layouts.
  static std::size_t lowp_scratch_size(int S, int head_dim) {
    return std::max(Bf16Scratch(S, head_dim).cv.bytes, S8Scratch(S, head_dim).cv.bytes) / sizeof(float) + 16;
  }

  /// y [rows, H] = attention(x [rows, H]) (+ residual), inference: no cache. With `first`, only
  /// each sequence's first row is queried: y and residual are [batch, H] (row b: sequence b), keys
  /// and values still come from every row of x. Low precision (float): `in`, when given, is x
  /// converted already for the Q/K/V product (x is then not read); `out_sink` receives the output
  /// projection's finished rows (Linear::forward).
  void forward(T* y, const T* x, const T* residual, const BatchLayout& lay, int heads, const float* gates,
               const AttentionBuffers<T>& buf, const Compute& c, bool first = false, const kernels::LowpA* in = nullptr,
               const kernels::RowSink* out_sink = nullptr) const {
    run(y, x, residual, lay, heads, gates, buf, c, nullptr, kernels::DropoutKey{}, first, in, out_sink);
  }
  /// Training: the same, keeping what the backward needs in `cache`, with dropout on the
  /// probabilities. buf.qkv and buf.ctx are ignored (the cache holds them).
  void forward(T* y, const T* x, const T* residual, const BatchLayout& lay, int heads, const float* gates,
               const kernels::DropoutKey& drop, Cache& cache, const AttentionBuffers<T>& buf, const Compute& c,
               bool first = false) const {
    const int a = heads * head_dim();
    const int out_rows = first ? lay.batch : lay.rows;
    AttentionBuffers<T> b = buf;
    b.qkv = cache.qkv.ensure(static_cast<std::size_t>(lay.rows) * 3 * a);
    b.ld_qkv = 3L * a;
    b.ctx = cache.ctx.ensure(static_cast<std::size_t>(out_rows) * a);
    b.ld_ctx = a;
    cache.heads = heads;
    cache.rows = lay.rows;
    cache.out_rows = out_rows;
    cache.first = first;
    cache.drop = drop;
    if (gates) std::memcpy(cache.gates.ensure(static_cast<std::size_t>(heads)), gates, sizeof(float) * heads);
    else cache.gates.ensure(0);
    long* off = cache.prob_off.ensure(static_cast<std::size_t>(lay.batch) * heads + 1);
    long total = 0;
    for (int bq = 0; bq < lay.batch; ++bq)
      for (int h = 0; h < heads; ++h) {
        off[bq * heads + h] = total;
        total += static_cast<long>(first ? 1 : lay.query_rows(bq)) * lay.key_end[bq];
      }
    off[lay.batch * heads] = total;
    cache.probs.ensure(static_cast<std::size_t>(total));
    if (gates) cache.ctx_raw.ensure(static_cast<std::size_t>(out_rows) * a);
    run(y, x, residual, lay, heads, gates, b, c, &cache, drop, first);
  }

  /// Gradients from dy [rows, H]: dx [rows, H] += d(input), grads +=, d_gates[h] += d(loss) /
  /// d(gate of head h) when not null. x is the forward's input. `buf.scratch` must hold the
  /// training scratch; d_ctx [rows, a] and d_qkv [rows, 3a] are taken from the train scratch.
  void backward(T* dx, const T* dy, const T* x, const BatchLayout& lay, const Cache& cache, Grads g, T* d_gates,
                const AttentionBuffers<T>& buf, const Compute& c) const {
    const int dh = head_dim(), nh = cache.heads, a = nh * dh, H = s_.hidden, rows = cache.rows, orows = cache.out_rows;
    const long A = static_cast<long>(s_.heads) * dh;  // stored width (row stride of W_o)
    // output projection: d_ctx = dy W_o[:, :a], dW_o[:, :a] += dy^T ctx, db_o += sum dy (dy and
    // ctx have out_rows rows: one per sequence after a first-row forward)
    T* d_ctx = c.train->tmp<T>(0, static_cast<std::size_t>(orows) * a);
    std::fill(d_ctx, d_ctx + static_cast<std::size_t>(orows) * a, T(0));
    o_.backward_input(d_ctx, a, dy, H, orows, H, a, c);
    linear_backward_weight(g.o_w, A, g.o_b, dy, H, cache.ctx.data(), a, orows, H, a, c);
    // attention tasks: d_qkv (every element written exactly once, except keys never attended)
    T* dqkv = c.train->tmp<T>(1, static_cast<std::size_t>(rows) * 3 * a);
    std::fill(dqkv, dqkv + static_cast<std::size_t>(rows) * 3 * a, T(0));
    const long tasks = static_cast<long>(lay.batch) * nh;
    T* gate_part = d_gates ? c.train->partials<T>(static_cast<std::size_t>(tasks)) : nullptr;
    const T scale = T(1) / std::sqrt(static_cast<T>(dh));
    c.th().for_each(tasks, [&](long task, int worker) {
      backward_task(task, worker, dqkv, d_ctx, lay, cache, gate_part, scale, buf, c);
    });
    if (d_gates)
      for (long t = 0; t < tasks; ++t) d_gates[t % nh] += gate_part[t];
    // fused Q/K/V: dx += dqkv W_qkv, dW and db through a fused temporary, then de-interleaved
    qkv_.backward_input(dx, H, dqkv, 3L * a, rows, 3 * a, H, c);
    T* dwf = c.train->tmp<T>(0, static_cast<std::size_t>(3) * a * H + 3 * a);  // d_ctx is no longer needed
    std::fill(dwf, dwf + static_cast<std::size_t>(3) * a * H + 3 * a, T(0));
    T* dbf = dwf + static_cast<std::size_t>(3) * a * H;
    linear_backward_weight(dwf, H, dbf, dqkv, 3L * a, x, H, rows, 3 * a, H, c);
    for (int h = 0; h < nh; ++h)
      for (int part = 0; part < 3; ++part) {
        T* gw = part == 0 ? g.q_w : part == 1 ? g.k_w : g.v_w;
        T* gb = part == 0 ? g.q_b : part == 1 ? g.k_b : g.v_b;
        for (int r = 0; r < dh; ++r) {
          const long src = (static_cast<long>(h) * 3 + part) * dh + r, dst = static_cast<long>(h) * dh + r;
          ops::add(gw + dst * H, dwf + src * H, static_cast<std::size_t>(H));
          gb[dst] += dbf[src];
        }
      }
  }

  /// The precision of attention's own products in a call: FP32 in training and in FP32 calls;
  /// INT8 in INT8 calls and BF16 in BF16 calls (DYNABERT_INT8_ATTENTION=0: BF16 in INT8 calls too;
  /// DYNABERT_LOWP_ATTENTION=0: always FP32).
  static Precision task_precision(const Compute& c, const Cache* cache) {
    if (!DYNABERT_LOWP_ATTENTION || cache || c.precision == Precision::kFp32) return Precision::kFp32;
    return DYNABERT_INT8_ATTENTION && c.precision == Precision::kInt8 ? Precision::kInt8 : Precision::kBf16;
  }

  /// In how many blocks of query rows an inference call splits each (sequence, head) task: when
  /// the tasks would not share evenly among the threads and are few (under 8 per thread), the
  /// fewest blocks that make them share evenly (threads / gcd(tasks, threads): each block packs
  /// the head's K and V again); else 1. Training and the first-token layer never split.
  static int query_parts(long tasks, int threads, bool inference) {
    if (!inference || threads <= 1 || tasks % threads == 0 || tasks >= 8L * threads) return 1;
    return static_cast<int>(threads / std::gcd(tasks, static_cast<long>(threads)));
  }

 private:
  /// Carves a worker's scratch into 64-byte aligned pieces (the packed operands are read with
  /// aligned loads); `bytes` counts what was taken (a layout's size), lowp_scratch_size() adds 64
  /// for the alignment.
  struct Carver {
    std::uint8_t* base = nullptr;
    std::size_t bytes = 0;
    explicit Carver(void* scratch)
        : base(scratch ? reinterpret_cast<std::uint8_t*>((reinterpret_cast<std::uintptr_t>(scratch) + 63) / 64 * 64) : nullptr) {}
    template <class E = std::uint8_t>
    E* take(std::size_t n) {
      E* p = base ? reinterpret_cast<E*>(base + bytes) : nullptr;
      bytes += (n * sizeof(E) + 63) / 64 * 64;
      return p;
    }
  };
  /// A BF16 task's scratch (sizes only when `scratch` is null).
  struct Bf16Scratch {
    static constexpr Precision b = Precision::kBf16;
    Carver cv;
    std::uint8_t *kpack, *vpack;
    float* scores;
    std::uint16_t *qa, *pa, *kb, *vb;
    Bf16Scratch(int S, int dh, T* scratch = nullptr) : cv(scratch) {
      const std::size_t s = static_cast<std::size_t>(S);
      kpack = cv.take(kernels::lowp_packed_bytes(S, dh, b));
      vpack = cv.take(kernels::lowp_packed_bytes(dh, S, b));
      scores = cv.template take<float>(s * s);
      qa = cv.template take<std::uint16_t>(s * kernels::lowp_a_ld(dh, b));
      pa = cv.template take<std::uint16_t>(s * kernels::lowp_a_ld(S, b));
      kb = cv.template take<std::uint16_t>(s * dh);
      vb = cv.template take<std::uint16_t>(s * dh);
    }
  };
  /// An INT8 task's scratch (sizes only when `scratch` is null); q8 .. vs serve a call without
  /// the quantizing sink (the task quantizes its rows of Q, K and V itself).
  struct S8Scratch {
    static constexpr Precision i8 = Precision::kInt8;
    Carver cv;
    std::uint8_t *kpack, *vpack;
    float *scores, *kscale, *ones, *ps;
    std::int8_t *qa, *pa, *q8, *k8, *v8;
    std::int32_t *pc, *qc, *kc, *vc;
    float *qs, *ks, *vs;
    S8Scratch(int S, int dh, T* scratch = nullptr) : cv(scratch) {
      const std::size_t s = static_cast<std::size_t>(S), s32 = round_up(s, kernels::kNR),
                        d32 = round_up(static_cast<std::size_t>(dh), kernels::kNR);
      kpack = cv.take(kernels::lowp_packed_bytes(S, dh, i8));
      vpack = cv.take(kernels::lowp_packed_bytes(dh, S, i8));
      scores = cv.template take<float>(s * s);
      kscale = cv.template take<float>(s32);
      ones = cv.template take<float>(d32);
      ps = cv.template take<float>(s);
      pc = cv.template take<std::int32_t>(s);
      qa = cv.template take<std::int8_t>(s * kernels::lowp_a_ld(dh, i8));
      pa = cv.template take<std::int8_t>(s * kernels::lowp_a_ld(S, i8));
      q8 = cv.template take<std::int8_t>(s * dh);
      k8 = cv.template take<std::int8_t>(s * dh);
      v8 = cv.template take<std::int8_t>(s * dh);
      qs = cv.template take<float>(s);
      ks = cv.template take<float>(s);
      vs = cv.template take<float>(s);
      qc = cv.template take<std::int32_t>(s);
      kc = cv.template take<std::int32_t>(s);
      vc = cv.template take<std::int32_t>(s);
    }
  };

  void run(T* y, const T* x, const T* residual, const BatchLayout& lay, int heads, const float* gates,
           const AttentionBuffers<T>& buf, const Compute& c, Cache* cache, const kernels::DropoutKey& drop, bool first,
           const kernels::LowpA* in = nullptr, const kernels::RowSink* out_sink = nullptr) const {
    const int dh = head_dim(), a = heads * dh, H = s_.hidden;
    DYNABERT_REQUIRE(heads >= 1 && heads <= s_.heads, InputError, "attention: ", heads, " heads of ", s_.heads);
    LinearEpilogue<T> eq;  // the fused bias is the Linear's own
    if constexpr (ops::kFast<T>) {
      struct ToBf16 {  // finished rows of Q/K/V -> buf.qkv_bf16
        std::uint16_t* dst;
        long ld;
        int n;
        static void rows(void* ctx, long m0, long m1, float* r, long ldr) {
          const auto* s = static_cast<const ToBf16*>(ctx);
          for (long m = m0; m < m1; ++m) kernels::bf16_a_row(s->dst + m * s->ld, r + (m - m0) * ldr, s->n, s->n);
        }
      } to_bf16{buf.qkv_bf16, buf.ld_qkv, 3 * a};
      struct ToS8 {  // finished rows of Q/K/V -> buf.qkv_s8, each head's Q, K and V on its own
        std::int8_t* dst;
        long ld;
        float* scale;
        std::int32_t* corr;
        long ld_seg;
        int segs, dh;
        static void rows(void* ctx, long m0, long m1, float* r, long ldr) {
          const auto* s = static_cast<const ToS8*>(ctx);
          for (long m = m0; m < m1; ++m)
            for (int g = 0; g < s->segs; ++g) {
              const long at = g * s->ld_seg + m;
              s->scale[at] = kernels::quantize_a_row(s->dst + m * s->ld + g * s->dh, s->corr + at, r + (m - m0) * ldr + g * s->dh,
                                                     s->dh, s->dh);
            }
        }
      } to_s8{buf.qkv_s8, buf.ld_qkv, buf.qkv_scale, buf.qkv_corr, buf.ld_seg, 3 * heads, dh};
      const Precision tp = task_precision(c, cache);
      const bool s8 = tp == Precision::kInt8 && buf.qkv_s8 != nullptr;
      const bool bf16 = tp == Precision::kBf16 && buf.qkv_bf16 != nullptr;
      DYNABERT_REQUIRE(!(s8 || bf16) || (c.lowp && c.lowp->fits_sink(c.th().count(), 3 * a)), InputError,
                       "attention: no row-sink scratch for ", 3 * a, " projections on ", c.th().count(), " threads");
      DYNABERT_REQUIRE(!s8 || buf.ld_seg >= lay.rows, InputError, "attention: room for the int8 scales of ", buf.ld_seg,
                       " rows, called with ", lay.rows);
      const kernels::RowSink sink{s8 ? &ToS8::rows : &ToBf16::rows, s8 ? static_cast<void*>(&to_s8) : static_cast<void*>(&to_bf16),
                                  s8 || bf16 ? c.lowp->sink_scratch() : nullptr, s8 || bf16 ? c.lowp->rows_stride : 0};
      const kernels::RowSink* use = s8 || bf16 ? &sink : nullptr;
      if (in) qkv_.forward_converted(buf.qkv, buf.ld_qkv, *in, lay.rows, 3 * a, H, eq, c, use);
      else qkv_.forward(buf.qkv, buf.ld_qkv, x, H, lay.rows, 3 * a, H, eq, c, use);
    } else {
      DYNABERT_REQUIRE(!in, InputError, "attention: converted inputs are for the float path");
      qkv_.forward(buf.qkv, buf.ld_qkv, x, H, lay.rows, 3 * a, H, eq, c);
    }
    const T scale = T(1) / std::sqrt(static_cast<T>(dh));
    // each task's query rows in `parts` blocks (query_parts), every block a task of its own;
    // bitwise the same: a query row's scores, softmax and context do not depend on the other rows
    const long tasks = static_cast<long>(lay.batch) * heads;
    const int parts = query_parts(tasks, c.th().count(), !cache && !first);
    c.th().for_each(tasks * parts, [&](long t, int worker) {
      forward_task(t / parts, worker, heads, gates, lay, buf, scale, cache, drop, c, first, static_cast<int>(t % parts), parts);
    });
    LinearEpilogue<T> eo;
    eo.bias = p_.o_b;
    eo.residual = residual;
    eo.ld_residual = H;
    o_.forward(y, H, buf.ctx, buf.ld_ctx, first ? lay.batch : lay.rows, H, a, eo, c, out_sink);
  }

  void forward_task(long task, int worker, int heads, const float* gates, const BatchLayout& lay,
                    const AttentionBuffers<T>& buf, T scale, Cache* cache, const kernels::DropoutKey& drop,
                    const Compute& c, bool first, int part = 0, int parts = 1) const {
    (void)c;
    const int dh = head_dim();
    const int b = static_cast<int>(task / heads), h = static_cast<int>(task % heads);
    const int kend = lay.key_end[b], all_q = first ? 1 : lay.query_rows(b), S = lay.seq;
    const int q0 = all_q * part / parts, nq = all_q * (part + 1) / parts - q0;  // this part's query rows
    if (nq <= 0) return;
    const float* bias = lay.has_holes[b] ? lay.mask_bias + static_cast<long>(b) * S : nullptr;
    const long r0 = lay.row_off[b], ldq = buf.ld_qkv;
    const long rc = (first ? b : r0) + q0;  // the part's first row of ctx
    const T* head = buf.qkv + r0 * ldq + static_cast<long>(h) * 3 * dh;  // the sequence's first row of Q
    const T* q = head + q0 * ldq;
    const T* k = head + dh;
    const T* v = head + 2 * dh;
    const T gate = gates ? static_cast<T>(gates[h]) : T(1);
    T* ctx = buf.ctx + rc * buf.ld_ctx + static_cast<long>(h) * dh;
    T* raw = cache && gates ? cache->ctx_raw.data() + rc * static_cast<long>(heads) * dh + static_cast<long>(h) * dh : nullptr;
    const long ld_raw = static_cast<long>(heads) * dh;
    T* P = cache ? cache->probs.data() + cache->prob_off[task] : nullptr;
    const kernels::DropoutKey key = drop.derive(static_cast<std::uint32_t>(task));
    T* scratch = buf.scratch + static_cast<std::size_t>(worker) * buf.scratch_stride;
    if constexpr (ops::kFast<T>) {
      const Precision tp = task_precision(c, cache);
      if (tp == Precision::kInt8) {
        const S8Scratch sc(S, dh, scratch);
        if (buf.qkv_s8) {
          const std::int8_t* h8 = buf.qkv_s8 + (head - buf.qkv);  // the same elements in int8
          const long sq = 3L * h * buf.ld_seg + r0, sk = sq + buf.ld_seg, sv = sk + buf.ld_seg;  // Q's, K's, V's scales
          forward_task_s8(h8 + q0 * ldq, h8 + dh, h8 + 2 * dh, ldq, buf.qkv_scale + sq + q0, buf.qkv_corr + sq + q0,
                          buf.qkv_scale + sk, buf.qkv_scale + sv, nq, kend, bias, scale, gate, ctx, buf.ld_ctx, sc);
        } else {  // no quantizing sink: the task quantizes its rows as the sink would
          for (int i = 0; i < nq; ++i) sc.qs[i] = kernels::quantize_a_row(sc.q8 + i * dh, sc.qc + i, q + i * ldq, dh, dh);
          for (int j = 0; j < kend; ++j) {
            sc.ks[j] = kernels::quantize_a_row(sc.k8 + j * dh, sc.kc + j, k + j * ldq, dh, dh);
            sc.vs[j] = kernels::quantize_a_row(sc.v8 + j * dh, sc.vc + j, v + j * ldq, dh, dh);
          }
          forward_task_s8(sc.q8, sc.k8, sc.v8, dh, sc.qs, sc.qc, sc.ks, sc.vs, nq, kend, bias, scale, gate, ctx, buf.ld_ctx, sc);
        }
        return;
      }
      if (tp == Precision::kBf16) {
        if (buf.qkv_bf16) {
          const std::uint16_t* hb = buf.qkv_bf16 + (head - buf.qkv);  // the same elements in bfloat16
          forward_task_bf16(hb + q0 * ldq, hb + dh, hb + 2 * dh, ldq, nq, kend, S, bias, scale, gate, ctx, buf.ld_ctx, scratch);
        } else {
          forward_task_bf16(q, k, v, ldq, nq, kend, S, bias, scale, gate, ctx, buf.ld_ctx, scratch);
        }
        return;
      }
      const std::size_t lim = static_cast<std::size_t>(S);
      float* packk = scratch;
      float* scores = packk + round_up(kernels::packed_size(static_cast<int>(lim), dh), 16);
      float* packv = scores + round_up(lim * lim, 16);
      float* gsc = c.gemm_scratch + static_cast<std::size_t>(worker) * kernels::gemm_scratch_floats();
      const auto kv = kernels::pack_nk(packk, k, kend, dh, ldq);
      kernels::Epilogue ep_s;
      ep_s.alpha = scale;
      kernels::gemm(scores, kend, q, ldq, nq, kv, kend, dh, ep_s, gsc);
      for (int i = 0; i < nq; ++i) kernels::softmax_row(scores + static_cast<long>(i) * kend, kend, 1.0f, bias);
      if (P) std::memcpy(P, scores, sizeof(float) * static_cast<std::size_t>(nq) * kend);
      if (key.active())
        for (int i = 0; i < nq; ++i)
          kernels::dropout_multiply(scores + static_cast<long>(i) * kend, static_cast<std::size_t>(kend), key,
                                    static_cast<std::uint32_t>(i) * static_cast<std::uint32_t>(S));
      const auto vv = kernels::pack_kn(packv, v, kend, dh, ldq);
      kernels::Epilogue ep_c;
      if (raw) {  // training with gates: the context before the gate is kept for d(gate)
        kernels::gemm(raw, ld_raw, scores, kend, nq, vv, dh, kend, ep_c, gsc);
        for (int i = 0; i < nq; ++i)
          for (int d = 0; d < dh; ++d) ctx[static_cast<long>(i) * buf.ld_ctx + d] = gate * raw[static_cast<long>(i) * ld_raw + d];
      } else {
        ep_c.alpha = gate;
        kernels::gemm(ctx, buf.ld_ctx, scores, kend, nq, vv, dh, kend, ep_c, gsc);
      }
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
        if (P) std::memcpy(P + static_cast<long>(i) * kend, row, sizeof(T) * kend);
        if (key.active())
          ops::dropout_multiply(row, static_cast<std::size_t>(kend), key, static_cast<std::uint32_t>(i) * static_cast<std::uint32_t>(S));
        for (int d = 0; d < dh; ++d) {
          T acc = 0;
          for (int j = 0; j < kend; ++j) acc += row[j] * v[j * ldq + d];
          if (raw) {
            raw[static_cast<long>(i) * ld_raw + d] = acc;
            ctx[static_cast<long>(i) * buf.ld_ctx + d] = gate * acc;
          } else {
            ctx[static_cast<long>(i) * buf.ld_ctx + d] = acc * gate;
          }
        }
      }
    }
  }

  /// Inference in a BF16 call (or an INT8 call with DYNABERT_INT8_ATTENTION=0): both products of a
  /// task in BF16 with FP32 accumulation (scores = Q K^T with the scale in the epilogue, FP32
  /// softmax, context = P V with the gate).
  /// E: float (Q/K/V in FP32, converted here) or std::uint16_t (in bfloat16 already: Q is read in
  /// place, K and V packed straight from their rows).
  template <class E>
  void forward_task_bf16(const E* q, const E* k, const E* v, long ldq, int nq, int kend, int S, const float* bias, T scale,
                         T gate, T* ctx, long ld_ctx, T* scratch) const {
    static_assert(ops::kFast<T>, "BF16 attention is for the float path");
    constexpr Precision b = Precision::kBf16;
    const int dh = head_dim();
    const Bf16Scratch sc(S, dh, scratch);
    std::uint8_t *kpack = sc.kpack, *vpack = sc.vpack;
    float* scores = sc.scores;
    std::uint16_t *qa = sc.qa, *pa = sc.pa, *kb = sc.kb, *vb = sc.vb;
    const long ldqa = kernels::lowp_a_ld(dh, b), ldpa = kernels::lowp_a_ld(kend, b);
    const int kpd = kernels::lowp_kpad(dh, b);
    kernels::LowpA qop{qa, ldqa, nullptr, nullptr};
    if constexpr (std::is_same_v<E, std::uint16_t>) {
      if (kpd == dh) qop = {q, ldq, nullptr, nullptr};  // whole pairs: the rows serve in place
      else
        for (int i = 0; i < nq; ++i) {
          std::memcpy(qa + i * ldqa, q + i * ldq, sizeof(std::uint16_t) * dh);
          std::fill(qa + i * ldqa + dh, qa + i * ldqa + kpd, std::uint16_t(0));
        }
      // rows gathered first with whole-line copies: the packing's element loads would each wait
      // for the strided rows (which are not in cache yet)
      for (int j = 0; j < kend; ++j) {
        std::memcpy(kb + static_cast<long>(j) * dh, k + j * ldq, sizeof(std::uint16_t) * dh);
        std::memcpy(vb + static_cast<long>(j) * dh, v + j * ldq, sizeof(std::uint16_t) * dh);
      }
    } else {
      for (int i = 0; i < nq; ++i) kernels::bf16_a_row(qa + i * ldqa, q + i * ldq, dh, kpd);
      for (int j = 0; j < kend; ++j) {
        kernels::bf16_a_row(kb + static_cast<long>(j) * dh, k + j * ldq, dh, dh);
        kernels::bf16_a_row(vb + static_cast<long>(j) * dh, v + j * ldq, dh, dh);
      }
    }
    const auto kv = kernels::pack_bf16(kpack, kend, dh, false, [&](int j) { return kb + static_cast<long>(j) * dh; });
    const auto vt = kernels::pack_bf16(vpack, dh, kend, true, [&](int j) { return vb + static_cast<long>(j) * dh; });
    kernels::Epilogue es;
    es.alpha = scale;
    kernels::gemm_lowp(scores, kend, qop, nq, kv, kend, dh, es);
    const int kpk = kernels::lowp_kpad(kend, b);
    for (int i = 0; i < nq; ++i) {
      kernels::softmax_row(scores + static_cast<long>(i) * kend, kend, 1.0f, bias);
      kernels::bf16_a_row(pa + i * ldpa, scores + static_cast<long>(i) * kend, kend, kpk);
    }
    kernels::Epilogue ec;
    ec.alpha = gate;
    kernels::gemm_lowp(ctx, ld_ctx, {pa, ldpa, nullptr, nullptr}, nq, vt, dh, kend, ec);
  }

  /// Inference in an INT8 call: both products of a task in INT8 with int32 sums (kernels/lowp.hpp).
  ///   scores = Q K^T: Q's rows are the A operand (per-row scales qs and corrections qc), K's rows
  ///            the packed weight (per-row scales ks: a key's scale is a column's);
  ///   context = P V: V is quantized per key (scale vs[j]), and each key's scale is folded into
  ///            the probabilities before they are quantized per row, P'[i, j] = P[i, j] vs[j], so
  ///            V^T packs with unit column scales and every value of P' keeps the row's step.
  /// q8, k8, v8: the task's first rows of Q (its query part), K and V in int8, row stride ld8
  /// bytes; qs, qc: the query rows' scales and corrections; ks, vs: the keys'.
  void forward_task_s8(const std::int8_t* q8, const std::int8_t* k8, const std::int8_t* v8, long ld8, const float* qs,
                       const std::int32_t* qc, const float* ks, const float* vs, int nq, int kend, const float* bias, T scale,
                       T gate, T* ctx, long ld_ctx, const S8Scratch& sc) const {
    static_assert(ops::kFast<T>, "INT8 attention is for the float path");
    constexpr Precision i8 = Precision::kInt8;
    const int dh = head_dim(), kpd = kernels::lowp_kpad(dh, i8), kpk = kernels::lowp_kpad(kend, i8);
    const long ldqa = kernels::lowp_a_ld(dh, i8), ldpa = kernels::lowp_a_ld(kend, i8);
    kernels::LowpA qop{q8, ld8, qs, qc};
    if (kpd != dh) {  // whole groups of 4 with zeros past dh: copied
      qop.data = sc.qa;
      qop.ld = ldqa;
      for (int i = 0; i < nq; ++i) {
        std::memcpy(sc.qa + i * ldqa, q8 + i * ld8, static_cast<std::size_t>(dh));
        std::memset(sc.qa + i * ldqa + dh, 0, static_cast<std::size_t>(kpd - dh));
      }
    }
    // weight scales padded with zeros to whole panels
    const int kscaled = static_cast<int>(round_up(static_cast<std::size_t>(kend), kernels::kNR));
    std::copy_n(ks, kend, sc.kscale);
    std::fill(sc.kscale + kend, sc.kscale + kscaled, 0.0f);
    const int dscaled = static_cast<int>(round_up(static_cast<std::size_t>(dh), kernels::kNR));
    std::fill(sc.ones, sc.ones + dh, 1.0f);
    std::fill(sc.ones + dh, sc.ones + dscaled, 0.0f);
    const auto kv = kernels::pack_s8(sc.kpack, sc.kscale, kend, dh, false, [&](int j) { return k8 + j * ld8; });
    const auto vt = kernels::pack_s8(sc.vpack, sc.ones, dh, kend, true, [&](int j) { return v8 + j * ld8; });
    kernels::Epilogue es;
    es.alpha = scale;
    kernels::gemm_lowp(sc.scores, kend, qop, nq, kv, kend, dh, es);
    for (int i = 0; i < nq; ++i) {  // softmax, V's scales per key and int8: two passes fewer (AVX512BW)
      float* row = sc.scores + static_cast<long>(i) * kend;
      const kernels::RowAbsMax mx = kernels::softmax_row_scaled_absmax(row, kend, vs, 1.0f, bias);
      sc.ps[i] = kernels::quantize_a_row_known(sc.pa + i * ldpa, sc.pc + i, row, kend, kpk, mx.amax, mx.nan);
    }
    kernels::Epilogue ec;
    ec.alpha = gate;
    kernels::gemm_lowp(ctx, ld_ctx, {sc.pa, ldpa, sc.ps, sc.pc}, nq, vt, dh, kend, ec);
  }

  void backward_task(long task, int worker, T* dqkv, const T* d_ctx, const BatchLayout& lay, const Cache& cache, T* gate_part,
                     T scale, const AttentionBuffers<T>& buf, const Compute& c) const {
    (void)c;
    const int dh = head_dim(), nh = cache.heads, a = nh * dh;
    const int b = static_cast<int>(task / nh), h = static_cast<int>(task % nh);
    const int kend = lay.key_end[b], nq = cache.first ? 1 : lay.query_rows(b), S = lay.seq;
    const long r0 = lay.row_off[b], ldq = 3L * a;
    const long rc = cache.first ? b : r0;  // the task's first row of ctx and d_ctx
    const T* q = cache.qkv.data() + r0 * ldq + static_cast<long>(h) * 3 * dh;
    const T* k = q + dh;
    const T* v = q + 2 * dh;
    T* dq = dqkv + r0 * ldq + static_cast<long>(h) * 3 * dh;
    T* dk = dq + dh;
    T* dv = dq + 2 * dh;
    const T* dC = d_ctx + rc * a + static_cast<long>(h) * dh;
    const T gate = cache.gates.size() ? static_cast<T>(cache.gates[h]) : T(1);
    const T* P = cache.probs.data() + cache.prob_off[task];
    const kernels::DropoutKey key = cache.drop.derive(static_cast<std::uint32_t>(task));
    const std::size_t n2 = static_cast<std::size_t>(nq) * kend;
    T* scratch = buf.scratch + static_cast<std::size_t>(worker) * buf.scratch_stride;
    // d(gate) = sum(dC * (Pd V)): the context before the gate
    if (gate_part) {
      const T* raw = cache.gates.size() ? cache.ctx_raw.data() : cache.ctx.data();
      T s = 0;
      for (int i = 0; i < nq; ++i)
        for (int d = 0; d < dh; ++d) s += dC[static_cast<long>(i) * a + d] * raw[(rc + i) * static_cast<long>(a) + h * dh + d];
      gate_part[task] = s;
    }
    if constexpr (ops::kFast<T>) {
      const std::size_t lim = static_cast<std::size_t>(S), ss = round_up(lim * lim, 16);
      float* Pd = scratch;
      float* dP = Pd + ss;
      float* pk = dP + ss;  // V for dC V^T: [kend, dh] as n x k
      float* p1 = pk + round_up(kernels::packed_size(static_cast<int>(lim), dh), 16);
      const std::size_t pvs = round_up(kernels::packed_size(dh, static_cast<int>(lim)), 16);
      float* p2 = p1 + pvs;
      float* p3 = p2 + pvs;
      float* gsc = c.gemm_scratch + static_cast<std::size_t>(worker) * kernels::gemm_scratch_floats();
      const float* Pdrop = P;
      if (key.active()) {
        std::memcpy(Pd, P, sizeof(float) * n2);
        for (int i = 0; i < nq; ++i)
          kernels::dropout_multiply(Pd + static_cast<long>(i) * kend, static_cast<std::size_t>(kend), key,
                                    static_cast<std::uint32_t>(i) * static_cast<std::uint32_t>(S));
        Pdrop = Pd;
      }
      // dV = gate * Pd^T dC   ([kend, dh]; A = Pd read transposed, B' = dC^T)
      const auto bdc = kernels::pack_kn(p1, dC, nq, dh, a);
      kernels::Epilogue eg;
      eg.alpha = gate;
      kernels::gemm<true>(dv, ldq, Pdrop, kend, kend, bdc, dh, nq, eg, gsc);
      // dP = gate * dC V^T, then the dropout mask
      const auto bv = kernels::pack_nk(pk, v, kend, dh, ldq);
      kernels::gemm(dP, kend, dC, a, nq, bv, kend, dh, eg, gsc);
      for (int i = 0; i < nq; ++i) {
        float* row = dP + static_cast<long>(i) * kend;
        if (key.active())
          kernels::dropout_multiply(row, static_cast<std::size_t>(kend), key, static_cast<std::uint32_t>(i) * static_cast<std::uint32_t>(S));
        kernels::softmax_backward_row(row, P + static_cast<long>(i) * kend, kend, scale);
      }
      // dQ = dS K ([nq, dh]; B' = K^T), dK = dS^T Q ([kend, dh]; A = dS read transposed, B' = Q^T)
      const auto bk = kernels::pack_kn(p2, k, kend, dh, ldq);
      kernels::gemm(dq, ldq, dP, kend, nq, bk, dh, kend, kernels::Epilogue{}, gsc);
      const auto bq = kernels::pack_kn(p3, q, nq, dh, ldq);
      kernels::gemm<true>(dk, ldq, dP, kend, kend, bq, dh, nq, kernels::Epilogue{}, gsc);
    } else {
      T* Pd = scratch;
      T* dP = Pd + static_cast<std::size_t>(S) * S;
      std::memcpy(Pd, P, sizeof(T) * n2);
      if (key.active())
        for (int i = 0; i < nq; ++i)
          ops::dropout_multiply(Pd + static_cast<long>(i) * kend, static_cast<std::size_t>(kend), key,
                                static_cast<std::uint32_t>(i) * static_cast<std::uint32_t>(S));
      for (int j = 0; j < kend; ++j)
        for (int d = 0; d < dh; ++d) {
          T acc = 0;
          for (int i = 0; i < nq; ++i) acc += Pd[static_cast<long>(i) * kend + j] * dC[static_cast<long>(i) * a + d];
          dv[j * ldq + d] = gate * acc;
        }
      for (int i = 0; i < nq; ++i) {
        T* row = dP + static_cast<long>(i) * kend;
        for (int j = 0; j < kend; ++j) {
          T acc = 0;
          for (int d = 0; d < dh; ++d) acc += dC[static_cast<long>(i) * a + d] * v[j * ldq + d];
          row[j] = gate * acc;
        }
        if (key.active())
          ops::dropout_multiply(row, static_cast<std::size_t>(kend), key, static_cast<std::uint32_t>(i) * static_cast<std::uint32_t>(S));
        ops::softmax_backward_row(row, P + static_cast<long>(i) * kend, kend, scale);
      }
      for (int i = 0; i < nq; ++i)
        for (int d = 0; d < dh; ++d) {
          T acc = 0;
          for (int j = 0; j < kend; ++j) acc += dP[static_cast<long>(i) * kend + j] * k[j * ldq + d];
          dq[i * ldq + d] = acc;
        }
      for (int j = 0; j < kend; ++j)
        for (int d = 0; d < dh; ++d) {
          T acc = 0;
          for (int i = 0; i < nq; ++i) acc += dP[static_cast<long>(i) * kend + j] * q[i * ldq + d];
          dk[j * ldq + d] = acc;
        }
    }
  }

  AttentionShape s_;
  Params p_;
  Linear<T> qkv_, o_;
};

}  // namespace dynabert::layers
