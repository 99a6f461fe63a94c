// bpe_ids: the BPE tokenizer's side of tools/bpe_reference.py's parity check.
//
//   bpe_ids --vocab DIR --input texts.hex [--add-prefix-space]
//       one text per input line as hex of its bytes; writes per text one line
//       "ids<TAB>hex of decode(ids, skip_special_tokens=false)<TAB>ids of encode(text, next text, 24)"
//       (the next text of the last one is the first)
//   bpe_ids --dump-mails DIR
//       the cleaned SpamAssassin mails (text::read_spam_assassin), as hex, one per line
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <dynabert/text/bpe.hpp>
#include <dynabert/text/mail.hpp>

using namespace dynabert;

namespace {
std::string hex(const std::string& s) {
  static const char* d = "0123456789abcdef";
  std::string h;
  h.reserve(s.size() * 2);
  for (unsigned char c : s) {
    h.push_back(d[c >> 4]);
    h.push_back(d[c & 15]);
  }
  return h;
}
int nibble(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  throw InputError(std::string("not a hex digit: ") + c);
}
std::string unhex(const std::string& h) {
  if (h.size() % 2) throw InputError("odd number of hex digits");
  std::string s(h.size() / 2, '\0');
  for (std::size_t i = 0; i < s.size(); ++i) s[i] = static_cast<char>(nibble(h[2 * i]) * 16 + nibble(h[2 * i + 1]));
  return s;
}
void ids(std::ostream& out, const std::vector<std::int32_t>& v) {
  for (std::size_t i = 0; i < v.size(); ++i) out << (i ? " " : "") << v[i];
}
}  // namespace

int main(int argc, char** argv) {
  std::string vocab, input, mails;
  bool prefix = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--vocab" && i + 1 < argc) vocab = argv[++i];
    else if (a == "--input" && i + 1 < argc) input = argv[++i];
    else if (a == "--dump-mails" && i + 1 < argc) mails = argv[++i];
    else if (a == "--add-prefix-space") prefix = true;
    else {
      std::fprintf(stderr, "usage: bpe_ids --vocab DIR --input texts.hex [--add-prefix-space] | --dump-mails DIR\n");
      return 2;
    }
  }
  try {
    if (!mails.empty()) {
      for (const auto& m : text::read_spam_assassin(mails)) std::cout << hex(m.text) << "\n";
      return 0;
    }
    auto from = text::BpeTokenizer::from_folder(vocab);
    text::BpeOptions opt = from.options();
    opt.add_prefix_space = prefix;
    text::BpeTokenizer tok(text::BpeTokenizer::read_vocab_json(vocab + "/vocab.json"),
                           text::BpeTokenizer::read_merges_txt(vocab + "/merges.txt"), opt);
    std::ifstream in(input);
    if (!in) throw IoError(input + ": cannot open");
    std::vector<std::string> texts;
    for (std::string line; std::getline(in, line);) texts.push_back(unhex(line));
    for (std::size_t i = 0; i < texts.size(); ++i) {
      const auto v = tok.tokenize(texts[i]);
      ids(std::cout, v);
      std::cout << "\t" << hex(tok.decode(v, false)) << "\t";
      ids(std::cout, tok.encode(texts[i], std::string_view(texts[(i + 1) % texts.size()]), 24).ids);
      std::cout << "\n";
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
