// BertTokenizer: the BERT WordPiece tokenizer, step for step as Hugging Face's BasicTokenizer +
// WordpieceTokenizer (uncased by default):
//   1. clean: drop NUL, U+FFFD and control characters (category C*, except \t \n \r), map
//      whitespace (\t \n \r, space, category Zs) to a space;
//   2. put spaces around CJK ideographs;
//   3. split on whitespace; per word: lowercase, then NFD and drop combining marks (Mn) when
//      stripping accents (the default when lowercasing), then split off every punctuation
//      character (ASCII 33-47, 58-64, 91-96, 123-126 and category P*);
//   4. greedy longest-match-first WordPiece with "##" continuations; a word longer than
//      max_input_chars_per_word (100) characters, or with no match, becomes [UNK].
// Special tokens written in the text ([CLS] [SEP] [PAD] [MASK] [UNK], exact case) are kept whole,
// as Hugging Face does, before any of these steps.
// Invalid UTF-8 bytes are replaced by U+FFFD, which step 1 drops (documented replacement; set
// `strict_utf8` to get an InputError instead). Where Python's string rules differ from utf8proc's
// defaults, the reference's are followed: lowercasing is str.lower()'s (full case mapping of
// U+0130, the final sigma at the end of a word), and U+2028 / U+2029, which the cleaning keeps,
// split words as str.split() does. Special tokens are recognised in the raw text, before cleaning
// (so "[C\x00LS]" is not [CLS], as in the reference); text that is empty or only white space
// tokenizes to nothing and encodes to [CLS] [SEP], as the reference does. Linear in the text.
#pragma once
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <utf8proc.h>

#include "dynabert/core/error.hpp"
#include "dynabert/core/token_batch.hpp"
#include "dynabert/io/json.hpp"

namespace dynabert::text {

/// A WordPiece vocabulary (vocab.txt: one token per line, id = line number).
class Vocab {
 public:
  Vocab() = default;
  explicit Vocab(std::vector<std::string> tokens) : tokens_(std::move(tokens)) { index(); }
  // The index holds views into tokens_: a copy must re-index; a move keeps the strings in place.
  Vocab(const Vocab& o) : tokens_(o.tokens_) { index(); }
  Vocab& operator=(const Vocab& o) {
    if (this != &o) { tokens_ = o.tokens_; ids_.clear(); index(); }
    return *this;
  }
  Vocab(Vocab&&) noexcept = default;
  Vocab& operator=(Vocab&&) noexcept = default;

  static Vocab load(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    DYNABERT_REQUIRE(in.good(), FormatError, path, ": cannot open");
    std::vector<std::string> t;
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      t.push_back(line);
    }
    DYNABERT_REQUIRE(!t.empty(), FormatError, path, ": empty vocabulary");
    Vocab v(std::move(t));
    for (const char* s : {"[UNK]", "[CLS]", "[SEP]", "[PAD]"})
      DYNABERT_REQUIRE(v.find(s) >= 0, FormatError, path, ": vocabulary lacks ", s);
    return v;
  }

  int size() const { return static_cast<int>(tokens_.size()); }
  /// Id of a token, -1 when absent.
  int find(std::string_view t) const {
    auto it = ids_.find(t);
    return it == ids_.end() ? -1 : it->second;
  }
  const std::string& token(int id) const {
    DYNABERT_REQUIRE(id >= 0 && id < size(), InputError, "token id ", id, " is outside the vocabulary of ", size());
    return tokens_[id];
  }

 private:
  void index() {
    ids_.reserve(tokens_.size() * 2);
    for (std::size_t i = 0; i < tokens_.size(); ++i) ids_.emplace(std::string_view(tokens_[i]), static_cast<int>(i));
  }
  std::vector<std::string> tokens_;
  std::unordered_map<std::string_view, int> ids_;  // views into tokens_ (never reallocated after index())
};

/// Options of the tokenizer (tokenizer_config.json: do_lower_case, strip_accents).
struct TokenizerOptions {
  bool lower_case = true;
  std::optional<bool> strip_accents;  ///< unset: follows lower_case (Hugging Face's default)
  bool tokenize_chinese_chars = true;
  int max_input_chars_per_word = 100;
  bool strict_utf8 = false;  ///< throw on invalid UTF-8 instead of dropping the bad bytes
};

