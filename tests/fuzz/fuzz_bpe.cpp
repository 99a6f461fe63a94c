// The byte-level BPE tokenizer: vocab.json / merges.txt loading and text encoding.
//
// Input: byte 0 holds option flags, byte 1 the max_length of encode(), the rest is the payload.
//   flags & 0x01  add_prefix_space    flags & 0x02  strict_utf8    flags & 0x04  no word cache
//   flags & 0x08  the payload starts with a vocab.json and a merges.txt, each ended by a NUL byte
//   flags & 0x10  encode a pair: the text is split at its first NUL byte
// Without 0x08 the files are GPT-2's with RoBERTa's specials (.data/roberta-bpe, fetched by
// scripts/fetch-data.sh bpe) or, when they were not fetched, the fixture of tests/fixtures/bpe.
// Invariants: ids inside the vocabulary; the same ids with and without the word cache; encode's
// length is min(tokens + specials, max_length); and, on files with a piece for every byte, text
// that is valid UTF-8 without '<' or surrounding white space decodes back to itself.
#include <cstdint>
#include <memory>

#include <dynabert/text/bpe.hpp>

#include "fuzz_common.hpp"

using namespace dynabert;
using namespace dynabert::text;

namespace {

struct Files {
  BpeTokenizer::VocabEntries vocab;
  BpeTokenizer::Merges merges;
  bool real = false;
};

const Files& default_files() {
  static const Files f = [] {
    const std::string real = std::string(DYNABERT_SOURCE_DIR) + "/.data/roberta-bpe";
    std::error_code ec;
    const bool have = std::filesystem::is_regular_file(real + "/vocab.json", ec);
    const std::string dir = have ? real : std::string(DYNABERT_SOURCE_DIR) + "/tests/fixtures/bpe";
    return Files{BpeTokenizer::read_vocab_json(dir + "/vocab.json"), BpeTokenizer::read_merges_txt(dir + "/merges.txt"), have};
  }();
  return f;
}

void check_ids(const std::vector<std::int32_t>& ids, int vocab_size) {
  for (auto id : ids) FUZZ_CHECK(id >= 0 && id < vocab_size);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const unsigned flags = data[0];
  const int max_length = data[1];
  std::string_view payload = fuzz::view(data + 2, size - 2);
  BpeOptions opt;
  opt.add_prefix_space = flags & 0x01;
  opt.strict_utf8 = flags & 0x02;
  if (flags & 0x04) opt.cache_words = 0;
  try {
    std::unique_ptr<BpeTokenizer> tok, nocache;
    bool real = false;
    if (flags & 0x08) {
      const auto [vocab_json, rest] = fuzz::split(payload, '\0');
      const auto [merges_txt, text] = fuzz::split(rest, '\0');
      payload = text;
      const std::string dir = fuzz::folder("bpe");
      fuzz::write_file(dir + "/vocab.json", vocab_json);
      fuzz::write_file(dir + "/merges.txt", merges_txt);
      BpeOptions o = opt;
      tok = std::make_unique<BpeTokenizer>(BpeTokenizer::read_vocab_json(dir + "/vocab.json"),
                                           BpeTokenizer::read_merges_txt(dir + "/merges.txt"), o, dir + "/vocab.json",
                                           dir + "/merges.txt");
      o.cache_words = 0;
      nocache = std::make_unique<BpeTokenizer>(BpeTokenizer::read_vocab_json(dir + "/vocab.json"),
                                               BpeTokenizer::read_merges_txt(dir + "/merges.txt"), o);
    }
    // one tokenizer per combination of options over the default files (building one per input
    // would dominate the run time), and its twin without a cache
    static std::unique_ptr<BpeTokenizer> cached[8], uncached[8];
    const unsigned k = flags & 0x07;
    if (!tok && !cached[k]) {
      const Files& f = default_files();
      cached[k] = std::make_unique<BpeTokenizer>(f.vocab, f.merges, opt);
      BpeOptions o = opt;
      o.cache_words = 0;
      uncached[k] = std::make_unique<BpeTokenizer>(f.vocab, f.merges, o);
    }
    if (!tok) real = default_files().real;
    const BpeTokenizer& t = tok ? *tok : *cached[k];
    const BpeTokenizer& u = tok ? *nocache : *uncached[k];
    const int V = t.vocab_size();
    const auto ids = t.tokenize(payload);
    check_ids(ids, V);
    FUZZ_CHECK(u.tokenize(payload) == ids);
    FUZZ_CHECK(t.tokenize(payload) == ids);  // again, from the cache
    FUZZ_CHECK(t.tokenize_strings(payload).size() == ids.size());
    const std::string back = t.decode(ids, false);
    FUZZ_CHECK(BpeTokenizer::valid_utf8(back));
    if (real && !opt.add_prefix_space && BpeTokenizer::valid_utf8(payload) && payload.find('<') == std::string_view::npos &&
        !payload.empty()) {
      char32_t first = static_cast<unsigned char>(payload.front()), last = static_cast<unsigned char>(payload.back());
      if (!BpeTokenizer::is_python_space(first) && !BpeTokenizer::is_python_space(last) && first < 0x80 && last < 0x80)
        FUZZ_CHECK(back == payload);
    }
    if (flags & 0x10) {
      const auto [a, b] = fuzz::split(payload, '\0');
      if (max_length >= 4) {
        const Encoding e = t.encode(a, b, max_length);
        FUZZ_CHECK(e.ids.size() == std::min<std::size_t>(t.tokenize(a).size() + t.tokenize(b).size() + 4,
                                                         static_cast<std::size_t>(max_length)));
        FUZZ_CHECK(e.ids.size() == e.type_ids.size());
        check_ids(e.ids, V);
      }
    } else if (max_length >= 2) {
      const Encoding e = t.encode(payload, std::nullopt, max_length);
      FUZZ_CHECK(e.ids.size() == std::min<std::size_t>(ids.size() + 2, static_cast<std::size_t>(max_length)));
      check_ids(e.ids, V);
    }
    fuzz::accepted("BpeTokenizer");
  } catch (const Error& e) {
    fuzz::rejected("BpeTokenizer", e);
  }
  return 0;
}
