// Every fast kernel against its reference twin on randomized shapes (tails of every size,
// prefix widths of packed weights, every epilogue, 1 and 3 threads).
#define BOOST_TEST_MODULE dynabert_kernels
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <cmath>
#include <random>
#include <vector>

#include <dynabert/dynabert.hpp>
#include <utility>

using namespace dynabert;

namespace {
std::vector<float> randn(std::size_t n, std::mt19937& g, float s = 1.0f) {
  std::normal_distribution<float> d(0.0f, s);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}
/// max |a - b| / (1 + |b|)
double max_rel(const float* a, const float* b, std::size_t n) {
  double m = 0;
  for (std::size_t i = 0; i < n; ++i) m = std::max(m, std::abs(double(a[i]) - b[i]) / (1.0 + std::abs(double(b[i]))));
  return m;
}
/// Error of a K-term product against its reference, on the scale of its partial sums (the terms
/// here are products of unit normals, so partial sums grow like sqrt(K)): blocking the K loop
/// differently changes float rounding by about sqrt(K) x eps of that scale, a wrong element by O(1).
double gemm_err(const float* a, const float* b, std::size_t n, int K) {
  double m = 0;
  for (std::size_t i = 0; i < n; ++i) m = std::max(m, std::abs(double(a[i]) - b[i]) / (std::sqrt(double(K)) + std::abs(double(b[i]))));
  return m;
}
}  // namespace

BOOST_AUTO_TEST_CASE(gemm_matches_reference_over_random_shapes) {
  std::mt19937 g(42);
  std::uniform_int_distribution<int> dm(1, 70), dn(1, 150), dk(1, 600);
  const Activation acts[] = {Activation::kNone, Activation::kGeluErf, Activation::kGeluTanh, Activation::kTanh};
  Threads three(3);
  AlignedBuffer<float> scratch(3 * kernels::gemm_scratch_floats());
  for (int trial = 0; trial < 120; ++trial) {
    const int M = dm(g), N = dn(g), K = dk(g);
    // the active prefix of a bigger packed weight
    const int n = std::uniform_int_distribution<int>(1, N)(g), k = std::uniform_int_distribution<int>(1, K)(g);
    const long lda = K + trial % 3, ldw = K + trial % 5, ldc = N + trial % 7;
    auto a = randn(M * lda, g), w = randn(N * ldw, g), bias = randn(N, g), res = randn(M * ldc, g);
    kernels::PackedWeight pw(w.data(), N, K, ldw);
    kernels::Epilogue ep;
    const bool use_bias = trial % 2, use_res = trial % 3 == 0;
    ep.bias = use_bias ? bias.data() : nullptr;
    ep.residual = use_res ? res.data() : nullptr;
    ep.ld_residual = ldc;
    ep.act = acts[trial % 4];
    ep.alpha = trial % 5 == 0 ? 0.125f : 1.0f;
    std::vector<float> c(M * ldc, -7.0f), cref(M * ldc, -7.0f);
    kernels::gemm(c.data(), ldc, a.data(), lda, M, pw.view(), n, k, ep, scratch.data(), trial % 2 ? three : Threads());
    kernels::reference::linear(cref.data(), ldc, a.data(), lda, w.data(), ldw, M, n, k, ep.bias, ep.residual, ldc,
                               ep.act, ep.alpha);
    const double err = gemm_err(c.data(), cref.data(), c.size(), k);
    BOOST_TEST(err < 1e-5, "M " << M << " N " << N << " K " << K << " n " << n << " k " << k << " err " << err);
    // columns past n are untouched
    for (int m = 0; m < M; ++m)
      for (long j = n; j < ldc; ++j) BOOST_REQUIRE(c[m * ldc + j] == -7.0f);
  }
}

BOOST_AUTO_TEST_CASE(gemm_transposed_a_and_accumulate_match_reference) {
  std::mt19937 g(77);
  AlignedBuffer<float> scratch(2 * kernels::gemm_scratch_floats());
  for (int trial = 0; trial < 40; ++trial) {
    const int M = 1 + g() % 60, N = 1 + g() % 100, K = 1 + g() % 700;
    const long lda_t = M + trial % 4;  // A^T is [K, M]
    auto at = randn(K * lda_t, g), w = randn(N * K, g), c0 = randn(M * N, g), bias = randn(N, g);
    std::vector<float> a(M * K);
    for (int m = 0; m < M; ++m)
      for (int k = 0; k < K; ++k) a[m * K + k] = at[k * lda_t + m];
    kernels::PackedWeight pw(w.data(), N, K, K);
    kernels::Epilogue ep;
    ep.accumulate = true;
    ep.bias = trial % 2 ? bias.data() : nullptr;
    auto c = c0, cref = c0;
    kernels::gemm<true>(c.data(), N, at.data(), lda_t, M, pw.view(), N, K, ep, scratch.data(), Threads(trial % 3 ? 1 : 2));
    // oracle in double: the float reference's own rounding over K terms would blur the check
    std::vector<double> ad(a.begin(), a.end()), wd(w.begin(), w.end()), prod(M * N), bd(bias.begin(), bias.end());
    kernels::reference::linear(prod.data(), N, ad.data(), K, wd.data(), K, M, N, K, ep.bias ? bd.data() : nullptr);
    for (int i = 0; i < M * N; ++i) cref[i] = static_cast<float>(c0[i] + prod[i]);
    const double err = gemm_err(c.data(), cref.data(), c.size(), K);
    BOOST_TEST(err < 1e-5, "M " << M << " N " << N << " K " << K << " err " << err << " trial " << trial);
  }
  kernels::Epilogue bad;
  bad.accumulate = true;
  bad.alpha = 0.5f;
  std::vector<float> w(64, 1.0f), c(64), a(64);
  kernels::PackedWeight pw(w.data(), 8, 8, 8);
  BOOST_CHECK_THROW(kernels::gemm(c.data(), 8, a.data(), 8, 8, pw.view(), 8, 8, bad, scratch.data()), InputError);
}

BOOST_AUTO_TEST_CASE(pack_kn_is_the_transpose_of_pack_nk) {
  std::mt19937 g(5);
  for (int trial = 0; trial < 20; ++trial) {
    const int K = 1 + g() % 90, N = 1 + g() % 90, M = 1 + g() % 30;
    auto b = randn(K * N, g), a = randn(M * K, g);
    std::vector<float> wt(N * K);
    for (int i = 0; i < K; ++i)
      for (int j = 0; j < N; ++j) wt[j * K + i] = b[i * N + j];
    AlignedBuffer<float> p1(kernels::packed_size(N, K)), p2(kernels::packed_size(N, K)),
        s(kernels::gemm_scratch_floats());
    auto v1 = kernels::pack_kn(p1.data(), b.data(), K, N, N);
    auto v2 = kernels::pack_nk(p2.data(), wt.data(), N, K, K);
    BOOST_TEST(std::equal(p1.begin(), p1.end(), p2.begin()));
    BOOST_TEST(v1.n == v2.n);
    BOOST_TEST(v1.k == v2.k);
    std::vector<float> c(M * N), cref(M * N);
    kernels::gemm(c.data(), N, a.data(), K, M, v1, N, K, {}, s.data());
    kernels::reference::linear(cref.data(), N, a.data(), K, wt.data(), K, M, N, K);
    BOOST_TEST(gemm_err(c.data(), cref.data(), c.size(), K) < 1e-5);
  }
}

