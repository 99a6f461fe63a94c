// The inputs of a call and their layout, computed once per call by plan_batch() and passed to
// every block:
//  - Inputs: token ids [batch, seq] with padding given by per-sequence lengths or a 0/1 mask;
//  - BatchLayout: per sequence, the keys attended ([0, key_end)), whether holes inside need the
//    additive mask, and where its rows are. In the padded layout sequence b occupies rows
//    b*seq ... b*seq + seq - 1; with packed tokens, its first key_end tokens occupy consecutive
//    rows row_off[b] ... and padding is not computed at all. Every row knows the token it holds
//    (row_token), so embeddings, dropout masks and MLM labels are the same in both layouts.
// Nothing here depends on the model or the GEMM.
#pragma once
#include <cstdint>

#include "dynabert/core/aligned.hpp"
#include "dynabert/core/error.hpp"
#include "dynabert/core/token_batch.hpp"

namespace dynabert {

/// A batch of token sequences, row-major [batch, seq]. Padding is described either by per-
/// sequence `lengths` (tokens at positions >= length are padding) or by a 0/1 `attention_mask`
/// (1 = attend); with neither, every token is attended. `token_type_ids` may be null (all 0).
struct Inputs {
  const std::int32_t* input_ids = nullptr;
  const std::int32_t* token_type_ids = nullptr;
  const std::int32_t* lengths = nullptr;
  const std::int32_t* attention_mask = nullptr;
  int batch = 0;
  int seq_len = 0;
};

/// The Inputs of an owned batch (views into it: it must outlive the call).
inline Inputs inputs_of(const TokenBatch& b) {
  Inputs in;
  in.input_ids = b.ids.data();
  in.token_type_ids = b.type_ids.empty() ? nullptr : b.type_ids.data();
  in.lengths = b.lengths.data();
  in.batch = b.batch;
  in.seq_len = b.seq_len;
  return in;
}

/// Where each sequence's rows are and which keys it attends (views into a LayoutStorage).
struct BatchLayout {
  int batch = 0, seq = 0;
  int rows = 0;         ///< activation rows: batch * seq (padded) or the tokens kept (packed)
  bool packed = false;  ///< rows hold only each sequence's first key_end tokens
  const int* key_end = nullptr;      ///< [batch] keys [0, key_end) are attended
  const int* has_holes = nullptr;    ///< [batch] masked tokens before key_end (use mask_bias)
  const float* mask_bias = nullptr;  ///< [batch, seq] additive mask: 0 or -10000
  const int* row_off = nullptr;      ///< [batch + 1] first row of each sequence, then rows
  const int* row_token = nullptr;    ///< [rows] token index b * seq + position of each row
  const int* first_off = nullptr;    ///< [batch + 1] 0, 1, ..., batch (rows of first_rows())
  const int* first_token = nullptr;  ///< [batch] b * seq: the token of each sequence's first row
  /// Rows (queries) of sequence b.
  int query_rows(int b) const { return row_off[b + 1] - row_off[b]; }
  /// The layout of each sequence's first row alone, row b holding sequence b's first token: the
  /// rows a last layer computes when only the pooler reads its output (EncoderLayer's
  /// first-row forward). Dropout masks and the pooler see the same tokens as in the full layout;
  /// attention never runs on it (its keys are the full layout's).
  BatchLayout first_rows() const {
    BatchLayout f = *this;
    f.rows = batch;
    f.packed = true;
    f.row_off = first_off;
    f.row_token = first_token;
    return f;
  }
  /// Position of row r in its sequence.
  int position(int r) const { return row_token[r] % seq; }
};

/// The arrays a BatchLayout points into, sized once for a maximum batch and length.
class LayoutStorage {
 public:
  LayoutStorage() = default;
  LayoutStorage(int max_batch, int max_seq) { reserve(max_batch, max_seq); }
  /// Grows (never shrinks) to hold batch x seq.
  void reserve(int max_batch, int max_seq) {
    const std::size_t B = static_cast<std::size_t>(max_batch), T = B * static_cast<std::size_t>(max_seq);
    if (key_end_.capacity() < B) key_end_.resize(B);
    if (has_holes_.capacity() < B) has_holes_.resize(B);
    if (row_off_.capacity() < B + 1) row_off_.resize(B + 1);
    if (mask_bias_.capacity() < T) mask_bias_.resize(T);
    if (row_token_.capacity() < T) row_token_.resize(T);
    if (first_off_.capacity() < B + 1) first_off_.resize(B + 1);
    if (first_token_.capacity() < B) first_token_.resize(B);
  }
  std::size_t bytes() const {
    return sizeof(int) * (key_end_.capacity() + has_holes_.capacity() + row_off_.capacity() + row_token_.capacity() +
                          first_off_.capacity() + first_token_.capacity()) +
           sizeof(float) * mask_bias_.capacity();
  }
  std::size_t max_tokens() const { return row_token_.capacity(); }
  std::size_t max_batch() const { return key_end_.capacity(); }

