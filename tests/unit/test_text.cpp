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
  // no token: [CLS] [SEP], as the reference
  BOOST_TEST(t.encode("  \t ").ids == I({2, 3}), boost::test_tools::per_element());
  BOOST_TEST(t.encode("", std::string_view("\x01")).ids == I({2, 3, 3}), boost::test_tools::per_element());
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
  // Python's str.lower(): a word-final capital sigma becomes the final form (after a cased letter,
  // including Other_Lowercase ones like U+00AA); dotted capital I; U+2028 splits words as
  // str.split() does; text of white space only has no token; a NUL inside a special token breaks it
  // (ids from tools/check_tokenizer.py's reference)
  BOOST_TEST(t.tokenize("ΟΔΟΣ ΣΑΣ Σ") == I({1169, 29722, 15297, 1173, 14608, 19579, 1173}), boost::test_tools::per_element());
  BOOST_TEST(t.tokenize("\u00aaΣ") == I({1076, 19579}), boost::test_tools::per_element());
  BOOST_TEST(t.tokenize("İstanbul") == I({9960}), boost::test_tools::per_element());
  BOOST_TEST(t.tokenize("line\u2028break") == I({2240, 3338}), boost::test_tools::per_element());
  BOOST_TEST(t.tokenize("   ").empty());
  BOOST_TEST(t.tokenize(std::string("[C\0LS]", 6)) == I({1031, 18856, 2015, 1033}), boost::test_tools::per_element());
}

// ---- dataset readers and splits -----------------------------------------------------------------
#include <dynabert/text/datasets.hpp>
#include <dynabert/train/data.hpp>

namespace {
struct Tmp {
  std::filesystem::path dir = std::filesystem::temp_directory_path() / ("dynabert_text_" + std::to_string(::getpid()));
  Tmp() { std::filesystem::create_directories(dir); }
  ~Tmp() { std::filesystem::remove_all(dir); }
  std::string write(const std::string& name, const std::string& content) const {
    std::ofstream(dir / name, std::ios::binary) << content;
    return (dir / name).string();
  }
};
template <class F>
std::string error_of(F&& f) {
  try { f(); } catch (const Error& e) { return e.what(); }
  return "<no exception>";
}
bool has(const std::string& s, const std::string& p) { return s.find(p) != std::string::npos; }

/// Runs a test only when scripts/fetch-data.sh has fetched `what` into .data/`path`.
struct Fetched {
  std::string path, what;
  boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) const {
    boost::test_tools::assertion_result r(std::filesystem::exists(std::string(DYNABERT_SOURCE_DIR) + "/.data/" + path));
    r.message() << "run scripts/fetch-data.sh " << what;
    return r;
  }
};
}  // namespace