BOOST_AUTO_TEST_CASE(gemm_is_bitwise_independent_of_thread_count) {
  std::mt19937 g(9);
  const int M = 37, N = 300, K = 520;
  auto a = randn(M * K, g), w = randn(N * K, g);
  kernels::PackedWeight pw(w.data(), N, K, K);
  AlignedBuffer<float> s(4 * kernels::gemm_scratch_floats());
  std::vector<float> c1(M * N), c4(M * N);
  kernels::gemm(c1.data(), N, a.data(), K, M, pw.view(), N, K, {}, s.data(), Threads(1));
  kernels::gemm(c4.data(), N, a.data(), K, M, pw.view(), N, K, {}, s.data(), Threads(4));
  BOOST_TEST(std::memcmp(c1.data(), c4.data(), c1.size() * 4) == 0);
}

BOOST_AUTO_TEST_CASE(gemm_rejects_widths_beyond_the_packed_weight) {
  std::vector<float> w(8 * 8, 1.0f), c(64), a(64);
  kernels::PackedWeight pw(w.data(), 8, 8, 8);
  AlignedBuffer<float> s(kernels::gemm_scratch_floats());
  BOOST_CHECK_THROW(kernels::gemm(c.data(), 8, a.data(), 8, 8, pw.view(), 9, 8, {}, s.data()), InputError);
  BOOST_CHECK_THROW(kernels::gemm(c.data(), 8, a.data(), 8, 8, pw.view(), 8, 9, {}, s.data()), InputError);
}

BOOST_AUTO_TEST_CASE(softmax_matches_reference) {
  std::mt19937 g(1);
  for (int n = 1; n < 140; n += 3) {
    auto x = randn(n, g, 4.0f), bias = randn(n, g);
    for (int j = 0; j < n; j += 4) bias[j] = -10000.0f;
    for (int with_bias = 0; with_bias < 2; ++with_bias) {
      auto fast = x, ref = x;
      kernels::softmax_row(fast.data(), n, 0.3f, with_bias ? bias.data() : nullptr);
      kernels::reference::softmax_row(ref.data(), n, 0.3f, with_bias ? bias.data() : nullptr);
      BOOST_TEST(max_rel(fast.data(), ref.data(), n) < 1e-6, "n " << n);
      double s = 0;
      for (float v : fast) s += v;
      BOOST_TEST(std::abs(s - 1.0) < 1e-5);
    }
  }
}

BOOST_AUTO_TEST_CASE(layernorm_matches_reference) {
  std::mt19937 g(2);
  for (int H : {1, 7, 16, 31, 64, 100, 768, 1031}) {
    auto x = randn(H, g, 3.0f), gm = randn(H, g), bt = randn(H, g);
    for (auto& v : x) v += 5.0f;  // a mean far from zero
    std::vector<float> fast(H), ref(H);
    kernels::layernorm_row(fast.data(), x.data(), gm.data(), bt.data(), H, 1e-12);
    kernels::reference::layernorm_row(ref.data(), x.data(), gm.data(), bt.data(), H, 1e-12);
    BOOST_TEST(max_rel(fast.data(), ref.data(), H) < 2e-5, "H " << H);
    // in place
    kernels::layernorm_row(x.data(), x.data(), gm.data(), bt.data(), H, 1e-12);
    BOOST_TEST(max_rel(x.data(), ref.data(), H) < 2e-5);
  }
}

BOOST_AUTO_TEST_CASE(activations_match_reference) {
  std::mt19937 g(3);
  for (auto act : {Activation::kGeluErf, Activation::kGeluTanh, Activation::kTanh, Activation::kNone}) {
    auto x = randn(1003, g, 4.0f);
    x[0] = 0.0f; x[1] = -12.0f; x[2] = 12.0f; x[3] = 1e-8f;
    auto fast = x, ref = x;
    kernels::activation(fast.data(), fast.size(), act);
    kernels::reference::activation(ref.data(), ref.size(), act);
    BOOST_TEST(max_rel(fast.data(), ref.data(), x.size()) < 2e-6, "activation " << to_string(act));
  }
  // The two GELUs really differ (so a swapped one cannot pass a parity test).
  BOOST_TEST(std::abs(kernels::reference::gelu_erf(1.5) - kernels::reference::gelu_tanh(1.5)) > 1e-5);
}

BOOST_AUTO_TEST_CASE(fast_erf_error_bound_on_a_dense_sweep) {
  // The GELU's erf against std::erf in double: every float step of 1e-4 over [-6, 6] (past the
  // clip at +-4 too), and its oddness.
  using B = simd::Batch;
  double worst = 0;
  for (int i = -60000; i < 60000; i += B::size) {
    alignas(64) float x[B::size], y[B::size], yn[B::size];
    for (std::size_t j = 0; j < B::size; ++j) x[j] = static_cast<float>((i + static_cast<int>(j)) * 1e-4);
    kernels::detail::fast_erf(B::load_aligned(x)).store_aligned(y);
    kernels::detail::fast_erf(-B::load_aligned(x)).store_aligned(yn);
    for (std::size_t j = 0; j < B::size; ++j) {
      worst = std::max(worst, std::abs(double(y[j]) - std::erf(double(x[j]))));
      BOOST_TEST(yn[j] == -y[j]);
    }
  }
  // 3.3e-7 with fused multiply-adds; 4.2e-7 in builds where xsimd::fma is a multiply and an add
  BOOST_TEST(worst < 5e-7);
  BOOST_TEST(worst > 0.0);  // it is an approximation, not std::erf in disguise
}

BOOST_AUTO_TEST_CASE(activation_backward_matches_reference_and_finite_differences) {
  std::mt19937 g(13);
  for (auto act : {Activation::kGeluErf, Activation::kGeluTanh, Activation::kTanh, Activation::kNone}) {
    auto x = randn(1003, g, 3.0f), d = randn(1003, g);
    x[0] = 0.0f; x[1] = -9.0f; x[2] = 9.0f;
    auto fast = d;
    std::vector<float> ref(d.size()), out(x.size()), out_ref(x.size());
    kernels::activation_backward(fast.data(), x.data(), x.size(), act);
    for (std::size_t i = 0; i < x.size(); ++i) ref[i] = d[i] * kernels::reference::activation_grad(act, x[i]);
    BOOST_TEST(max_rel(fast.data(), ref.data(), x.size()) < 2e-6, "backward of " << to_string(act));
    kernels::activation(out.data(), x.data(), x.size(), act);  // out-of-place form
    for (std::size_t i = 0; i < x.size(); ++i) out_ref[i] = kernels::reference::activate(act, x[i]);
    BOOST_TEST(max_rel(out.data(), out_ref.data(), x.size()) < 2e-6);
    // the reference derivative against central differences in double
    for (double v : {-3.1, -0.7, 0.0, 0.4, 2.2}) {
      const double num = (kernels::reference::activate(act, v + 1e-6) - kernels::reference::activate(act, v - 1e-6)) / 2e-6;
      BOOST_TEST(std::abs(num - kernels::reference::activation_grad(act, v)) < 1e-8, to_string(act) << " at " << v);
    }
  }
}

