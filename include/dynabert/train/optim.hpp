// AdamW with the semantics of the reference code (Hugging Face transformers v2.1.1 AdamW, which
// the official DynaBERT code uses): bias correction folded into the step size, eps added to
// sqrt(v) (not to the corrected v), decoupled weight decay lr * wd * p applied after the update,
// no decay for biases and LayerNorm weights. Global gradient-norm clipping and the linear
// warmup-then-decay schedule.
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "dynabert/core/aligned.hpp"
#include "dynabert/core/simd.hpp"
#include "dynabert/core/parallel.hpp"
#include "dynabert/core/params.hpp"

namespace dynabert::train {

/// Hyper-parameters of AdamW.
struct AdamWConfig {
  double lr = 2e-5;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool correct_bias = true;
};

/// Whether weight decay applies to a parameter (not to biases, not to LayerNorm weights).
inline bool decays(const std::string& name) {
  const auto ends = [&](const char* s) { const std::string e(s); return name.size() >= e.size() && name.compare(name.size() - e.size(), e.size(), e) == 0; };
  return !(ends(".bias") || ends("LayerNorm.weight") || ends("LayerNorm.bias"));
}

/// AdamW state (first and second moments, step count) over a ParameterSet layout (BertWeights or
/// a user model's own set).
template <class T>
class AdamW {
 public:
  AdamW(const ParameterSet<T>& params, AdamWConfig cfg) : cfg_(cfg), m_(params.buffer().size(), true), v_(params.buffer().size(), true) {
    for (auto& s : params.specs()) decay_.push_back(decays(s.name));
  }
  const AdamWConfig& config() const { return cfg_; }
  long step_count() const { return step_; }
  AlignedBuffer<T>& first_moment() { return m_; }
  AlignedBuffer<T>& second_moment() { return v_; }
  const AlignedBuffer<T>& first_moment() const { return m_; }
  const AlignedBuffer<T>& second_moment() const { return v_; }
  void set_step_count(long s) { step_ = s; }

  /// One update of `params` with `grads` at learning rate `lr` (element-wise: the same bits for
  /// any thread count).
  void step(ParameterSet<T>& params, const ParameterSet<T>& grads, double lr, const Threads& threads = Threads()) {
    DYNABERT_REQUIRE(params.buffer().size() == m_.size() && grads.buffer().size() == m_.size(), InputError,
                     "AdamW: parameters or gradients of another layout");
    ++step_;
    const double b1 = cfg_.beta1, b2 = cfg_.beta2;
    double step_size = lr;
    if (cfg_.correct_bias) step_size *= std::sqrt(1.0 - std::pow(b2, step_)) / (1.0 - std::pow(b1, step_));
    const auto& specs = params.specs();
    T* p = params.buffer().data();
    const T* g = grads.buffer().data();
    // tensors in chunks of at most 64 K values, spread over the threads
    constexpr std::size_t kChunk = 65536;
    work_.clear();
    for (std::size_t t = 0; t < specs.size(); ++t)
      for (std::size_t o = 0; o < specs[t].numel(); o += kChunk) work_.push_back({t, o});
    threads.for_each(static_cast<long>(work_.size()), [&](long w, int) {
      const auto [t, o] = work_[static_cast<std::size_t>(w)];
      const auto& s = specs[t];
      const std::size_t at = s.offset + o;
      update(p + at, g + at, m_.data() + at, v_.data() + at, std::min(kChunk, s.numel() - o), step_size,
             cfg_.weight_decay > 0.0 && decay_[t] ? lr * cfg_.weight_decay : 0.0);
    });
  }

 private:
  /// p -= step_size * m / (sqrt(v) + eps), then p -= decay * p, after the moment updates; in T
  /// (SIMD for float).
  void update(T* p, const T* g, T* m, T* v, std::size_t n, double step_size, double decay) const {
    const T b1 = static_cast<T>(cfg_.beta1), c1 = static_cast<T>(1.0 - cfg_.beta1);
    const T b2 = static_cast<T>(cfg_.beta2), c2 = static_cast<T>(1.0 - cfg_.beta2);
    const T ss = static_cast<T>(step_size), eps = static_cast<T>(cfg_.eps), keep = static_cast<T>(1.0 - decay);
    std::size_t i = 0;
    if constexpr (std::is_same_v<T, float>) {
      using B = simd::Batch;
      for (; i + B::size <= n; i += B::size) {
        const B gi = B::load_unaligned(g + i);
        const B mi = xsimd::fma(B(b1), B::load_unaligned(m + i), B(c1) * gi);
        const B vi = xsimd::fma(B(b2), B::load_unaligned(v + i), B(c2) * gi * gi);
        mi.store_unaligned(m + i);
        vi.store_unaligned(v + i);
        B pi = B::load_unaligned(p + i) - B(ss) * mi / (xsimd::sqrt(vi) + B(eps));
        if (decay > 0.0) pi = pi * B(keep);
        pi.store_unaligned(p + i);
      }
    }
    for (; i < n; ++i) {
      m[i] = b1 * m[i] + c1 * g[i];
      v[i] = b2 * v[i] + c2 * g[i] * g[i];
      p[i] -= ss * m[i] / (std::sqrt(v[i]) + eps);
      if (decay > 0.0) p[i] *= keep;
    }
  }

 private:
  AdamWConfig cfg_;
  AlignedBuffer<T> m_, v_;
  std::vector<bool> decay_;
  std::vector<std::pair<std::size_t, std::size_t>> work_;  ///< (tensor, offset) chunks, reused
  long step_ = 0;
};

/// sum of x[i]^2 in double, over 8 independent partial sums (added in a fixed order).
template <class T>
double sum_of_squares(const T* x, std::size_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += static_cast<double>(x[i + j]) * static_cast<double>(x[i + j]);
  for (int j = 0; i < n; ++i, ++j) acc[j] += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/// Scales all gradients so that their global L2 norm is at most max_norm (torch's
/// clip_grad_norm_: coefficient max_norm / (norm + 1e-6) when below 1). Returns the norm before.
/// The sum of squares runs per tensor, tensors added in order: the same bits for any thread count.
template <class T>
double clip_grad_norm(ParameterSet<T>& grads, double max_norm, const Threads& threads = Threads()) {
  const auto& specs = grads.specs();
  const T* base = grads.data();
  thread_local std::vector<double> part;  // the calling thread's; workers write through `out`
  part.assign(specs.size(), 0.0);
  double* out = part.data();
  threads.for_each(static_cast<long>(specs.size()), [&](long t, int) {
    out[t] = sum_of_squares(base + specs[t].offset, specs[t].numel());
  });
  double sq = 0;
  for (double v : part) sq += v;
  const double norm = std::sqrt(sq);
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) {
    T* w = grads.buffer().data();
    threads.for_each(static_cast<long>(specs.size()), [&](long t, int) {
      T* g = w + specs[t].offset;
      for (std::size_t i = 0; i < specs[t].numel(); ++i) g[i] = static_cast<T>(g[i] * coef);
    });
  }
  return norm;
}

/// Linear warmup from 0 to 1 over `warmup` steps, then linear decay to 0 at `total` steps
/// (transformers' get_linear_schedule_with_warmup). Multiplies the base learning rate.
inline double linear_schedule(long step, long warmup, long total) {
  if (step < warmup) return static_cast<double>(step) / static_cast<double>(std::max(1L, warmup));
  return std::max(0.0, static_cast<double>(total - step) / static_cast<double>(std::max(1L, total - warmup)));
}

}  // namespace dynabert::train
