// The trainer tests' learnable synthetic task, shared by test_train and the crash-consistency
// driver: sequences [CLS] x... [SEP] of ids 6..22, label 1 iff token 5 occurs.
#pragma once
#include <cstdint>
#include <random>

#include <dynabert/train/data.hpp>

namespace dynabert::testing {

/// n examples of 3 to 2 + max_len_extra tokens, drawn from `seed`.
inline train::Dataset synthetic_task(int n, std::uint64_t seed, int max_len_extra = 6) {
  std::mt19937 g(static_cast<std::uint32_t>(seed));
  train::Dataset d;
  for (int i = 0; i < n; ++i) {
    train::Example e;
    const int len = 3 + static_cast<int>(g() % static_cast<unsigned>(max_len_extra));
    e.ids.push_back(1);
    for (int k = 1; k < len - 1; ++k) e.ids.push_back(static_cast<std::int32_t>(6 + g() % 17));
    e.ids.push_back(2);
    e.label = static_cast<int>(g() % 2);
    if (e.label) e.ids[1 + g() % (len - 2)] = 5;
    d.push_back(e);
  }
  return d;
}

}  // namespace dynabert::testing