BOOST_AUTO_TEST_CASE(readers_parse_and_name_errors) {
  Tmp t;
  auto s = read_sentiment_json(t.write("s.json", R"([{"text":"Good.","class":1},{"text":"Bad!","class":0},{"text":"","class":null}])"));
  BOOST_TEST(s.size() == 2u);
  BOOST_TEST(s[0].text == "Good.");
  BOOST_TEST(s[1].label == 0);
  BOOST_TEST(has(error_of([&] { read_sentiment_json(t.write("b.json", R"([{"text":"x","class":"1"}])")); }), "record 0 has no integer 'class'"));
  auto j = read_jsonl(t.write("d.jsonl", "{\"text\": \"a b\", \"label\": 2}\n\n{\"text\": \"c\", \"label\": 0}\n"));
  BOOST_TEST(j.size() == 2u);
  BOOST_TEST(j[0].label == 2);
  BOOST_TEST(has(error_of([&] { read_jsonl(t.write("e.jsonl", "{\"text\": \"a\"}\n")); }), "e.jsonl:1: 'label' must be an integer"));
  auto r = read_jsonl(t.write("r.jsonl", "{\"s1\": \"a\", \"s2\": \"b\", \"score\": 3.5}\n"), "s1", "score", true, "s2");
  BOOST_TEST(r[0].target == 3.5);
  BOOST_TEST(r[0].text_b == "b");
  auto v = read_tsv(t.write("d.tsv", "id\tsentence\tlabel\n1\thello world\t1\n2\tbye\t0\n"), "sentence", "label");
  BOOST_TEST(v.size() == 2u);
  BOOST_TEST(v[1].text == "bye");
  BOOST_TEST(has(error_of([&] { read_tsv(t.write("f.tsv", "sentence\tlabel\nhello\t1\textra\n"), "sentence", "label"); }), "f.tsv:2: 3 fields"));
  BOOST_TEST(has(error_of([&] { read_tsv(t.write("g.tsv", "sentence\tlabel\nhello\tyes\n"), "sentence", "label"); }), "label 'yes' is not a number"));
  BOOST_TEST(has(error_of([&] { read_tsv(t.write("h.tsv", "a\tb\n"), "sentence", "b"); }), "no column 'sentence'"));
  std::filesystem::create_directories(t.dir / "brown");
  t.write("brown/ca01", "\n\n\tThe/at jury/nn said/vbd ``/`` no/at ''/'' ./.\n\n\tIt/pps ended/vbd ./.\n");
  t.write("brown/README", "not a corpus file");
  auto b = read_brown_sentences((t.dir / "brown").string());
  BOOST_TEST(b == std::vector<std::string>({"The jury said \" no \" .", "It ended ."}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(splits_are_seeded_and_cover_everything) {
  const auto a = split(1000, 0.8, 0.1, 7), b = split(1000, 0.8, 0.1, 7), c = split(1000, 0.8, 0.1, 8);
  BOOST_TEST(a.train == b.train, boost::test_tools::per_element());
  BOOST_TEST(!(a.train == c.train));
  BOOST_TEST(a.train.size() == 800u);
  BOOST_TEST(a.dev.size() == 100u);
  BOOST_TEST(a.test.size() == 100u);
  std::vector<int> seen(1000, 0);
  for (auto* part : {&a.train, &a.dev, &a.test}) for (auto i : *part) ++seen[i];
  BOOST_TEST(std::all_of(seen.begin(), seen.end(), [](int v) { return v == 1; }));
  BOOST_CHECK_THROW(split(10, 0.9, 0.2, 1), InputError);
  auto tok = small();
  const std::vector<LabelledText> data = {{"hello world", "", 1, 0}, {"the cafe", "hello", 0, 0}};
  const auto ds = dynabert::train::to_dataset(tok, data);
  BOOST_TEST(ds[0].ids == I({2, 8, 9, 3}), boost::test_tools::per_element());
  BOOST_TEST(ds[1].types == I({0, 0, 0, 0, 1, 1}), boost::test_tools::per_element());
  BOOST_TEST(ds[1].label == 0);
}

BOOST_AUTO_TEST_CASE(real_sentiment_and_brown_files, *boost::unit_test::precondition(Fetched{"sentiment", "sentiment"})) {
  const std::string d = std::string(DYNABERT_SOURCE_DIR) + "/.data";
  for (const char* f : {"amazon", "imdb", "yelp"}) {
    const auto s = read_sentiment_json(d + "/sentiment/package/test/fixtures/" + f + ".json");
    BOOST_TEST(s.size() == 1000u, f);
    BOOST_TEST(std::count_if(s.begin(), s.end(), [](auto& x) { return x.label == 1; }) == 500, f);
  }
  if (std::filesystem::exists(d + "/brown/package/ca01")) {
    const auto b = read_brown_sentences(d + "/brown/package");
    BOOST_TEST(b.size() > 50000u);
    BOOST_TEST(b[0].rfind("The Fulton County Grand Jury said Friday", 0) == 0u);
  }
}

// ---- mail cleaning (text/mail.hpp) ----
#include <dynabert/text/mail.hpp>


BOOST_AUTO_TEST_CASE(mail_transfer_encodings_and_headers) {
  BOOST_TEST(decode_base64("aGVs\nbG8gd29y bGQ=") == "hello world");
  BOOST_TEST(decode_quoted_printable("caf=E9 =\nsoft=3Dbreak =ZZ") == "caf\xE9 soft=break =ZZ");
  BOOST_TEST(decode_quoted_printable("a_b", true) == "a b");
  // RFC 2047: B and Q words, charsets, the space between adjacent encoded words dropped
  BOOST_TEST(decode_header("=?utf-8?B?w6ljb2xl?= =?ISO-8859-1?Q?caf=E9_noir?= end") == "\xC3\xA9" "cole" "caf\xC3\xA9 noir end");
  BOOST_TEST(decode_header("plain =?bogus") == "plain =?bogus");
  // charsets: declared ones through iconv, ISO-8859-1 read as Windows-1252, bad bytes as Latin-1
  BOOST_TEST(to_utf8("\x93quoted\x94", "iso-8859-1") == "\xE2\x80\x9Cquoted\xE2\x80\x9D");
  BOOST_TEST(to_utf8("\xC4\xE3\xBA\xC3", "gb2312") == "\xE4\xBD\xA0\xE5\xA5\xBD");  // 你好
  BOOST_TEST(to_utf8("caf\xE9", "") == "caf\xC3\xA9");           // undeclared, not UTF-8
  BOOST_TEST(to_utf8("caf\xC3\xA9", "us-ascii") == "caf\xC3\xA9");  // mislabelled UTF-8 kept
  BOOST_TEST(to_utf8("\x81", "no-such-charset") == "\xC2\x81");
}

BOOST_AUTO_TEST_CASE(html_is_reduced_to_its_text) {
  const std::string t = html_to_text("<!DOCTYPE html><html><head><title>t</title><style>p{x}</style></head>"
                                     "<body><p>Buy&nbsp;now &amp; save &#36;5 &#x263A;</p><!-- hidden --><script>x<y</script>"
                                     "a < b<br>end &bogus; &#xD800;</body></html>");
  BOOST_TEST(mail_detail::collapse_whitespace(t) == "Buy now & save $5 \xE2\x98\xBA a < b end &bogus; &#xD800;");
  BOOST_TEST(html_to_text("a<br/>b<span>c</span>d") == "a\nb c d");  // block tags break lines
}

BOOST_AUTO_TEST_CASE(mime_multipart_mail_is_cleaned) {
  const std::string raw =
      "From: someone@example.com\r\n"
      "Subject: =?iso-8859-1?q?R=E9sum=E9?=\r\n"
      "  of the day\r\n"
      "Content-Type: multipart/mixed; boundary=\"OUT\"\r\n"
      "\r\n"
      "preamble is ignored\r\n"
      "--OUT\r\n"
      "Content-Type: multipart/alternative; boundary=IN\r\n"
      "\r\n"
      "--IN\r\n"
      "Content-Type: text/html; charset=windows-1252\r\n"
      "\r\n"
      "<b>html twin</b>\r\n"
      "--IN\r\n"
      "Content-Type: text/plain; charset=\"iso-8859-1\"\r\n"
      "Content-Transfer-Encoding: quoted-printable\r\n"
      "\r\n"
      "Plain caf=E9 text,=\r\n"
      " joined.\r\n"
      "--IN--\r\n"
      "--OUT\r\n"
      "Content-Type: image/gif\r\n"
      "Content-Transfer-Encoding: base64\r\n"
      "\r\n"
      "R0lGODlhAQABAAAAACw=\r\n"
      "--OUT\r\n"
      "Content-Type: text/html\r\n"
      "Content-Transfer-Encoding: base64\r\n"
      "\r\n"
      "PHA+QmFzZTY0IDxpPmh0bWw8L2k+PC9wPg==\r\n"
      "--OUT--\r\n"
      "epilogue\r\n";
  const MailText m = parse_mail(raw);
  BOOST_TEST(m.subject == "R\xC3\xA9sum\xC3\xA9 of the day");
  BOOST_TEST(m.body == "Plain caf\xC3\xA9 text, joined. Base64 html");
  BOOST_TEST(m.text() == m.subject + "\n" + m.body);
  // no MIME headers at all, HTML without a content type, garbage: never throws, always UTF-8
  BOOST_TEST(parse_mail("Subject: hi\n\n<html><p>x</p></html>").body == "x");
  BOOST_TEST(parse_mail("no headers here\n\xFF\xFE").body == "no headers here \xC3\xBF\xC3\xBE");
  BOOST_TEST(parse_mail("").text().empty());
  Tmp t;
  BOOST_TEST(has(error_of([&] { read_spam_assassin((t.dir / "none").string()); }), "fetch-data.sh spam"));
  BOOST_TEST(has(error_of([&] { read_spam_assassin(t.dir.string()); }), "no <group>/*.txt mails"));
  BOOST_TEST(parse_mail("Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: text/plain\n\nunterminated").body ==
             "unterminated");
}

BOOST_AUTO_TEST_CASE(real_spam_assassin_corpus, *boost::unit_test::precondition(Fetched{"spam/package/data", "spam"})) {
  SpamAssassinStats st;
  const auto mails = read_spam_assassin(std::string(DYNABERT_SOURCE_DIR) + "/.data/spam/package/data", &st);
  BOOST_TEST(st.files == 6046u);
  BOOST_TEST(st.not_utf8 == 500u);  // the raw files that are not valid UTF-8, as documented
  BOOST_TEST(st.ham + st.spam + st.duplicates + st.empty == st.files);
  BOOST_TEST(st.empty < 10u);
  BOOST_TEST(mails.size() == st.ham + st.spam);
  BOOST_TEST((st.duplicates > 50u && st.duplicates < 200u), "duplicates " << st.duplicates);
  BOOST_TEST(std::abs(static_cast<double>(st.spam) / mails.size() - 0.31) < 0.02);
  std::size_t html_left = 0;  // HTML markup left over (people's "<snip>" in plain text is fine)
  for (const auto& m : mails) {
    BOOST_TEST_REQUIRE(mail_detail::valid_utf8(m.text));
    std::string low = m.text;
    for (auto& c : low) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    for (const char* tag : {"<html", "<body", "<font", "<td", "<br>", "&nbsp;", "</p>"})
      if (low.find(tag) != std::string::npos) { ++html_left; break; }
  }
  BOOST_TEST(html_left < mails.size() / 50, html_left << " mails still hold tags");
}

// ---- byte-level BPE (text/bpe.hpp) ----------------------------------------------------------------
// The committed fixture tests/fixtures/bpe: <s>=0 <pad>=1 </s>=2 <unk>=3, bytes h e l o Ġ(space) w r
// d ' s 1 2 a Ċ(newline) Ã © ! and the merges he, ll, hell, hello, Ġw, or, Ġwor, Ġworl, Ġworld, 's,
// 12, aa, ĠĠ, Ã© (é), in that rank order; <mask>=35. The ids below are derived by hand from it.
#include <dynabert/text/bpe.hpp>

#include <thread>

namespace {
const std::string kBpeSmall = std::string(DYNABERT_FIXTURES_DIR) + "/bpe";
const std::string kBpeReal = std::string(DYNABERT_SOURCE_DIR) + "/.data/roberta-bpe";
BpeTokenizer bpe_small(bool prefix = false, std::size_t cache = 1u << 16) {
  BpeOptions o;
  o.add_prefix_space = prefix;
  o.cache_words = cache;
  return BpeTokenizer(BpeTokenizer::read_vocab_json(kBpeSmall + "/vocab.json"),
                      BpeTokenizer::read_merges_txt(kBpeSmall + "/merges.txt"), o);
}
struct RealBpe {
  boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) const {
    boost::test_tools::assertion_result r(std::filesystem::exists(kBpeReal + "/vocab.json"));
    r.message() << "no " << kBpeReal << "/vocab.json: run scripts/fetch-data.sh bpe";
    return r;
  }
};
/// A folder holding the fixture with one file replaced (the others copied).
struct BpeFolder {
  Tmp t;
  std::string dir;
  explicit BpeFolder(const std::string& file = "", const std::string& content = "") : dir((t.dir / "bpe").string()) {
    std::filesystem::create_directories(dir);
    for (const char* f : {"vocab.json", "merges.txt"}) std::filesystem::copy_file(kBpeSmall + "/" + f, dir + "/" + f);
    if (!file.empty()) std::ofstream(dir + "/" + file, std::ios::binary | std::ios::trunc) << content;
  }
};
}  // namespace

BOOST_AUTO_TEST_CASE(bpe_merges_by_rank_on_the_fixture) {
  auto t = BpeTokenizer::from_folder(kBpeSmall);
  BOOST_TEST(t.vocab_size() == 36);
  BOOST_TEST(t.tokenize("hello world") == I({15, 20}), boost::test_tools::per_element());
  BOOST_TEST(t.tokenize_strings("hello world") == S({"hello", "\xC4\xA0world"}), boost::test_tools::per_element());
  BOOST_TEST(t.tokenize("aaa") == I({28, 27}), boost::test_tools::per_element());  // one pass, left to right
  BOOST_TEST(t.tokenize("aaaa") == I({28, 28}), boost::test_tools::per_element());
  BOOST_TEST(t.tokenize("12 12") == I({26, 8, 26}), boost::test_tools::per_element());  // numbers, " ?\p{N}+"
  BOOST_TEST(t.tokenize("h\xC3\xA9") == I({4, 33}), boost::test_tools::per_element());  // é = bytes C3 A9 -> Ã©
  BOOST_TEST(t.tokenize("!!") == I({34, 34}), boost::test_tools::per_element());
  // a byte with no piece in the vocabulary is <unk> (each byte: U+3000 is 3 bytes)
  BOOST_TEST(t.tokenize("123") == I({26, 3}), boost::test_tools::per_element());
  BOOST_TEST(t.tokenize("hello\u3000world") == I({15, 3, 3, 3, 9, 17, 6, 11}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(bpe_pretokenization_rules) {
  auto t = BpeTokenizer::from_folder(kBpeSmall);
  // white space runs: the last space joins the next word ("\s+(?!\S)")
  BOOST_TEST(t.tokenize("hello  world") == I({15, 8, 20}), boost::test_tools::per_element());
  BOOST_TEST(t.tokenize("hello   world") == I({15, 30, 20}), boost::test_tools::per_element());
  BOOST_TEST(t.tokenize("hello\nworld") == I({15, 29, 9, 17, 6, 11}), boost::test_tools::per_element());
  BOOST_TEST(t.tokenize("hello\u00a0 world") == I({15, 3, 3, 20}), boost::test_tools::per_element());  // NBSP is \s
  // contractions (ASCII apostrophe, lower case only)
  BOOST_TEST(t.tokenize("he's") == I({12, 23}), boost::test_tools::per_element());
  BOOST_TEST(t.tokenize("hello's") == I({15, 23}), boost::test_tools::per_element());
  BOOST_TEST(t.tokenize("he'S") == I({12, 21, 3}), boost::test_tools::per_element());
  // leading and trailing white space is stripped (v2.1.1's split_on_token); add_prefix_space
  // puts one space back
  BOOST_TEST(t.tokenize("  hello  ") == I({15}), boost::test_tools::per_element());
  BOOST_TEST(t.tokenize("  \t\n").empty());
  BOOST_TEST(t.tokenize("").empty());
  auto p = bpe_small(true);
  BOOST_TEST(p.tokenize("hello world") == I({8, 15, 20}), boost::test_tools::per_element());
  BOOST_TEST(p.tokenize("  hello") == I({8, 15}), boost::test_tools::per_element());
  // special tokens: kept whole, the text around them stripped; "<s" alone is text
  BOOST_TEST(t.tokenize("hello<mask> world</s>") == I({15, 35, 9, 17, 6, 11, 2}), boost::test_tools::per_element());
  BOOST_TEST(t.tokenize(" <s> ") == I({0}), boost::test_tools::per_element());
  BOOST_TEST(t.tokenize("<s") == I({3, 22}), boost::test_tools::per_element());
  BOOST_TEST(p.tokenize("<s>hello</s>world") == I({0, 8, 15, 2, 20}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(bpe_rounds_merge_every_occurrence_before_new_pairs) {
  // v2.1.1 merges every occurrence of the lowest-ranked pair, then looks again: with (xy x) ranked
  // before (x y), "xyxy" becomes xy xy (a heap merging one pair at a time would make xyx y)
  BpeTokenizer t({{"<s>", 0}, {"<pad>", 1}, {"</s>", 2}, {"<unk>", 3}, {"x", 4}, {"y", 5}, {"xy", 6}, {"xyx", 7}},
                 {{"xy", "x"}, {"x", "y"}});
  BOOST_TEST(t.tokenize("xyxy") == I({6, 6}), boost::test_tools::per_element());
  BOOST_TEST(t.tokenize("xyx") == I({7}), boost::test_tools::per_element());
  // a long word (the heap keeps it O(n log n)): 100,000 a's are 50,000 aa's
  auto s = bpe_small();
  const auto ids = s.tokenize(std::string(100000, 'a'));
  BOOST_TEST(ids.size() == 50000u);
  BOOST_TEST(std::all_of(ids.begin(), ids.end(), [](auto id) { return id == 28; }));
}

BOOST_AUTO_TEST_CASE(bpe_invalid_utf8_is_replaced_or_rejected) {
  auto t = BpeTokenizer::from_folder(kBpeSmall);
  // U+FFFD (bytes EF BF BD, no pieces here) for the bad byte, as Python's decode(errors='replace')
  BOOST_TEST(t.tokenize("hello\xff") == I({15, 3, 3, 3}), boost::test_tools::per_element());
  BOOST_TEST(BpeTokenizer::replace_invalid_utf8("a\xe2\x82" "b\xed\xa0\x80\xf0\x9f\x98") ==
             "a\uFFFD" "b\uFFFD\uFFFD\uFFFD\uFFFD");  // maximal subparts: truncated, surrogate, truncated
  BOOST_TEST(BpeTokenizer::valid_utf8("h\xC3\xA9 \xF0\x9F\x98\x80"));
  BOOST_TEST(!BpeTokenizer::valid_utf8("\xC0\xAF"));  // overlong
  BpeOptions strict;
  strict.strict_utf8 = true;
  BpeTokenizer ts(BpeTokenizer::read_vocab_json(kBpeSmall + "/vocab.json"),
                  BpeTokenizer::read_merges_txt(kBpeSmall + "/merges.txt"), strict);
  BOOST_CHECK_THROW(ts.tokenize("hello\xff"), InputError);
  BOOST_TEST(ts.tokenize("hello") == I({15}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(bpe_pairs_truncation_batches) {
  auto t = BpeTokenizer::from_folder(kBpeSmall);
  auto e = t.encode("hello", std::string_view("world"));
  BOOST_TEST(e.ids == I({0, 15, 2, 2, 9, 17, 6, 11, 2}), boost::test_tools::per_element());
  BOOST_TEST(e.type_ids == I(9, 0), boost::test_tools::per_element());
  // longest first: a = hello Ġworld Ġ hello (4), b = aa a (2); 7 leaves 3: a loses 2, then the
  // tie 2 = 2 takes from b (v2.1.1's truncate_sequences)
  BOOST_TEST(t.encode("hello world hello", std::string_view("aaa"), 7).ids == I({0, 15, 20, 2, 2, 28, 2}),
             boost::test_tools::per_element());
  BOOST_TEST(t.encode("hello world hello", std::nullopt, 4).ids == I({0, 15, 20, 2}), boost::test_tools::per_element());
  BOOST_TEST(t.encode("hello", std::nullopt, 2).ids == I({0, 2}), boost::test_tools::per_element());
  BOOST_TEST(t.encode("  ").ids == I({0, 2}), boost::test_tools::per_element());
  BOOST_CHECK_THROW(t.encode("hello", std::nullopt, 1), InputError);
  BOOST_CHECK_THROW(t.encode("hello", std::string_view("world"), 3), InputError);
  const auto b = t.encode_batch({"hello", "hello world"});
  BOOST_TEST(b.seq_len == 4);
  BOOST_TEST(b.ids == I({0, 15, 2, 1, 0, 15, 20, 2}), boost::test_tools::per_element());  // padded with <pad> = 1
  BOOST_TEST(b.lengths == I({3, 4}), boost::test_tools::per_element());
  const std::vector<std::string> second = {"world", "aaa"};
  const auto bp = t.encode_batch({"hello", "hello"}, 128, &second);
  BOOST_TEST(bp.lengths == I({9, 7}), boost::test_tools::per_element());
  BOOST_TEST(bp.type_ids == I(18, 0), boost::test_tools::per_element());
  BOOST_TEST(t.special_ids() == I({0, 1, 2}), boost::test_tools::per_element());
  BOOST_TEST((t.bos_id() == 0 && t.cls_id() == 0 && t.eos_id() == 2 && t.sep_id() == 2 && t.pad_id() == 1 &&
              t.unk_id() == 3 && t.mask_id() == 35));
}

BOOST_AUTO_TEST_CASE(bpe_decode_round_trip) {
  auto t = BpeTokenizer::from_folder(kBpeSmall);
  BOOST_TEST(t.decode({0, 15, 20, 2}) == "hello world");
  BOOST_TEST(t.decode({0, 15, 20, 2}, false) == "<s>hello world</s>");
  BOOST_TEST(t.decode({31, 32}) == "\xC3\xA9");
  BOOST_TEST(t.decode({4, 31, 31, 32}) == "h\uFFFD\xC3\xA9");  // a lone C3 byte: U+FFFD, as errors='replace'
  BOOST_CHECK_THROW(t.decode({36}), InputError);
  BOOST_CHECK_THROW(t.decode({-1}), InputError);
  for (const char* s : {"hello world", "hello   world!!", "he's 12\nhello", "h\xC3\xA9llo aaaa"})
    BOOST_TEST(t.decode(t.tokenize(s)) == s);
}

BOOST_AUTO_TEST_CASE(bpe_bad_files_are_format_errors) {
  auto msg = [](const std::string& file, const std::string& content) {
    BpeFolder f(file, content);
    return error_of([&] { BpeTokenizer::from_folder(f.dir); });
  };
  {
    Tmp t;
    BOOST_TEST(has(error_of([&] { BpeTokenizer::from_folder(t.dir.string()); }), "vocab.json: missing"));
    BpeFolder f;
    std::filesystem::remove(f.dir + "/merges.txt");
    BOOST_TEST(has(error_of([&] { BpeTokenizer::from_folder(f.dir); }), "merges.txt: missing"));
  }
  BOOST_TEST(has(msg("vocab.json", "[1, 2]"), "vocab.json: expected a JSON object"));
  BOOST_TEST(has(msg("vocab.json", "{\"<s>\": 0,"), "vocab.json: not valid JSON"));
  BOOST_TEST(has(msg("vocab.json", R"({"<s>": 0, "</s>": 2, "<unk>": 3, "h": 4})"), "vocabulary lacks <pad>"));
  BOOST_TEST(has(msg("vocab.json", R"({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "h": 3})"), "id 3 is given to both"));
  BOOST_TEST(has(msg("vocab.json", R"({"<s>": -1})"), "outside 0.."));
  BOOST_TEST(has(msg("vocab.json", R"({"<s>": "0"})"), "must be an integer"));
  BOOST_TEST(has(msg("merges.txt", "#version: 0.2\nh e\nh x\n"), "merges.txt: merge 2 (h x) names 'x'"));
  BOOST_TEST(has(msg("merges.txt", "#version: 0.2\ne h\n"), "makes 'eh', which is not in the vocabulary"));
  BOOST_TEST(has(msg("merges.txt", "#version: 0.2\nh e l\n"), "merges.txt:2: expected two pieces"));
  BOOST_TEST(has(msg("tokenizer_config.json", R"({"add_prefix_space": "yes"})"), "add_prefix_space must be true or false"));
  BOOST_CHECK_THROW(BpeTokenizer::from_folder(BpeFolder("merges.txt", "h x\n").dir), FormatError);
  // no header line, empty lines, CRLF: accepted
  BOOST_TEST(BpeTokenizer::from_folder(BpeFolder("merges.txt", "h e\r\n\r\nl l\r\n").dir).tokenize("hell") == I({12, 13}),
             boost::test_tools::per_element());
  // a tokenizer_config.json turns add_prefix_space on
  BOOST_TEST(BpeTokenizer::from_folder(BpeFolder("tokenizer_config.json", R"({"add_prefix_space": true})").dir)
                 .tokenize("hello") == I({8, 15}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(bpe_is_shared_by_threads) {
  // one tokenizer, four threads, a cache small enough to be emptied often: the ids of every text
  // are the single-threaded ones
  const auto t = bpe_small(false, 32);
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i) texts.push_back("hello world " + std::string(i % 13, 'a') + " he's 12" + std::to_string(i));
  std::vector<I> want;
  for (const auto& s : texts) want.push_back(bpe_small(false, 0).tokenize(s));
  std::vector<int> bad(4, 0);
  std::vector<std::thread> th;
  for (int k = 0; k < 4; ++k)
    th.emplace_back([&, k] {
      for (int rep = 0; rep < 20; ++rep)
        for (std::size_t i = 0; i < texts.size(); ++i) bad[k] += t.tokenize(texts[(i + k * 7) % texts.size()]) != want[(i + k * 7) % texts.size()];
    });
  for (auto& x : th) x.join();
  BOOST_TEST(bad == std::vector<int>(4, 0), boost::test_tools::per_element());
  BpeTokenizer copy = t;  // a copy starts with an empty cache and gives the same ids
  BOOST_TEST(copy.tokenize(texts[5]) == want[5], boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(bpe_real_gpt2_files_hand_checked_ids, *boost::unit_test::precondition(RealBpe())) {
  auto t = BpeTokenizer::from_folder(kBpeReal);
  BOOST_TEST(t.vocab_size() == 50262);
  BOOST_TEST((t.bos_id() == 0 && t.pad_id() == 1 && t.eos_id() == 2 && t.unk_id() == 3 && t.mask_id() == 50261));
  // GPT-2's ids (encoder.json) + 4: Hello 15496, Ġworld 995, ĠHello 18435
  BOOST_TEST(t.encode("Hello world").ids == I({0, 15500, 999, 2}), boost::test_tools::per_element());
  BOOST_TEST(t.tokenize("I like strawberries.") == I({44, 592, 36977, 17}), boost::test_tools::per_element());
  // accents: H Ã© llo , Ġw Ã¶r ld !
  BOOST_TEST(t.tokenize("H\u00e9llo, w\u00f6rld!") == I({43, 2638, 18802, 15, 270, 30574, 339, 4}), boost::test_tools::per_element());
  BOOST_TEST(t.tokenize("\u4e2d\u6587") == I({40796, 23881, 233}), boost::test_tools::per_element());  // 中文: ä¸Ń æĸ ĩ
  BOOST_TEST(t.tokenize("\U0001F600") == I({47253, 226}), boost::test_tools::per_element());          // 😀: ðŁĺ Ģ
  // numbers (Ġ123 45) and contractions
  BOOST_TEST(t.tokenize("It's 2019: 12345 apples") == I({1030, 342, 13134, 29, 17035, 2235, 22518}),
             boost::test_tools::per_element());
  BOOST_TEST(t.tokenize("don't you'll they've") == I({9103, 474, 349, 1187, 488, 1057}), boost::test_tools::per_element());
  // white space runs (ĉ ĉ, Ġ Ġc) and leading spaces (stripped, unless add_prefix_space)
  BOOST_TEST(t.tokenize("a\t\tb  c") == I({68, 201, 201, 69, 224, 273}), boost::test_tools::per_element());
  BOOST_TEST(t.tokenize("  Hello world") == I({15500, 999}), boost::test_tools::per_element());
  BpeOptions o;
  o.add_prefix_space = true;
  BpeTokenizer p(BpeTokenizer::read_vocab_json(kBpeReal + "/vocab.json"), BpeTokenizer::read_merges_txt(kBpeReal + "/merges.txt"), o);
  BOOST_TEST(p.tokenize("Hello world") == I({18439, 999}), boost::test_tools::per_element());
  // decode(tokenize(x)) == x for valid UTF-8 without surrounding white space or special tokens
  for (const char* s : {"Hello world", "na\u00efve caf\u00e9 \u2014 d\u00e9j\u00e0 vu", "\u4e2d\u6587\u5b57\u7b26 \u65e5\u672c\u8a9e",
                        "\U0001F44D\U0001F3FD \U0001F468\u200D\U0001F469", "a\u0301e\u0308", "tab\t\there\u00a0nbsp\u3000x",
                        "line\r\nbreaks\n\n\nend", "\u0661\u0662\u0663 \u0968 \uff11", "it\u2019s can't", "x\x01y\x7fz"})
    BOOST_TEST(t.decode(t.tokenize(s)) == s);
  BOOST_TEST(t.decode(t.tokenize("bad\xff byte")) == "bad\uFFFD byte");
}

// ---- text::Tokenizer: either tokenizer, chosen by a checkpoint folder's files -------------------
#include <dynabert/text/any_tokenizer.hpp>

BOOST_AUTO_TEST_CASE(any_tokenizer_follows_the_folder_files) {
  namespace fs = std::filesystem;
  const std::string fx = DYNABERT_FIXTURES_DIR;
  const auto wp = dynabert::text::Tokenizer::from_folder(fx + "/wordpiece");
  const auto bpe = dynabert::text::Tokenizer::from_folder(fx + "/bpe");
  BOOST_REQUIRE(wp.wordpiece() && !wp.bpe());
  BOOST_REQUIRE(bpe.bpe() && !bpe.wordpiece());
  // the same answers as the tokenizers themselves, through one interface
  const auto direct_wp = dynabert::text::BertTokenizer::from_folder(fx + "/wordpiece");
  const auto direct_bpe = dynabert::text::BpeTokenizer::from_folder(fx + "/bpe");
  for (const char* s : {"hello world", "the cafes", ""}) {
    BOOST_TEST(wp.encode(s).ids == direct_wp.encode(s).ids);
    BOOST_TEST(bpe.encode(s).ids == direct_bpe.encode(s).ids);
    BOOST_TEST(bpe.tokenize(s) == direct_bpe.tokenize(s));
  }
  const auto batch = bpe.encode_batch({"hello world", "a"}, 16);
  BOOST_TEST(batch.batch == 2);
  BOOST_TEST(batch.ids[batch.seq_len + batch.lengths[1]] == direct_bpe.pad_id());
  BOOST_TEST(bpe.pad_id() == direct_bpe.pad_id());
  BOOST_TEST(bpe.mask_id() == direct_bpe.mask_id());
  BOOST_TEST(bpe.special_ids() == direct_bpe.special_ids());
  BOOST_TEST(bpe.vocab_size() == direct_bpe.vocab_size());
  BOOST_TEST(wp.vocab_size() == direct_wp.vocab().size());
  BOOST_TEST(wp.mask_id() == direct_wp.vocab().find("[MASK]"));
  BOOST_TEST(wp.pad_id() == std::max(0, direct_wp.vocab().find("[PAD]")));
  // a folder with neither: named
  const auto empty = fs::temp_directory_path() / ("dynabert_no_tokenizer_" + std::to_string(::getpid()));
  fs::create_directories(empty);
  try {
    (void)dynabert::text::Tokenizer::from_folder(empty.string());
    BOOST_FAIL("no exception");
  } catch (const dynabert::FormatError& e) {
    BOOST_TEST(std::string(e.what()).find("no tokenizer files") != std::string::npos);
  }
  fs::remove_all(empty);
}

BOOST_AUTO_TEST_CASE(pair_truncation_takes_from_the_second_text_on_a_tie) {
  const auto t = dynabert::text::BertTokenizer::from_folder(std::string(DYNABERT_FIXTURES_DIR) + "/wordpiece");
  const auto a = t.tokenize("hello world"), b = t.tokenize("the resume");
  BOOST_REQUIRE(a.size() == b.size());
  // one token too many for both: Hugging Face's longest_first removes it from the second text
  const auto e = t.encode("hello world", std::string_view("the resume"), static_cast<int>(a.size() + b.size() + 3 - 1));
  BOOST_TEST(std::vector<std::int32_t>(e.ids.begin() + 1, e.ids.begin() + 1 + a.size()) == a);
  BOOST_TEST(e.ids.size() == a.size() + b.size() + 2);
}
