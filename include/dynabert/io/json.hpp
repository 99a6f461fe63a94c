// Reading a JSON file with an error that names it: every config, index, state and data file of
// the library goes through read_json_file.
#pragma once
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "dynabert/core/error.hpp"

namespace dynabert::io {

/// Parses the JSON file at `path`; FormatError "<path>: cannot open" / "<path>: not valid JSON (...)".
inline nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path);
  DYNABERT_REQUIRE(in.good(), FormatError, path, ": cannot open");
  try {
    return nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    raise<FormatError>(path, ": not valid JSON (", e.what(), ")");
  }
}

}  // namespace dynabert::io
