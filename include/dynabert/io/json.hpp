// JSON for the library's files (config.json, safetensors headers, index.json, trainer state,
// accuracy grids, data sets): a small reader and writer of its own. Compared with a general JSON
// library it compiles in a fraction of the time (no template machinery is instantiated by the
// programs that read a checkpoint) and its limits are part of the format:
//  - nesting deeper than kJsonMaxDepth and files larger than kJsonMaxBytes are refused;
//  - strings must be valid UTF-8 (escapes \uXXXX, surrogate pairs included, are decoded);
//  - integers are kept exactly (int64, or uint64 for larger non-negative ones); json_int()
//    checks the type and the range on reading, so nothing is narrowed silently;
//  - objects keep their keys in order; duplicate keys are an error unless asked for.
// Every error is a FormatError naming the source and the byte offset.
#pragma once
#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "dynabert/core/error.hpp"

namespace dynabert::io {

/// Deepest nesting accepted in any JSON the library reads.
inline constexpr int kJsonMaxDepth = 32;
/// Largest JSON file read_json_file reads by default.
inline constexpr std::uint64_t kJsonMaxBytes = 64ull << 20;
/// Most values (numbers, strings, arrays, objects...) in one JSON text: a parsed value takes about
/// 100 bytes, so this bounds the memory any text can ask for (about 400 MB) before its content is
/// checked; every file the library reads has far fewer.
inline constexpr std::uint64_t kJsonMaxValues = 4ull << 20;

/// A JSON value.
class Json {
 public:
  enum class Type { kNull, kBool, kInt, kUInt, kDouble, kString, kArray, kObject };
  using Member = std::pair<std::string, Json>;