 private:
  friend BatchLayout plan_batch(const Inputs&, bool, LayoutStorage&);
  AlignedBuffer<int> key_end_, has_holes_, row_off_, row_token_, first_off_, first_token_;
  AlignedBuffer<float> mask_bias_;
};

/// Checks the shape, lengths and mask of `in` (InputError naming the first bad value).
inline void check_inputs(const Inputs& in) {
  DYNABERT_REQUIRE(in.input_ids != nullptr, InputError, "input_ids is null");
  DYNABERT_REQUIRE(in.batch >= 1 && in.seq_len >= 1, InputError, "batch ", in.batch, " x length ", in.seq_len, " is empty");
  DYNABERT_REQUIRE(!(in.lengths && in.attention_mask), InputError, "give either lengths or attention_mask, not both");
  if (in.lengths)
    for (int b = 0; b < in.batch; ++b)
      DYNABERT_REQUIRE(in.lengths[b] >= 1 && in.lengths[b] <= in.seq_len, InputError, "lengths[", b, "] = ", in.lengths[b],
                       " is outside 1..", in.seq_len);
  if (in.attention_mask)
    for (long i = 0; i < static_cast<long>(in.batch) * in.seq_len; ++i)
      DYNABERT_REQUIRE(in.attention_mask[i] == 0 || in.attention_mask[i] == 1, InputError, "attention_mask[", i / in.seq_len,
                       "][", i % in.seq_len, "] = ", in.attention_mask[i], " is not 0 or 1");
}

/// The layout of `in` (already checked by check_inputs; storage large enough). With `pack`, the
/// tokens past each sequence's last attended one are dropped and the rest packed together (when
/// that saves any row). A fully masked sequence attends to all its keys with the same -10000 bias
/// on each, which cancels in the softmax, as in PyTorch.
inline BatchLayout plan_batch(const Inputs& in, bool pack, LayoutStorage& st) {
  const int B = in.batch, S = in.seq_len;
  DYNABERT_REQUIRE(st.max_batch() >= static_cast<std::size_t>(B) &&
                       st.max_tokens() >= static_cast<std::size_t>(B) * static_cast<std::size_t>(S),
                   InputError, "batch ", B, " x length ", S, " exceeds the layout storage");
  int* key_end = st.key_end_.data();
  int* holes = st.has_holes_.data();
  float* bias = st.mask_bias_.data();
  for (int b = 0; b < B; ++b) {
    int end = S, h = 0;
    if (in.lengths) {
      end = in.lengths[b];
    } else if (in.attention_mask) {
      const std::int32_t* m = in.attention_mask + static_cast<long>(b) * S;
      end = 0;
      for (int j = 0; j < S; ++j)
        if (m[j]) end = j + 1;
      for (int j = 0; j < end; ++j) {
        bias[static_cast<long>(b) * S + j] = m[j] ? 0.0f : -10000.0f;
        if (!m[j]) h = 1;
      }
      if (end == 0) end = S;  // fully masked: every score gets -10000, which cancels in softmax
    }
    key_end[b] = end;
    holes[b] = h;
  }
  BatchLayout lay;
  lay.batch = B;
  lay.seq = S;
  int rows = 0;
  for (int b = 0; b < B; ++b) rows += key_end[b];
  lay.packed = pack && rows < B * S;
  int* off = st.row_off_.data();
  int* tok = st.row_token_.data();
  int r = 0;
  for (int b = 0; b < B; ++b) {
    off[b] = r;
    const int n = lay.packed ? key_end[b] : S;
    for (int s = 0; s < n; ++s) tok[r++] = b * S + s;
  }
  off[B] = r;
  int* foff = st.first_off_.data();
  int* ftok = st.first_token_.data();
  for (int b = 0; b < B; ++b) {
    foff[b] = b;
    ftok[b] = b * S;
  }
  foff[B] = B;
  lay.first_off = foff;
  lay.first_token = ftok;
  lay.rows = r;
  lay.key_end = key_end;
  lay.has_holes = holes;
  lay.mask_bias = bias;
  lay.row_off = off;
  lay.row_token = tok;
  return lay;
}

}  // namespace dynabert