/// A model input: [CLS] a [SEP] (b [SEP]) with token types.
struct Encoding {
  std::vector<std::int32_t> ids, type_ids;
};

/// Hugging Face's "longest_first": removes tokens from the end of the longer of a and b (from b
/// when both are as long) until they hold at most `budget` tokens together.
inline void truncate_longest_first(std::vector<std::int32_t>& a, std::vector<std::int32_t>& b, long budget) {
  while (static_cast<long>(a.size() + b.size()) > budget) {
    if (a.size() > b.size()) a.pop_back();
    else b.pop_back();
  }
}

/// Encodes texts (and, when `pairs` is given, one second text per text) with tok.encode and pads
/// them with `pad` into one batch as long as the longest: what both tokenizers' encode_batch do.
template <class Tokenizer>
TokenBatch encode_padded(const Tokenizer& tok, const std::vector<std::string>& texts, int max_length,
                         const std::vector<std::string>* pairs, std::int32_t pad) {
  DYNABERT_REQUIRE(!pairs || pairs->size() == texts.size(), InputError, "encode_batch: ", texts.size(), " texts but ",
                   pairs ? pairs->size() : 0, " second texts");
  TokenBatch b;
  b.batch = static_cast<int>(texts.size());
  std::vector<Encoding> enc;
  enc.reserve(texts.size());
  for (std::size_t i = 0; i < texts.size(); ++i) {
    enc.push_back(pairs ? tok.encode(texts[i], std::string_view((*pairs)[i]), max_length)
                        : tok.encode(texts[i], std::nullopt, max_length));
    b.seq_len = std::max(b.seq_len, static_cast<int>(enc.back().ids.size()));
  }
  b.ids.assign(static_cast<std::size_t>(b.batch) * b.seq_len, pad);
  b.type_ids.assign(b.ids.size(), 0);
  for (int i = 0; i < b.batch; ++i) {
    std::copy(enc[i].ids.begin(), enc[i].ids.end(), b.ids.begin() + static_cast<long>(i) * b.seq_len);
    std::copy(enc[i].type_ids.begin(), enc[i].type_ids.end(), b.type_ids.begin() + static_cast<long>(i) * b.seq_len);
    b.lengths.push_back(static_cast<std::int32_t>(enc[i].ids.size()));
  }
  return b;
}

class BertTokenizer {
 public:
  BertTokenizer(Vocab vocab, TokenizerOptions opt = {}) : vocab_(std::move(vocab)), opt_(opt) {
    unk_ = vocab_.find("[UNK]");
    cls_ = vocab_.find("[CLS]");
    sep_ = vocab_.find("[SEP]");
    DYNABERT_REQUIRE(unk_ >= 0 && cls_ >= 0 && sep_ >= 0, FormatError, "vocabulary lacks [UNK], [CLS] or [SEP]");
  }

  /// vocab.txt and (if present) tokenizer_config.json of a folder.
  static BertTokenizer from_folder(const std::string& dir) {
    namespace fs = std::filesystem;
    TokenizerOptions opt;
    const fs::path cfg = fs::path(dir) / "tokenizer_config.json";
    if (fs::exists(cfg)) {
      const io::Json j = io::read_json_file(cfg.string());
      auto flag = [&](const char* key, auto& out) {
        if (const io::Json* v = j.find(key); v && v->is_bool()) out = v->as_bool();
      };
      flag("do_lower_case", opt.lower_case);
      flag("strip_accents", opt.strip_accents);
      flag("tokenize_chinese_chars", opt.tokenize_chinese_chars);
    }
    return BertTokenizer(Vocab::load((fs::path(dir) / "vocab.txt").string()), opt);
  }

  const Vocab& vocab() const { return vocab_; }

