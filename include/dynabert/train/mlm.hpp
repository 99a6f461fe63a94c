// Masked-language-model inputs, as BERT's pretraining and Hugging Face's
// DataCollatorForLanguageModeling make them: each real token (not padding, not a special token such
// as [CLS]/[SEP]) is chosen with probability `mask_probability` (0.15); a chosen token becomes
// [MASK] with probability 0.8, a uniformly random vocabulary token with 0.1, and stays itself with
// 0.1. Labels hold the original id at chosen positions and -100 elsewhere (ignored by the loss).
#pragma once
#include <algorithm>
#include <cstdint>
#include <optional>
#include <random>
#include <vector>

#include "dynabert/core/error.hpp"
#include "dynabert/train/data.hpp"

namespace dynabert::train {

/// Masking rule and the token ids it needs (bert-base-uncased defaults).
struct MlmConfig {
  double mask_probability = 0.15;
  double replace_with_mask = 0.8;    ///< of the chosen tokens
  double replace_with_random = 0.1;  ///< of the chosen tokens (the rest stays unchanged)
  std::int32_t mask_id = 103;        ///< [MASK]
  std::vector<std::int32_t> special_ids = {0, 101, 102};  ///< never chosen ([PAD], [CLS], [SEP])
};

/// Masks `b.ids` in place and fills `labels` ([B*S]); returns the number of chosen positions.
/// Positions at or past a sequence's length are never chosen.
inline long mask_tokens(Batch& b, std::vector<std::int32_t>& labels, const MlmConfig& cfg, int vocab_size,
                        std::mt19937_64& rng) {
  DYNABERT_REQUIRE(cfg.mask_probability > 0 && cfg.mask_probability <= 1 && cfg.replace_with_mask >= 0 &&
                       cfg.replace_with_random >= 0 && cfg.replace_with_mask + cfg.replace_with_random <= 1,
                   InputError, "MLM probabilities are impossible");
  DYNABERT_REQUIRE(cfg.mask_id >= 0 && cfg.mask_id < vocab_size, InputError, "[MASK] id ", cfg.mask_id,
                   " is outside the vocabulary of ", vocab_size);
  labels.assign(b.ids.size(), -100);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::uniform_int_distribution<std::int32_t> word(0, vocab_size - 1);
  long chosen = 0;
  for (int i = 0; i < b.B; ++i) {
    const int len = b.lengths.empty() ? b.S : b.lengths[i];
    for (int s = 0; s < len; ++s) {
      auto& id = b.ids[static_cast<std::size_t>(i) * b.S + s];
      if (std::find(cfg.special_ids.begin(), cfg.special_ids.end(), id) != cfg.special_ids.end()) continue;
      if (u(rng) >= cfg.mask_probability) continue;
      labels[static_cast<std::size_t>(i) * b.S + s] = id;
      ++chosen;
      const double r = u(rng);
      if (r < cfg.replace_with_mask) id = cfg.mask_id;
      else if (r < cfg.replace_with_mask + cfg.replace_with_random) id = word(rng);
    }
  }
  return chosen;
}

/// Unlabelled text as a Dataset (labels unused) for MLM pretraining: one example per text, texts
/// without a single token skipped.
template <class Tokenizer, class Texts>
Dataset to_mlm_dataset(const Tokenizer& tok, const Texts& texts, int max_length) {
  Dataset out;
  for (const auto& t : texts) {
    if (tok.tokenize(t).empty()) continue;
    auto e = tok.encode(t, std::nullopt, max_length);
    if (e.ids.size() > 2) out.push_back({std::move(e.ids), std::move(e.type_ids), 0, 0.0});
  }
  return out;
}

}  // namespace dynabert::train
