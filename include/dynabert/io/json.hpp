// Reading JSON with errors that name the file, and limits that no file can talk us out of: every
// config, index, state and data file of the library goes through parse_json / read_json_file.
//  - files larger than `max_bytes` (64 MB by default) are refused before reading;
//  - documents nested deeper than kJsonMaxDepth are refused while parsing (a 10 MB header of '['
//    would otherwise build a huge tree before failing);
//  - integers are read through json_int(), which checks the type and the range (no silent
//    narrowing of 4294967298 to 2).
#pragma once
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <system_error>

#include <nlohmann/json.hpp>

#include "dynabert/core/error.hpp"

namespace dynabert::io {

/// Deepest nesting accepted in any JSON the library reads.
inline constexpr int kJsonMaxDepth = 32;
/// Largest JSON file read_json_file reads by default.
inline constexpr std::uint64_t kJsonMaxBytes = 64ull << 20;

/// Parses `text`; FormatError "<source>: not valid JSON (...)" or "... nests deeper than ...".
inline nlohmann::json parse_json(const std::string& text, const std::string& source) {
  try {
    return nlohmann::json::parse(text, [&](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
      if (depth > kJsonMaxDepth) raise<FormatError>(source, ": JSON nests deeper than ", kJsonMaxDepth, " levels");
      return true;
    });
  } catch (const FormatError&) {
    throw;
  } catch (const std::exception& e) {
    raise<FormatError>(source, ": not valid JSON (", e.what(), ")");
  }
}

/// Parses the JSON file at `path`; FormatError "<path>: cannot open" / "... is larger than ..." /
/// "<path>: not valid JSON (...)".
inline nlohmann::json read_json_file(const std::string& path, std::uint64_t max_bytes = kJsonMaxBytes) {
  std::error_code ec;
  DYNABERT_REQUIRE(!std::filesystem::is_directory(path, ec), FormatError, path, ": is a folder, not a JSON file");
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  DYNABERT_REQUIRE(in.good(), FormatError, path, ": cannot open");
  const auto size = static_cast<std::uint64_t>(in.tellg());
  DYNABERT_REQUIRE(size <= max_bytes, FormatError, path, ": ", size, " bytes is larger than the ", max_bytes,
                   "-byte limit of a JSON file");
  std::string text(size, '\0');
  in.seekg(0);
  in.read(text.data(), static_cast<std::streamsize>(size));
  DYNABERT_REQUIRE(in.good() || in.eof(), FormatError, path, ": read failed");
  return parse_json(text, path);
}

/// The integer j, checked to be an integer in [lo, hi]; FormatError naming `source` and `what`.
inline long long json_int(const nlohmann::json& j, const std::string& source, const std::string& what,
                          long long lo = std::numeric_limits<int>::min(), long long hi = std::numeric_limits<int>::max()) {
  DYNABERT_REQUIRE(j.is_number_integer(), FormatError, source, ": ", what, " must be an integer, got ", j.dump());
  if (j.is_number_unsigned()) {
    const auto u = j.get<std::uint64_t>();
    DYNABERT_REQUIRE(u <= static_cast<std::uint64_t>(hi) && (lo <= 0 || u >= static_cast<std::uint64_t>(lo)), FormatError,
                     source, ": ", what, " = ", u, " is outside ", lo, "..", hi);
    return static_cast<long long>(u);
  }
  const auto v = j.get<std::int64_t>();
  DYNABERT_REQUIRE(v >= lo && v <= hi, FormatError, source, ": ", what, " = ", v, " is outside ", lo, "..", hi);
  return v;
}

/// The value of `key` of object j (FormatError when j is not an object, the key is missing or
/// `check` says no), so that a const object is never indexed by a missing key.
inline const nlohmann::json& json_field(const nlohmann::json& j, const char* key, const std::string& source) {
  DYNABERT_REQUIRE(j.is_object(), FormatError, source, ": expected a JSON object");
  auto it = j.find(key);
  DYNABERT_REQUIRE(it != j.end(), FormatError, source, ": field '", key, "' is missing");
  return *it;
}

}  // namespace dynabert::io