  /// WordPiece ids of `text` (appended to `out`); no [CLS]/[SEP] are added, but special tokens
  /// written in the text are recognised.
  void tokenize(std::string_view text, std::vector<std::int32_t>& out) const {
    static constexpr std::string_view kSpecials[] = {"[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]"};
    constexpr std::size_t kN = sizeof(kSpecials) / sizeof(kSpecials[0]), npos = std::string_view::npos;
    // the next occurrence of each special token, searched again only once the text has moved
    // past it: every character is scanned a bounded number of times (linear in the text)
    std::size_t next[kN];
    int ids[kN];
    for (std::size_t k = 0; k < kN; ++k) {
      ids[k] = vocab_.find(kSpecials[k]);
      next[k] = ids[k] < 0 ? npos : text.find(kSpecials[k]);
    }
    std::size_t pos = 0;
    while (true) {
      std::size_t best = npos, k_best = 0;
      for (std::size_t k = 0; k < kN; ++k) {
        if (next[k] != npos && next[k] < pos) next[k] = text.find(kSpecials[k], pos);
        if (next[k] < best) { best = next[k]; k_best = k; }
      }
      if (best == npos) break;
      tokenize_plain(text.substr(pos, best - pos), out);
      out.push_back(ids[k_best]);
      pos = best + kSpecials[k_best].size();
    }
    tokenize_plain(text.substr(pos), out);
  }

  /// Steps 1-4 on text that holds no special token.
  void tokenize_plain(std::string_view text, std::vector<std::int32_t>& out) const {
    std::u32string& cps = cps_;
    decode_clean(text, cps);
    std::u32string word;
    std::size_t i = 0;
    while (i < cps.size()) {
      while (i < cps.size() && cps[i] == U' ') ++i;
      if (i >= cps.size()) break;
      std::size_t j = i;
      while (j < cps.size() && cps[j] != U' ') ++j;
      normalize_word(cps, i, j, word);
      // split off punctuation, then WordPiece each piece
      std::size_t p = 0;
      while (p < word.size()) {
        if (is_punctuation(word[p])) {
          wordpiece(word, p, p + 1, out);
          ++p;
          continue;
        }
        std::size_t q = p;
        while (q < word.size() && !is_punctuation(word[q])) ++q;
        wordpiece(word, p, q, out);
        p = q;
      }
      i = j;
    }
  }
  std::vector<std::int32_t> tokenize(std::string_view text) const {
    std::vector<std::int32_t> out;
    tokenize(text, out);
    return out;
  }
  /// The token strings of tokenize() (for inspection and tests).
  std::vector<std::string> tokenize_strings(std::string_view text) const {
    std::vector<std::string> s;
    for (auto id : tokenize(text)) s.push_back(vocab_.token(id));
    return s;
  }

  /// [CLS] a [SEP] (b [SEP]), truncated to max_length by removing tokens from the end of the
  /// longer text first, from b when both are as long (Hugging Face's "longest_first"). Text with no
  /// token (empty, white space, only control characters) encodes to [CLS] [SEP] as in the
  /// reference; callers that must refuse it check tokenize() first. Throws InputError when max_length is too small to hold the
  /// special tokens.
  Encoding encode(std::string_view a, std::optional<std::string_view> b = std::nullopt, int max_length = 128) const {
    const int specials = b ? 3 : 2;
    DYNABERT_REQUIRE(max_length >= specials + (b ? 2 : 1), InputError, "max_length ", max_length,
                     " cannot hold the special tokens and one token of each text");
    auto ta = tokenize(a);
    std::vector<std::int32_t> tb;
    if (b) tb = tokenize(*b);
    truncate_longest_first(ta, tb, max_length - specials);
    Encoding e;
    e.ids.push_back(cls_);
    e.ids.insert(e.ids.end(), ta.begin(), ta.end());
    e.ids.push_back(sep_);
    e.type_ids.assign(e.ids.size(), 0);
    if (b) {
      e.ids.insert(e.ids.end(), tb.begin(), tb.end());
      e.ids.push_back(sep_);
      e.type_ids.resize(e.ids.size(), 1);
    }
    return e;
  }

  /// Encodes texts (and, when `pairs` is given, one second text per text) as one batch padded to
  /// the longest sequence with [PAD] (id 0 when the vocabulary has none), each truncated to
  /// max_length tokens as encode() does.
  TokenBatch encode_batch(const std::vector<std::string>& texts, int max_length = 128,
                          const std::vector<std::string>* pairs = nullptr) const {
    return encode_padded(*this, texts, max_length, pairs, vocab_.find("[PAD]") >= 0 ? vocab_.find("[PAD]") : 0);
  }

