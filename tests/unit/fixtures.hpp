// Shared by the tests: the committed PyTorch fixtures (tests/fixtures, made by tools/).
#pragma once
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include <dynabert/dynabert.hpp>

namespace fixtures {

inline const std::string kDir = DYNABERT_FIXTURES_DIR;

/// tiny_inputs.json: 4 sequences of length 10 with padding, token types and a mask hole.
struct Batch {
  int B = 0, S = 0;
  std::vector<std::int32_t> ids, types, mask;
  /// Sequences [first, first + count) as dynabert inputs (pointers into this object).
  dynabert::Inputs inputs(int first = 0, int count = -1) const {
    dynabert::Inputs in;
    in.input_ids = ids.data() + first * S;
    in.token_type_ids = types.data() + first * S;
    in.attention_mask = mask.data() + first * S;
    in.batch = count < 0 ? B - first : count;
    in.seq_len = S;
    return in;
  }
};

/// A batch from {"input_ids", "token_type_ids", "attention_mask"} lists of rows.
inline Batch inputs_from_json(const dynabert::io::Json& j) {
  Batch b;
  b.B = static_cast<int>(j.at("input_ids").size());
  b.S = static_cast<int>(j.at("input_ids")[0].size());
  for (auto& row : j.at("input_ids")) for (auto& v : row) b.ids.push_back(v.as_int());
  for (auto& row : j.at("token_type_ids")) for (auto& v : row) b.types.push_back(v.as_int());
  for (auto& row : j.at("attention_mask")) for (auto& v : row) b.mask.push_back(v.as_int());
  return b;
}

inline Batch load_inputs() { return inputs_from_json(dynabert::io::read_json_file(kDir + "/tiny_inputs.json")); }

/// The tiny fixture model (F16 weights read into float).
inline dynabert::BertWeights<float> load_model() { return dynabert::BertWeights<float>::load(kDir + "/tiny"); }

/// The tiny RoBERTa fixture (tools/make_roberta_fixtures.py): the model folder, the expected
/// outputs and gradients, and the padded batch they were computed on (in the file's metadata).
struct Roberta {
  std::string dir = kDir + "/tiny_roberta";
  dynabert::io::SafetensorsFile expected{kDir + "/tiny_roberta_expected.safetensors"};
  Batch batch = inputs_from_json(dynabert::io::parse_json(expected.metadata().at("inputs"), "inputs"));
  std::vector<std::string> names(const char* key) const {
    return dynabert::io::parse_json(expected.metadata().at(key), key).as_vector<std::string>();
  }
};

}  // namespace fixtures
