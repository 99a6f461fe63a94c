// Tokenizer throughput (MB/s of UTF-8 input, one thread) on real text: the UCI sentiment
// sentences (scripts/fetch-data.sh vocab sentiment). Skipped, with a message, when not fetched.
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include <dynabert/text/datasets.hpp>
#include <dynabert/text/tokenizer.hpp>

namespace {

const std::string kData = DYNABERT_SOURCE_DIR "/.data";

void BM_Tokenize(benchmark::State& st) {
  namespace fs = std::filesystem;
  if (!fs::exists(kData + "/vocab/vocab.txt") || !fs::exists(kData + "/sentiment")) {
    st.SkipWithError("run scripts/fetch-data.sh vocab sentiment first");
    return;
  }
  const auto tok = dynabert::text::BertTokenizer::from_folder(kData + "/vocab");
  std::vector<std::string> texts;
  std::size_t bytes = 0;
  for (const char* f : {"amazon", "imdb", "yelp"}) {
    for (auto& r : dynabert::text::read_sentiment_json(kData + "/sentiment/package/test/fixtures/" + f + ".json"))
      if (!r.text.empty()) {
        texts.push_back(r.text);
        bytes += texts.back().size();
      }
  }
  std::vector<std::int32_t> ids;
  for (auto _ : st) {
    for (const auto& t : texts) {
      ids.clear();
      tok.tokenize(t, ids);
      benchmark::DoNotOptimize(ids.data());
    }
  }
  st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * bytes));
  st.counters["sentences"] = static_cast<double>(texts.size());
}
BENCHMARK(BM_Tokenize)->Unit(benchmark::kMillisecond)->MinTime(1.0);

}  // namespace
