// Embeddings<T, kH>: one row per token, y = dropout(LN(word[id] + position[pos] + type[t])).
// Positions are the token's position in its sequence plus `position_offset` (0 for BERT), so that
// packed and padded layouts give each token the same row.
//
//   forward (inference)  y, no cache;
//   forward (training)   also xhat / rstd and the ids of every row, dropout after the LayerNorm;
//   backward             dropout mask, LN', then scatter-add into the word, position and type rows the tokens
//                        used (in row order: deterministic), and into gamma / beta.
// A model without token types binds a null type table.
#pragma once
#include <type_traits>
#include <cstdint>
#include <string>

#include "dynabert/core/error.hpp"
#include "dynabert/core/params.hpp"
#include "dynabert/layers/add_norm.hpp"
#include "dynabert/layers/batch.hpp"
#include "dynabert/layers/context.hpp"

namespace dynabert::layers {

/// Embedding parameters (P = const T) or gradients (P = T).
template <class P>
struct EmbeddingTensors {
  P* word = nullptr;        ///< [vocab, H]
  P* position = nullptr;    ///< [positions, H]
  P* token_type = nullptr;  ///< [types, H], or null (no token types)
  NormTensors<P> norm;
  template <class Q = P, class = std::enable_if_t<!std::is_const_v<Q>>>
  operator EmbeddingTensors<const Q>() const { return {word, position, token_type, norm}; }
};

/// Sizes of an embedding block.
struct EmbeddingShape {
  int vocab = 0, positions = 0, token_types = 0, hidden = 0;
  double eps = 1e-12;
  int position_offset = 0;  ///< position of a sequence's first token
};

/// What the embeddings' backward needs.
template <class T>
struct EmbeddingCache {
  AlignedBuffer<T> xhat, rstd;
  AlignedBuffer<std::int32_t> ids, types, positions;  ///< per row
  kernels::DropoutKey drop;
  int rows = 0;
};

template <class T, int kH = 0>
class Embeddings {
 public:
  using Params = EmbeddingTensors<const T>;
  using Grads = EmbeddingTensors<T>;
  using Cache = EmbeddingCache<T>;

  Embeddings() = default;
  Embeddings(const EmbeddingShape& shape, Params p) : s_(shape), p_(p) {
    DYNABERT_REQUIRE(kH == 0 || kH == shape.hidden, InputError, "embeddings compiled for ", kH, " features, bound to ",
                     shape.hidden);
  }
  /// Declares the Hugging Face tensors under `prefix` ("embeddings."); no type table when
  /// token_types is 0.
  static void declare(Schema& s, const std::string& prefix, const EmbeddingShape& e) {
    s.add(prefix + "word_embeddings.weight", {e.vocab, e.hidden});
    s.add(prefix + "position_embeddings.weight", {e.positions, e.hidden});
    if (e.token_types > 0) s.add(prefix + "token_type_embeddings.weight", {e.token_types, e.hidden});
    AddNorm<T>::declare(s, prefix + "LayerNorm.", e.hidden);
  }
  /// Views of those tensors in a parameter (or gradient) set.
  template <class Set>
  static auto tensors(Set& set, const std::string& prefix) {
    using P = std::remove_reference_t<decltype(*set.view(""))>;
    EmbeddingTensors<P> t;
    t.word = set.view(prefix + "word_embeddings.weight");
    t.position = set.view(prefix + "position_embeddings.weight");
    if (set.has(prefix + "token_type_embeddings.weight")) t.token_type = set.view(prefix + "token_type_embeddings.weight");
    t.norm = {set.view(prefix + "LayerNorm.weight"), set.view(prefix + "LayerNorm.bias")};
    return t;
  }
  void bind(Params p) { p_ = p; }
  const Params& params() const { return p_; }
  const EmbeddingShape& shape() const { return s_; }

  /// Throws InputError naming the first token id, type id or position out of range.
  void check(const Inputs& in) const {
    DYNABERT_REQUIRE(in.seq_len + s_.position_offset <= s_.positions, InputError, "sequence length ", in.seq_len,
                     " exceeds max_position_embeddings ", s_.positions - s_.position_offset,
                     s_.position_offset ? " (positions start at pad_token_id + 1)" : "");
    for (int b = 0; b < in.batch; ++b)
      for (int t = 0; t < in.seq_len; ++t) {
        const std::int32_t id = in.input_ids[static_cast<long>(b) * in.seq_len + t];
        DYNABERT_REQUIRE(id >= 0 && id < s_.vocab, InputError, "input_ids[", b, "][", t, "] = ", id,
                         " is outside the vocabulary (0..", s_.vocab - 1, ")");
        if (in.token_type_ids) {
          const std::int32_t ty = in.token_type_ids[static_cast<long>(b) * in.seq_len + t];
          const int types = p_.token_type ? s_.token_types : 1;
          DYNABERT_REQUIRE(ty >= 0 && ty < types, InputError, "token_type_ids[", b, "][", t, "] = ", ty, " is outside 0..",
                           types - 1);
        }
      }
  }

