// safetensors reader and writer.
//
// Reader: parses and validates the header (length within the file and <= 100 MB, JSON object,
// unique names, known dtypes, byte counts matching shapes, offsets in range, no overlap, no hole)
// and reads tensors on demand, converting F32/F16/BF16/F64 to float or double.
// Writer: F32 tensors and string metadata, header space-padded so data starts 8-byte aligned,
// written to "<path>.tmp.<pid>" and renamed, so a crash never leaves a half-written file.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <unistd.h>

#include "dynabert/core/error.hpp"
#include "dynabert/io/files.hpp"
#include "dynabert/io/json.hpp"

namespace dynabert::io {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors I/O assumes a little-endian host");

/// Element types of the safetensors format.
enum class DType { kBool, kU8, kI8, kI16, kU16, kF16, kBF16, kI32, kU32, kF32, kF64, kI64, kU64, kF8E4M3, kF8E5M2 };

inline const std::map<std::string, std::pair<DType, int>>& dtype_table() {
  static const std::map<std::string, std::pair<DType, int>> t = {
      {"BOOL", {DType::kBool, 1}}, {"U8", {DType::kU8, 1}},     {"I8", {DType::kI8, 1}},
      {"I16", {DType::kI16, 2}},   {"U16", {DType::kU16, 2}},   {"F16", {DType::kF16, 2}},
      {"BF16", {DType::kBF16, 2}}, {"I32", {DType::kI32, 4}},   {"U32", {DType::kU32, 4}},
      {"F32", {DType::kF32, 4}},   {"F64", {DType::kF64, 8}},   {"I64", {DType::kI64, 8}},
      {"U64", {DType::kU64, 8}},   {"F8_E4M3", {DType::kF8E4M3, 1}}, {"F8_E5M2", {DType::kF8E5M2, 1}}};
  return t;
}

/// IEEE half to float.
inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, bits;
  if (exp == 0) {
    if (mant == 0) bits = sign;
    else {  // subnormal: renormalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) { mant <<= 1; --exp; }
      mant &= 0x3ffu;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) bits = sign | 0x7f800000u | (mant << 13);
  else bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline float bf16_to_float(std::uint16_t h) {
  const std::uint32_t bits = static_cast<std::uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

/// One tensor's header entry.
struct TensorInfo {
  std::string name;
  std::string dtype_name;
  DType dtype = DType::kF32;
  int elem_size = 4;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0, end = 0;  ///< byte offsets within the data buffer
  std::uint64_t count = 1;           ///< element count (checked against overflow when parsed)
  std::uint64_t numel() const { return count; }
};


/// A validated safetensors file; tensors are read on demand.
class SafetensorsFile {
 public:
  static constexpr std::uint64_t kMaxHeader = 100ull * 1000 * 1000;

  explicit SafetensorsFile(std::string path) : path_(std::move(path)) {
    std::ifstream in(path_, std::ios::binary | std::ios::ate);
    DYNABERT_REQUIRE(in.good(), FormatError, path_, ": cannot open");
    const std::uint64_t file_size = static_cast<std::uint64_t>(in.tellg());
    DYNABERT_REQUIRE(file_size >= 8, FormatError, path_, ": truncated: ", file_size,
                     " bytes, fewer than the 8-byte header length");
    in.seekg(0);
    unsigned char len_bytes[8];
    in.read(reinterpret_cast<char*>(len_bytes), 8);
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | len_bytes[i];
    DYNABERT_REQUIRE(n <= kMaxHeader, FormatError, path_, ": header length ", n,
                     " exceeds the 100 MB limit");
    DYNABERT_REQUIRE(n <= file_size - 8, FormatError, path_, ": header length ", n,
                     " runs beyond the end of the file (", file_size, " bytes)");
    std::string header(n, '\0');
    in.read(header.data(), static_cast<std::streamsize>(n));
    DYNABERT_REQUIRE(in.good(), FormatError, path_, ": cannot read the header");
    data_start_ = 8 + n;
    data_size_ = file_size - data_start_;
    parse_header(header);
  }

  const std::string& path() const { return path_; }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const TensorInfo& info(const std::string& name) const {
    auto it = index_.find(name);
    DYNABERT_REQUIRE(it != index_.end(), FormatError, path_, ": no tensor named '", name, "'");
    return tensors_[it->second];
  }

  /// Reads tensor `name` converted to T (float or double) into dst, which holds `count` values;
  /// count must equal the tensor's element count.
  template <class T>
  void read(const std::string& name, T* dst, std::uint64_t count) const {
    static_assert(std::is_floating_point_v<T>, "read converts to float or double");
    const TensorInfo& t = info(name);
    DYNABERT_REQUIRE(t.numel() == count, FormatError, path_, ": tensor '", name, "' has ",
                     t.numel(), " elements, expected ", count);
    // checked before reading: an empty integer tensor is refused like a non-empty one
    DYNABERT_REQUIRE(t.dtype == DType::kF32 || t.dtype == DType::kF64 || t.dtype == DType::kF16 || t.dtype == DType::kBF16,
                     FormatError, path_, ": tensor '", name, "' has dtype ", t.dtype_name,
                     ", which cannot be read as floating point (F32, F16, BF16, F64)");
    std::ifstream in(path_, std::ios::binary);
    DYNABERT_REQUIRE(in.good(), FormatError, path_, ": cannot open");
    in.seekg(static_cast<std::streamoff>(data_start_ + t.begin));
    const std::uint64_t bytes = t.end - t.begin;
    if (t.dtype == DType::kF32 && std::is_same_v<T, float>) {
      in.read(reinterpret_cast<char*>(dst), static_cast<std::streamsize>(bytes));
      DYNABERT_REQUIRE(in.good(), FormatError, path_, ": tensor '", name, "': read failed");
      return;
    }
    std::vector<unsigned char> raw(bytes);
    in.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(bytes));
    DYNABERT_REQUIRE(in.good(), FormatError, path_, ": tensor '", name, "': read failed");
    for (std::uint64_t i = 0; i < count; ++i) {
      const unsigned char* p = raw.data() + i * t.elem_size;
      switch (t.dtype) {
        case DType::kF32: { float f; std::memcpy(&f, p, 4); dst[i] = static_cast<T>(f); break; }
        case DType::kF64: { double f; std::memcpy(&f, p, 8); dst[i] = static_cast<T>(f); break; }
        case DType::kF16: { std::uint16_t h; std::memcpy(&h, p, 2); dst[i] = static_cast<T>(half_to_float(h)); break; }
        case DType::kBF16: { std::uint16_t h; std::memcpy(&h, p, 2); dst[i] = static_cast<T>(bf16_to_float(h)); break; }
        default:
          raise<FormatError>(path_, ": tensor '", name, "' has dtype ", t.dtype_name,
                             ", which cannot be read as floating point (F32, F16, BF16, F64)");
      }
    }
  }
  /// Reads an I8 tensor (int8 weights of an INT8 checkpoint) into dst (`count` values).
  void read_i8(const std::string& name, std::int8_t* dst, std::uint64_t count) const {
    const TensorInfo& t = info(name);
    DYNABERT_REQUIRE(t.dtype == DType::kI8, FormatError, path_, ": tensor '", name, "' has dtype ", t.dtype_name, ", expected I8");
    DYNABERT_REQUIRE(t.numel() == count, FormatError, path_, ": tensor '", name, "' has ", t.numel(), " elements, expected ",
                     count);
    std::ifstream in(path_, std::ios::binary);
    DYNABERT_REQUIRE(in.good(), FormatError, path_, ": cannot open");
    in.seekg(static_cast<std::streamoff>(data_start_ + t.begin));
    in.read(reinterpret_cast<char*>(dst), static_cast<std::streamsize>(count));
    DYNABERT_REQUIRE(in.good(), FormatError, path_, ": tensor '", name, "': read failed");
  }
  template <class T = float>
  std::vector<T> read(const std::string& name) const {
    std::vector<T> v(info(name).numel());
    read(name, v.data(), v.size());
    return v;
  }

 private:
  void parse_header(const std::string& header) {
    const auto first = header.find_first_not_of(" \t\r\n");
    DYNABERT_REQUIRE(first != std::string::npos && header[first] == '{', FormatError, path_,
                     ": header is not a JSON object");
    // duplicate keys are kept by the parser and reported here with the tensor's name
    const Json j = parse_json(header, path_ + ": header", /*allow_duplicates=*/true);
    DYNABERT_REQUIRE(j.is_object(), FormatError, path_, ": header is not a JSON object");
    std::set<std::string_view> seen;
    for (const auto& [name_, v] : j.members()) {
      const std::string& name = name_;
      DYNABERT_REQUIRE(seen.insert(name).second, FormatError, path_, ": tensor name '", name, "' appears twice in the header");
      if (name == "__metadata__") {
        DYNABERT_REQUIRE(v.is_object(), FormatError, path_, ": __metadata__ is not an object");
        for (const auto& [k, mv] : v.members()) {
          DYNABERT_REQUIRE(mv.is_string(), FormatError, path_, ": metadata value '", k, "' is not a string");
          metadata_[k] = mv.as_string();
        }
        continue;
      }
      DYNABERT_REQUIRE(v.is_object(), FormatError, path_, ": tensor '", name, "': entry is not an object");
      TensorInfo t;
      t.name = name;
      const Json* dtype = v.find("dtype");
      DYNABERT_REQUIRE(dtype && dtype->is_string(), FormatError, path_, ": tensor '", name, "': missing dtype");
      t.dtype_name = dtype->as_string();
      auto dt = dtype_table().find(t.dtype_name);
      DYNABERT_REQUIRE(dt != dtype_table().end(), FormatError, path_, ": tensor '", name,
                       "': unknown dtype '", t.dtype_name, "'");
      t.dtype = dt->second.first;
      t.elem_size = dt->second.second;
      const Json* shape = v.find("shape");
      DYNABERT_REQUIRE(shape && shape->is_array(), FormatError, path_, ": tensor '", name, "': missing shape");
      for (const Json& d : shape->elements()) {
        DYNABERT_REQUIRE(d.is_integer() && d.is_unsigned(), FormatError, path_, ": tensor '", name,
                         "': shape has a negative or non-integer dimension");
        const std::uint64_t dim = d.uint_value();
        // element counts stay below 2^60, so that counts x element sizes cannot wrap
        constexpr std::uint64_t kMaxCount = 1ull << 60;
        DYNABERT_REQUIRE(dim <= kMaxCount && (dim == 0 || t.count <= kMaxCount / dim), FormatError, path_, ": tensor '", name,
                         "': shape ", shape->dump(), " overflows (more than 2^60 elements)");
        t.count *= dim;
        t.shape.push_back(static_cast<std::int64_t>(dim));
      }
      const Json* off = v.find("data_offsets");
      DYNABERT_REQUIRE(off && off->is_array() && off->size() == 2 && (*off)[0].is_integer() && (*off)[0].is_unsigned() &&
                           (*off)[1].is_integer() && (*off)[1].is_unsigned(),
                       FormatError, path_, ": tensor '", name, "': data_offsets must be two non-negative integers");
      t.begin = (*off)[0].uint_value();
      t.end = (*off)[1].uint_value();
      DYNABERT_REQUIRE(t.begin <= t.end, FormatError, path_, ": tensor '", name, "': data_offsets [",
                       t.begin, ", ", t.end, "] are reversed");
      DYNABERT_REQUIRE(t.end <= data_size_, FormatError, path_, ": tensor '", name, "': data_offsets [",
                       t.begin, ", ", t.end, "] run beyond the data buffer of ", data_size_, " bytes");
      DYNABERT_REQUIRE(t.end - t.begin == t.numel() * static_cast<std::uint64_t>(t.elem_size), FormatError,
                       path_, ": tensor '", name, "': ", t.end - t.begin, " bytes for shape of ", t.numel(),
                       " x ", t.elem_size, "-byte elements");
      index_[name] = tensors_.size();
      tensors_.push_back(std::move(t));
    }
    // The tensors must tile the data buffer exactly: no overlap, no hole.
    std::vector<const TensorInfo*> order;
    for (auto& t : tensors_) order.push_back(&t);
    std::sort(order.begin(), order.end(), [](auto* a, auto* b) {
      return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
    });
    std::uint64_t pos = 0;
    const TensorInfo* prev = nullptr;
    for (auto* t : order) {
      DYNABERT_REQUIRE(t->begin >= pos, FormatError, path_, ": tensor '", t->name, "' overlaps tensor '",
                       prev ? prev->name : "", "' (bytes ", t->begin, " < ", pos, ")");
      DYNABERT_REQUIRE(t->begin == pos, FormatError, path_, ": hole of ", t->begin - pos,
                       " bytes in the data buffer before tensor '", t->name, "'");
      pos = t->end;
      prev = t;
    }
    DYNABERT_REQUIRE(pos == data_size_, FormatError, path_, ": ", data_size_ - pos,
                     " bytes after the last tensor are not covered by any tensor");
  }

  std::string path_;
  std::uint64_t data_start_ = 0, data_size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t> index_;
  std::map<std::string, std::string> metadata_;
};

/// Collects F32 and I8 tensors (by pointer: they must stay alive until write) and string metadata.
class SafetensorsWriter {
 public:
  void add(const std::string& name, std::vector<std::int64_t> shape, const float* data) {
    add_entry({name, std::move(shape), data, "F32", 4});
  }
  void add(const std::string& name, std::vector<std::int64_t> shape, const std::int8_t* data) {
    add_entry({name, std::move(shape), data, "I8", 1});
  }
  void add_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

  /// Writes the file (temporary name, then rename). The header is written by hand (names and
  /// metadata JSON-escaped), in insertion order.
  void write(const std::string& path) const {
    std::string header = "{";
    auto quoted = [](std::string& out, const std::string& v) {
      out += '"';
      for (unsigned char ch : v) {
        switch (ch) {
          case '"': out += "\\\""; break;
          case '\\': out += "\\\\"; break;
          case '\n': out += "\\n"; break;
          case '\r': out += "\\r"; break;
          case '\t': out += "\\t"; break;
          default:
            if (ch < 0x20) {
              char buf[8];
              std::snprintf(buf, sizeof buf, "\\u%04x", ch);
              out += buf;
            } else {
              out += static_cast<char>(ch);
            }
        }
      }
      out += '"';
    };
    if (!metadata_.empty()) {
      header += "\"__metadata__\":{";
      bool first = true;
      for (auto& [k, v] : metadata_) {
        if (!first) header += ',';
        first = false;
        quoted(header, k);
        header += ':';
        quoted(header, v);
      }
      header += '}';
    }
    std::uint64_t off = 0;
    for (std::size_t i = 0; i < entries_.size(); ++i) {
      const auto& e = entries_[i];
      std::uint64_t n = 1;
      for (auto d : e.shape) n *= static_cast<std::uint64_t>(d);
      if (i > 0 || !metadata_.empty()) header += ',';
      quoted(header, e.name);
      header += ":{\"dtype\":\"" + std::string(e.dtype) + "\",\"shape\":[";
      for (std::size_t k = 0; k < e.shape.size(); ++k) header += (k ? "," : "") + std::to_string(e.shape[k]);
      header += "],\"data_offsets\":[" + std::to_string(off) + "," + std::to_string(off + e.elem * n) + "]}";
      off += e.elem * n;
    }
    header += '}';
    header.append((8 - header.size() % 8) % 8, ' ');
    write_atomically(path, [&](std::ofstream& out) {
      unsigned char len[8];
      std::uint64_t n = header.size();
      for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);
      out.write(reinterpret_cast<const char*>(len), 8);
      out.write(header.data(), static_cast<std::streamsize>(header.size()));
      for (auto& e : entries_) {
        std::uint64_t cnt = 1;
        for (auto d : e.shape) cnt *= static_cast<std::uint64_t>(d);
        out.write(static_cast<const char*>(e.data), static_cast<std::streamsize>(e.elem * cnt));
      }
    });
  }

 private:
  struct Entry {
    std::string name;
    std::vector<std::int64_t> shape;
    const void* data;
    const char* dtype;
    std::uint64_t elem;
  };
  void add_entry(Entry e) {
    DYNABERT_REQUIRE(e.name != "__metadata__" && names_.insert(e.name).second, InputError,
                     "safetensors writer: tensor '", e.name, "' added twice");
    entries_.push_back(std::move(e));
  }
  std::vector<Entry> entries_;
  std::set<std::string> names_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace dynabert::io
