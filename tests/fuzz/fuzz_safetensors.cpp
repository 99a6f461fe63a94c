// The safetensors reader: header length, JSON header, dtypes, shapes, offsets, tiling of the data
// buffer; then every tensor read in each way the library reads it (float, double, int8), and the
// same file through CheckpointReader (name normalisation and its duplicate check).
#include <cstdint>
#include <vector>

#include <dynabert/io/checkpoint.hpp>
#include <dynabert/io/safetensors.hpp>

#include "fuzz_common.hpp"

using namespace dynabert;

namespace {

bool floating(io::DType t) {
  return t == io::DType::kF32 || t == io::DType::kF16 || t == io::DType::kBF16 || t == io::DType::kF64;
}

void read_all(const io::SafetensorsFile& f, std::uint64_t file_size) {
  std::uint64_t covered = 0;
  for (const auto& t : f.tensors()) {
    // what a successful parse promises
    FUZZ_CHECK(t.begin <= t.end && t.end - t.begin == t.numel() * static_cast<std::uint64_t>(t.elem_size));
    FUZZ_CHECK(t.end <= file_size);
    covered += t.end - t.begin;
    std::uint64_t n = 1;
    for (auto d : t.shape) {
      FUZZ_CHECK(d >= 0);
      n *= static_cast<std::uint64_t>(d);
    }
    FUZZ_CHECK(n == t.numel());
    if (floating(t.dtype)) {
      std::vector<float> a = f.read<float>(t.name);
      std::vector<double> b = f.read<double>(t.name);
      FUZZ_CHECK(a.size() == t.numel() && b.size() == t.numel());
    } else if (t.dtype == io::DType::kI8) {
      std::vector<std::int8_t> q(t.numel());
      f.read_i8(t.name, q.data(), q.size());
    } else {
      try {
        (void)f.read<float>(t.name);
        FUZZ_CHECK(false && "a non-floating dtype was read as float");
      } catch (const FormatError&) {
      }
    }
  }
  FUZZ_CHECK(covered <= file_size);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string path = fuzz::scratch() + "/model.safetensors";
  fuzz::write_file(path, fuzz::view(data, size));
  try {
    io::SafetensorsFile f(path);
    read_all(f, size);
    fuzz::accepted("SafetensorsFile");
  } catch (const Error& e) {
    fuzz::rejected("SafetensorsFile", e);
  }
  try {
    io::CheckpointReader r(path);
    for (const auto& n : r.names()) {
      const auto& info = r.info(n);
      if (floating(info.dtype)) {
        std::vector<float> v(info.numel());
        r.read(n, v.data(), v.size());
      }
    }
    fuzz::accepted("CheckpointReader");
  } catch (const Error& e) {
    fuzz::rejected("CheckpointReader", e);
  }
  return 0;
}
