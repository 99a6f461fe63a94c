// Regression test of the slow inputs found by fuzzing and by issue 12 (docs/hardening.md): each
// reader must take time linear in its input. For each case the input is grown until one call takes
// at least 20 ms, then timed at 4 times that size: linear code takes about 4 times as long,
// quadratic code 16 times; the test fails at 10 or more (the best of 3 runs each, so that a busy machine
// does not fail it). A plain run of the dev build (`ctest -R linear_time`).
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include <dynabert/io/json.hpp>
#include <dynabert/model/config.hpp>
#include <dynabert/text/mail.hpp>
#include <dynabert/text/tokenizer.hpp>

using namespace dynabert;

namespace {

// the input grows 4 times: linear code takes about 4 times as long (up to about 7 for the cases
// whose working set leaves the caches as it grows), quadratic code 16 times. (Growing 8 times
// separates no better: the cache effects grow with it, to ratios of 15-23 for linear code.)
constexpr int kGrowth = 4;
constexpr double kLimit = 10;

double seconds(const std::function<void()>& f) {
  double best = 1e30;
  for (int r = 0; r < 3; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

/// make(n) builds an input of about n bytes; run(input) is the call timed.
bool linear(const char* name, const std::function<std::string(std::size_t)>& make,
            const std::function<void(const std::string&)>& run) {
  std::size_t measured = 0;  // the size timed at, and its time
  double t = 0;
  for (std::size_t n = 1 << 14; n <= (std::size_t(1) << 24); n *= 2) {
    const std::string in = make(n);
    t = seconds([&] { run(in); });
    measured = n;
    if (t >= 0.02) break;
  }
  const std::string big = make(kGrowth * measured);
  const double tg = seconds([&] { run(big); });
  const double ratio = tg / std::max(t, 1e-9);
  const bool ok = ratio < kLimit;
  std::printf("%-44s %8zu bytes %8.1f ms, x%d: %8.1f ms (ratio %.1f) %s\n", name, measured, t * 1e3, kGrowth, tg * 1e3,
              ratio, ok ? "ok" : "NOT LINEAR");
  return ok;
}

std::string repeat(const std::string& unit, std::size_t bytes) {
  std::string s;
  s.reserve(bytes + unit.size());
  while (s.size() < bytes) s += unit;
  return s;
}

}  // namespace

int main() {
  const text::BertTokenizer tok(text::Vocab::load(std::string(DYNABERT_SOURCE_DIR) + "/tests/fixtures/wordpiece/vocab.txt"));
  bool ok = true;
  // mail: '&' that opens no character reference, '<' that opens no tag (found here, fixed)
  ok &= linear("html_to_text: '&' x n", [](std::size_t n) { return repeat("&", n); },
               [](const std::string& s) { (void)text::html_to_text(s); });
  ok &= linear("html_to_text: '< ' x n, then '>'", [](std::size_t n) { return repeat("< ", n) + ">"; },
               [](const std::string& s) { (void)text::html_to_text(s); });
  ok &= linear("parse_mail: HTML body of '&'",
               [](std::size_t n) { return "Content-Type: text/html\n\n" + repeat("&a", n); },
               [](const std::string& s) { (void)text::parse_mail(s); });
  // issue 12: the header decoder searched to the end of the header at every "=?"
  ok &= linear("decode_header: '=?a' x n", [](std::size_t n) { return repeat("=?a", n); },
               [](const std::string& s) { (void)text::decode_header(s); });
  ok &= linear("parse_mail: Subject of '=?a'", [](std::size_t n) { return "Subject: " + repeat("=?a", n) + "\n\nbody"; },
               [](const std::string& s) { (void)text::parse_mail(s); });
  // issue 12: the tokenizer rescanned the text for every special token after each one it found
  ok &= linear("tokenize: '[CLS]' x n", [](std::size_t n) { return repeat("[CLS]", n); },
               [&](const std::string& s) { (void)tok.tokenize(s); });
  ok &= linear("tokenize: '[CLS] x ' x n", [](std::size_t n) { return repeat("[CLS] x ", n); },
               [&](const std::string& s) { (void)tok.tokenize(s); });
  // JSON objects with many keys (the duplicate check compared each key with all before it)
  ok &= linear("parse_json: object of n keys",
               [](std::size_t n) {
                 std::string s = "{";
                 for (std::size_t k = 0; s.size() < n; ++k) s += (k ? ",\"k" : "\"k") + std::to_string(k) + "\":0";
                 return s + "}";
               },
               [](const std::string& s) { (void)io::parse_json(s, "keys"); });
  // fuzz finding: BertConfig::to_json searched its label objects for every label it added
  ok &= linear("BertConfig::to_json: n labels",
               [](std::size_t n) { return std::to_string(std::max<std::size_t>(1, n / 16)); },
               [](const std::string& s) {
                 BertConfig c;
                 const int labels = std::stoi(s);  // beyond kMaxLabels too: to_json does not check it
                 for (int i = 0; i < labels; ++i) c.id2label.push_back("LABEL_" + std::to_string(i));
                 (void)c.to_json().dump();
               });
  std::printf(ok ? "linear_time: passed\n" : "linear_time: FAILED\n");
  return ok ? 0 : 1;
}