// Many rows: threads split M (kernels/gemm.hpp, M >= DYNABERT_GEMM_MSPLIT) and C is done in row
// chunks; every epilogue and A^T must land on the right rows.
BOOST_AUTO_TEST_CASE(gemm_large_m_row_split_matches_reference) {
  std::mt19937 g(5);
  AlignedBuffer<float> scratch(3 * kernels::gemm_scratch_floats());
  const Threads two(2), three(3);
  for (int trial = 0; trial < 6; ++trial) {
    const int M = std::max(DYNABERT_GEMM_MSPLIT, 1) + static_cast<int>(g() % 700), N = 40 + g() % 90, K = 30 + g() % 900;
    const bool trans = trial % 2, accumulate = trial % 3 == 2;
    auto a = randn(M * K, g), w = randn(N * K, g), bias = randn(N, g), res = randn(M * N, g), c0 = randn(M * N, g);
    std::vector<float> at(static_cast<std::size_t>(K) * M);
    for (int m = 0; m < M; ++m)
      for (int k = 0; k < K; ++k) at[static_cast<std::size_t>(k) * M + m] = a[static_cast<std::size_t>(m) * K + k];
    kernels::PackedWeight pw(w.data(), N, K, K);
    kernels::Epilogue ep;
    ep.bias = bias.data();
    ep.accumulate = accumulate;
    if (!accumulate) {
      ep.residual = res.data();
      ep.ld_residual = N;
      ep.act = trial % 2 ? Activation::kGeluErf : Activation::kNone;
    }
    auto c = c0, cref = c0;
    if (trans) kernels::gemm<true>(c.data(), N, at.data(), M, M, pw.view(), N, K, ep, scratch.data(), trial < 3 ? two : three);
    else kernels::gemm(c.data(), N, a.data(), K, M, pw.view(), N, K, ep, scratch.data(), trial < 3 ? two : three);
    kernels::reference::linear(cref.data(), N, a.data(), K, w.data(), K, M, N, K, ep.bias, ep.residual, N, ep.act, 1.0f);
    if (accumulate)
      for (std::size_t i = 0; i < cref.size(); ++i) cref[i] += c0[i];
    const double err = gemm_err(c.data(), cref.data(), c.size(), K);
    BOOST_TEST(err < 1e-5, "M " << M << " N " << N << " K " << K << " trans " << trans << " err " << err);
  }
}

// A is read in place unless its row stride is a multiple of 4 KB (then its rows are copied to a
// stride that is not): both paths, full and tail row slivers, K split into blocks; the copy gives
// bitwise what the same A at another stride gives.
BOOST_AUTO_TEST_CASE(gemm_in_place_and_copied_a_agree_with_reference) {
  std::mt19937 g(9);
  AlignedBuffer<float> scratch(kernels::gemm_scratch_floats());
  for (long lda : {1024L, 2048L, 1000L, 777L}) {
    const int M = 13 + static_cast<int>(g() % 40), N = 33 + static_cast<int>(g() % 70);
    const int K = std::min<long>(lda, 700 + static_cast<int>(g() % 300));
    auto a = randn(static_cast<int>(M * lda), g), w = randn(N * K, g), bias = randn(N, g);
    kernels::PackedWeight pw(w.data(), N, K, K);
    kernels::Epilogue ep;
    ep.bias = bias.data();
    std::vector<float> c(M * N), cref(M * N);
    kernels::gemm(c.data(), N, a.data(), lda, M, pw.view(), N, K, ep, scratch.data());
    kernels::reference::linear(cref.data(), N, a.data(), lda, w.data(), K, M, N, K, ep.bias);
    BOOST_TEST(gemm_err(c.data(), cref.data(), c.size(), K) < 1e-5, "lda " << lda << " M " << M << " K " << K);
    const long lda2 = lda + 8;  // the same rows at a stride read in place
    std::vector<float> a2(static_cast<std::size_t>(M * lda2)), c2(M * N);
    for (int m = 0; m < M; ++m) std::copy_n(a.data() + m * lda, K, a2.data() + m * lda2);
    kernels::gemm(c2.data(), N, a2.data(), lda2, M, pw.view(), N, K, ep, scratch.data());
    BOOST_TEST(std::memcmp(c.data(), c2.data(), c.size() * sizeof(float)) == 0, "lda " << lda);
  }
}

// ---- the training row kernels against their twins ------------------------------------------------
#include <dynabert/kernels/dropout.hpp>

