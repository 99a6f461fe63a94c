// Labelled examples and deterministic batching: every epoch's order is a pure function of
// (seed, epoch), so a resumed run sees exactly the batches an uninterrupted one would. Batches
// are formed by length (examples are sorted by length within shuffled chunks, then the batch
// order is shuffled) to limit padding, and right-padded with pad_token_id.
#pragma once
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <optional>
#include <string_view>
#include <random>
#include <vector>

#include "dynabert/core/error.hpp"
#include "dynabert/layers/batch.hpp"

namespace dynabert::train {

/// One tokenised example: ids (with [CLS]/[SEP]), optional token types, a class or a target.
struct Example {
  std::vector<std::int32_t> ids;
  std::vector<std::int32_t> types;  ///< empty: all 0
  int label = 0;
  double target = 0.0;
};
using Dataset = std::vector<Example>;

/// A padded batch, owning its arrays.
struct Batch {
  int B = 0, S = 0;
  std::vector<std::int32_t> ids, types, lengths, labels;
  std::vector<double> targets;
  Inputs inputs() const {
    Inputs in;
    in.input_ids = ids.data(); in.token_type_ids = types.data(); in.lengths = lengths.data();
    in.batch = B; in.seq_len = S;
    return in;
  }
};

/// Fills `b` with examples idx[begin, end), reusing its arrays (no allocation once they have held
/// a batch as large).
inline void make_batch(Batch& b, const Dataset& data, const std::vector<std::size_t>& idx, std::size_t begin,
                       std::size_t end, int pad_id = 0) {
  DYNABERT_REQUIRE(begin < end && end <= idx.size(), InputError, "batch [", begin, ", ", end, ") of ", idx.size(), " indices");
  b.B = static_cast<int>(end - begin);
  b.S = 0;
  b.lengths.clear();
  b.labels.clear();
  b.targets.clear();
  for (std::size_t i = begin; i < end; ++i) {
    DYNABERT_REQUIRE(idx[i] < data.size(), InputError, "example index ", idx[i], " of a dataset of ", data.size());
    DYNABERT_REQUIRE(!data[idx[i]].ids.empty(), InputError, "example ", idx[i], " has no tokens");
    DYNABERT_REQUIRE(data[idx[i]].types.empty() || data[idx[i]].types.size() == data[idx[i]].ids.size(), InputError,
                     "example ", idx[i], " has ", data[idx[i]].types.size(), " token types for ", data[idx[i]].ids.size(), " tokens");
    b.S = std::max<int>(b.S, static_cast<int>(data[idx[i]].ids.size()));
  }
  b.ids.assign(static_cast<std::size_t>(b.B) * b.S, pad_id);
  b.types.assign(b.ids.size(), 0);
  for (std::size_t i = begin; i < end; ++i) {
    const auto& e = data[idx[i]];
    const std::size_t row = (i - begin) * static_cast<std::size_t>(b.S);
    std::copy(e.ids.begin(), e.ids.end(), b.ids.begin() + row);
    if (!e.types.empty()) std::copy(e.types.begin(), e.types.end(), b.types.begin() + row);
    b.lengths.push_back(static_cast<std::int32_t>(e.ids.size()));
    b.labels.push_back(e.label);
    b.targets.push_back(e.target);
  }
}

/// A new batch of examples idx[begin, end).
inline Batch make_batch(const Dataset& data, const std::vector<std::size_t>& idx, std::size_t begin, std::size_t end,
                        int pad_id = 0) {
  Batch b;
  make_batch(b, data, idx, begin, end, pad_id);
  return b;
}

/// The batches of one epoch as lists of example indices.
inline std::vector<std::vector<std::size_t>> epoch_batches(const Dataset& data, int batch_size, std::uint64_t seed,
                                                           long epoch, bool by_length = true, bool shuffle = true) {
  DYNABERT_REQUIRE(batch_size >= 1, InputError, "batch size must be >= 1");
  std::vector<std::size_t> idx(data.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::mt19937_64 rng(seed * 1000003ull + static_cast<std::uint64_t>(epoch));
  if (shuffle) std::shuffle(idx.begin(), idx.end(), rng);
  if (by_length) {
    const std::size_t chunk = static_cast<std::size_t>(batch_size) * 50;
    for (std::size_t c = 0; c < idx.size(); c += chunk)
      std::stable_sort(idx.begin() + c, idx.begin() + std::min(idx.size(), c + chunk),
                       [&](auto a, auto b) { return data[a].ids.size() < data[b].ids.size(); });
  }
  std::vector<std::vector<std::size_t>> batches;
  for (std::size_t i = 0; i < idx.size(); i += batch_size)
    batches.emplace_back(idx.begin() + i, idx.begin() + std::min(idx.size(), i + batch_size));
  if (shuffle && by_length) std::shuffle(batches.begin(), batches.end(), rng);
  return batches;
}

/// Tokenises labelled texts (anything with text, text_b, label and target fields, e.g.
/// text::LabelledText), selected by `which` (all when empty), into a training dataset.
template <class Tokenizer, class Texts>
Dataset to_dataset(const Tokenizer& tok, const Texts& data, const std::vector<std::size_t>& which = {}, int max_length = 128) {
  Dataset out;
  auto add = [&](const auto& t) {
    const auto e = t.text_b.empty() ? tok.encode(t.text, std::nullopt, max_length)
                                    : tok.encode(t.text, std::string_view(t.text_b), max_length);
    out.push_back({e.ids, e.type_ids, t.label, t.target});
  };
  if (which.empty()) for (auto& t : data) add(t);
  else for (auto i : which) {
      DYNABERT_REQUIRE(i < data.size(), InputError, "example index ", i, " of ", data.size());
      add(data[i]);
    }
  return out;
}

}  // namespace dynabert::train
