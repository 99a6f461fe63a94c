// BpeTokenizer: GPT-2's byte-level BPE with RoBERTa's special tokens, step for step as
// RobertaTokenizer of Hugging Face transformers v2.1.1 (the version DynaBERT's code bundles):
//   1. special tokens written in the text (<s> </s> <unk> <pad> <mask>, exact case) are kept
//      whole; every piece of text between them is stripped of white space at both ends (Python's
//      str.strip(), as tokenization_utils' split_on_token does) and dropped when empty;
//   2. with `add_prefix_space`, each piece gets one leading space (v2.1.1's _tokenize kwarg);
//   3. each piece is cut by GPT-2's pattern
//        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//      (Python `regex` semantics; written by hand here: \p{L}, \p{N} are utf8proc's categories
//      L* and N*, \s is Unicode's White_Space as the regex module has it, ` ?` is U+0020 only);
//   4. each chunk's UTF-8 bytes become byte-level symbols (GPT-2's bytes_to_unicode table) and
//      are merged by BPE: repeatedly the adjacent pair of lowest merge rank, every occurrence of
//      it left to right in one pass, until no pair has a rank. A symbol missing from the
//      vocabulary becomes <unk>, as in the reference.
// encode() gives <s> A </s> and, for pairs, <s> A </s></s> B </s>, with longest-first truncation
// as v2.1.1's truncate_sequences (a tie takes the token from B); token types are all 0 (RoBERTa
// has one token type; v2.1.1's run_glue passes none). decode() maps ids back to bytes and reads
// them as UTF-8 with errors='replace' (no clean-up of spaces, so decode(tokenize(x)) == x).
//
// Choices where the reference is silent or accidental (docs/text-and-data.md):
//  - invalid UTF-8 in the text: each maximal invalid subpart becomes U+FFFD, exactly as Python's
//    bytes.decode("utf-8", "replace") would make the str the reference sees; `strict_utf8` throws
//    InputError instead;
//  - text that is empty or only white space tokenizes to nothing (v2.1.1 returns one special
//    token there, picked by the order of a Python set: an accident, not a rule);
//  - merges.txt: the first line is skipped when it starts with '#' (the "#version" header; v2.1.1
//    drops the first line whatever it is, and also the last one when the file does not end with a
//    newline); a line that is not two pieces, or a merge naming a piece (or a concatenation) that
//    is not in vocab.json, is a FormatError; a pair listed twice keeps its last rank (Python's
//    dict). vocab.json: ids unique, in [0, 2^22).
// Threads: every method is const and safe to call from several threads at once. Scratch memory is
// per call; the per-word cache (words of up to kCacheableBytes bytes -> ids, bounded by
// BpeOptions::cache_words, emptied shard by shard when full) is split in 16 shards with a mutex
// each. Time is O(n log n) in the length of the longest chunk (a heap of candidate merges), linear
// otherwise.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <utf8proc.h>

#include "dynabert/core/error.hpp"
#include "dynabert/core/token_batch.hpp"
#include "dynabert/io/json.hpp"
#include "dynabert/text/tokenizer.hpp"  // Encoding, truncate_longest_first, encode_padded

namespace dynabert::text {

/// Options of the BPE tokenizer (tokenizer_config.json: add_prefix_space).
struct BpeOptions {
  bool add_prefix_space = false;  ///< one space before each piece of text (so a first word is cut as a later one)
  bool strict_utf8 = false;       ///< InputError on invalid UTF-8 instead of U+FFFD replacement
  std::size_t cache_words = 1u << 16;  ///< bound of the per-word cache (0: no cache)
};

class BpeTokenizer {
 public:
  /// Longest chunk (in bytes) kept in the per-word cache.
  static constexpr std::size_t kCacheableBytes = 64;
  using VocabEntries = std::vector<std::pair<std::string, std::int32_t>>;
  using Merges = std::vector<std::pair<std::string, std::string>>;

  /// From a vocabulary (byte-level piece -> id) and merges in rank order (first = applied first).
  /// `vocab_source` and `merges_source` name them in FormatErrors.
  BpeTokenizer(const VocabEntries& vocab, const Merges& merges, BpeOptions opt = {},
               const std::string& vocab_source = "vocabulary", const std::string& merges_source = "merges")
      : opt_(opt), cache_(opt.cache_words) {
    build(vocab, merges, vocab_source, merges_source);
  }

