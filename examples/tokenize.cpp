// dynabert_tokenize: the BERT WordPiece tokenizer from the command line. Reads a JSON array of
// strings and writes a JSON array of {"text", "ids"} (the text as tokenized: with --mail, the
// cleaned mail text). tools/check_tokenizer.py compares it with a Python reference.
//
//   dynabert_tokenize --vocab DIR --input texts.json [--mail] [--cased]
#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>

#include <dynabert/io/json.hpp>
#include <dynabert/text/mail.hpp>
#include <dynabert/text/tokenizer.hpp>

using namespace dynabert;

int main(int argc, char** argv) {
  CLI::App app{"Tokenize a JSON array of texts with the BERT WordPiece tokenizer"};
  std::string vocab_dir, input;
  bool mail = false, cased = false;
  app.add_option("--vocab", vocab_dir, "folder with vocab.txt (and tokenizer_config.json)")->required();
  app.add_option("--input", input, "JSON array of strings")->required();
  app.add_flag("--mail", mail, "each text is a raw RFC 822 mail: clean it first (subject + body text)");
  app.add_flag("--cased", cased, "no lowercasing, no accent stripping");
  CLI11_PARSE(app, argc, argv);
  try {
    auto tok = text::BertTokenizer::from_folder(vocab_dir);
    if (cased) {
      text::TokenizerOptions o;
      o.lower_case = false;
      tok = text::BertTokenizer(tok.vocab(), o);
    }
    const auto texts = io::read_json_file(input, 1ull << 30);
    DYNABERT_REQUIRE(texts.is_array(), FormatError, input, ": expected a JSON array of strings");
    io::Json out = io::Json::array();
    for (std::size_t i = 0; i < texts.size(); ++i) {
      DYNABERT_REQUIRE(texts[i].is_string(), FormatError, input, ": element ", i, " is not a string");
      std::string t = texts[i].as_string();
      if (mail) {
        const auto m = text::parse_mail(t);
        t = m.text();
      }
      out.push_back({{"text", t}, {"ids", tok.tokenize(t)}});
    }
    std::cout << out.dump() << "\n";
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
