// The WordPiece tokenizer: each rule of Hugging Face's BertTokenizer on a small committed
// vocabulary, and hand-checked ids on the real bert-base-uncased vocabulary
// (scripts/fetch-data.sh vocab; the test is skipped, and says so, when it has not been fetched).
#define BOOST_TEST_MODULE dynabert_text
#include <boost/test/unit_test.hpp>

#include <filesystem>

#include <dynabert/text/tokenizer.hpp>

using namespace dynabert;
using namespace dynabert::text;
using S = std::vector<std::string>;
using I = std::vector<std::int32_t>;

namespace {
const std::string kSmall = std::string(DYNABERT_FIXTURES_DIR) + "/wordpiece";
const std::string kReal = std::string(DYNABERT_SOURCE_DIR) + "/.data/vocab";
BertTokenizer small() { return BertTokenizer::from_folder(kSmall); }

struct RealVocab {
  boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) const {
    boost::test_tools::assertion_result r(std::filesystem::exists(kReal + "/vocab.txt"));
    r.message() << "no " << kReal << "/vocab.txt: run scripts/fetch-data.sh vocab";
    return r;
  }
};
}  // namespace

BOOST_AUTO_TEST_CASE(wordpiece_greedy_longest_match) {
  auto t = small();
  BOOST_TEST(t.tokenize_strings("unaffable") == S({"un", "##aff", "##able"}), boost::test_tools::per_element());
  BOOST_TEST(t.tokenize_strings("abc") == S({"a", "##b", "##c"}), boost::test_tools::per_element());
  BOOST_TEST(t.tokenize_strings("abd") == S({"[UNK]"}), boost::test_tools::per_element());  // no match: the whole word
  BOOST_TEST(t.tokenize_strings("xy xyy") == S({"x", "##y", "x", "##y", "##y"}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(lowercase_accents_punctuation_whitespace) {
  auto t = small();
  BOOST_TEST(t.tokenize_strings("Hello, WORLD!") == S({"hello", ",", "world", "!"}), boost::test_tools::per_element());
  BOOST_TEST(t.tokenize_strings("Café résumé naïve") == S({"cafe", "resume", "naive"}), boost::test_tools::per_element());
  BOOST_TEST(t.tokenize_strings("don't") == S({"don", "'", "t"}), boost::test_tools::per_element());
  BOOST_TEST(t.tokenize_strings("  hello\t\n\r world\u00a0\u2003hello ") == S({"hello", "world", "hello"}),
             boost::test_tools::per_element());
  // unicode punctuation (category P*) splits too: U+2014 em dash, U+00BF inverted question mark
  BOOST_TEST(t.tokenize_strings("hello\u2014world") == S({"hello", "[UNK]", "world"}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(control_characters_cjk_emoji_long_words) {
  auto t = small();
  BOOST_TEST(t.tokenize_strings(std::string("hel\x01lo\x7f") + "\u200b" + " world\xef\xbf\xbd") == S({"hello", "world"}),
             boost::test_tools::per_element());  // C0 control, DEL, zero-width space (Cf), U+FFFD
  BOOST_TEST(t.tokenize_strings("the中文hello") == S({"the", "中", "文", "hello"}), boost::test_tools::per_element());
  BOOST_TEST(t.tokenize_strings("hello \U0001F600") == S({"hello", "[UNK]"}), boost::test_tools::per_element());
  BOOST_TEST(t.tokenize_strings(std::string(100, 'a')).size() == 1u);
  BOOST_TEST(t.tokenize_strings(std::string(101, 'a')) == S({"[UNK]"}), boost::test_tools::per_element());
  BOOST_TEST(t.tokenize("").empty());
  BOOST_TEST(t.tokenize_strings("[MASK]hello[UNK]") == S({"[MASK]", "hello", "[UNK]"}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(invalid_utf8_is_dropped_or_rejected) {
  auto t = small();
  const std::string bad = std::string("hello") + "\xff\xfe" + " wor\xc3" + "ld";
  BOOST_TEST(t.tokenize_strings(bad) == S({"hello", "world"}), boost::test_tools::per_element());
  TokenizerOptions strict;
  strict.strict_utf8 = true;
  BertTokenizer ts(Vocab::load(kSmall + "/vocab.txt"), strict);
  BOOST_CHECK_THROW(ts.tokenize(bad), InputError);
}

BOOST_AUTO_TEST_CASE(pairs_truncation_and_errors) {
  auto t = small();
  auto e = t.encode("hello world", std::string_view("the cafe"), 16);
  BOOST_TEST(e.ids == I({2, 8, 9, 3, 19, 20, 3}), boost::test_tools::per_element());
  BOOST_TEST(e.type_ids == I({0, 0, 0, 0, 1, 1, 1}), boost::test_tools::per_element());
  // longest first: a has 4 tokens, b 1; max 6 leaves 3 for the texts -> a keeps 2
  auto tr = t.encode("hello world hello world", std::string_view("the"), 6);
  BOOST_TEST(tr.ids == I({2, 8, 9, 3, 19, 3}), boost::test_tools::per_element());
  BOOST_CHECK_THROW(t.encode("  \t "), InputError);
  BOOST_CHECK_THROW(t.encode("hello", std::nullopt, 2), InputError);
  // cased option: no lowercasing, no accent stripping
  TokenizerOptions cased;
  cased.lower_case = false;
  BertTokenizer tc(Vocab::load(kSmall + "/vocab.txt"), cased);
  BOOST_TEST(tc.tokenize_strings("Hello hello") == S({"[UNK]", "hello"}), boost::test_tools::per_element());
  BOOST_CHECK_THROW(Vocab::load(kSmall + "/missing.txt"), FormatError);
  // a copied vocabulary keeps working after the original is gone
  Vocab copy;
  { Vocab v = Vocab::load(kSmall + "/vocab.txt"); copy = v; }
  BOOST_TEST(copy.find("##able") == 7);
}

BOOST_AUTO_TEST_CASE(real_vocabulary_hand_checked_ids, *boost::unit_test::precondition(RealVocab())) {
  auto t = BertTokenizer::from_folder(kReal);
  BOOST_TEST(t.vocab().size() == 30522);
  // ids read off the official vocab.txt (0-based line numbers)
  BOOST_TEST(t.encode("I like strawberries.").ids == I({101, 1045, 2066, 13137, 20968, 1012, 102}),
             boost::test_tools::per_element());
  BOOST_TEST(t.tokenize("Héllo, wörld!") == I({7592, 1010, 2088, 999}), boost::test_tools::per_element());
  // special tokens written in the text stay whole (exact case); other brackets split
  BOOST_TEST(t.tokenize("hello [MASK]![SEP]") == I({7592, 103, 999, 102}), boost::test_tools::per_element());
  BOOST_TEST(t.tokenize("[cls]") == I({1031, 18856, 2015, 1033}), boost::test_tools::per_element());
}