  /// vocab.json, merges.txt and (if present) tokenizer_config.json (add_prefix_space) of a folder.
  static BpeTokenizer from_folder(const std::string& dir) {
    namespace fs = std::filesystem;
    BpeOptions opt;
    const fs::path cfg = fs::path(dir) / "tokenizer_config.json";
    if (fs::exists(cfg)) {
      const io::Json j = io::read_json_file(cfg.string());
      DYNABERT_REQUIRE(j.is_object(), FormatError, cfg.string(), ": expected a JSON object");
      if (const io::Json* v = j.find("add_prefix_space")) {
        DYNABERT_REQUIRE(v->is_bool(), FormatError, cfg.string(), ": add_prefix_space must be true or false");
        opt.add_prefix_space = v->as_bool();
      }
    }
    const std::string vpath = (fs::path(dir) / "vocab.json").string(), mpath = (fs::path(dir) / "merges.txt").string();
    VocabEntries vocab = read_vocab_json(vpath);  // (before merges.txt: errors name vocab.json first)
    return BpeTokenizer(vocab, read_merges_txt(mpath), opt, vpath, mpath);
  }

  /// vocab.json: one JSON object, piece -> non-negative integer id.
  static VocabEntries read_vocab_json(const std::string& path) {
    std::error_code ec;
    DYNABERT_REQUIRE(std::filesystem::is_regular_file(path, ec), FormatError, path, ": missing (a BPE folder needs vocab.json)");
    const io::Json j = io::read_json_file(path);
    DYNABERT_REQUIRE(j.is_object(), FormatError, path, ": expected a JSON object of piece -> id");
    VocabEntries v;
    v.reserve(j.size());
    for (const auto& [piece, id] : j.members())
      v.emplace_back(piece, static_cast<std::int32_t>(io::json_int(id, path, "the id of '" + piece.substr(0, 40) + "'", 0,
                                                                    kMaxVocab - 1)));
    return v;
  }

  /// merges.txt: "a b" per line, in rank order; a first line starting with '#' (the "#version"
  /// header) is skipped, empty lines are ignored.
  static Merges read_merges_txt(const std::string& path) {
    std::error_code ec;
    DYNABERT_REQUIRE(std::filesystem::is_regular_file(path, ec), FormatError, path, ": missing (a BPE folder needs merges.txt)");
    std::ifstream in(path, std::ios::binary);
    DYNABERT_REQUIRE(in.good(), FormatError, path, ": cannot open");
    Merges m;
    std::string line;
    for (long n = 1; std::getline(in, line); ++n) {
      if (n == 1 && !line.empty() && line[0] == '#') continue;
      std::vector<std::string_view> f;
      std::size_t i = 0;
      auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; };
      while (i < line.size()) {
        while (i < line.size() && blank(line[i])) ++i;
        std::size_t j = i;
        while (j < line.size() && !blank(line[j])) ++j;
        if (j > i) f.emplace_back(line.data() + i, j - i);
        i = j;
      }
      if (f.empty()) continue;
      DYNABERT_REQUIRE(f.size() == 2, FormatError, path, ":", n, ": expected two pieces separated by a space, got ",
                       f.size());
      m.emplace_back(std::string(f[0]), std::string(f[1]));
    }
    DYNABERT_REQUIRE(!in.bad(), FormatError, path, ": read failed");
    return m;
  }

  // ---- tokenization --------------------------------------------------------------------------

