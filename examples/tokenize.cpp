// dynabert_tokenize: a checkpoint folder's tokenizer from the command line (WordPiece for vocab.txt,
// GPT-2 byte-level BPE for vocab.json + merges.txt). Reads a JSON array of strings and writes a
// JSON array of {"text", "ids"} (the text as tokenized: with --mail, the cleaned mail text), ids
// without special tokens. tools/check_tokenizer.py compares the WordPiece ids with a Python reference
// (tools/bpe_reference.py does it for BPE through tests/parity).
//
//   dynabert_tokenize --vocab DIR --input texts.json [--mail] [--cased]
#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>

#include <dynabert/io/json.hpp>
#include <dynabert/text/mail.hpp>
#include <dynabert/text/any_tokenizer.hpp>

using namespace dynabert;

int main(int argc, char** argv) {
  CLI::App app{"Tokenize a JSON array of texts with a folder's WordPiece or byte-level BPE tokenizer"};
  std::string vocab_dir, input;
  bool mail = false, cased = false;
  app.add_option("--vocab", vocab_dir, "folder with vocab.txt, or vocab.json + merges.txt (and tokenizer_config.json)")
      ->required();
  app.add_option("--input", input, "JSON array of strings")->required();
  app.add_flag("--mail", mail, "each text is a raw RFC 822 mail: clean it first (subject + body text)");
  app.add_flag("--cased", cased, "WordPiece: no lowercasing, no accent stripping");
  CLI11_PARSE(app, argc, argv);
  try {
    auto tok = text::Tokenizer::from_folder(vocab_dir);
    if (cased) {
      DYNABERT_REQUIRE(tok.wordpiece(), InputError, "--cased is a WordPiece option; ", vocab_dir,
                       " holds a byte-level BPE vocabulary (always cased)");
      text::TokenizerOptions o;
      o.lower_case = false;
      tok = text::BertTokenizer(tok.wordpiece()->vocab(), o);
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
