// Byte-level BPE tokenizer throughput (MB/s of UTF-8 input, one thread) on real text: the UCI
// sentiment sentences and the cleaned SpamAssassin mails (scripts/fetch-data.sh bpe sentiment spam).
// Three cases: no word cache; a cold cache (a new tokenizer per iteration, its construction not
// timed); a warm cache (filled by one pass before timing). Skipped, with a message, when not fetched.
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include <dynabert/text/bpe.hpp>
#include <dynabert/text/datasets.hpp>
#include <dynabert/text/mail.hpp>

namespace {

const std::string kData = DYNABERT_SOURCE_DIR "/.data";

struct Corpus {
  std::vector<std::string> texts;
  std::size_t bytes = 0;
  dynabert::text::BpeTokenizer::VocabEntries vocab;
  dynabert::text::BpeTokenizer::Merges merges;
};

const Corpus* corpus() {
  static const std::unique_ptr<Corpus> c = []() -> std::unique_ptr<Corpus> {
    namespace fs = std::filesystem;
    if (!fs::exists(kData + "/roberta-bpe/vocab.json") || !fs::exists(kData + "/sentiment") ||
        !fs::exists(kData + "/spam/package/data"))
      return nullptr;
    auto c = std::make_unique<Corpus>();
    for (const char* f : {"amazon", "imdb", "yelp"})
      for (auto& r : dynabert::text::read_sentiment_json(kData + "/sentiment/package/test/fixtures/" + f + ".json"))
        if (!r.text.empty()) c->texts.push_back(r.text);
    for (auto& m : dynabert::text::read_spam_assassin(kData + "/spam/package/data")) c->texts.push_back(m.text);
    for (const auto& t : c->texts) c->bytes += t.size();
    c->vocab = dynabert::text::BpeTokenizer::read_vocab_json(kData + "/roberta-bpe/vocab.json");
    c->merges = dynabert::text::BpeTokenizer::read_merges_txt(kData + "/roberta-bpe/merges.txt");
    return c;
  }();
  return c.get();
}

void run(const dynabert::text::BpeTokenizer& tok, const Corpus& c, std::vector<std::int32_t>& ids) {
  for (const auto& t : c.texts) {
    ids.clear();
    tok.tokenize(t, ids);
    benchmark::DoNotOptimize(ids.data());
  }
}

// mode 0: no cache, 1: cold cache, 2: warm cache
void BM_BpeTokenize(benchmark::State& st) {
  const Corpus* c = corpus();
  if (!c) {
    st.SkipWithError("run scripts/fetch-data.sh bpe sentiment spam first");
    return;
  }
  const int mode = static_cast<int>(st.range(0));
  dynabert::text::BpeOptions opt;
  if (mode == 0) opt.cache_words = 0;
  auto tok = std::make_unique<dynabert::text::BpeTokenizer>(c->vocab, c->merges, opt);
  std::vector<std::int32_t> ids;
  if (mode == 2) run(*tok, *c, ids);
  for (auto _ : st) {
    if (mode == 1) {
      st.PauseTiming();
      tok = std::make_unique<dynabert::text::BpeTokenizer>(c->vocab, c->merges, opt);
      st.ResumeTiming();
    }
    run(*tok, *c, ids);
  }
  st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * c->bytes));
  st.counters["texts"] = static_cast<double>(c->texts.size());
  st.SetLabel(mode == 0 ? "no cache" : mode == 1 ? "cold cache" : "warm cache");
}
BENCHMARK(BM_BpeTokenize)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->MinTime(2.0);

}  // namespace