  /// BPE ids of `text` appended to `out`; no <s>/</s> are added, but special tokens written in the
  /// text are recognised.
  void tokenize(std::string_view text, std::vector<std::int32_t>& out) const {
    Scratch s;
    std::string_view t = text;
    if (!valid_utf8(text)) {
      DYNABERT_REQUIRE(!opt_.strict_utf8, InputError, "invalid UTF-8 at byte ", first_invalid_utf8(text), " of the text");
      s.clean = replace_invalid_utf8(text);
      t = s.clean;
    }
    std::size_t pos = 0;
    while (pos < t.size()) {
      std::size_t at = pos;
      int k = -1;
      while ((at = t.find('<', at)) != std::string_view::npos) {
        k = special_at(t, at);
        if (k >= 0) break;
        ++at;
      }
      const std::size_t end = k >= 0 ? at : t.size();
      tokenize_piece(strip(t.substr(pos, end - pos)), s, out);
      if (k < 0) break;
      out.push_back(special_[k].id);
      pos = at + special_[k].text.size();
    }
  }
  std::vector<std::int32_t> tokenize(std::string_view text) const {
    std::vector<std::int32_t> out;
    tokenize(text, out);
    return out;
  }
  /// The byte-level pieces of tokenize() (for inspection and tests).
  std::vector<std::string> tokenize_strings(std::string_view text) const {
    std::vector<std::string> s;
    for (auto id : tokenize(text)) s.push_back(token(id));
    return s;
  }

  /// <s> a </s> (</s> b </s>), truncated to max_length by removing tokens from the end of the longer
  /// text (from b when both are as long), as v2.1.1's "longest_first". Token types are all 0.
  /// Throws InputError when max_length cannot hold the special tokens.
  Encoding encode(std::string_view a, std::optional<std::string_view> b = std::nullopt, int max_length = 128) const {
    const int specials = b ? 4 : 2;
    DYNABERT_REQUIRE(max_length >= specials, InputError, "max_length ", max_length, " cannot hold the ", specials,
                     " special tokens of ", b ? "a pair" : "a text");
    auto ta = tokenize(a);
    std::vector<std::int32_t> tb;
    if (b) tb = tokenize(*b);
    truncate_longest_first(ta, tb, max_length - specials);  // tb is empty without b
    Encoding e;
    e.ids.reserve(ta.size() + tb.size() + specials);
    e.ids.push_back(bos_);
    e.ids.insert(e.ids.end(), ta.begin(), ta.end());
    e.ids.push_back(eos_);
    if (b) {
      e.ids.push_back(eos_);
      e.ids.insert(e.ids.end(), tb.begin(), tb.end());
      e.ids.push_back(eos_);
    }
    e.type_ids.assign(e.ids.size(), 0);
    return e;
  }

  /// Encodes texts (and, when `pairs` is given, one second text per text) as one batch padded with
  /// <pad> to the longest sequence, each truncated to max_length tokens as encode() does.
  TokenBatch encode_batch(const std::vector<std::string>& texts, int max_length = 128,
                          const std::vector<std::string>* pairs = nullptr) const {
    return encode_padded(*this, texts, max_length, pairs, pad_);
  }

  /// The text of `ids`: their bytes read as UTF-8, each invalid subpart becoming U+FFFD (Python's
  /// errors='replace'); special tokens are left out when skip_special_tokens (the ids of <s> </s>
  /// <unk> <pad> <mask>, as v2.1.1's all_special_ids). InputError for an id outside the vocabulary.
  std::string decode(const std::vector<std::int32_t>& ids, bool skip_special_tokens = true) const {
    std::string bytes;
    for (auto id : ids) {
      DYNABERT_REQUIRE(id >= 0 && id < vocab_size() && present_[id], InputError, "token id ", id,
                       " is not in the vocabulary of ", vocab_size());
      if (skip_special_tokens && is_special(id)) continue;
      bytes += bytes_[id];
    }
    return valid_utf8(bytes) ? bytes : replace_invalid_utf8(bytes);
  }

