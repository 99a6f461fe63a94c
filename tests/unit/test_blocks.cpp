// The blocks one by one (layers/): for each, the inference forward and the training forward
// (evaluation mode) give bitwise the same output in float and in double, and the backward matches
// central differences in double for every parameter tensor, the block's input and the head gates,
// with dropout on. Then the models built from them: token packing in training against the padded
// layout, compile-time against run-time dimensions, and a trainer step that allocates nothing
// after warm-up.
#define BOOST_TEST_MODULE dynabert_blocks
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <cstdlib>
#include <functional>
#include <new>
#include <random>

#include <dynabert/training.hpp>

using namespace dynabert;
using namespace dynabert::layers;

#include "alloc_counter.hpp"

namespace {

constexpr int kB = 3, kS = 7, kH = 16, kHeads = 4, kDh = 4, kI = 24, kV = 29;

double rel_err(double a, double b) { return std::abs(a - b) / std::max(1e-6, std::abs(a) + std::abs(b)); }

/// A batch with padding (sequence 1 ends after 4 tokens) and a hole (sequence 2, position 1).
struct Batch {
  std::vector<std::int32_t> ids, types, mask;
  LayoutStorage storage{kB, kS};
  Batch() {
    std::mt19937 g(3);
    ids.resize(kB * kS);
    types.resize(kB * kS);
    mask.assign(kB * kS, 1);
    for (auto& v : ids) v = static_cast<std::int32_t>(g() % kV);
    for (auto& v : types) v = static_cast<std::int32_t>(g() % 2);
    for (int s = 4; s < kS; ++s) mask[1 * kS + s] = 0;
    mask[2 * kS + 1] = 0;
  }
  Inputs inputs() const {
    Inputs in;
    in.input_ids = ids.data(); in.token_type_ids = types.data(); in.attention_mask = mask.data();
    in.batch = kB; in.seq_len = kS;
    return in;
  }
  BatchLayout layout(bool pack) { return plan_batch(inputs(), pack, storage); }
};

/// Threads, GEMM scratch and training scratch of one test.
struct Env {
  Threads threads{2};
  AlignedBuffer<float> gemm{2 * kernels::gemm_scratch_floats()};
  TrainScratch train;
  Compute compute() { return {&threads, gemm.data(), &train}; }
};

/// Random values of a set's every tensor (LayerNorm weights around 1).
template <class T>
void randomize(ParameterSet<T>& p, std::uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> n(0.0, 0.3);
  for (auto& s : p.specs()) {
    T* v = p.tensor(s.name);
    const bool gamma = s.name.find("LayerNorm.weight") != std::string::npos || s.name.find("norm.weight") != std::string::npos;
    for (std::size_t i = 0; i < s.numel(); ++i) v[i] = static_cast<T>(gamma ? 1.0 + n(g) : n(g));
  }
}

template <class T>
std::vector<T> random_vector(std::size_t n, std::uint64_t seed, double sd = 1.0) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> d(0.0, sd);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(d(g));
  return v;
}

/// Central differences of `scalar` in every tensor of `p` (a few entries each) and in `extra`
/// inputs against the analytic gradients.
struct GradCheck {
  std::mt19937 g{17};
  int checked = 0;
  void value(const std::string& what, double* x, std::size_t n, const double* grad, const std::function<double()>& scalar,
             int trials = 4) {
    for (int t = 0; t < trials; ++t) {
      const std::size_t i = g() % n;
      const double old = x[i];
      x[i] = old + 1e-6;
      const double up = scalar();
      x[i] = old - 1e-6;
      const double down = scalar();
      x[i] = old;
      const double num = (up - down) / 2e-6;
      BOOST_TEST((rel_err(num, grad[i]) < 1e-5 || std::abs(num - grad[i]) < 1e-7),
                 what << "[" << i << "]: numeric " << num << " analytic " << grad[i]);
      ++checked;
    }
  }
  void set(ParameterSet<double>& p, const ParameterSet<double>& grads, const std::function<double()>& scalar) {
    for (auto& s : p.specs()) value(s.name, p.view(s.name), s.numel(), grads.view(s.name), scalar);
  }
};

template <class T>
double dot(const T* a, const std::vector<double>& r) {
  double s = 0;
  for (std::size_t i = 0; i < r.size(); ++i) s += static_cast<double>(a[i]) * r[i];
  return s;
}

}  // namespace

