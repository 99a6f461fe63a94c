// The WordPiece tokenizer: vocab.txt loading and text encoding.
//
// Input: byte 0 holds option flags, byte 1 the max_length of encode(), the rest is the payload.
//   flags & 0x01  lower_case        flags & 0x02  strip_accents set, to (flags & 0x04)
//   flags & 0x08  no CJK spacing    flags & 0x10  strict_utf8
//   flags & 0x20  the payload starts with a vocab.txt, ended by the first NUL byte
//   flags & 0x40  encode a pair: the text is split at its first NUL byte
//   flags & 0x80  max_input_chars_per_word = 8 instead of 100
// Without 0x20 the vocabulary is bert-base-uncased's (.data/vocab/vocab.txt, fetched by
// scripts/fetch-data.sh) or, when it was not fetched, the small one of tests/fixtures/wordpiece.
#include <cstdint>
#include <memory>

#include <dynabert/text/tokenizer.hpp>

#include "fuzz_common.hpp"

using namespace dynabert;
using namespace dynabert::text;

namespace {

const Vocab& default_vocab() {
  static const Vocab v = [] {
    const std::string real = std::string(DYNABERT_SOURCE_DIR) + "/.data/vocab/vocab.txt";
    std::error_code ec;
    return Vocab::load(std::filesystem::is_regular_file(real, ec) ? real
                                                                  : std::string(DYNABERT_SOURCE_DIR) + "/tests/fixtures/wordpiece/vocab.txt");
  }();
  return v;
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
  TokenizerOptions opt;
  opt.lower_case = flags & 0x01;
  if (flags & 0x02) opt.strip_accents = (flags & 0x04) != 0;
  opt.tokenize_chinese_chars = !(flags & 0x08);
  opt.strict_utf8 = flags & 0x10;
  opt.max_input_chars_per_word = flags & 0x80 ? 8 : 100;
  try {
    std::unique_ptr<BertTokenizer> tok;
    if (flags & 0x20) {
      const auto [vocab_txt, rest] = fuzz::split(payload, '\0');
      payload = rest;
      const std::string path = fuzz::scratch() + "/vocab.txt";
      fuzz::write_file(path, vocab_txt);
      tok = std::make_unique<BertTokenizer>(Vocab::load(path), opt);
    }
    // one tokenizer per combination of options over the default vocabulary (copying it per input
    // would dominate the run time)
    static std::unique_ptr<BertTokenizer> cached[256];
    std::unique_ptr<BertTokenizer>& shared = cached[flags & 0x9f];
    if (!tok && !shared) shared = std::make_unique<BertTokenizer>(default_vocab(), opt);
    BertTokenizer* t = tok ? tok.get() : shared.get();
    const int V = t->vocab().size();
    const auto ids = t->tokenize(payload);
    check_ids(ids, V);
    const auto strings = t->tokenize_strings(payload);
    FUZZ_CHECK(strings.size() == ids.size());
    if (flags & 0x40) {
      const auto [a, b] = fuzz::split(payload, '\0');
      const Encoding e = t->encode(a, b, max_length);
      FUZZ_CHECK(static_cast<int>(e.ids.size()) <= max_length && e.ids.size() == e.type_ids.size());
      check_ids(e.ids, V);
    } else {
      const Encoding e = t->encode(payload, std::nullopt, max_length);
      FUZZ_CHECK(static_cast<int>(e.ids.size()) <= max_length && e.ids.size() == e.type_ids.size());
      FUZZ_CHECK(e.ids.size() == std::min<std::size_t>(ids.size() + 2, static_cast<std::size_t>(max_length)));
      check_ids(e.ids, V);
    }
    fuzz::accepted("BertTokenizer");
  } catch (const Error& e) {
    fuzz::rejected("BertTokenizer", e);
  }
  return 0;
}