  // ---- vocabulary ----------------------------------------------------------------------------
  /// Largest id + 1 (the embedding table's rows).
  int vocab_size() const { return static_cast<int>(tokens_.size()); }
  std::int32_t bos_id() const { return bos_; }
  std::int32_t eos_id() const { return eos_; }
  std::int32_t cls_id() const { return bos_; }  ///< <s>, as RoBERTa's cls_token
  std::int32_t sep_id() const { return eos_; }  ///< </s>, as RoBERTa's sep_token
  std::int32_t pad_id() const { return pad_; }
  std::int32_t unk_id() const { return unk_; }
  /// <mask>, or -1 when the vocabulary has none (then "<mask>" in a text becomes <unk>).
  std::int32_t mask_id() const { return mask_; }
  /// Ids an MLM masker never chooses: <s>, </s> and <pad> (as [CLS] [SEP] [PAD] for BERT).
  std::vector<std::int32_t> special_ids() const {
    std::vector<std::int32_t> v = {bos_, eos_, pad_};
    std::sort(v.begin(), v.end());
    return v;
  }
  /// Id of a piece, -1 when absent.
  std::int32_t find(std::string_view piece) const {
    auto it = ids_.find(std::string(piece));
    return it == ids_.end() ? -1 : it->second;
  }
  /// The byte-level piece of an id (InputError outside the vocabulary).
  const std::string& token(std::int32_t id) const {
    DYNABERT_REQUIRE(id >= 0 && id < vocab_size() && present_[id], InputError, "token id ", id,
                     " is not in the vocabulary of ", vocab_size());
    return tokens_[id];
  }
  const BpeOptions& options() const { return opt_; }

  // ---- character classes and UTF-8 (public for tests and tools) --------------------------------
  /// Python regex's \s on str: Unicode White_Space.
  static bool is_regex_space(char32_t c) {
    if (c < 0x80) return (c >= 9 && c <= 13) || c == 32;
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
  }
  /// Python's str.isspace() (what str.strip() removes): White_Space and U+001C..U+001F.
  static bool is_python_space(char32_t c) { return (c >= 0x1C && c <= 0x1F) || is_regex_space(c); }

