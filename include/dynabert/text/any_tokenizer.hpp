// text::Tokenizer: the tokenizer of a checkpoint folder, WordPiece (BERT: vocab.txt) or GPT-2
// byte-level BPE (RoBERTa: vocab.json + merges.txt), behind one interface: what serving and the
// data functions need (encode, encode_batch, tokenize) and the special ids training needs.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "dynabert/core/error.hpp"
#include "dynabert/core/token_batch.hpp"
#include "dynabert/text/bpe.hpp"
#include "dynabert/text/tokenizer.hpp"

namespace dynabert::text {

class Tokenizer {
 public:
  Tokenizer(BertTokenizer t) : t_(std::move(t)) {}  // NOLINT: implicit on purpose
  Tokenizer(BpeTokenizer t) : t_(std::move(t)) {}   // NOLINT

  /// The tokenizer files of `dir`: vocab.json + merges.txt (byte-level BPE) or vocab.txt
  /// (WordPiece). Throws FormatError naming the folder when it holds neither.
  static Tokenizer from_folder(const std::string& dir) {
    namespace fs = std::filesystem;
    const fs::path d(dir);
    if (fs::exists(d / "vocab.json") && fs::exists(d / "merges.txt")) return BpeTokenizer::from_folder(dir);
    if (fs::exists(d / "vocab.txt")) return BertTokenizer::from_folder(dir);
    raise<FormatError>(dir, ": no tokenizer files (vocab.txt for WordPiece, or vocab.json and merges.txt for byte-level BPE)");
  }

  /// Encodes a text (and an optional second text) with the model's special tokens, truncated to
  /// max_length tokens.
  Encoding encode(std::string_view a, std::optional<std::string_view> b = std::nullopt, int max_length = 128) const {
    return std::visit([&](const auto& t) { return t.encode(a, b, max_length); }, t_);
  }
  /// Texts as one batch padded to the longest (see the tokenizers' encode_batch).
  TokenBatch encode_batch(const std::vector<std::string>& texts, int max_length = 128,
                          const std::vector<std::string>* pairs = nullptr) const {
    return std::visit([&](const auto& t) { return t.encode_batch(texts, max_length, pairs); }, t_);
  }
  /// The ids of a text without special tokens.
  std::vector<std::int32_t> tokenize(std::string_view text) const {
    return std::visit([&](const auto& t) { return t.tokenize(text); }, t_);
  }

  int vocab_size() const {
    if (const auto* w = wordpiece()) return w->vocab().size();
    return bpe()->vocab_size();
  }
  /// Padding id ([PAD] or <pad>; 0 for a WordPiece vocabulary without [PAD]).
  std::int32_t pad_id() const {
    if (const auto* w = wordpiece()) return std::max(0, w->vocab().find("[PAD]"));
    return bpe()->pad_id();
  }
  /// [MASK] or <mask>; -1 when the vocabulary has none.
  std::int32_t mask_id() const {
    if (const auto* w = wordpiece()) return w->vocab().find("[MASK]");
    return bpe()->mask_id();
  }
  /// Ids an MLM masker never chooses: padding and the sequence delimiters.
  std::vector<std::int32_t> special_ids() const {
    if (const auto* w = wordpiece()) return {pad_id(), w->vocab().find("[CLS]"), w->vocab().find("[SEP]")};
    return bpe()->special_ids();
  }

  /// The WordPiece tokenizer, or null.
  const BertTokenizer* wordpiece() const { return std::get_if<BertTokenizer>(&t_); }
  /// The byte-level BPE tokenizer, or null.
  const BpeTokenizer* bpe() const { return std::get_if<BpeTokenizer>(&t_); }

 private:
  std::variant<BertTokenizer, BpeTokenizer> t_;
};

}  // namespace dynabert::text