  Json() = default;
  Json(std::nullptr_t) {}
  Json(bool b) : type_(Type::kBool), b_(b) {}
  Json(int v) : Json(static_cast<long long>(v)) {}
  Json(long v) : Json(static_cast<long long>(v)) {}
  Json(long long v) : type_(Type::kInt), i_(v) {}
  Json(unsigned v) : Json(static_cast<unsigned long long>(v)) {}
  Json(unsigned long v) : Json(static_cast<unsigned long long>(v)) {}
  Json(unsigned long long v) : type_(Type::kUInt), u_(v) {}
  Json(double v) : type_(Type::kDouble), d_(v) {}
  Json(const char* s) : type_(Type::kString), s_(s) {}
  Json(std::string s) : type_(Type::kString), s_(std::move(s)) {}
  Json(std::string_view s) : type_(Type::kString), s_(s) {}
  template <class T>
  Json(const std::vector<T>& v) : type_(Type::kArray) {
    for (const auto& x : v) a_.emplace_back(x);
  }
  /// An object from {{"key", value}, ...}.
  Json(std::initializer_list<Member> members) : type_(Type::kObject), o_(members) {}
  static Json array() {
    Json j;
    j.type_ = Type::kArray;
    return j;
  }
  static Json object() {
    Json j;
    j.type_ = Type::kObject;
    return j;
  }

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool is_bool() const { return type_ == Type::kBool; }
  bool is_integer() const { return type_ == Type::kInt || type_ == Type::kUInt; }
  bool is_unsigned() const { return type_ == Type::kUInt || (type_ == Type::kInt && i_ >= 0); }
  bool is_number() const { return is_integer() || type_ == Type::kDouble; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_array() const { return type_ == Type::kArray; }
  bool is_object() const { return type_ == Type::kObject; }

  bool as_bool() const {
    check(is_bool(), "a boolean");
    return b_;
  }
  /// The number as a double (any number).
  double as_double() const {
    check(is_number(), "a number");
    return type_ == Type::kDouble ? d_ : type_ == Type::kInt ? static_cast<double>(i_) : static_cast<double>(u_);
  }
  const std::string& as_string() const {
    check(is_string(), "a string");
    return s_;
  }
  /// The integer, checked to fit an int.
  int as_int() const {
    check(is_integer() && (type_ == Type::kInt ? i_ >= INT32_MIN && i_ <= INT32_MAX : u_ <= INT32_MAX), "an int");
    return type_ == Type::kInt ? static_cast<int>(i_) : static_cast<int>(u_);
  }
  /// An array of ints, numbers or strings as a vector.
  template <class T>
  std::vector<T> as_vector() const {
    std::vector<T> v;
    for (const Json& x : elements()) {
      if constexpr (std::is_same_v<T, std::string>) v.push_back(x.as_string());
      else if constexpr (std::is_integral_v<T>) v.push_back(static_cast<T>(x.as_int()));
      else v.push_back(static_cast<T>(x.as_double()));
    }
    return v;
  }
  /// Raw integer access (callers check ranges with json_int()).
  long long int_value() const { return i_; }
  unsigned long long uint_value() const { return type_ == Type::kUInt ? u_ : static_cast<unsigned long long>(i_); }

  /// Elements of an array, members of an object; 0 otherwise.
  std::size_t size() const { return is_array() ? a_.size() : is_object() ? o_.size() : 0; }
  bool empty() const { return size() == 0; }
  const Json& operator[](std::size_t i) const {
    check(is_array() && i < a_.size(), "an array with that many elements");
    return a_[i];
  }
  const std::vector<Json>& elements() const {
    check(is_array(), "an array");
    return a_;
  }
  void push_back(Json v) {
    if (is_null()) type_ = Type::kArray;
    check(is_array(), "an array");
    a_.push_back(std::move(v));
  }
  /// Members of an object, in order.
  const std::vector<Member>& members() const {
    check(is_object(), "an object");
    return o_;
  }
  /// The member `key`, or null when absent (or when this is not an object).
  const Json* find(std::string_view key) const {
    if (!is_object()) return nullptr;
    for (const auto& m : o_)
      if (m.first == key) return &m.second;
    return nullptr;
  }
  bool contains(std::string_view key) const { return find(key) != nullptr; }
  /// The member `key` (FormatError when absent).
  const Json& at(std::string_view key) const {
    const Json* v = find(key);
    if (!v) raise<FormatError>("JSON object has no member '", key, "'");
    return *v;
  }
  /// The elements of an array, for range-for.
  std::vector<Json>::const_iterator begin() const { return elements().begin(); }
  std::vector<Json>::const_iterator end() const { return elements().end(); }
  /// The member `key` (inserted as null when absent; this becomes an object when null).
  Json& operator[](const std::string& key) {
    if (is_null()) type_ = Type::kObject;
    check(is_object(), "an object");
    for (auto& m : o_)
      if (m.first == key) return m.second;
    o_.emplace_back(key, Json());
    return o_.back().second;
  }
  /// Adds member `key` without looking for an existing one (constant time; the caller knows the
  /// key is new: a repeated key would make a text that parse_json refuses).
  Json& append_member(std::string key, Json v) {
    if (is_null()) type_ = Type::kObject;
    check(is_object(), "an object");
    o_.emplace_back(std::move(key), std::move(v));
    return o_.back().second;
  }
  bool erase(std::string_view key) {
    for (auto it = o_.begin(); it != o_.end(); ++it)
      if (it->first == key) {
        o_.erase(it);
        return true;
      }
    return false;
  }

  /// The text of this value: compact (indent < 0) or indented by `indent` spaces.
  std::string dump(int indent = -1) const {
    std::string out;
    write(out, indent, 0);
    return out;
  }

  friend class JsonParser;

 private:
  void check(bool ok, const char* what) const {
    if (!ok) raise<FormatError>("JSON value ", dump().substr(0, 80), " is not ", what);
  }
  static void write_string(std::string& out, std::string_view s) {
    out += '"';
    for (unsigned char ch : s) {
      switch (ch) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default:
          if (ch < 0x20) {
            static const char hex[] = "0123456789abcdef";
            out += "\\u00";
            out += hex[ch >> 4];
            out += hex[ch & 15];
          } else {
            out += static_cast<char>(ch);
          }
      }
    }
    out += '"';
  }
  void write(std::string& out, int indent, int level) const {
    auto newline = [&](int lv) {
      if (indent < 0) return;
      out += '\n';
      out.append(static_cast<std::size_t>(indent * lv), ' ');
    };
    char buf[64];
    switch (type_) {
      case Type::kNull: out += "null"; break;
      case Type::kBool: out += b_ ? "true" : "false"; break;
      case Type::kInt: out.append(buf, std::to_chars(buf, buf + sizeof buf, i_).ptr); break;
      case Type::kUInt: out.append(buf, std::to_chars(buf, buf + sizeof buf, u_).ptr); break;
      case Type::kDouble: {
        if (d_ != d_ || d_ == std::numeric_limits<double>::infinity() || d_ == -std::numeric_limits<double>::infinity()) {
          out += "null";  // JSON has no NaN or infinity
          break;
        }
        const auto r = std::to_chars(buf, buf + sizeof buf, d_);  // shortest round trip
        std::string_view t(buf, static_cast<std::size_t>(r.ptr - buf));
        out += t;
        if (t.find_first_of(".eEn") == std::string_view::npos) out += ".0";
        break;
      }
      case Type::kString: write_string(out, s_); break;
      case Type::kArray:
        out += '[';
        for (std::size_t i = 0; i < a_.size(); ++i) {
          if (i) out += ',';
          newline(level + 1);
          a_[i].write(out, indent, level + 1);
        }
        if (!a_.empty()) newline(level);
        out += ']';
        break;
      case Type::kObject:
        out += '{';
        for (std::size_t i = 0; i < o_.size(); ++i) {
          if (i) out += ',';
          newline(level + 1);
          write_string(out, o_[i].first);
          out += indent < 0 ? ":" : ": ";
          o_[i].second.write(out, indent, level + 1);
        }
        if (!o_.empty()) newline(level);
        out += '}';
        break;
    }
  }

