// The data set readers, each on the input as its file: the UCI sentiment JSON, JSONL (class and
// regression labels, with and without a second text), TSV with a header row (the same variants),
// a Brown corpus file (folder with the input as "ca01") and a SpamAssassin corpus folder (the
// input as one mail of a spam group).
#include <cstdint>

#include <dynabert/text/datasets.hpp>
#include <dynabert/text/mail.hpp>

#include "fuzz_common.hpp"

using namespace dynabert;
using namespace dynabert::text;

namespace {

template <class F>
void expect_named_errors(const char* what, F&& f) {
  try {
    f();
    fuzz::accepted(what);
  } catch (const Error& e) {
    fuzz::rejected(what, e);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes = fuzz::view(data, size);
  static const std::string file = fuzz::scratch() + "/data";
  static const std::string brown = fuzz::folder("brown");
  static const std::string spam = fuzz::folder("spam");
  static const std::string spam_group = fuzz::folder("spam/spam-1");
  fuzz::write_file(file, bytes);
  expect_named_errors("read_sentiment_json", [&] { read_sentiment_json(file); });
  expect_named_errors("read_jsonl", [&] { read_jsonl(file); });
  expect_named_errors("read_jsonl (regression, pair)", [&] { read_jsonl(file, "sentence", "score", /*regression=*/true, "sentence2"); });
  expect_named_errors("read_tsv", [&] { read_tsv(file, "text", "label"); });
  expect_named_errors("read_tsv (regression, pair)", [&] { read_tsv(file, "sentence1", "score", /*regression=*/true, "sentence2"); });
  fuzz::write_file(brown + "/ca01", bytes);
  expect_named_errors("read_brown_sentences", [&] {
    for (const auto& s : read_brown_sentences(brown)) FUZZ_CHECK(!s.empty());
  });
  fuzz::write_file(spam_group + "/0001.txt", bytes);
  expect_named_errors("read_spam_assassin", [&] {
    SpamAssassinStats st;
    const auto mails = read_spam_assassin(spam, &st);
    FUZZ_CHECK(st.files == 1 && mails.size() + st.empty + st.duplicates == 1);
    for (const auto& m : mails) FUZZ_CHECK(m.label == 1 && mail_detail::valid_utf8(m.text));
  });
  return 0;
}