// ---- Embeddings ---------------------------------------------------------------------------------
template <class T>
struct EmbeddingRig {
  EmbeddingShape shape{kV, kS + 2, 2, kH, 1e-12, 0};
  Schema schema;
  ParameterSet<T> p, g;
  EmbeddingRig() {
    Embeddings<T>::declare(schema, "emb.", shape);
    p = ParameterSet<T>(schema);
    g = ParameterSet<T>(schema);
    randomize(p, 1);
  }
  Embeddings<T> block() const { return Embeddings<T>(shape, Embeddings<T>::tensors(p, "emb.")); }
};

BOOST_AUTO_TEST_CASE(embeddings_inference_equals_training_and_gradients) {
  Batch batch;
  Env env;
  auto c = env.compute();
  auto same = [&](auto tag) {
    using T = decltype(tag);
    EmbeddingRig<T> rig;
    const auto e = rig.block();
    for (bool pack : {false, true}) {
      const auto lay = batch.layout(pack);
      std::vector<T> a(static_cast<std::size_t>(lay.rows) * kH), b(a.size());
      EmbeddingCache<T> cache;
      e.forward(a.data(), batch.inputs(), lay, c);
      e.forward(b.data(), batch.inputs(), lay, kernels::DropoutKey{}, cache, c);
      BOOST_TEST(std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
    }
  };
  same(float{});
  same(double{});
  EmbeddingRig<double> rig;
  const auto e = rig.block();
  GradCheck gc;
  for (bool pack : {false, true}) {
    const auto lay = batch.layout(pack);
    const auto key = kernels::DropoutKey::make(0.3, 12345);
    const auto r = random_vector<double>(static_cast<std::size_t>(lay.rows) * kH, 5);
    EmbeddingCache<double> cache;
    std::vector<double> y(r.size());
    auto scalar = [&] {
      EmbeddingCache<double> cc;
      e.forward(y.data(), batch.inputs(), lay, key, cc, c);
      return dot(y.data(), r);
    };
    scalar();
    e.forward(y.data(), batch.inputs(), lay, key, cache, c);
    rig.g.fill_zero();
    e.backward(r.data(), lay, cache, Embeddings<double>::tensors(rig.g, "emb."), c);
    gc.set(rig.p, rig.g, scalar);
  }
  BOOST_TEST(gc.checked > 30);
}

// ---- SelfAttention ------------------------------------------------------------------------------
template <class T>
struct AttentionRig {
  AttentionShape shape{kH, kHeads, kDh};
  Schema schema;
  ParameterSet<T> p, g;
  AlignedBuffer<T> qkv, ctx, scratch;
  AttentionRig() {
    SelfAttention<T>::declare(schema, "l.", shape);
    p = ParameterSet<T>(schema);
    g = ParameterSet<T>(schema);
    randomize(p, 2);
    qkv.resize(static_cast<std::size_t>(kB) * kS * 3 * kH);
    ctx.resize(static_cast<std::size_t>(kB) * kS * kH);
    scratch.resize(2 * std::max(SelfAttention<T>::scratch_size(kS, kDh, true), SelfAttention<T>::scratch_size(kS, kDh, false)));
  }
  SelfAttention<T> block() const {
    SelfAttention<T> a(shape, SelfAttention<T>::tensors(p, "l."));
    a.pack(true);
    return a;
  }
  AttentionBuffers<T> buffers(bool training) {
    return {qkv.data(), 3L * kH, ctx.data(), kH, scratch.data(), SelfAttention<T>::scratch_size(kS, kDh, training)};
  }
};

BOOST_AUTO_TEST_CASE(attention_inference_equals_training_and_gradients) {
  Batch batch;
  Env env;
  auto c = env.compute();
  const std::vector<float> gates = {0.7f, 1.3f, 0.0f, 1.1f};
  auto same = [&](auto tag) {
    using T = decltype(tag);
    AttentionRig<T> rig;
    const auto att = rig.block();
    for (bool pack : {false, true})
      for (int heads : {4, 3}) {
        const auto lay = batch.layout(pack);
        const auto x = random_vector<T>(static_cast<std::size_t>(lay.rows) * kH, 4);
        std::vector<T> a(x.size()), b(x.size());
        AttentionCache<T> cache;
        att.forward(a.data(), x.data(), x.data(), lay, heads, gates.data(), rig.buffers(false), c);
        att.forward(b.data(), x.data(), x.data(), lay, heads, gates.data(), kernels::DropoutKey{}, cache, rig.buffers(true), c);
        BOOST_TEST(std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0, "pack " << pack << " heads " << heads);
      }
  };
  same(float{});
  same(double{});
  AttentionRig<double> rig;
  const auto att = rig.block();
  GradCheck gc;
  std::vector<float> g2 = gates;
  for (bool pack : {false, true})
    for (int heads : {4, 2}) {
      const auto lay = batch.layout(pack);
      auto x = random_vector<double>(static_cast<std::size_t>(lay.rows) * kH, 7);
      const auto r = random_vector<double>(x.size(), 8);
      const auto key = kernels::DropoutKey::make(0.25, 999);
      std::vector<double> y(x.size());
      auto scalar = [&] {
        AttentionCache<double> cc;
        att.forward(y.data(), x.data(), nullptr, lay, heads, g2.data(), key, cc, rig.buffers(true), c);
        return dot(y.data(), r);
      };
      AttentionCache<double> cache;
      att.forward(y.data(), x.data(), nullptr, lay, heads, g2.data(), key, cache, rig.buffers(true), c);
      rig.g.fill_zero();
      std::vector<double> dx(x.size(), 0.0), dg(kHeads, 0.0);
      att.backward(dx.data(), r.data(), x.data(), lay, cache, SelfAttention<double>::tensors(rig.g, "l."), dg.data(),
                   rig.buffers(true), c);
      gc.set(rig.p, rig.g, scalar);
      gc.value("x", x.data(), x.size(), dx.data(), scalar, 8);
      for (int h = 0; h < heads; ++h) {  // the gates are float: differences over their stored steps
        const float old = g2[h];
        g2[h] = old + 1e-3f;
        const double up = scalar(), hu = g2[h];
        g2[h] = old - 1e-3f;
        const double down = scalar(), hd = g2[h];
        g2[h] = old;
        const double num = (up - down) / (hu - hd);
        BOOST_TEST((rel_err(num, dg[h]) < 1e-5 || std::abs(num - dg[h]) < 1e-6), "gate " << h << ": " << num << " vs " << dg[h]);
      }
      // heads beyond the active prefix get exactly no gradient
      const double* gq = rig.g.view("l.attention.self.query.weight");
      for (int row = heads * kDh; row < kH; ++row)
        for (int col = 0; col < kH; ++col) BOOST_REQUIRE(gq[row * kH + col] == 0.0);
    }
  BOOST_TEST(gc.checked > 100);
}

BOOST_AUTO_TEST_CASE(int8_attention_matches_its_plain_twin) {
  // an INT8 call of the attention block (products, its own products included, in INT8) against
  // the same quantizations written out in plain loops in double: x and the context per row, the
  // weights per output row, Q, K and V per (row, head), V's scale folded into the probabilities
  // before they are quantized per row. Heads of 4 (one panel) and of 15 (Q copied with padding,
  // K and V^T with partial groups) and of 32 (a head's Q, K and V whole panels) over 40 keys (two
  // panels of keys), padded and packed rows, holes in the mask, every query or each sequence's
  // first (`first`), a prefix of the heads. Once with the task quantizing its rows itself, once with the quantizing row sink of
  // the fused layer: bitwise the same.
  Threads two(2);
  AlignedBuffer<float> gemm(2 * kernels::gemm_scratch_floats());
  auto quantize = [](const double* x, int n, std::vector<double>& q) {  // quantize_s8 in double
    double amax = 0;
    for (int i = 0; i < n; ++i) amax = std::max(amax, std::abs(x[i]));
    const float s = static_cast<float>(amax) / 127.0f;
    q.assign(n, 0.0);
    if (amax > 0)
      for (int i = 0; i < n; ++i) q[i] = std::nearbyint(static_cast<float>(x[i]) * (127.0f / static_cast<float>(amax)));
    return static_cast<double>(s);
  };
  int compared = 0;
  struct Case {
    int heads, dh, S;
    std::vector<std::int32_t> lengths;
  };
  for (const Case& cs : {Case{4, 4, 7, {7, 4, 6}}, Case{3, 15, 40, {40, 33, 5}}, Case{2, 32, 40, {37, 40, 6}}}) {
    const int nh = cs.heads, dh = cs.dh, S = cs.S, B = static_cast<int>(cs.lengths.size()), H = nh * dh;
    AttentionShape shape{H, nh, dh};
    Schema schema;
    SelfAttention<float>::declare(schema, "l.", shape);
    ParameterSet<float> prm(schema);
    randomize(prm, 2);
    SelfAttention<float> att(shape, SelfAttention<float>::tensors(prm, "l."));
    att.pack(false);
    att.pack_lowp(Precision::kInt8);
    std::vector<std::int32_t> mask(B * S, 0), ids(B * S, 1);
    for (int b = 0; b < B; ++b)
      for (int s = 0; s < cs.lengths[b]; ++s) mask[b * S + s] = 1;
    mask[0 * S + 2] = 0;  // holes
    mask[1 * S + 1] = 0;
    Inputs in;
    in.input_ids = ids.data(); in.attention_mask = mask.data(); in.batch = B; in.seq_len = S;
    LayoutStorage storage(B, S);
    AlignedBuffer<float> qkv(static_cast<std::size_t>(B) * S * 3 * H), ctxb(static_cast<std::size_t>(B) * S * H);
    const std::size_t stride = SelfAttention<float>::scratch_size(S, dh, false);
    AlignedBuffer<float> scratch(2 * stride);
    LowpScratch lowp;
    lowp.reserve(B * S, 3 * H, Precision::kInt8);
    const Compute c{&two, gemm.data(), nullptr, Precision::kInt8, &lowp};
    const std::vector<float> gates = {0.7f, 1.3f, 0.5f, 1.1f};
    auto linear = [&](const double* x, int M, int k, const float* w, const float* bias, int n, const double* res) {
      // y[m, :n] = (x[m, :k] quantized) (W[:n, :k], each row quantized whole over H)^T + bias (+ res)
      std::vector<double> y(static_cast<std::size_t>(M) * n), qx, qw, wr(H);
      for (int m = 0; m < M; ++m) {
        const double sx = quantize(x + static_cast<long>(m) * k, k, qx);
        for (int j = 0; j < n; ++j) {
          for (int i = 0; i < H; ++i) wr[i] = w[static_cast<long>(j) * H + i];
          const double sw = quantize(wr.data(), H, qw);
          double acc = 0;
          for (int i = 0; i < k; ++i) acc += qx[i] * qw[i];
          y[static_cast<long>(m) * n + j] = acc * static_cast<float>(static_cast<float>(sx) * static_cast<float>(sw)) + bias[j] +
                                            (res ? res[static_cast<long>(m) * n + j] : 0.0);
        }
      }
      return y;
    };
    for (bool pack : {false, true})
      for (bool first : {false, true})
        for (int heads : {nh, nh - 1}) {
          const auto lay = plan_batch(in, pack, storage);
          const int a = heads * dh, R = lay.rows, out_rows = first ? B : R;
          const auto x = random_vector<float>(static_cast<std::size_t>(R) * H, 41 + heads);
          std::vector<double> xd(x.begin(), x.end());
          const auto Q = linear(xd.data(), R, H, prm.view("l.attention.self.query.weight"), prm.view("l.attention.self.query.bias"), a, nullptr);
          const auto K = linear(xd.data(), R, H, prm.view("l.attention.self.key.weight"), prm.view("l.attention.self.key.bias"), a, nullptr);
          const auto V = linear(xd.data(), R, H, prm.view("l.attention.self.value.weight"), prm.view("l.attention.self.value.bias"), a, nullptr);
          std::vector<double> ctx(static_cast<std::size_t>(out_rows) * a, 0.0), res(static_cast<std::size_t>(out_rows) * H), qq, qk, qv, qp;
          std::vector<int> check;  // output rows whose token is attended
          for (int b = 0; b < B; ++b) {
            const int r0 = lay.row_off[b], kend = lay.key_end[b], nq = first ? 1 : lay.query_rows(b);
            for (int i = 0; i < nq; ++i) {
              const int orow = first ? b : r0 + i;
              std::copy_n(xd.begin() + static_cast<long>(r0 + i) * H, H, res.begin() + static_cast<long>(orow) * H);
              if (mask[b * S + i]) check.push_back(orow);
            }
            for (int h = 0; h < heads; ++h) {
              std::vector<double> sk(kend), sv(kend), kq(kend * dh), vq(kend * dh);
              for (int j = 0; j < kend; ++j) {
                sk[j] = quantize(K.data() + static_cast<long>(r0 + j) * a + h * dh, dh, qk);
                sv[j] = quantize(V.data() + static_cast<long>(r0 + j) * a + h * dh, dh, qv);
                std::copy(qk.begin(), qk.end(), kq.begin() + j * dh);
                std::copy(qv.begin(), qv.end(), vq.begin() + j * dh);
              }
              for (int i = 0; i < nq; ++i) {
                const double sq = quantize(Q.data() + static_cast<long>(r0 + i) * a + h * dh, dh, qq);
                std::vector<double> p(kend);
                double mx = -1e300, sum = 0;
                for (int j = 0; j < kend; ++j) {
                  double acc = 0;
                  for (int d = 0; d < dh; ++d) acc += qq[d] * kq[j * dh + d];
                  p[j] = acc * sq * sk[j] / std::sqrt(double(dh)) + (mask[b * S + j] ? 0.0 : -10000.0);
                  mx = std::max(mx, p[j]);
                }
                for (auto& v : p) sum += (v = std::exp(v - mx));
                for (int j = 0; j < kend; ++j) p[j] = p[j] / sum * sv[j];
                const double sp = quantize(p.data(), kend, qp);
                const int orow = first ? b : r0 + i;
                for (int d = 0; d < dh; ++d) {
                  double acc = 0;
                  for (int j = 0; j < kend; ++j) acc += qp[j] * vq[j * dh + d];
                  ctx[static_cast<long>(orow) * a + h * dh + d] = acc * sp * gates[h];
                }
              }
            }
          }
          // the output projection reads W_o's first a columns (its rows were quantized whole at load)
          const auto want = linear(ctx.data(), out_rows, a, prm.view("l.attention.output.dense.weight"),
                                   prm.view("l.attention.output.dense.bias"), H, res.data());
          double scale = 0;
          for (double v : want) scale = std::max(scale, std::abs(v));
          std::vector<float> resf(res.begin(), res.end());
          const float* residual = first ? resf.data() : x.data();
          // the block: the task quantizing its rows, then the fused layer's sink
          AttentionBuffers<float> buf{qkv.data(), 3L * H, ctxb.data(), H, scratch.data(), stride};
          std::vector<float> y1(static_cast<std::size_t>(out_rows) * H), y2(y1.size()), yf(y1.size());
          att.forward(y1.data(), x.data(), residual, lay, heads, gates.data(), buf, c, first);
          lowp.reserve_fused(2, 3 * H, static_cast<std::size_t>(R) * 3 * H, static_cast<std::size_t>(R) * 3 * nh);
          AttentionBuffers<float> fb = buf;
          fb.qkv_s8 = reinterpret_cast<std::int8_t*>(lowp.qkv.data());
          fb.qkv_scale = lowp.qkv_scale.data();
          fb.qkv_corr = lowp.qkv_corr.data();
          fb.ld_seg = R;
          std::fill(lowp.qkv_scale.begin(), lowp.qkv_scale.end(), std::numeric_limits<float>::quiet_NaN());
          att.forward(y2.data(), x.data(), residual, lay, heads, gates.data(), fb, c, first);
          const std::string what = "dh " + std::to_string(dh) + " pack " + std::to_string(pack) + " first " +
                                   std::to_string(first) + " heads " + std::to_string(heads);
          BOOST_TEST(!std::isnan(lowp.qkv_scale[0]), what);  // the sink ran
          BOOST_TEST(std::memcmp(y1.data(), y2.data(), y1.size() * 4) == 0, what);
          // the tolerance is for the float arithmetic of the epilogues (a quantization rounded the
          // other way would move a value by a whole step of its scale, far more)
          double worst = 0;
          for (int r : check)
            for (int j = 0; j < H; ++j) worst = std::max(worst, std::abs(y1[r * H + j] - want[r * H + j]) / scale);
          BOOST_TEST(worst < 1e-5, what << " worst " << worst);
          // and it is INT8: the FP32 call differs by more
          const Compute cf{&two, gemm.data(), nullptr, Precision::kFp32, nullptr};
          att.forward(yf.data(), x.data(), residual, lay, heads, gates.data(), buf, cf, first);
          double from_fp32 = 0;
          for (int r : check)
            for (int j = 0; j < H; ++j) from_fp32 = std::max(from_fp32, std::abs(y1[r * H + j] - yf[r * H + j]) / scale);
          BOOST_TEST(from_fp32 > 1e-3, what << " from FP32 " << from_fp32);
          ++compared;
        }
  }
  BOOST_TEST(compared == 24);
}

// ---- FeedForward, AddNorm -----------------------------------------------------------------------
BOOST_AUTO_TEST_CASE(feed_forward_and_add_norm_inference_equals_training_and_gradients) {
  Batch batch;
  Env env;
  auto c = env.compute();
  const FeedForwardShape fs{kH, kI, Activation::kGeluErf};
  auto same = [&](auto tag) {
    using T = decltype(tag);
    Schema s;
    FeedForward<T>::declare(s, "l.", fs);
    AddNorm<T>::declare(s, "n.", kH);
    ParameterSet<T> p(s);
    randomize(p, 3);
    FeedForward<T> ffn(fs, FeedForward<T>::tensors(p, "l."));
    ffn.pack(true);
    const AddNorm<T> norm(kH, 1e-12, {p.view("n.weight"), p.view("n.bias")});
    const auto lay = batch.layout(true);
    const auto x = random_vector<T>(static_cast<std::size_t>(lay.rows) * kH, 9);
    std::vector<T> a(x.size()), b(x.size()), act(static_cast<std::size_t>(lay.rows) * kI);
    FeedForwardCache<T> fc;
    NormCache<T> nc;
    for (int f : {kI, 13}) {
      ffn.forward(a.data(), x.data(), x.data(), lay.rows, f, act.data(), kI, c);
      ffn.forward(b.data(), x.data(), x.data(), lay.rows, f, fc, c);
      BOOST_TEST(std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
      norm.forward(a.data(), a.data(), nullptr, lay.rows, c);
      norm.forward(b.data(), b.data(), nullptr, lay, kernels::DropoutKey{}, nc, c);
      BOOST_TEST(std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
    }
  };
  same(float{});
  same(double{});
  for (Activation act : {Activation::kGeluErf, Activation::kGeluTanh}) {
    FeedForwardShape shape = fs;
    shape.act = act;
    Schema s;
    FeedForward<double>::declare(s, "l.", shape);
    AddNorm<double>::declare(s, "n.", kH);
    ParameterSet<double> p(s), g(s);
    randomize(p, 4);
    FeedForward<double> ffn(shape, FeedForward<double>::tensors(p, "l."));
    ffn.pack(true);
    const AddNorm<double> norm(kH, 1e-12, {p.view("n.weight"), p.view("n.bias")});
    const auto lay = batch.layout(false);
    const std::size_t n = static_cast<std::size_t>(lay.rows) * kH;
    auto x = random_vector<double>(n, 10);
    const auto r = random_vector<double>(n, 11);
    const auto key = kernels::DropoutKey::make(0.2, 4242);
    // y = AddNorm(dropout(FFN(x)) + x) with 17 of 24 neurons
    std::vector<double> a(n), y(n);
    auto scalar = [&] {
      FeedForwardCache<double> fc;
      NormCache<double> nc;
      ffn.forward(a.data(), x.data(), nullptr, lay.rows, 17, fc, c);
      norm.forward(y.data(), a.data(), x.data(), lay, key, nc, c);
      return dot(y.data(), r);
    };
    FeedForwardCache<double> fc;
    NormCache<double> nc;
    ffn.forward(a.data(), x.data(), nullptr, lay.rows, 17, fc, c);
    norm.forward(y.data(), a.data(), x.data(), lay, key, nc, c);
    std::vector<double> da(n), dx(n, 0.0);
    norm.backward(da.data(), dx.data(), r.data(), lay, nc, {g.view("n.weight"), g.view("n.bias")}, c);
    ffn.backward(dx.data(), da.data(), x.data(), fc, FeedForward<double>::tensors(g, "l."), c);
    GradCheck gc;
    gc.set(p, g, scalar);
    gc.value("x", x.data(), n, dx.data(), scalar, 8);
    const double* gi = g.view("l.intermediate.dense.bias");
    for (int j = 17; j < kI; ++j) BOOST_REQUIRE(gi[j] == 0.0);  // neurons beyond the prefix
  }
}

// ---- Pooler, Classifier, MLM head ---------------------------------------------------------------
BOOST_AUTO_TEST_CASE(heads_inference_equals_training_and_gradients) {
  Batch batch;
  Env env;
  auto c = env.compute();
  const int C = 3;
  auto make = [&](auto tag) {
    using T = decltype(tag);
    Schema s;
    Pooler<T>::declare(s, "pooler.", kH);
    Classifier<T>::declare(s, "classifier.", kH, C);
    MlmHead<T>::declare(s, "cls.predictions.", kH, kV);
    s.add("word", {kV, kH});
    return s;
  };
  auto same = [&](auto tag) {
    using T = decltype(tag);
    ParameterSet<T> p(make(tag));
    randomize(p, 5);
    Pooler<T> pooler(kH, dense_tensors(p, "pooler.dense."));
    Classifier<T> cls(kH, C, dense_tensors(p, "classifier."));
    pooler.pack(true);
    cls.pack(true);
    for (bool pack : {false, true}) {
      const auto lay = batch.layout(pack);
      const auto h = random_vector<T>(static_cast<std::size_t>(lay.rows) * kH, 12);
      std::vector<T> pa(kB * kH), pb(kB * kH), gather(kB * kH), la(kB * C), lb(kB * C);
      PoolerCache<T> pc;
      ClassifierCache<T> cc;
      pooler.forward(pa.data(), h.data(), lay, gather.data(), c);
      pooler.forward(pb.data(), h.data(), lay, pc, c);
      BOOST_TEST(std::memcmp(pa.data(), pb.data(), pa.size() * sizeof(T)) == 0);
      cls.forward(la.data(), pa.data(), kB, c);
      cls.forward(lb.data(), pb.data(), kB, kernels::DropoutKey{}, cc, c);
      BOOST_TEST(std::memcmp(la.data(), lb.data(), la.size() * sizeof(T)) == 0);
    }
  };
  same(float{});
  same(double{});
  ParameterSet<double> p(make(double{})), g(make(double{}));
  randomize(p, 6);
  Pooler<double> pooler(kH, dense_tensors(p, "pooler.dense."));
  Classifier<double> cls(kH, C, dense_tensors(p, "classifier."));
  MlmTensors<const double> mt{dense_tensors(p, "cls.predictions.transform.dense."),
                              {p.view("cls.predictions.transform.LayerNorm.weight"), p.view("cls.predictions.transform.LayerNorm.bias")},
                              p.view("cls.predictions.bias"), p.view("word")};
  MlmHead<double> mlm(kH, kV, Activation::kGeluErf, 1e-12, mt);
  pooler.pack(true);
  cls.pack(true);
  mlm.pack(true);
  MlmTensors<double> mg{dense_tensors(g, "cls.predictions.transform.dense."),
                        {g.view("cls.predictions.transform.LayerNorm.weight"), g.view("cls.predictions.transform.LayerNorm.bias")},
                        g.view("cls.predictions.bias"), g.view("word")};
  const auto lay = batch.layout(true);
  const std::size_t n = static_cast<std::size_t>(lay.rows) * kH;
  auto h = random_vector<double>(n, 13);
  const auto rl = random_vector<double>(kB * C, 14);
  const std::vector<int> rows = {0, 2, 5, static_cast<int>(lay.rows) - 1};
  const auto rm = random_vector<double>(rows.size() * kV, 15);
  const auto key = kernels::DropoutKey::make(0.3, 77);
  std::vector<double> pooled(kB * kH), logits(kB * C);
  auto scalar = [&] {
    PoolerCache<double> pc;
    ClassifierCache<double> cc;
    MlmHeadCache<double> mc;
    pooler.forward(pooled.data(), h.data(), lay, pc, c);
    cls.forward(logits.data(), pooled.data(), kB, key, cc, c);
    mlm.forward(h.data(), rows.data(), static_cast<int>(rows.size()), mc, c);
    return dot(logits.data(), rl) + dot(mc.logits.data(), rm);
  };
  PoolerCache<double> pc;
  ClassifierCache<double> cc;
  MlmHeadCache<double> mc;
  pooler.forward(pooled.data(), h.data(), lay, pc, c);
  cls.forward(logits.data(), pooled.data(), kB, key, cc, c);
  mlm.forward(h.data(), rows.data(), static_cast<int>(rows.size()), mc, c);
  std::vector<double> dpooled(kB * kH, 0.0), dh(n, 0.0);
  cls.backward(dpooled.data(), rl.data(), cc, dense_tensors(g, "classifier."), c);
  pooler.backward(dh.data(), dpooled.data(), lay, pc, dense_tensors(g, "pooler.dense."), c);
  mlm.backward(dh.data(), rm.data(), mc, mg, c);
  GradCheck gc;
  gc.set(p, g, scalar);
  gc.value("hidden", h.data(), n, dh.data(), scalar, 10);
}

// ---- the models built from the blocks ------------------------------------------------------------
namespace {
BertConfig model_config() {
  BertConfig c;
  c.vocab_size = kV; c.hidden_size = kH; c.num_hidden_layers = 3; c.num_attention_heads = kHeads;
  c.intermediate_size = kI; c.max_position_embeddings = kS + 1;
  c.hidden_dropout_prob = 0.2; c.attention_probs_dropout_prob = 0.15;
  return c;
}
}  // namespace

BOOST_AUTO_TEST_CASE(packed_training_equals_padded_training) {
  // A loss on the logits alone does not see padding rows, and dropout masks are indexed by token:
  // with the tokens packed the gradients are those of the padded layout up to summation order.
  Batch batch;
  BertWeights<float> w(model_config(), HeadSpec{true, 3});
  w.init_random(21, 0.2, true);
  Inputs in = batch.inputs();
  std::vector<std::int32_t> lengths = {7, 4, 6};  // lengths: the packed layout drops the padding
  in.attention_mask = nullptr;
  in.lengths = lengths.data();
  auto net = SubNetwork::dynabert(w.config(), 0.75, 1.0);
  std::vector<BertWeights<float>> grads;
  std::vector<std::vector<float>> logits;
  for (bool pack : {false, true}) {
    train::TrainableBert<float> m(w);
    m.set_threads(Threads(2));
    train::TrainCache<float> cache;
    std::mt19937_64 rng(5);
    m.forward(in, net, cache, {true, &rng, pack});
    BOOST_TEST(cache.layout.packed == pack);
    BOOST_TEST(cache.states[0].size() == static_cast<std::size_t>(pack ? 17 : 21) * kH);
    logits.emplace_back(cache.logits.begin(), cache.logits.end());
    std::vector<float> d(cache.logits.size(), 0.0f);
    std::vector<std::int32_t> labels = {0, 2, 1};
    train::cross_entropy(cache.logits.data(), labels.data(), kB, 3, d.data());
    m.backward(cache, d.data(), {});
    grads.push_back(m.grads());
  }
  BOOST_TEST(std::memcmp(logits[0].data(), logits[1].data(), logits[0].size() * 4) == 0);
  double norm = 0, diff = 0;
  for (std::size_t i = 0; i < grads[0].buffer().size(); ++i) {
    norm = std::max(norm, std::abs(static_cast<double>(grads[0].buffer()[i])));
    diff = std::max(diff, std::abs(static_cast<double>(grads[0].buffer()[i]) - grads[1].buffer()[i]));
  }
  BOOST_TEST(norm > 0.0);
  BOOST_TEST(diff <= 1e-5 * norm, "max gradient difference " << diff << " of " << norm);
}

BOOST_AUTO_TEST_CASE(compile_time_dimensions_compute_the_same) {
  Batch batch;
  BertWeights<float> w(model_config(), HeadSpec{true, 3});
  w.init_random(22, 0.2, true);
  ElasticBert<float> dyn(w);
  ElasticBert<float, StaticDims<kH, kHeads, kI>> fixed(w);
  auto ws = dyn.make_workspace({kB, kS, 2});
  std::vector<float> a(kB * 3), b(kB * 3);
  Outputs oa, ob;
  oa.logits = a.data();
  ob.logits = b.data();
  for (double width : {1.0, 0.5}) {
    const auto net = SubNetwork::dynabert(w.config(), width, 1.0);
    dyn.forward(batch.inputs(), net, oa, ws, Threads(2));
    fixed.forward(batch.inputs(), net, ob, ws, Threads(2));
    BOOST_TEST(std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
  }
  train::TrainableBert<float, StaticDims<kH, kHeads, kI>> tf(w);
  train::TrainCache<float> cache;
  tf.forward(batch.inputs(), SubNetwork::full(w.config()), cache, {});
  dyn.forward(batch.inputs(), SubNetwork::full(w.config()), oa, ws);
  BOOST_TEST(std::memcmp(a.data(), cache.logits.data(), a.size() * 4) == 0);
  BOOST_CHECK_THROW((ElasticBert<float, StaticDims<32, 4, 24>>(w)), FormatError);
}

BOOST_AUTO_TEST_CASE(trainer_steps_allocate_nothing_after_warm_up) {
  // stage 1 (four widths, a teacher, hidden-state loss), examples of one length
  BertConfig c = model_config();
  c.max_position_embeddings = 16;
  BertWeights<float> w(c, HeadSpec{true, 2});
  w.init_random(23, 0.2);
  train::Dataset data;
  std::mt19937 g(1);
  for (int i = 0; i < 64; ++i) {
    train::Example e;
    for (int t = 0; t < 12; ++t) e.ids.push_back(static_cast<std::int32_t>(g() % kV));
    e.label = i % 2;
    data.push_back(e);
  }
  train::TrainableBert<float> teacher(w), student(w);
  teacher.set_threads(Threads(2));
  student.set_threads(Threads(2));
  for (bool pack : {true, false}) {
    train::TrainerConfig cfg;
    cfg.phase = train::Phase::kWidth;
    cfg.batch_size = 8;
    cfg.epochs = 1;
    cfg.pack_tokens = pack;
    train::Trainer<float> t(student, &teacher, cfg);
    t.on_progress = [](const train::Progress&) {};
    t.fit(data, nullptr, 2);  // warm-up
    const long news = test_alloc::count.load(), buffers = aligned_allocations().load();
    t.fit(data, nullptr, 4);
    BOOST_TEST(test_alloc::count.load() - news == 0, "operator new calls: " << test_alloc::count.load() - news);
    BOOST_TEST(aligned_allocations().load() - buffers == 0, "buffer allocations: " << aligned_allocations().load() - buffers);
    BOOST_TEST(t.step() == 6);
  }
}