  Type type_ = Type::kNull;
  bool b_ = false;
  long long i_ = 0;
  unsigned long long u_ = 0;
  double d_ = 0;
  std::string s_;
  std::vector<Json> a_;
  std::vector<Member> o_;
};

/// The recursive-descent reader behind parse_json.
class JsonParser {
 public:
  JsonParser(std::string_view text, const std::string& source, bool allow_duplicates)
      : t_(text), src_(source), dup_(allow_duplicates) {}
  Json run() {
    skip();
    Json v = value(0);
    skip();
    if (p_ != t_.size()) fail("unexpected text after the value");
    return v;
  }

 private:
  [[noreturn]] void fail(const char* what) const {
    raise<FormatError>(src_, ": not valid JSON (", what, " at byte ", p_, ")");
  }
  void skip() {
    while (p_ < t_.size() && (t_[p_] == ' ' || t_[p_] == '\t' || t_[p_] == '\n' || t_[p_] == '\r')) ++p_;
  }
  bool literal(std::string_view w) {
    if (t_.substr(p_, w.size()) != w) return false;
    p_ += w.size();
    return true;
  }
  Json value(int depth) {
    if (depth >= kJsonMaxDepth) raise<FormatError>(src_, ": JSON nests deeper than ", kJsonMaxDepth, " levels (at byte ", p_, ")");
    if (++values_ > kJsonMaxValues)
      raise<FormatError>(src_, ": JSON holds more than ", kJsonMaxValues, " values (at byte ", p_, ")");
    if (p_ >= t_.size()) fail("unexpected end");
    const char c = t_[p_];
    if (c == '{') return object(depth);
    if (c == '[') return array(depth);
    if (c == '"') return Json(string());
    if (literal("true")) return Json(true);
    if (literal("false")) return Json(false);
    if (literal("null")) return Json();
    if (c == '-' || (c >= '0' && c <= '9')) return number();
    fail("unexpected character");
  }
  Json object(int depth) {
    ++p_;
    Json o = Json::object();
    skip();
    if (p_ < t_.size() && t_[p_] == '}') {
      ++p_;
      return o;
    }
    while (true) {
      skip();
      if (p_ >= t_.size() || t_[p_] != '"') fail("expected a string key");
      std::string key = string();
      if (!dup_ && o.o_.size() < kLinearKeys)  // small objects: compared as they grow; large ones once, sorted
        for (const auto& m : o.o_)
          if (m.first == key) raise<FormatError>(src_, ": key '", key, "' appears twice in an object");
      skip();
      if (p_ >= t_.size() || t_[p_] != ':') fail("expected ':'");
      ++p_;
      skip();
      o.o_.emplace_back(std::move(key), value(depth + 1));
      skip();
      if (p_ < t_.size() && t_[p_] == ',') {
        ++p_;
        continue;
      }
      if (p_ < t_.size() && t_[p_] == '}') {
        ++p_;
        if (!dup_ && o.o_.size() > kLinearKeys) check_unique(o);
        return o;
      }
      fail("expected ',' or '}'");
    }
  }
  /// Objects up to this many keys are checked for duplicates as they grow (quadratic, but tiny);
  /// larger ones by sorting their keys once: linear-logarithmic in the key count.
  static constexpr std::size_t kLinearKeys = 16;
  void check_unique(const Json& o) const {
    std::vector<std::string_view> keys;
    keys.reserve(o.o_.size());
    for (const auto& m : o.o_) keys.emplace_back(m.first);
    std::sort(keys.begin(), keys.end());
    for (std::size_t i = 1; i < keys.size(); ++i)
      if (keys[i] == keys[i - 1]) raise<FormatError>(src_, ": key '", std::string(keys[i]), "' appears twice in an object");
  }
  Json array(int depth) {
    ++p_;
    Json a = Json::array();
    skip();
    if (p_ < t_.size() && t_[p_] == ']') {
      ++p_;
      return a;
    }
    while (true) {
      skip();
      a.a_.push_back(value(depth + 1));
      skip();
      if (p_ < t_.size() && t_[p_] == ',') {
        ++p_;
        continue;
      }
      if (p_ < t_.size() && t_[p_] == ']') {
        ++p_;
        return a;
      }
      fail("expected ',' or ']'");
    }
  }
  unsigned hex4() {
    if (p_ + 4 > t_.size()) fail("short \\u escape");
    unsigned v = 0;
    for (int k = 0; k < 4; ++k) {
      const char h = t_[p_++];
      v <<= 4;
      if (h >= '0' && h <= '9') v |= static_cast<unsigned>(h - '0');
      else if (h >= 'a' && h <= 'f') v |= static_cast<unsigned>(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F') v |= static_cast<unsigned>(h - 'A' + 10);
      else fail("bad \\u escape");
    }
    return v;
  }
  static void utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) out += static_cast<char>(cp);
    else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  /// Length of the valid UTF-8 sequence at t_[p_] (0 when invalid).
  std::size_t utf8_length() const {
    const auto b = [&](std::size_t k) { return static_cast<unsigned char>(p_ + k < t_.size() ? t_[p_ + k] : 0); };
    const unsigned c = b(0);
    auto cont = [&](std::size_t k) { return (b(k) & 0xC0) == 0x80; };
    if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
    if (c == 0xE0) return b(1) >= 0xA0 && b(1) <= 0xBF && cont(2) ? 3 : 0;
    if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) return cont(1) && cont(2) ? 3 : 0;
    if (c == 0xED) return b(1) >= 0x80 && b(1) <= 0x9F && cont(2) ? 3 : 0;
    if (c == 0xF0) return b(1) >= 0x90 && b(1) <= 0xBF && cont(2) && cont(3) ? 4 : 0;
    if (c >= 0xF1 && c <= 0xF3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
    if (c == 0xF4) return b(1) >= 0x80 && b(1) <= 0x8F && cont(2) && cont(3) ? 4 : 0;
    return 0;
  }
  std::string string() {
    ++p_;
    std::string out;
    while (true) {
      if (p_ >= t_.size()) fail("unterminated string");
      const unsigned char c = static_cast<unsigned char>(t_[p_]);
      if (c == '"') {
        ++p_;
        return out;
      }
      if (c < 0x20) fail("control character in a string");
      if (c == '\\') {
        ++p_;
        if (p_ >= t_.size()) fail("unterminated escape");
        const char e = t_[p_++];
        switch (e) {
          case '"': out += '"'; break;
          case '\\': out += '\\'; break;
          case '/': out += '/'; break;
          case 'b': out += '\b'; break;
          case 'f': out += '\f'; break;
          case 'n': out += '\n'; break;
          case 'r': out += '\r'; break;
          case 't': out += '\t'; break;
          case 'u': {
            unsigned cp = hex4();
            if (cp >= 0xD800 && cp <= 0xDBFF) {
              if (!(p_ + 1 < t_.size() && t_[p_] == '\\' && t_[p_ + 1] == 'u')) fail("unpaired surrogate");
              p_ += 2;
              const unsigned lo = hex4();
              if (lo < 0xDC00 || lo > 0xDFFF) fail("unpaired surrogate");
              cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
              fail("unpaired surrogate");
            }
            utf8(out, cp);
            break;
          }
          default: fail("bad escape");
        }
        continue;
      }
      if (c < 0x80) {
        out += static_cast<char>(c);
        ++p_;
        continue;
      }
      const std::size_t n = utf8_length();
      if (n == 0) fail("invalid UTF-8 in a string");
      out.append(t_.substr(p_, n));
      p_ += n;
    }
  }
  Json number() {
    const std::size_t start = p_;
    if (t_[p_] == '-') ++p_;
    if (p_ >= t_.size() || !(t_[p_] >= '0' && t_[p_] <= '9')) fail("bad number");
    if (t_[p_] == '0') ++p_;
    else while (p_ < t_.size() && t_[p_] >= '0' && t_[p_] <= '9') ++p_;
    bool integer = true;
    if (p_ < t_.size() && t_[p_] == '.') {
      integer = false;
      ++p_;
      if (p_ >= t_.size() || !(t_[p_] >= '0' && t_[p_] <= '9')) fail("bad number");
      while (p_ < t_.size() && t_[p_] >= '0' && t_[p_] <= '9') ++p_;
    }
    if (p_ < t_.size() && (t_[p_] == 'e' || t_[p_] == 'E')) {
      integer = false;
      ++p_;
      if (p_ < t_.size() && (t_[p_] == '+' || t_[p_] == '-')) ++p_;
      if (p_ >= t_.size() || !(t_[p_] >= '0' && t_[p_] <= '9')) fail("bad number");
      while (p_ < t_.size() && t_[p_] >= '0' && t_[p_] <= '9') ++p_;
    }
    const char* b = t_.data() + start;
    const char* e = t_.data() + p_;
    if (integer) {
      if (*b != '-') {
        unsigned long long u = 0;
        const auto r = std::from_chars(b, e, u);
        if (r.ec == std::errc() && r.ptr == e) return u <= static_cast<unsigned long long>(INT64_MAX) ? Json(static_cast<long long>(u)) : Json(u);
      } else {
        long long i = 0;
        const auto r = std::from_chars(b, e, i);
        if (r.ec == std::errc() && r.ptr == e) return Json(i);
      }
    }
    double d = 0;
    const auto r = std::from_chars(b, e, d);
    if (r.ec == std::errc::result_out_of_range) fail("number out of range");
    if (r.ec != std::errc() || r.ptr != e) fail("bad number");
    return Json(d);
  }

