// TokenBatch: an owned batch of token sequences, right-padded to the longest, with per-sequence
// lengths. The tokenizer makes it (text::BertTokenizer::encode_batch); models and sessions take it
// (inputs_of(), Session::classify / embed). It lives in core so that neither side depends on the
// other.
#pragma once
#include <cstdint>
#include <vector>

namespace dynabert {

struct TokenBatch {
  int batch = 0, seq_len = 0;                       ///< [batch, seq_len], row-major
  std::vector<std::int32_t> ids, type_ids, lengths;  ///< ids and token types padded; lengths[b] real tokens
};

}  // namespace dynabert