  /// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes
  /// for U+0100.. in byte order.
  static const std::array<char32_t, 256>& byte_to_unicode() {
    static const std::array<char32_t, 256> t = [] {
      std::array<char32_t, 256> m{};
      char32_t next = 256;
      for (int b = 0; b < 256; ++b)
        m[b] = ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) ? static_cast<char32_t>(b) : next++;
      return m;
    }();
    return t;
  }

  /// True when `s` is valid UTF-8 (no surrogates, no overlong forms, nothing above U+10FFFF).
  static bool valid_utf8(std::string_view s) { return first_invalid_utf8(s) == s.size(); }
  /// Byte offset of the first invalid sequence, s.size() when there is none.
  static std::size_t first_invalid_utf8(std::string_view s) {
    std::size_t i = 0;
    while (i < s.size()) {
      if (static_cast<unsigned char>(s[i]) < 0x80) {
        ++i;
        continue;
      }
      const std::size_t n = utf8_sequence(s, i);
      if (n == 0) return i;
      i += n;
    }
    return i;
  }
  /// `s` with each maximal invalid subpart (Unicode's "best practice", which Python's decoder
  /// follows) replaced by U+FFFD.
  static std::string replace_invalid_utf8(std::string_view s) {
    std::string out;
    out.reserve(s.size() + 8);
    std::size_t i = 0;
    while (i < s.size()) {
      if (static_cast<unsigned char>(s[i]) < 0x80) {
        out.push_back(s[i++]);
        continue;
      }
      const std::size_t n = utf8_sequence(s, i);
      if (n > 0) {
        out.append(s.data() + i, n);
        i += n;
      } else {
        out.append("\xEF\xBF\xBD");
        i += std::max<std::size_t>(1, maximal_subpart(s, i));
      }
    }
    return out;
  }

 private:
  static constexpr std::int32_t kMaxVocab = 1 << 22;
  enum Class : std::uint8_t { kLetter, kNumber, kSpace, kOther };
  struct Special {
    std::string_view text;
    std::int32_t id;
  };
  struct Merge {
    std::int32_t rank, result;
  };
  /// Per-call buffers.
  struct Scratch {
    std::string clean, piece;
    std::vector<char32_t> cps;
    std::vector<std::uint32_t> offs;
    std::vector<std::uint8_t> cls;
    std::vector<std::int32_t> sym, next, prev, word;
    std::vector<std::int64_t> heap;  // (rank << 32) | position, a min-heap
    std::vector<std::int32_t> merged;
  };

  /// Words -> ids, in shards with a mutex each; a full shard is emptied.
  class WordCache {
   public:
    static constexpr std::size_t kShards = 16;
    explicit WordCache(std::size_t capacity) : per_shard_((capacity + kShards - 1) / kShards) {
      if (capacity) shards_ = std::make_unique<Shard[]>(kShards);
    }
    WordCache(const WordCache& o) : WordCache(o.per_shard_ * kShards) {}  // a copy starts empty
    WordCache& operator=(const WordCache& o) {
      if (this != &o) *this = WordCache(o.per_shard_ * kShards);
      return *this;
    }
    WordCache(WordCache&&) noexcept = default;
    WordCache& operator=(WordCache&&) noexcept = default;

    bool enabled() const { return static_cast<bool>(shards_); }
    /// Appends the cached ids of `word` to `out`; false when absent.
    bool get(std::string_view word, std::size_t hash, std::vector<std::int32_t>& out) const {
      Shard& s = shards_[hash % kShards];
      std::lock_guard<std::mutex> lock(s.m);
      auto it = s.map.find(word);
      if (it == s.map.end()) return false;
      out.insert(out.end(), it->second.begin(), it->second.end());
      return true;
    }
    void put(std::string_view word, std::size_t hash, const std::int32_t* ids, std::size_t n) const {
      Shard& s = shards_[hash % kShards];
      std::lock_guard<std::mutex> lock(s.m);
      if (s.map.size() >= per_shard_) {
        s.map.clear();
        s.keys.clear();
      }
      if (s.map.count(word)) return;
      s.keys.emplace_back(std::make_unique<std::string>(word));
      s.map.emplace(std::string_view(*s.keys.back()), std::vector<std::int32_t>(ids, ids + n));
    }

   private:
    struct Shard {
      std::mutex m;
      std::vector<std::unique_ptr<std::string>> keys;  // owners of the map's keys (stable addresses)
      std::unordered_map<std::string_view, std::vector<std::int32_t>> map;
    };
    std::size_t per_shard_ = 0;
    std::unique_ptr<Shard[]> shards_;
  };

  void build(const VocabEntries& vocab, const Merges& merges, const std::string& vsrc, const std::string& msrc) {
    DYNABERT_REQUIRE(!vocab.empty(), FormatError, vsrc, ": empty vocabulary");
    std::int32_t max_id = -1;
    for (const auto& [piece, id] : vocab) {
      DYNABERT_REQUIRE(id >= 0 && id < kMaxVocab, FormatError, vsrc, ": id ", id, " of '", piece.substr(0, 40),
                       "' is outside 0..", kMaxVocab - 1);
      max_id = std::max(max_id, id);
    }
    tokens_.assign(static_cast<std::size_t>(max_id) + 1, std::string());
    present_.assign(tokens_.size(), 0);
    ids_.reserve(vocab.size() * 2);
    for (const auto& [piece, id] : vocab) {
      DYNABERT_REQUIRE(!present_[id], FormatError, vsrc, ": id ", id, " is given to both '", tokens_[id].substr(0, 40),
                       "' and '", piece.substr(0, 40), "'");
      DYNABERT_REQUIRE(ids_.emplace(piece, id).second, FormatError, vsrc, ": piece '", piece.substr(0, 40),
                       "' appears twice");
      tokens_[id] = piece;
      present_[id] = 1;
    }
    auto need = [&](const char* s) {
      const std::int32_t id = find(s);
      DYNABERT_REQUIRE(id >= 0, FormatError, vsrc, ": vocabulary lacks ", s);
      return id;
    };
    bos_ = need("<s>");
    eos_ = need("</s>");
    pad_ = need("<pad>");
    unk_ = need("<unk>");
    mask_ = find("<mask>");
    special_ = {{{"<s>", bos_}, {"</s>", eos_}, {"<unk>", unk_}, {"<pad>", pad_}, {"<mask>", mask_ >= 0 ? mask_ : unk_}}};

    // byte symbols: the vocabulary's id of the one-character piece, or an id past the vocabulary
    // (output as <unk>) when it has none
    const auto& b2u = byte_to_unicode();
    for (int b = 0; b < 256; ++b) {
      const std::int32_t id = find(utf8_of(b2u[b]));
      byte_sym_[b] = id >= 0 ? id : vocab_size() + b;
    }
    // the bytes each id stands for (decode): byte-level characters map back to their byte, any
    // other character (in added pieces) is kept as its UTF-8
    std::array<int, 0x144> u2b;
    u2b.fill(-1);
    for (int b = 0; b < 256; ++b) u2b[b2u[b]] = b;
    bytes_.assign(tokens_.size(), std::string());
    for (std::size_t id = 0; id < tokens_.size(); ++id) {
      const std::string& t = tokens_[id];
      std::string& out = bytes_[id];
      std::size_t i = 0;
      while (i < t.size()) {
        utf8proc_int32_t cp;
        const auto n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(t.data() + i),
                                        static_cast<utf8proc_ssize_t>(t.size() - i), &cp);
        if (n <= 0) {  // (vocab.json strings are valid UTF-8: the JSON reader checks)
          out.push_back(t[i++]);
          continue;
        }
        if (cp >= 0 && cp < 0x144 && u2b[cp] >= 0) out.push_back(static_cast<char>(u2b[cp]));
        else out.append(t, i, static_cast<std::size_t>(n));
        i += static_cast<std::size_t>(n);
      }
    }

    merges_.reserve(merges.size() * 2);
    std::string cat;
    for (std::size_t r = 0; r < merges.size(); ++r) {
      const auto& [a, b] = merges[r];
      const std::int32_t ia = find(a), ib = find(b);
      DYNABERT_REQUIRE(ia >= 0, FormatError, msrc, ": merge ", r + 1, " (", a.substr(0, 40), " ", b.substr(0, 40),
                       ") names '", a.substr(0, 40), "', which is not in the vocabulary");
      DYNABERT_REQUIRE(ib >= 0, FormatError, msrc, ": merge ", r + 1, " (", a.substr(0, 40), " ", b.substr(0, 40),
                       ") names '", b.substr(0, 40), "', which is not in the vocabulary");
      cat = a;
      cat += b;
      const std::int32_t ic = find(cat);
      DYNABERT_REQUIRE(ic >= 0, FormatError, msrc, ": merge ", r + 1, " (", a.substr(0, 40), " ", b.substr(0, 40),
                       ") makes '", cat.substr(0, 80), "', which is not in the vocabulary");
      merges_[key(ia, ib)] = Merge{static_cast<std::int32_t>(r), ic};  // a repeated pair keeps its last rank
    }
  }

  static std::uint64_t key(std::int32_t a, std::int32_t b) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b);
  }
  static std::string utf8_of(char32_t c) {
    utf8proc_uint8_t buf[4];
    const auto n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(c), buf);
    return std::string(reinterpret_cast<const char*>(buf), static_cast<std::size_t>(n));
  }
  bool is_special(std::int32_t id) const {
    return id == bos_ || id == eos_ || id == unk_ || id == pad_ || (mask_ >= 0 && id == mask_);
  }

  /// Index (into special_) of the special token starting at t[at], -1 when none does.
  int special_at(std::string_view t, std::size_t at) const {
    for (int k = 0; k < static_cast<int>(special_.size()); ++k)
      if (t.compare(at, special_[k].text.size(), special_[k].text) == 0) return k;
    return -1;
  }

  // ---- UTF-8 -----------------------------------------------------------------------------------
  /// Length of the valid multi-byte sequence at s[i] (s[i] >= 0x80), 0 when invalid.
  static std::size_t utf8_sequence(std::string_view s, std::size_t i) {
    const std::size_t sub = maximal_subpart(s, i);
    const auto b = static_cast<unsigned char>(s[i]);
    const std::size_t need = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2;
    return (b >= 0xC2 && b <= 0xF4 && sub == need) ? need : 0;
  }
  /// Bytes of the longest prefix at s[i] that is the start of a valid sequence (at least 1 for a
  /// valid lead byte; 0 for a byte that cannot start one).
  static std::size_t maximal_subpart(std::string_view s, std::size_t i) {
    const auto b = static_cast<unsigned char>(s[i]);
    std::size_t need;
    unsigned char lo = 0x80, hi = 0xBF;  // range of the second byte
    if (b >= 0xC2 && b <= 0xDF) need = 2;
    else if (b >= 0xE0 && b <= 0xEF) {
      need = 3;
      if (b == 0xE0) lo = 0xA0;
      if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      need = 4;
      if (b == 0xF0) lo = 0x90;
      if (b == 0xF4) hi = 0x8F;
    } else {
      return 0;
    }
    std::size_t k = 1;
    while (k < need && i + k < s.size()) {
      const auto c = static_cast<unsigned char>(s[i + k]);
      if (k == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xBF)) break;
      ++k;
    }
    return k;
  }

  /// `p` without Python-white-space at both ends (p is valid UTF-8).
  static std::string_view strip(std::string_view p) {
    std::size_t b = 0, e = p.size();
    while (b < e) {
      char32_t c;
      const std::size_t n = decode_at(p, b, c);
      if (!is_python_space(c)) break;
      b += n;
    }
    while (e > b) {
      std::size_t s = e - 1;
      while (s > b && (static_cast<unsigned char>(p[s]) & 0xC0) == 0x80) --s;
      char32_t c;
      decode_at(p, s, c);
      if (!is_python_space(c)) break;
      e = s;
    }
    return p.substr(b, e - b);
  }
  /// Decodes the (valid) code point at p[i]; returns its length.
  static std::size_t decode_at(std::string_view p, std::size_t i, char32_t& c) {
    const auto b = static_cast<unsigned char>(p[i]);
    if (b < 0x80) {
      c = b;
      return 1;
    }
    const std::size_t n = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2;
    char32_t v = b & (n == 2 ? 0x1F : n == 3 ? 0x0F : 0x07);
    for (std::size_t k = 1; k < n && i + k < p.size(); ++k) v = (v << 6) | (static_cast<unsigned char>(p[i + k]) & 0x3F);
    c = v;
    return n;
  }
  static Class classify(char32_t c) {
    if (c < 0x80) {
      if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return kLetter;
      if (c >= '0' && c <= '9') return kNumber;
      return is_regex_space(c) ? kSpace : kOther;
    }
    if (is_regex_space(c)) return kSpace;
    switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
      case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT: case UTF8PROC_CATEGORY_LM:
      case UTF8PROC_CATEGORY_LO: return kLetter;
      case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO: return kNumber;
      default: return kOther;
    }
  }

  // ---- pre-tokenization and BPE ---------------------------------------------------------------
  /// Steps 2-4 on one stripped piece of text that holds no special token.
  void tokenize_piece(std::string_view piece, Scratch& s, std::vector<std::int32_t>& out) const {
    if (piece.empty()) return;
    if (opt_.add_prefix_space) {
      s.piece.assign(1, ' ');
      s.piece.append(piece);
      piece = s.piece;
    }
    // code points: class and byte offset
    s.cls.clear();
    s.cps.clear();
    s.offs.clear();
    for (std::size_t i = 0; i < piece.size();) {
      char32_t c;
      const std::size_t n = decode_at(piece, i, c);
      s.cps.push_back(c);
      s.cls.push_back(classify(c));
      s.offs.push_back(static_cast<std::uint32_t>(i));
      i += n;
    }
    const std::size_t n = s.cps.size();
    s.offs.push_back(static_cast<std::uint32_t>(piece.size()));
    auto chunk = [&](std::size_t b, std::size_t e) { bpe(piece.substr(s.offs[b], s.offs[e] - s.offs[b]), s, out); };
    std::size_t i = 0;
    while (i < n) {
      const char32_t c = s.cps[i];
      // 's 't 're 've 'm 'll 'd
      if (c == U'\'' && i + 1 < n) {
        const char32_t c1 = s.cps[i + 1], c2 = i + 2 < n ? s.cps[i + 2] : 0;
        std::size_t len = 0;
        if (c1 == U's' || c1 == U't' || c1 == U'm' || c1 == U'd') len = 2;
        else if ((c1 == U'r' && c2 == U'e') || (c1 == U'v' && c2 == U'e') || (c1 == U'l' && c2 == U'l')) len = 3;
        if (len) {
          chunk(i, i + len);
          i += len;
          continue;
        }
      }
      // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+'
      std::size_t j = i;
      if (c == U' ' && i + 1 < n && s.cls[i + 1] != kSpace) j = i + 1;
      if (s.cls[j] != kSpace) {
        const std::uint8_t k = s.cls[j];
        std::size_t e = j + 1;
        while (e < n && s.cls[e] == k) ++e;
        chunk(i, e);
        i = e;
        continue;
      }
      // '\s+(?!\S)', then '\s+'
      std::size_t e = i + 1;
      while (e < n && s.cls[e] == kSpace) ++e;
      if (e < n && e - i >= 2) --e;  // leave the last white space to the word after it
      chunk(i, e);
      i = e;
    }
  }

  /// BPE of one chunk's bytes; ids appended to `out`.
  void bpe(std::string_view w, Scratch& s, std::vector<std::int32_t>& out) const {
    const bool cacheable = cache_.enabled() && w.size() <= kCacheableBytes && w.size() > 1;
    std::size_t h = 0;
    if (cacheable) {
      h = std::hash<std::string_view>()(w);
      if (cache_.get(w, h, out)) return;
    }
    const std::size_t mark = out.size();
    merge_bytes(w, s);
    for (auto id : s.word) out.push_back(id < vocab_size() ? id : unk_);
    if (cacheable) cache_.put(w, h, out.data() + mark, out.size() - mark);
  }

  /// The merged symbols of the bytes of `w` into s.word. Each round takes the lowest rank among
  /// the pairs present and merges its occurrences left to right (v2.1.1's loop), found through a
  /// heap of (rank, position) entries checked against the current symbols when taken.
  void merge_bytes(std::string_view w, Scratch& s) const {
    const auto n = static_cast<std::int32_t>(w.size());
    auto& sym = s.sym;
    auto& next = s.next;
    auto& prev = s.prev;
    auto& heap = s.heap;
    sym.resize(n);
    next.resize(n);
    prev.resize(n);
    for (std::int32_t i = 0; i < n; ++i) {
      sym[i] = byte_sym_[static_cast<unsigned char>(w[i])];
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    heap.clear();
    auto push = [&](std::int32_t p) {  // the pair starting at node p, when it has a rank
      const std::int32_t q = next[p];
      if (q < 0) return;
      auto it = merges_.find(key(sym[p], sym[q]));
      if (it == merges_.end()) return;
      heap.push_back((static_cast<std::int64_t>(it->second.rank) << 32) | p);
      std::push_heap(heap.begin(), heap.end(), std::greater<>());
    };
    for (std::int32_t i = 0; i + 1 < n; ++i) push(i);
    while (!heap.empty()) {
      const std::int64_t rank = heap.front() >> 32;
      s.merged.clear();
      while (!heap.empty() && (heap.front() >> 32) == rank) {
        std::pop_heap(heap.begin(), heap.end(), std::greater<>());
        const auto p = static_cast<std::int32_t>(heap.back() & 0xFFFFFFFF);
        heap.pop_back();
        const std::int32_t q = p >= 0 && sym[p] >= 0 ? next[p] : -1;
        if (q < 0) continue;
        auto it = merges_.find(key(sym[p], sym[q]));
        if (it == merges_.end() || it->second.rank != rank) continue;  // stale: the pair there changed
        sym[p] = it->second.result;
        sym[q] = -1;
        next[p] = next[q];
        if (next[q] >= 0) prev[next[q]] = p;
        s.merged.push_back(p);
      }
      // the pairs the merged symbols now form (never the pair just merged: a merged piece is
      // longer than either of its parts)
      for (const std::int32_t p : s.merged) {
        if (prev[p] >= 0) push(prev[p]);
        push(p);
      }
    }
    s.word.clear();
    for (std::int32_t i = 0; i >= 0 && i < n; i = next[i]) s.word.push_back(sym[i]);
  }

  BpeOptions opt_;
  std::vector<std::string> tokens_, bytes_;  // id -> piece, id -> the bytes it stands for
  std::vector<std::uint8_t> present_;         // id -> in vocab.json
  std::unordered_map<std::string, std::int32_t> ids_;
  std::unordered_map<std::uint64_t, Merge> merges_;
  std::array<std::int32_t, 256> byte_sym_{};
  std::int32_t bos_ = -1, eos_ = -1, pad_ = -1, unk_ = -1, mask_ = -1;
  std::array<Special, 5> special_{};
  mutable WordCache cache_;
};

}  // namespace dynabert::text