  // ---- character classes (Hugging Face's definitions) -----------------------------------------
  static bool is_whitespace(char32_t c) {
    if (c == U' ' || c == U'\t' || c == U'\n' || c == U'\r') return true;
    return utf8proc_category(static_cast<utf8proc_int32_t>(c)) == UTF8PROC_CATEGORY_ZS;
  }
  static bool is_control(char32_t c) {
    if (c == U'\t' || c == U'\n' || c == U'\r') return false;
    switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
      case UTF8PROC_CATEGORY_CC: case UTF8PROC_CATEGORY_CF: case UTF8PROC_CATEGORY_CO: case UTF8PROC_CATEGORY_CS:
      case UTF8PROC_CATEGORY_CN: return true;
      default: return false;
    }
  }
  static bool is_punctuation(char32_t c) {
    if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126)) return true;
    switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
      case UTF8PROC_CATEGORY_PC: case UTF8PROC_CATEGORY_PD: case UTF8PROC_CATEGORY_PS: case UTF8PROC_CATEGORY_PE:
      case UTF8PROC_CATEGORY_PI: case UTF8PROC_CATEGORY_PF: case UTF8PROC_CATEGORY_PO: return true;
      default: return false;
    }
  }
  static bool is_cjk(char32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
  }

 private:
  /// Steps 1-2: decode UTF-8, drop controls and U+FFFD, normalise whitespace, space CJK.
  void decode_clean(std::string_view text, std::u32string& out) const {
    out.clear();
    out.reserve(text.size() + 8);
    const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
    utf8proc_ssize_t left = static_cast<utf8proc_ssize_t>(text.size());
    while (left > 0) {
      utf8proc_int32_t cp;
      if (*p < 0x80) {  // ASCII fast path
        cp = *p;
        ++p;
        --left;
      } else {
        const utf8proc_ssize_t n = utf8proc_iterate(p, left, &cp);
        if (n < 0) {
          DYNABERT_REQUIRE(!opt_.strict_utf8, InputError, "invalid UTF-8 at byte ",
                           static_cast<long>(text.size()) - left, " of the text");
          ++p;  // skip one bad byte (it stands for U+FFFD, which cleaning drops)
          --left;
          continue;
        }
        p += n;
        left -= n;
      }
      const char32_t c = static_cast<char32_t>(cp);
      if (c == 0 || c == 0xFFFD || is_control(c)) continue;
      if (is_whitespace(c) || c == 0x2028 || c == 0x2029) {  // Python's str.split() splits on both
        out.push_back(U' ');
      } else if (opt_.tokenize_chinese_chars && is_cjk(c)) {
        out.push_back(U' ');
        out.push_back(c);
        out.push_back(U' ');
      } else {
        out.push_back(c);
      }
    }
  }

  /// Step 3 for one word: lowercase as Python's str.lower() does (full case mapping: U+0130
  /// becomes i + U+0307; a capital sigma at the end of a word becomes the final sigma), then strip
  /// accents (NFD, drop Mn).
  void normalize_word(const std::u32string& cps, std::size_t b, std::size_t e, std::u32string& word) const {
    word.clear();
    const bool strip = opt_.strip_accents.value_or(opt_.lower_case);
    auto emit = [&](utf8proc_int32_t c) {
      if (!strip || c < 0x80) {
        word.push_back(static_cast<char32_t>(c));
        return;
      }
      utf8proc_int32_t buf[16];
      int last_boundclass = 0;
      const utf8proc_ssize_t n = utf8proc_decompose_char(c, buf, 16, UTF8PROC_DECOMPOSE, &last_boundclass);
      for (utf8proc_ssize_t k = 0; k < (n > 0 ? std::min<utf8proc_ssize_t>(n, 16) : 0); ++k)
        if (utf8proc_category(buf[k]) != UTF8PROC_CATEGORY_MN) word.push_back(static_cast<char32_t>(buf[k]));
      if (n <= 0) word.push_back(static_cast<char32_t>(c));
    };
    for (std::size_t i = b; i < e; ++i) {
      utf8proc_int32_t c = static_cast<utf8proc_int32_t>(cps[i]);
      if (opt_.lower_case) {
        if (c == 0x130) {  // LATIN CAPITAL LETTER I WITH DOT ABOVE: "i" + COMBINING DOT ABOVE
          emit('i');
          emit(0x307);
          continue;
        }
        c = c == 0x3A3 ? (final_sigma(cps, b, e, i) ? 0x3C2 : 0x3C3) : utf8proc_tolower(c);
      }
      emit(c);
    }
  }

  /// Python's Final_Sigma condition for cps[i] within the word [b, e): preceded by a cased letter
  /// (case-ignorable characters skipped) and not followed by one.
  static bool final_sigma(const std::u32string& cps, std::size_t b, std::size_t e, std::size_t i) {
    std::size_t j = i;
    while (j > b && case_ignorable(cps[j - 1])) --j;
    if (j == b || !cased(cps[j - 1])) return false;
    j = i + 1;
    while (j < e && case_ignorable(cps[j])) ++j;
    return j == e || !cased(cps[j]);
  }
  /// Unicode's Cased property: letters with case (Lu, Ll, Lt) and others that change under case
  /// mapping.
  static bool cased(char32_t c) {
    const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
    if (cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT) return true;
    // Other_Lowercase / Other_Uppercase letters without a case mapping that are not case-ignorable
    // (Python 3.11, Unicode 14: found by trying every code point before a capital sigma)
    if (c == 0xAA || c == 0xBA || (c >= 0x1F130 && c <= 0x1F149) || (c >= 0x1F150 && c <= 0x1F169) ||
        (c >= 0x1F170 && c <= 0x1F189))
      return true;
    const auto u = static_cast<utf8proc_int32_t>(c);
    return utf8proc_tolower(u) != u || utf8proc_toupper(u) != u;
  }
  /// Unicode's Case_Ignorable property: Mn, Me, Cf, Lm, Sk and the word-break mid-letter,
  /// mid-number-letter and single-quote characters.
  static bool case_ignorable(char32_t c) {
    switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
      case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_CF: case UTF8PROC_CATEGORY_LM:
      case UTF8PROC_CATEGORY_SK: return true;
      default: break;
    }
    switch (c) {
      case 0x27: case 0x2E: case 0x3A: case 0xB7: case 0x387: case 0x5F4: case 0x2018: case 0x2019: case 0x2024:
      case 0x2027: case 0xFE13: case 0xFE52: case 0xFE55: case 0xFF07: case 0xFF0E: case 0xFF1A: return true;
      default: return false;
    }
  }

  static void append_utf8(std::string& s, char32_t c) {
    utf8proc_uint8_t buf[4];
    const auto n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(c), buf);
    s.append(reinterpret_cast<const char*>(buf), static_cast<std::size_t>(n));
  }

  /// Step 4 for word[b, e): greedy longest match, "##" continuations, [UNK] for the whole word.
  void wordpiece(const std::u32string& word, std::size_t b, std::size_t e, std::vector<std::int32_t>& out) const {
    if (e - b > static_cast<std::size_t>(opt_.max_input_chars_per_word)) {
      out.push_back(unk_);
      return;
    }
    // UTF-8 of the piece with the byte offset of every code point
    std::string& utf8 = utf8_;
    std::vector<std::size_t>& off = offsets_;
    utf8.clear();
    off.clear();
    for (std::size_t i = b; i < e; ++i) {
      off.push_back(utf8.size());
      append_utf8(utf8, word[i]);
    }
    off.push_back(utf8.size());
    const std::size_t mark = out.size();
    std::string& probe = probe_;
    std::size_t start = 0;
    const std::size_t n = e - b;
    while (start < n) {
      std::size_t end = n;
      int found = -1;
      while (start < end) {
        const std::string_view sub(utf8.data() + off[start], off[end] - off[start]);
        if (start > 0) {
          probe.assign("##");
          probe.append(sub);
          found = vocab_.find(probe);
        } else {
          found = vocab_.find(sub);
        }
        if (found >= 0) break;
        --end;
      }
      if (found < 0) {
        out.resize(mark);
        out.push_back(unk_);
        return;
      }
      out.push_back(found);
      start = end;
    }
  }

  Vocab vocab_;
  TokenizerOptions opt_;
  int unk_ = -1, cls_ = -1, sep_ = -1;
  // scratch (a tokenizer is used by one thread at a time)
  mutable std::u32string cps_;
  mutable std::string utf8_, probe_;
  mutable std::vector<std::size_t> offsets_;
};

}  // namespace dynabert::text