  std::string_view t_;
  const std::string& src_;
  bool dup_;
  std::size_t p_ = 0;
  std::uint64_t values_ = 0;
};

/// Parses `text`; FormatError "<source>: not valid JSON (... at byte N)" or "... nests deeper".
/// Duplicate keys in an object are an error unless `allow_duplicates` (then all are kept).
inline Json parse_json(std::string_view text, const std::string& source, bool allow_duplicates = false) {
  return JsonParser(text, source, allow_duplicates).run();
}

/// Parses the JSON file at `path`; FormatError "<path>: cannot open" / "... is larger than ..." /
/// "<path>: not valid JSON (...)".
inline Json read_json_file(const std::string& path, std::uint64_t max_bytes = kJsonMaxBytes) {
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
  DYNABERT_REQUIRE(static_cast<std::uint64_t>(in.gcount()) == size, FormatError, path, ": read failed");
  return parse_json(text, path);
}

/// The integer j, checked to be an integer in [lo, hi]; FormatError naming `source` and `what`.
inline long long json_int(const Json& j, const std::string& source, const std::string& what,
                          long long lo = std::numeric_limits<int>::min(), long long hi = std::numeric_limits<int>::max()) {
  DYNABERT_REQUIRE(j.is_integer(), FormatError, source, ": ", what, " must be an integer, got ", j.dump().substr(0, 40));
  if (j.type() == Json::Type::kUInt) {
    const auto u = j.uint_value();
    DYNABERT_REQUIRE(hi >= 0 && u <= static_cast<unsigned long long>(hi), FormatError, source, ": ", what, " = ", u,
                     " is outside ", lo, "..", hi);
    return static_cast<long long>(u);
  }
  const auto v = j.int_value();
  DYNABERT_REQUIRE(v >= lo && v <= hi, FormatError, source, ": ", what, " = ", v, " is outside ", lo, "..", hi);
  return v;
}

/// The value of `key` of object j (FormatError when j is not an object or the key is missing).
inline const Json& json_field(const Json& j, const char* key, const std::string& source) {
  DYNABERT_REQUIRE(j.is_object(), FormatError, source, ": expected a JSON object");
  const Json* v = j.find(key);
  DYNABERT_REQUIRE(v != nullptr, FormatError, source, ": field '", key, "' is missing");
  return *v;
}

}  // namespace dynabert::io
