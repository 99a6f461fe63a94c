// config.json: the JSON reader (depth, numbers, strings, escapes, duplicate keys) and its writer
// (what it dumps parses back to the same text), BertConfig::from_json (every integer range
// checked, no silent narrowing) and its round trip through to_json, and loading a checkpoint
// folder whose config.json is the input next to a small model.safetensors: sizes that the file
// does not hold must fail before anything is allocated for them.
#include <cstdint>

#include <dynabert/io/json.hpp>
#include <dynabert/model/config.hpp>
#include <dynabert/model/weights.hpp>

#include "fuzz_common.hpp"

using namespace dynabert;

namespace {

const std::string& model_dir() {
  static const std::string dir = [] {
    BertConfig c;
    c.vocab_size = 24; c.hidden_size = 8; c.num_hidden_layers = 2; c.num_attention_heads = 2;
    c.intermediate_size = 12; c.max_position_embeddings = 16; c.id2label = {"neg", "pos"};
    BertWeights<float> w(c, HeadSpec{true, 2});
    w.init_random(1);
    const std::string d = fuzz::folder("model");
    w.save(d);
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = fuzz::view(data, size);
  io::Json j;
  try {
    j = io::parse_json(text, "config.json");
  } catch (const Error& e) {
    fuzz::rejected("parse_json", e);
    return 0;
  }
  // the writer's output is JSON the reader takes back unchanged (compact and indented)
  const std::string compact = j.dump();
  FUZZ_CHECK(io::parse_json(compact, "dump").dump() == compact);
  FUZZ_CHECK(io::parse_json(j.dump(2), "dump(2)").dump() == compact);
  try {
    const BertConfig c = BertConfig::from_json(j);
    FUZZ_CHECK(c.vocab_size >= 1 && c.vocab_size <= BertConfig::kMaxVocab);
    FUZZ_CHECK(c.num_labels() <= BertConfig::kMaxLabels);
    // what to_json writes, from_json reads back to the same configuration (to_json is linear in
    // the label count since the fuzz finding of docs/hardening.md)
    const std::string once = c.to_json().dump();
    FUZZ_CHECK(BertConfig::from_json(io::parse_json(once, "to_json")).to_json().dump() == once);
    fuzz::accepted("BertConfig::from_json");
  } catch (const Error& e) {
    fuzz::rejected("BertConfig::from_json", e);
  }
  const std::string& dir = model_dir();
  fuzz::write_file(dir + "/config.json", text);
  try {
    const auto w = BertWeights<float>::load(dir);
    FUZZ_CHECK(w.config().hidden_size == 8);
    fuzz::accepted("BertWeights::load");
  } catch (const Error& e) {
    fuzz::rejected("BertWeights::load", e);
  }
  return 0;
}