BOOST_AUTO_TEST_CASE(cached_layernorm_and_its_backward_match_reference) {
  std::mt19937 g(21);
  for (int H : {1, 5, 16, 33, 256, 768}) {
    auto x = randn(H, g, 2.0f), gm = randn(H, g), bt = randn(H, g), dy = randn(H, g);
    for (auto& v : x) v += 3.0f;
    std::vector<float> y(H), y2(H), xh(H), xh_ref(H), yr(H);
    float rs = 0, rs_ref = 0;
    kernels::layernorm_row_cached(y.data(), xh.data(), &rs, x.data(), gm.data(), bt.data(), H, 1e-12);
    kernels::layernorm_row(y2.data(), x.data(), gm.data(), bt.data(), H, 1e-12);
    BOOST_TEST(std::memcmp(y.data(), y2.data(), 4 * H) == 0, "cached and plain LayerNorm differ at H " << H);
    kernels::reference::layernorm_row_cached(yr.data(), xh_ref.data(), &rs_ref, x.data(), gm.data(), bt.data(), H, 1e-12);
    BOOST_TEST(max_rel(xh.data(), xh_ref.data(), H) < 2e-5);
    BOOST_TEST(std::abs(rs - rs_ref) < 2e-5 * std::abs(rs_ref));
    std::vector<float> dx(H, 0.5f), dx_ref(H, 0.5f), dg(H, 0.1f), dg_ref(H, 0.1f), db(H, 0.2f), db_ref(H, 0.2f);
    kernels::layernorm_backward_row(dx.data(), dy.data(), xh_ref.data(), rs_ref, gm.data(), dg.data(), db.data(), H);
    kernels::reference::layernorm_backward_row(dx_ref.data(), dy.data(), xh_ref.data(), rs_ref, gm.data(), dg_ref.data(),
                                               db_ref.data(), H);
    BOOST_TEST(max_rel(dx.data(), dx_ref.data(), H) < 2e-4, "H " << H);
    BOOST_TEST(max_rel(dg.data(), dg_ref.data(), H) < 1e-5);
    BOOST_TEST(max_rel(db.data(), db_ref.data(), H) < 1e-6);
    if (H >= 5) {  // the reference backward against central differences (double)
      std::vector<double> xd(x.begin(), x.end()), gd(gm.begin(), gm.end()), bd(bt.begin(), bt.end()), r(H), yd(H), xhd(H);
      for (int i = 0; i < H; ++i) r[i] = std::sin(1.0 + i);
      auto scalar = [&] {
        double rsd;
        kernels::reference::layernorm_row_cached(yd.data(), xhd.data(), &rsd, xd.data(), gd.data(), bd.data(), H, 1e-12);
        double s = 0;
        for (int i = 0; i < H; ++i) s += r[i] * yd[i];
        return s;
      };
      scalar();
      double rsd;
      kernels::reference::layernorm_row_cached(yd.data(), xhd.data(), &rsd, xd.data(), gd.data(), bd.data(), H, 1e-12);
      std::vector<double> ddx(H, 0.0);
      kernels::reference::layernorm_backward_row(ddx.data(), r.data(), xhd.data(), rsd, gd.data(), static_cast<double*>(nullptr),
                                                 static_cast<double*>(nullptr), H);
      for (int i = 0; i < H; i += 2) {
        const double old = xd[i];
        xd[i] = old + 1e-6; const double up = scalar();
        xd[i] = old - 1e-6; const double down = scalar();
        xd[i] = old;
        BOOST_TEST(std::abs((up - down) / 2e-6 - ddx[i]) < 1e-6 * (1 + std::abs(ddx[i])), "H " << H << " i " << i);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(softmax_backward_and_column_sums_match_reference) {
  std::mt19937 g(22);
  for (int n = 1; n < 150; n += 7) {
    auto p = randn(n, g, 3.0f), d = randn(n, g);
    kernels::reference::softmax_row(p.data(), n, 1.0f, static_cast<const float*>(nullptr));
    auto fast = d, ref = d;
    kernels::softmax_backward_row(fast.data(), p.data(), n, 0.125f);
    kernels::reference::softmax_backward_row(ref.data(), p.data(), n, 0.125f);
    BOOST_TEST(max_rel(fast.data(), ref.data(), n) < 1e-5, "n " << n);
  }
  for (int n : {1, 15, 16, 64, 65, 200})
    for (long M : {1L, 3L, 70L}) {
      const long ld = n + 3;
      auto dy = randn(static_cast<int>(M * ld), g);
      auto fast = randn(n, g), ref = fast;
      kernels::add_column_sums(fast.data(), dy.data(), M, n, ld);
      kernels::reference::add_column_sums(ref.data(), dy.data(), M, n, ld);
      BOOST_TEST(max_rel(fast.data(), ref.data(), n) < 1e-5, "n " << n << " M " << M);
    }
}

BOOST_AUTO_TEST_CASE(dropout_simd_and_scalar_masks_are_identical) {
  std::mt19937 g(23);
  for (double p : {0.1, 0.25, 0.5, 0.9}) {
    const auto key = kernels::DropoutKey::make(p, (static_cast<std::uint64_t>(g()) << 32) | g());
    for (std::size_t n : {1ul, 15ul, 16ul, 17ul, 1000ul}) {
      std::vector<float> x(n, 1.0f), y(n, 1.0f);
      kernels::dropout_multiply(x.data(), n, key, 12345);
      kernels::reference::dropout_multiply(y.data(), n, key, 12345u);
      BOOST_TEST(std::memcmp(x.data(), y.data(), 4 * n) == 0, "p " << p << " n " << n);
    }
    // the mask of an element depends on its index only: any split of a range gives the same mask
    std::vector<float> whole(300, 1.0f), parts(300, 1.0f);
    kernels::dropout_multiply(whole.data(), 300, key, 7);
    kernels::dropout_multiply(parts.data(), 113, key, 7);
    kernels::dropout_multiply(parts.data() + 113, 187, key, 7 + 113);
    BOOST_TEST(std::memcmp(whole.data(), parts.data(), 1200) == 0);
    // the kept fraction and the scale
    std::vector<float> big(200000, 1.0f);
    kernels::dropout_multiply(big.data(), big.size(), key, 0);
    long kept = 0;
    for (float v : big) {
      BOOST_TEST_REQUIRE((v == 0.0f || std::abs(v - 1.0 / (1.0 - p)) < 1e-6));
      kept += v != 0.0f;
    }
    BOOST_TEST(std::abs(static_cast<double>(kept) / big.size() - (1.0 - p)) < 0.006, "p " << p);
    // derived keys (one per attention task) differ
    std::vector<float> a(64, 1.0f), b(64, 1.0f);
    kernels::dropout_multiply(a.data(), a.size(), key.derive(0), 0);
    kernels::dropout_multiply(b.data(), b.size(), key.derive(1), 0);
    BOOST_TEST(std::memcmp(a.data(), b.data(), 256) != 0);
  }
  const kernels::DropoutKey off = kernels::DropoutKey::make(0.0, 1);
  std::vector<float> x(10, 2.0f);
  kernels::dropout_multiply(x.data(), 10, off, 0);
  BOOST_TEST(std::all_of(x.begin(), x.end(), [](float v) { return v == 2.0f; }));
}

BOOST_AUTO_TEST_CASE(elementwise_kernels_do_not_depend_on_the_split) {
  // a value's bits do not depend on where an array is cut (threads split rows anywhere)
  std::mt19937 g(24);
  auto x = randn(203, g, 3.0f), d = randn(203, g);
  for (auto act : {Activation::kGeluErf, Activation::kGeluTanh, Activation::kTanh}) {
    std::vector<float> whole(203), parts(203), dw = d, dp = d;
    kernels::activation(whole.data(), x.data(), 203, act);
    kernels::activation(parts.data(), x.data(), 37, act);
    kernels::activation(parts.data() + 37, x.data() + 37, 166, act);
    BOOST_TEST(std::memcmp(whole.data(), parts.data(), 4 * 203) == 0, to_string(act));
    kernels::activation_backward(dw.data(), x.data(), 203, act);
    kernels::activation_backward(dp.data(), x.data(), 5, act);
    kernels::activation_backward(dp.data() + 5, x.data() + 5, 198, act);
    BOOST_TEST(std::memcmp(dw.data(), dp.data(), 4 * 203) == 0, to_string(act));
  }
}

// ---- the reference twins themselves against an independent implementation (Eigen, in double) -----
#include <Eigen/Core>

BOOST_AUTO_TEST_CASE(reference_products_agree_with_eigen) {
  using M = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  std::mt19937 g(25);
  std::normal_distribution<double> n;
  for (auto [rows, outs, ins] : {std::array<int, 3>{1, 1, 1}, {7, 5, 3}, {33, 64, 48}}) {
    M x(rows, ins), w(outs, ins), dy(rows, outs);
    for (auto* m : {&x, &w, &dy})
      for (int i = 0; i < m->size(); ++i) m->data()[i] = n(g);
    std::vector<double> b(outs), y(rows * outs), dx(rows * ins, 0.0), dw(outs * ins, 0.0), db(outs, 0.0);
    for (auto& v : b) v = n(g);
    kernels::reference::linear(y.data(), outs, x.data(), ins, w.data(), ins, rows, outs, ins, b.data());
    kernels::reference::linear_backward_input(dx.data(), ins, dy.data(), outs, w.data(), ins, rows, outs, ins);
    kernels::reference::linear_backward_weight(dw.data(), ins, dy.data(), outs, x.data(), ins, rows, outs, ins);
    kernels::reference::add_column_sums(db.data(), dy.data(), rows, outs, outs);
    const M ey = (x * w.transpose()).rowwise() + Eigen::Map<const Eigen::RowVectorXd>(b.data(), outs);
    const M edx = dy * w, edw = dy.transpose() * x;
    const Eigen::RowVectorXd edb = dy.colwise().sum();
    double err = 0;
    for (int i = 0; i < ey.size(); ++i) err = std::max(err, std::abs(ey.data()[i] - y[i]));
    for (int i = 0; i < edx.size(); ++i) err = std::max(err, std::abs(edx.data()[i] - dx[i]));
    for (int i = 0; i < edw.size(); ++i) err = std::max(err, std::abs(edw.data()[i] - dw[i]));
    for (int i = 0; i < outs; ++i) err = std::max(err, std::abs(edb[i] - db[i]));
    BOOST_TEST(err < 1e-11, rows << "x" << outs << "x" << ins << ": " << err);
  }
}

// ---- low precision (kernels/lowp.hpp): every kernel this CPU runs against the plain twins --------
namespace {
std::vector<kernels::LowpKernel> lowp_kernels(Precision p) {
  std::vector<kernels::LowpKernel> ks;
  for (auto k : {kernels::LowpKernel::kScalar, kernels::LowpKernel::kMadd16, kernels::LowpKernel::kVnni512,
                 kernels::LowpKernel::kAmxInt8, kernels::LowpKernel::kEmulated, kernels::LowpKernel::kNative512,
                 kernels::LowpKernel::kAmxBf16})
    if (kernels::has_lowp_kernel(k, p)) ks.push_back(k);
  return ks;
}
}  // namespace

BOOST_AUTO_TEST_CASE(int8_activation_quantization_matches_its_twin) {
  std::mt19937 g(11);
  for (int trial = 0; trial < 200; ++trial) {
    const int k = std::uniform_int_distribution<int>(1, 300)(g), kpad = kernels::lowp_kpad(k, Precision::kInt8);
    auto x = randn(k, g, trial % 2 ? 0.01f : 3.0f);
    if (trial % 7 == 0) x[trial % k] = 50.0f;  // an outlier
    std::vector<std::int8_t> q(kpad + 8, 99), qr(k);
    std::int32_t corr = -1;
    const float sa = kernels::quantize_a_row(q.data(), &corr, x.data(), k, kpad);
    const float sr = kernels::quantize_s8(qr.data(), x.data(), k);
    BOOST_REQUIRE(sa == sr);
    long sum = 0;
    for (int i = 0; i < k; ++i) {
      BOOST_REQUIRE(q[i] == qr[i]);
      BOOST_REQUIRE(q[i] >= -127);
      sum += q[i];
    }
    for (int i = k; i < kpad; ++i) BOOST_REQUIRE(q[i] == 0);
    BOOST_REQUIRE(corr == 128 * sum);
    // dequantized values are within half a step
    for (int i = 0; i < k; ++i) BOOST_REQUIRE(std::abs(q[i] * sa - x[i]) <= 0.5001f * sa);
  }
  // an all-zero row has scale 0; a row with Inf or NaN has a NaN scale (its outputs become NaN)
  std::vector<float> z(20, 0.0f);
  std::vector<std::int8_t> q(20);
  std::int32_t corr = 0;
  BOOST_TEST(kernels::quantize_a_row(q.data(), &corr, z.data(), 20, 20) == 0.0f);
  z[3] = NAN;
  BOOST_TEST(std::isnan(kernels::quantize_a_row(q.data(), &corr, z.data(), 20, 20)));
  z[3] = INFINITY;
  BOOST_TEST(std::isnan(kernels::quantize_a_row(q.data(), &corr, z.data(), 20, 20)));
  // a NaN anywhere (first 16-value block, a later one, the tail): `max` drops NaNs, so they are
  // looked for separately; the row gets a NaN scale, zeros and no correction
  for (int k : {40, 768})
    for (int at : {3, 20, k - 1}) {
      std::vector<float> x(k, 0.5f);
      std::vector<std::int8_t> qa(k, 9), qs(k, 9);
      x[at] = NAN;
      corr = 7;
      BOOST_TEST(std::isnan(kernels::quantize_a_row(qa.data(), &corr, x.data(), k, k)), "k " << k << " NaN at " << at);
      BOOST_TEST(std::isnan(kernels::quantize_s8(qs.data(), x.data(), k)), "k " << k << " NaN at " << at);
      BOOST_TEST(corr == 0);
      BOOST_TEST((std::all_of(qa.begin(), qa.end(), [](std::int8_t v) { return v == 0; })));
    }
  // max|x| below 127 / FLT_MAX (127 / max|x| overflows float), normal and subnormal: scaled in
  // double, x / s = (1, -0.5, 3/16) x 127 -> 127, -64 (half to even), 24
  for (int e : {-125, -130}) {
    const int k = 35;
    std::vector<float> x(k, 0.0f);
    x[0] = std::ldexp(1.0f, e);
    x[17] = -std::ldexp(1.0f, e - 1);
    x[34] = 3 * std::ldexp(1.0f, e - 4);
    std::vector<std::int8_t> qa(k + 1, 9), qs(k, 9);
    const float sa = kernels::quantize_a_row(qa.data(), &corr, x.data(), k, k + 1);
    BOOST_TEST(sa == kernels::quantize_s8(qs.data(), x.data(), k));
    BOOST_TEST(sa == x[0] / 127.0f);
    BOOST_TEST(sa > 0.0f);
    BOOST_TEST(qa[0] == 127);
    BOOST_TEST(qa[17] == -64);
    BOOST_TEST(qa[34] == 24);
    BOOST_TEST(qa[35] == 0);
    BOOST_TEST(corr == 128 * (127 - 64 + 24));
    for (int i = 0; i < k; ++i) BOOST_TEST(qa[i] == qs[i]);
  }
}

namespace {
/// The int8 conversion of a row as the fused passes do it (max |y| found by the pass that wrote y)
/// against quantize_a_row: scale, values, padding and correction bitwise.
void check_known_max(const std::vector<float>& y, kernels::RowAbsMax mx, const std::string& what) {
  const int k = static_cast<int>(y.size()), kpad = kernels::lowp_kpad(k, Precision::kInt8);
  std::vector<std::int8_t> qa(kpad, 9), qb(kpad, 7);
  std::int32_t ca = -1, cb = -2;
  const float sa = kernels::quantize_a_row(qa.data(), &ca, y.data(), k, kpad);
  const float sb = kernels::quantize_a_row_known(qb.data(), &cb, y.data(), k, kpad, mx.amax, mx.nan);
  BOOST_TEST((sa == sb || (std::isnan(sa) && std::isnan(sb))), what << " scale " << sa << " vs " << sb);
  BOOST_TEST(ca == cb, what);
  BOOST_TEST((qa == qb), what);
  bool nan = false;
  float amax = 0.0f;
  for (float v : y) {
    nan = nan || std::isnan(v);
    if (!std::isnan(v)) amax = std::max(amax, std::abs(v));
  }
  BOOST_TEST(mx.nan == nan, what);
  if (!nan) BOOST_TEST(mx.amax == amax, what);
}
}  // namespace

BOOST_AUTO_TEST_CASE(fused_row_passes_are_bitwise_the_passes_one_after_another) {
  // The INT8 sinks' fused passes (kernels/rowwise.hpp): residual + LayerNorm finding max |y|, and
  // softmax times V's per-key scales finding max |p|, then quantize_a_row_known, against add(),
  // layernorm_row(), softmax_row(), the scaling loop and quantize_a_row one after another; rows
  // whose length is not a multiple of 16, NaN and Inf in the vector part and in the tail
  std::mt19937 g(17);
  int compared = 0;
  for (int H : {1, 5, 16, 31, 48, 90, 130, 768})
    for (int kind = 0; kind < 5; ++kind)  // 0 plain, 1 NaN early, 2 NaN in the tail, 3 Inf, 4 zeros
      for (bool with_res : {true, false}) {
        const std::string what = "H " + std::to_string(H) + " kind " + std::to_string(kind) + (with_res ? " residual" : "");
        auto x = randn(H, g, 2.0f), res = randn(H, g), gamma = randn(H, g), beta = randn(H, g, 0.1f);
        if (kind == 4) std::fill(x.begin(), x.end(), 0.0f), std::fill(res.begin(), res.end(), 0.0f);
        const int at = kind == 2 ? H - 1 : std::min(H - 1, 3);
        if (kind == 1 || kind == 2) x[at] = NAN;
        if (kind == 3) x[at] = INFINITY;
        // layernorm
        std::vector<float> xa = x, xb = x, ya(H, -1.0f), yb(H, -2.0f);
        if (with_res) kernels::add(xa.data(), res.data(), H);
        kernels::layernorm_row(ya.data(), xa.data(), gamma.data(), beta.data(), H, 1e-12);
        kernels::RowAbsMax mx;
        if (H == 768)
          mx = kernels::add_layernorm_row_absmax<768>(yb.data(), xb.data(), with_res ? res.data() : nullptr, gamma.data(),
                                                      beta.data(), H, 1e-12);
        else
          mx = kernels::add_layernorm_row_absmax(yb.data(), xb.data(), with_res ? res.data() : nullptr, gamma.data(),
                                                 beta.data(), H, 1e-12);
        BOOST_TEST(std::memcmp(ya.data(), yb.data(), 4 * H) == 0, what);
        BOOST_TEST(std::memcmp(xa.data(), xb.data(), 4 * H) == 0, what);
        check_known_max(yb, mx, "layernorm " + what);
        // softmax (with_res: a mask bias that drops some keys)
        std::vector<float> scale(H), bias(H, 0.0f);
        for (auto& v : scale) v = std::abs(randn(1, g)[0]) + 0.01f;
        for (int j = 0; j < H; j += 3) bias[j] = -10000.0f;
        const float* b = with_res ? bias.data() : nullptr;
        std::vector<float> pa = x, pb = x;
        kernels::softmax_row(pa.data(), H, 1.0f, b);
        for (int j = 0; j < H; ++j) pa[j] *= scale[j];
        const auto ms = kernels::softmax_row_scaled_absmax(pb.data(), H, scale.data(), 1.0f, b);
        BOOST_TEST(std::memcmp(pa.data(), pb.data(), 4 * H) == 0, what);
        check_known_max(pb, ms, "softmax " + what);
        // softmax at scale 1 without a mask reads p without rewriting it: as with a zero mask
        std::vector<float> pz = x, pn = x, zero(H, 0.0f);
        kernels::softmax_row(pz.data(), H, 1.0f, zero.data());
        kernels::softmax_row(pn.data(), H, 1.0f);
        BOOST_TEST(std::memcmp(pz.data(), pn.data(), 4 * H) == 0, what);
        ++compared;
      }
  BOOST_TEST(compared == 80);
}

BOOST_AUTO_TEST_CASE(bf16_rounding_matches_its_twin_and_the_hardware) {
  std::mt19937 g(12);
  std::vector<float> x = randn(4000, g, 10.0f);
  const float specials[] = {0.0f, -0.0f, 1.0f, 1.00390625f /* tie, even */, 1.01171875f /* tie, odd */, 3.4e38f, -3.4e38f,
                            1.2e-38f, 1e-40f /* denormal */, -1e-40f, INFINITY, -INFINITY, 65504.0f, 1.0f / 3.0f};
  x.insert(x.end(), std::begin(specials), std::end(specials));
  const int k = static_cast<int>(x.size());
  std::vector<std::uint16_t> y(kernels::lowp_kpad(k, Precision::kBf16) + 2, 7);
  kernels::bf16_a_row(y.data(), x.data(), k, kernels::lowp_kpad(k, Precision::kBf16));
  for (int i = 0; i < k; ++i) BOOST_REQUIRE_MESSAGE(y[i] == kernels::to_bf16(x[i]), "value " << x[i]);
  BOOST_TEST(kernels::from_bf16(kernels::to_bf16(1.00390625f)) == 1.0f);       // tie to even (down)
  BOOST_TEST(kernels::from_bf16(kernels::to_bf16(1.01171875f)) == 1.015625f);  // tie to even (up)
  BOOST_TEST(std::isnan(kernels::from_bf16(kernels::to_bf16(NAN))));
  BOOST_TEST(kernels::from_bf16(kernels::to_bf16(1e-40f)) == 0.0f);
}

BOOST_AUTO_TEST_CASE(lowp_gemm_kernels_match_reference_over_random_shapes) {
  std::mt19937 g(13);
  std::uniform_int_distribution<int> dm(1, 70), dn(1, 150), dk(1, 600);
  const Activation acts[] = {Activation::kNone, Activation::kGeluErf, Activation::kGeluTanh, Activation::kTanh};
  Threads three(3);
  for (Precision p : {Precision::kInt8, Precision::kBf16}) {
    const auto kernels_here = lowp_kernels(p);
    BOOST_TEST_MESSAGE(to_string(p) << ": " << kernels_here.size() << " kernels");
    for (int trial = 0; trial < 90; ++trial) {
      const int M = dm(g), N = dn(g), K = dk(g);
      const int n = std::uniform_int_distribution<int>(1, N)(g), k = std::uniform_int_distribution<int>(1, K)(g);
      const long lda = K + trial % 3, ldw = K + trial % 5, ldc = N + trial % 7;
      auto a = randn(M * lda, g), w = randn(N * ldw, g, 0.1f), bias = randn(N, g), res = randn(M * ldc, g);
      kernels::LowpWeight pw;
      pw.pack(p, N, K, [&](int r) { return w.data() + r * ldw; });
      kernels::Epilogue ep;
      ep.bias = trial % 2 ? bias.data() : nullptr;
      ep.residual = trial % 3 == 0 ? res.data() : nullptr;
      ep.ld_residual = ldc;
      ep.act = acts[trial % 4];
      ep.alpha = trial % 5 == 0 ? 0.125f : 1.0f;
      // the twin on unpacked operands
      std::vector<float> cref(M * ldc, -7.0f);
      if (p == Precision::kInt8) {
        std::vector<std::int8_t> qa(M * k), qw(N * K);
        std::vector<float> sa(M), sw(N);
        for (int m = 0; m < M; ++m) sa[m] = kernels::quantize_s8(qa.data() + m * k, a.data() + m * lda, k);
        for (int r = 0; r < N; ++r) sw[r] = kernels::quantize_s8(qw.data() + r * K, w.data() + r * ldw, K);
        kernels::reference::linear_s8(cref.data(), ldc, qa.data(), k, sa.data(), qw.data(), K, sw.data(), M, n, k, ep);
      } else {
        std::vector<std::uint16_t> ba(M * k), bw(N * K);
        for (int m = 0; m < M; ++m)
          for (int i = 0; i < k; ++i) ba[m * k + i] = kernels::to_bf16(a[m * lda + i]);
        for (int r = 0; r < N; ++r)
          for (int i = 0; i < K; ++i) bw[r * K + i] = kernels::to_bf16(w[r * ldw + i]);
        kernels::reference::linear_bf16(cref.data(), ldc, ba.data(), k, bw.data(), K, M, n, k, ep);
      }
      AlignedBuffer<std::uint8_t> abuf(static_cast<std::size_t>(M) * kernels::lowp_a_ld(k, p) * 2);
      AlignedBuffer<float> scale(M);
      AlignedBuffer<std::int32_t> corr(M);
      const Threads& th = trial % 2 ? three : Threads();
      const auto conv = kernels::convert_a(p, abuf.data(), scale.data(), corr.data(), a.data(), lda, M, k, th);
      std::vector<float> first;  // int8: the first kernel's output, which every other one matches bitwise
      for (auto kern : kernels_here) {
        std::vector<float> c(M * ldc, -7.0f);
        kernels::gemm_lowp(c.data(), ldc, conv, M, pw.view(), n, k, ep, th, kern);
        if (p == Precision::kInt8) {
          if (first.empty()) first = c;
          BOOST_TEST(std::memcmp(first.data(), c.data(), 4 * c.size()) == 0,
                     to_string(kern) << " bitwise M " << M << " N " << N << " K " << K << " n " << n << " k " << k);
        }
        // int8: the integer sums are exact, so only the epilogue's float arithmetic differs;
        // bf16: FP32 accumulation in another order than the double twin
        const double err = gemm_err(c.data(), cref.data(), c.size(), p == Precision::kInt8 ? 1 : k);
        BOOST_TEST(err < (p == Precision::kInt8 ? 2e-6 : 1e-5), to_string(kern) << " M " << M << " N " << N << " K " << K
                                                                              << " n " << n << " k " << k << " err " << err);
        for (int m = 0; m < M; ++m)
          for (long j = n; j < ldc; ++j) BOOST_REQUIRE(c[m * ldc + j] == -7.0f);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(int8_packing_of_quantized_rows_matches_the_layout) {
  // pack_s8 (LowpWeight's int8 packing, and INT8 attention's K and V^T per task) against the
  // layout written out (kernels/lowp.hpp: element (n, k) at p * kpad * 32 + (k / 4) * 128 +
  // (n % 32) * 4 + k % 4, stored as q + 128, weight 0 (128) past n and k), from rows or from rows
  // of the transpose, for sizes with partial panels and partial groups of 4; every byte written;
  // the owning packing holds the same bytes, and products on both are bitwise the same
  std::mt19937 g(29);
  for (int trial = 0; trial < 40; ++trial) {
    const int n = 1 + static_cast<int>(g() % 80), k = 1 + static_cast<int>(g() % 140);
    std::vector<std::int8_t> q(static_cast<std::size_t>(n) * k), qt(q.size());  // W [n, k] and W^T [k, n]
    for (int r = 0; r < n; ++r)
      for (int c = 0; c < k; ++c) qt[c * n + r] = q[r * k + c] = static_cast<std::int8_t>(static_cast<int>(g() % 255) - 127);
    std::vector<float> scale(n);
    for (auto& v : scale) v = 0.01f + static_cast<float>(g() % 100) / 1000.0f;
    // whole groups of 4, or whole 64-byte steps of K where the AMX kernels run
    const int kpad = kernels::amx_enabled() ? (k + 63) / 64 * 64 : (k + 3) / 4 * 4;
    const int panels = (n + kernels::kNR - 1) / kernels::kNR;
    const std::size_t bytes = kernels::lowp_packed_bytes(n, k, Precision::kInt8);
    BOOST_REQUIRE(bytes == static_cast<std::size_t>(panels) * kpad * kernels::kNR);
    std::vector<std::uint8_t> want(bytes, 128);
    for (int r = 0; r < n; ++r)
      for (int c = 0; c < k; ++c)
        want[static_cast<std::size_t>(r / kernels::kNR) * kpad * kernels::kNR + (c / 4) * kernels::kNR * 4 + (r % kernels::kNR) * 4 + c % 4] =
            static_cast<std::uint8_t>(q[r * k + c] + 128);
    kernels::LowpWeight own;
    own.pack_quantized(n, k, [&](int r) { return q.data() + r * k; }, [&](int r) { return scale[r]; });
    BOOST_TEST(std::memcmp(own.view().data, want.data(), bytes) == 0, "owning n " << n << " k " << k);
    std::vector<float> padded(panels * kernels::kNR, 0.0f);
    std::copy(scale.begin(), scale.end(), padded.begin());
    for (bool transposed : {false, true}) {
      AlignedBuffer<std::uint8_t> dst(bytes);
      std::fill(dst.begin(), dst.end(), std::uint8_t(0x5A));  // every byte must be written
      const auto v = kernels::pack_s8(dst.data(), padded.data(), n, k, transposed, [&](int i) {
        return transposed ? qt.data() + static_cast<long>(i) * n : q.data() + static_cast<long>(i) * k;
      });
      BOOST_TEST((v.n == n && v.k == k && v.kpad == kpad && v.precision == Precision::kInt8));
      BOOST_TEST(std::memcmp(dst.data(), want.data(), bytes) == 0, "n " << n << " k " << k << " transposed " << transposed);
      const int M = 1 + trial % 17;
      auto a = randn(M * k, g);
      AlignedBuffer<std::uint8_t> abuf(static_cast<std::size_t>(M) * kernels::lowp_a_ld(k, Precision::kInt8));
      AlignedBuffer<float> sa(M);
      AlignedBuffer<std::int32_t> corr(M);
      const auto conv = kernels::convert_a(Precision::kInt8, abuf.data(), sa.data(), corr.data(), a.data(), k, M, k, Threads());
      std::vector<float> c1(M * n), c2(M * n);
      kernels::gemm_lowp(c1.data(), n, conv, M, own.view(), n, k, kernels::Epilogue{});
      kernels::gemm_lowp(c2.data(), n, conv, M, v, n, k, kernels::Epilogue{});
      BOOST_TEST(std::memcmp(c1.data(), c2.data(), c1.size() * 4) == 0);
    }
  }
}

BOOST_AUTO_TEST_CASE(lowp_gemm_row_sink_sees_every_row_once_bitwise_as_stored) {
  // a sink receives each finished row exactly once, with the values the product stores without
  // it: threads splitting rows (chunks into per-worker scratch or into C) or columns (C, then the
  // sink), every kernel, epilogues with bias, GELU and residual; a sink given scratch overwrites
  // the rows it was handed (the product must not read them again)
  std::mt19937 g(15);
  const int K = 200;
  auto bias = randn(2000, g), res = randn(500 * 2000, g);
  auto check = [&](Precision p, kernels::LowpKernel kern, const kernels::LowpWeight& pw, int M, int N, int threads,
                   bool scratch, bool epi) {
    auto a = randn(M * K, g);
    AlignedBuffer<std::uint8_t> abuf(static_cast<std::size_t>(M) * kernels::lowp_a_ld(K, p) * 2);
    AlignedBuffer<float> scale(M);
    AlignedBuffer<std::int32_t> corr(M);
    const Threads th(threads);
    const auto conv = kernels::convert_a(p, abuf.data(), scale.data(), corr.data(), a.data(), K, M, K, th);
    kernels::Epilogue ep;
    if (epi) {
      ep.bias = bias.data();
      ep.act = Activation::kGeluErf;
      ep.residual = res.data();
      ep.ld_residual = N;
    }
    const long ldc = N + 8;
    std::vector<float> ref(static_cast<std::size_t>(M) * ldc, -3.0f), got(ref.size(), -5.0f), c(ref.size(), -7.0f);
    kernels::gemm_lowp(ref.data(), ldc, conv, M, pw.view(), N, K, ep, th, kern);
    struct Ctx {
      float* got;
      long ldc;
      int n;
      bool clobber;
      std::vector<std::atomic<int>>* seen;
    };
    std::vector<std::atomic<int>> seen(M);
    Ctx ctx{got.data(), ldc, N, scratch, &seen};
    AlignedBuffer<float> sc(threads * kernels::sink_scratch_floats(N));
    kernels::RowSink sink;
    sink.fn = [](void* cx, long m0, long m1, float* rows, long ld) {
      auto* x = static_cast<Ctx*>(cx);
      for (long m = m0; m < m1; ++m) {
        std::memcpy(x->got + m * x->ldc, rows + (m - m0) * ld, sizeof(float) * x->n);
        if (x->clobber) std::fill(rows + (m - m0) * ld, rows + (m - m0) * ld + x->n, std::nanf(""));
        (*x->seen)[m] += 1;
      }
    };
    sink.ctx = &ctx;
    if (scratch) {
      sink.scratch = sc.data();
      sink.scratch_stride = kernels::sink_scratch_floats(N);
    }
    kernels::gemm_lowp(c.data(), ldc, conv, M, pw.view(), N, K, ep, th, kern, &sink);
    bool once = true, same = true, pad = true, in_c = true;
    for (int m = 0; m < M; ++m) {
      once = once && seen[m] == 1;
      same = same && std::memcmp(got.data() + m * ldc, ref.data() + m * ldc, sizeof(float) * N) == 0;
      for (long j = N; j < ldc; ++j) pad = pad && c[m * ldc + j] == -7.0f;  // C's padding is never written
      if (!scratch) in_c = in_c && std::memcmp(c.data() + m * ldc, ref.data() + m * ldc, sizeof(float) * N) == 0;
    }
    const std::string what = std::string(to_string(kern)) + " M " + std::to_string(M) + " N " + std::to_string(N) +
                             " threads " + std::to_string(threads) + " scratch " + std::to_string(scratch) +
                             " epilogue " + std::to_string(epi);
    BOOST_TEST(once, what);
    BOOST_TEST(same, what);
    BOOST_TEST(pad, what);
    BOOST_TEST(in_c, what);  // without scratch C holds the product
  };
  auto w = randn(2000 * K, g, 0.05f);
  for (Precision p : {Precision::kInt8, Precision::kBf16}) {
    kernels::LowpWeight small, wide;
    small.pack(p, 232, K, [&](int r) { return w.data() + r * K; });
    wide.pack(p, 2000, K, [&](int r) { return w.data() + r * K; });
    for (kernels::LowpKernel kern : {kernels::LowpKernel::kAuto, kernels::LowpKernel::kScalar, kernels::LowpKernel::kMadd16,
                                     kernels::LowpKernel::kVnni512, kernels::LowpKernel::kAmxInt8,
                                     kernels::LowpKernel::kEmulated, kernels::LowpKernel::kNative512,
                                     kernels::LowpKernel::kAmxBf16}) {
      if (!kernels::has_lowp_kernel(kern, p)) continue;  // (also a kernel of the other precision)
      // INT8: threads split the rows from DYNABERT_LOWP_SPLIT_ROWS (56) rows each, 128 on two
      // threads and 450 on two or three; BF16 from DYNABERT_GEMM_MSPLIT (384) rows; the columns
      // otherwise
      for (int M : {1, 37, 128, 450})
        for (int threads : {1, 2, 3})
          for (bool scratch : {false, true})
            for (bool epi : {false, true}) check(p, kern, small, M, 232, threads, scratch, epi);
    }
    // 2,000 columns: chunks of fewer than eight tiles (sink_chunk_rows), as for BERT's FFN
    BOOST_TEST(kernels::sink_chunk_rows(2000, 14) < 8 * 14);
    for (int threads : {1, 2})
      for (bool scratch : {false, true}) check(p, kernels::LowpKernel::kAuto, wide, 450, 2000, threads, scratch, true);
  }
  const int N = 232;
  // a sink without a function, or with too little scratch, is refused
  kernels::LowpWeight pw;
  pw.pack(Precision::kInt8, N, K, [&](int r) { return w.data() + r * K; });
  std::vector<float> a(4 * K, 0.5f), c(4 * N);
  AlignedBuffer<std::uint8_t> abuf(4 * kernels::lowp_a_ld(K, Precision::kInt8));
  AlignedBuffer<float> scale(4);
  AlignedBuffer<std::int32_t> corr(4);
  const auto conv = kernels::convert_a(Precision::kInt8, abuf.data(), scale.data(), corr.data(), a.data(), K, 4, K, Threads());
  kernels::RowSink none;
  BOOST_CHECK_THROW(kernels::gemm_lowp(c.data(), N, conv, 4, pw.view(), N, K, {}, Threads(), kernels::LowpKernel::kAuto, &none),
                    InputError);
  AlignedBuffer<float> small(16);
  kernels::RowSink tight{[](void*, long, long, float*, long) {}, nullptr, small.data(), 16};
  BOOST_CHECK_THROW(kernels::gemm_lowp(c.data(), N, conv, 4, pw.view(), N, K, {}, Threads(), kernels::LowpKernel::kAuto, &tight),
                    InputError);
}

BOOST_AUTO_TEST_CASE(lowp_gemm_is_bitwise_independent_of_threads_and_close_to_fp32) {
  std::mt19937 g(14);
  const int M = 420, N = 200, K = 264;  // two threads split the rows (INT8 and BF16)
  auto a = randn(M * K, g), w = randn(N * K, g, 0.05f);
  kernels::PackedWeight pf(w.data(), N, K, K);
  AlignedBuffer<float> scratch(kernels::gemm_scratch_floats());
  std::vector<float> ref(M * N);
  kernels::gemm(ref.data(), N, a.data(), K, M, pf.view(), N, K, {}, scratch.data());
  double ref_norm = 0;
  for (float v : ref) ref_norm = std::max(ref_norm, double(std::abs(v)));
  for (Precision p : {Precision::kInt8, Precision::kBf16}) {
    kernels::LowpWeight pw;
    pw.pack(p, N, K, [&](int r) { return w.data() + r * K; });
    AlignedBuffer<std::uint8_t> abuf(static_cast<std::size_t>(M) * kernels::lowp_a_ld(K, p) * 2);
    AlignedBuffer<float> scale(M);
    AlignedBuffer<std::int32_t> corr(M);
    const auto conv = kernels::convert_a(p, abuf.data(), scale.data(), corr.data(), a.data(), K, M, K, Threads(2));
    std::vector<float> c1(M * N), c2(M * N), c3(M * N);
    kernels::gemm_lowp(c1.data(), N, conv, M, pw.view(), N, K, {}, Threads(1));
    kernels::gemm_lowp(c2.data(), N, conv, M, pw.view(), N, K, {}, Threads(2));
    kernels::gemm_lowp(c3.data(), N, conv, 100, pw.view(), N, K, {}, Threads(3));  // panels split
    BOOST_TEST(std::memcmp(c1.data(), c2.data(), sizeof(float) * c1.size()) == 0);
    BOOST_TEST(std::memcmp(c1.data(), c3.data(), sizeof(float) * 100 * N) == 0);
    // shares that end inside a tile: 128 rows on two threads (INT8 splits the rows, BF16 the
    // columns), 411 on three (rows), 131 on two (INT8: rows of 65 and 66)
    for (auto [m, t] : {std::pair{128, 2}, std::pair{411, 3}, std::pair{131, 2}}) {
      std::vector<float> cs(static_cast<std::size_t>(m) * N);
      kernels::gemm_lowp(cs.data(), N, conv, m, pw.view(), N, K, {}, Threads(t));
      BOOST_TEST(std::memcmp(c1.data(), cs.data(), sizeof(float) * cs.size()) == 0, m << " rows on " << t << " threads");
    }
    double worst = 0;
    for (std::size_t i = 0; i < c1.size(); ++i) worst = std::max(worst, std::abs(double(c1[i]) - ref[i]));
    // against the largest output: int8 rounds both operands to 1/254 of their row's range
    BOOST_TEST(worst / ref_norm < (p == Precision::kInt8 ? 2e-2 : 5e-3), to_string(p) << " worst " << worst / ref_norm);
  }
  // widths past the packing and accumulation are refused
  kernels::LowpWeight pw;
  pw.pack(Precision::kInt8, N, K, [&](int r) { return w.data() + r * K; });
  kernels::Epilogue acc;
  acc.accumulate = true;
  std::vector<float> c(M * N);
  const kernels::LowpA none{a.data(), K, nullptr, nullptr};
  BOOST_CHECK_THROW(kernels::gemm_lowp(c.data(), N, none, 4, pw.view(), N + 1, K, {}), InputError);
  BOOST_CHECK_THROW(kernels::gemm_lowp(c.data(), N, none, 4, pw.view(), N, K + 1, {}), InputError);
  BOOST_CHECK_THROW(kernels::gemm_lowp(c.data(), N, none, 4, pw.view(), N, K, acc), InputError);
}
