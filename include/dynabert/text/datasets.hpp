// Readers for the project's data formats, and seeded splits:
//  - the UCI sentiment sentences (JSON array of {"text", "class"}; the trailing empty record
//    {"text": "", "class": null} each file ends with is dropped);
//  - plain TSV (a header row names the columns) and JSONL files of labelled text;
//  - the Brown corpus in NLTK's layout (files ca01 ... cr09 of "word/tag" tokens; tags stripped,
//    `` and '' turned back into double quotes), as one string per sentence.
// Every malformed record is a FormatError naming the file and the line or record.
#pragma once
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "dynabert/core/error.hpp"
#include "dynabert/io/json.hpp"

namespace dynabert::text {

/// One labelled example (text_b empty for single-sentence tasks).
struct LabelledText {
  std::string text, text_b;
  int label = 0;
  double target = 0.0;
};

/// The UCI sentiment file format (sentiment@5.0.2 test/fixtures/*.json).
inline std::vector<LabelledText> read_sentiment_json(const std::string& path) {
  const io::Json j = io::read_json_file(path, 1ull << 30);
  DYNABERT_REQUIRE(j.is_array(), FormatError, path, ": expected a JSON array of records");
  std::vector<LabelledText> out;
  for (std::size_t i = 0; i < j.size(); ++i) {
    const auto& r = j[i];
    const io::Json* text = r.find("text");
    DYNABERT_REQUIRE(text && text->is_string(), FormatError, path, ": record ", i, " has no string 'text'");
    const io::Json* cls = r.find("class");
    if (text->as_string().empty() && (!cls || cls->is_null())) continue;  // the trailing empty record
    DYNABERT_REQUIRE(cls && cls->is_integer(), FormatError, path, ": record ", i, " has no integer 'class'");
    out.push_back({text->as_string(), "", static_cast<int>(io::json_int(*cls, path, "record " + std::to_string(i) + " 'class'")), 0.0});
  }
  return out;
}

/// JSONL: one object per line with a text field and a label (integer class or number target).
inline std::vector<LabelledText> read_jsonl(const std::string& path, const std::string& text_key = "text",
                                            const std::string& label_key = "label", bool regression = false,
                                            const std::string& text_b_key = "") {
  std::ifstream in(path);
  DYNABERT_REQUIRE(in.good(), FormatError, path, ": cannot open");
  std::vector<LabelledText> out;
  std::string line;
  for (long n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(n);
    const io::Json r = io::parse_json(line, where);
    const io::Json* text = r.find(text_key);
    DYNABERT_REQUIRE(text && text->is_string(), FormatError, where, ": no string '", text_key, "'");
    LabelledText t;
    t.text = text->as_string();
    if (!text_b_key.empty()) {
      const io::Json* b = r.find(text_b_key);
      DYNABERT_REQUIRE(b && b->is_string(), FormatError, where, ": no string '", text_b_key, "'");
      t.text_b = b->as_string();
    }
    const io::Json* label = r.find(label_key);
    DYNABERT_REQUIRE(label && (regression ? label->is_number() : label->is_integer()), FormatError, where, ": '", label_key,
                     "' must be ", regression ? "a number" : "an integer");
    if (regression) t.target = label->as_double();
    else t.label = static_cast<int>(io::json_int(*label, where, "'" + label_key + "'"));
    out.push_back(std::move(t));
  }
  return out;
}

/// TSV with a header row; columns chosen by name.
inline std::vector<LabelledText> read_tsv(const std::string& path, const std::string& text_col, const std::string& label_col,
                                          bool regression = false, const std::string& text_b_col = "") {
  std::ifstream in(path);
  DYNABERT_REQUIRE(in.good(), FormatError, path, ": cannot open");
  auto split = [](const std::string& l) {
    std::vector<std::string> f;
    std::string cell;
    std::istringstream s(l);
    while (std::getline(s, cell, '\t')) f.push_back(cell);
    if (!l.empty() && l.back() == '\t') f.emplace_back();
    return f;
  };
  std::string line;
  DYNABERT_REQUIRE(static_cast<bool>(std::getline(in, line)), FormatError, path, ": empty file");
  if (!line.empty() && line.back() == '\r') line.pop_back();
  const auto header = split(line);
  auto col = [&](const std::string& name) {
    auto it = std::find(header.begin(), header.end(), name);
    DYNABERT_REQUIRE(it != header.end(), FormatError, path, ": no column '", name, "' in the header");
    return static_cast<std::size_t>(it - header.begin());
  };
  const std::size_t ct = col(text_col), cl = col(label_col), cb = text_b_col.empty() ? 0 : col(text_b_col);
  std::vector<LabelledText> out;
  for (long n = 2; std::getline(in, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const auto f = split(line);
    DYNABERT_REQUIRE(f.size() == header.size(), FormatError, path, ":", n, ": ", f.size(), " fields, the header has ",
                     header.size());
    LabelledText t;
    t.text = f[ct];
    if (!text_b_col.empty()) t.text_b = f[cb];
    try {
      std::size_t used = 0;
      if (regression) t.target = std::stod(f[cl], &used);
      else t.label = std::stoi(f[cl], &used);
      DYNABERT_REQUIRE(used == f[cl].size(), FormatError, path, ":", n, ": label '", f[cl], "' is not a number");
    } catch (const std::logic_error&) {
      raise<FormatError>(path, ":", n, ": label '", f[cl], "' is not a number");
    }
    out.push_back(std::move(t));
  }
  return out;
}

/// The Brown corpus (NLTK layout under `dir`): one string per sentence, tags stripped.
inline std::vector<std::string> read_brown_sentences(const std::string& dir) {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  for (auto& e : fs::directory_iterator(dir)) {
    const auto n = e.path().filename().string();
    if (n.size() == 4 && n[0] == 'c' && n[1] >= 'a' && n[1] <= 'r' && std::isdigit(static_cast<unsigned char>(n[2])) &&
        std::isdigit(static_cast<unsigned char>(n[3])))
      files.push_back(e.path());
  }
  DYNABERT_REQUIRE(!files.empty(), FormatError, dir, ": no Brown corpus files (ca01 ... cr09)");
  std::sort(files.begin(), files.end());
  std::vector<std::string> out;
  for (auto& f : files) {
    std::ifstream in(f);
    std::string line, tok;
    while (std::getline(in, line)) {
      std::istringstream s(line);
      std::string sentence;
      while (s >> tok) {
        const auto slash = tok.rfind('/');
        std::string word = slash == std::string::npos ? tok : tok.substr(0, slash);
        if (word == "``" || word == "''") word = "\"";
        if (!sentence.empty()) sentence += ' ';
        sentence += word;
      }
      if (!sentence.empty()) out.push_back(std::move(sentence));
    }
  }
  return out;
}

/// Indices of a seeded split into train / dev / test (fractions of the whole, the rest is test).
struct Split {
  std::vector<std::size_t> train, dev, test;
};
inline Split split(std::size_t n, double train_fraction, double dev_fraction, std::uint64_t seed) {
  DYNABERT_REQUIRE(train_fraction > 0 && dev_fraction >= 0 && train_fraction + dev_fraction <= 1.0, InputError,
                   "split fractions ", train_fraction, " and ", dev_fraction, " are impossible");
  std::vector<std::size_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(idx.begin(), idx.end(), rng);
  const auto ntr = static_cast<std::size_t>(train_fraction * static_cast<double>(n));
  const auto ndev = static_cast<std::size_t>(dev_fraction * static_cast<double>(n));
  Split s;
  s.train.assign(idx.begin(), idx.begin() + ntr);
  s.dev.assign(idx.begin() + ntr, idx.begin() + ntr + ndev);
  s.test.assign(idx.begin() + ntr + ndev, idx.end());
  return s;
}

}  // namespace dynabert::text