  /// y [rows, H] for the rows of `lay` (inference). Inputs must have been checked.
  void forward(T* y, const Inputs& in, const BatchLayout& lay, const Compute& c) const {
    run(y, in, lay, c, nullptr);
  }

  /// Training: the same, then dropout, caching what the backward needs.
  void forward(T* y, const Inputs& in, const BatchLayout& lay, const kernels::DropoutKey& drop, Cache& cache,
               const Compute& c) const {
    const std::size_t rows = static_cast<std::size_t>(lay.rows);
    DYNABERT_REQUIRE(!drop.active() || rows * s_.hidden < (1ull << 32), InputError, "a batch of ", rows, " x ", s_.hidden,
                     " activations is too large for one dropout call");
    cache.rows = lay.rows;
    cache.drop = drop;
    std::int32_t* ids = cache.ids.ensure(rows);
    std::int32_t* types = cache.types.ensure(rows);
    std::int32_t* pos = cache.positions.ensure(rows);
    for (std::size_t r = 0; r < rows; ++r) {
      const int tok = lay.row_token[r];
      ids[r] = in.input_ids[tok];
      types[r] = in.token_type_ids ? in.token_type_ids[tok] : 0;
      pos[r] = tok % lay.seq + s_.position_offset;
    }
    run(y, in, lay, c, &cache);
    dropout_rows(y, s_.hidden, lay.rows, s_.hidden, &lay, drop, c);
  }

  /// Gradients of the table rows and the LayerNorm from d_y [rows, H] (d_y is not modified).
  void backward(const T* d_y, const BatchLayout& lay, const Cache& cache, Grads g, const Compute& c) const {
    const int H = s_.hidden, rows = cache.rows;
    T* d = c.train->tmp<T>(0, static_cast<std::size_t>(rows) * H);
    std::copy(d_y, d_y + static_cast<std::size_t>(rows) * H, d);
    dropout_rows(d, H, rows, H, &lay, cache.drop, c);
    T* dsum = c.train->tmp<T>(1, static_cast<std::size_t>(rows) * H);
    layernorm_backward_rows(dsum, d, cache.xhat.data(), cache.rstd.data(), rows, H, p_.norm.gamma, g.norm.gamma, g.norm.beta,
                            false, c);
    for (int r = 0; r < rows; ++r) {  // in row order: tokens sharing a table row add in a fixed order
      const T* dr = dsum + static_cast<long>(r) * H;
      ops::add(g.word + static_cast<long>(cache.ids[r]) * H, dr, static_cast<std::size_t>(H));
      ops::add(g.position + static_cast<long>(cache.positions[r]) * H, dr, static_cast<std::size_t>(H));
      if (g.token_type) ops::add(g.token_type + static_cast<long>(cache.types[r]) * H, dr, static_cast<std::size_t>(H));
    }
  }

  std::size_t bytes() const {
    return sizeof(T) * static_cast<std::size_t>(s_.hidden) *
           (static_cast<std::size_t>(s_.vocab) + s_.positions + (p_.token_type ? s_.token_types : 0) + 2);
  }

 private:
  void run(T* y, const Inputs& in, const BatchLayout& lay, const Compute& c, Cache* cache) const {
    const int H = s_.hidden;
    T* xhat = cache ? cache->xhat.ensure(static_cast<std::size_t>(lay.rows) * H) : nullptr;
    T* rstd = cache ? cache->rstd.ensure(static_cast<std::size_t>(lay.rows)) : nullptr;
    c.th().for_chunks(lay.rows, [&](int, long lo, long hi) {
      for (long r = lo; r < hi; ++r) {
        const int tok = lay.row_token[r];
        const T* w = p_.word + static_cast<long>(in.input_ids[tok]) * H;
        const T* p = p_.position + static_cast<long>(tok % lay.seq + s_.position_offset) * H;
        T* o = y + r * H;
        if (p_.token_type) {
          const T* ty = p_.token_type + static_cast<long>(in.token_type_ids ? in.token_type_ids[tok] : 0) * H;
          for (int i = 0; i < H; ++i) o[i] = w[i] + p[i] + ty[i];
        } else {
          for (int i = 0; i < H; ++i) o[i] = w[i] + p[i];
        }
        if (cache) ops::layernorm_row_cached<kH>(o, xhat + r * H, rstd + r, o, p_.norm.gamma, p_.norm.beta, H, s_.eps);
        else ops::layernorm_row<kH>(o, o, p_.norm.gamma, p_.norm.beta, H, s_.eps);
      }
    });
  }
  EmbeddingShape s_;
  Params p_;
};

}  // namespace dynabert::layers
