// The sharded checkpoint index: model.safetensors.index.json (the input) in a folder that holds
// a few fixed shards (two that belong together, one whose names collide with them after
// normalisation, one that is not a safetensors file), read through CheckpointReader: weight_map,
// shard names (plain file names only), the tensors each shard must hold, name normalisation.
#include <cstdint>
#include <vector>

#include <dynabert/io/checkpoint.hpp>
#include <dynabert/io/safetensors.hpp>

#include "fuzz_common.hpp"

using namespace dynabert;

namespace {

const std::string& checkpoint() {
  static const std::string dir = [] {
    const std::string d = fuzz::folder("sharded");
    static const float v[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    io::SafetensorsWriter a;
    a.add("bert.embeddings.LayerNorm.gamma", {4}, v);
    a.add("bert.embeddings.LayerNorm.beta", {4}, v + 4);
    a.add_metadata("format", "pt");
    a.write(d + "/model-00001-of-00002.safetensors");
    io::SafetensorsWriter b;
    b.add("encoder.layer.0.output.dense.weight", {3, 4}, v);
    b.add("classifier.bias", {2}, v + 2);
    b.write(d + "/model-00002-of-00002.safetensors");
    io::SafetensorsWriter c;  // "embeddings.LayerNorm.weight" after normalisation, as in shard 1
    c.add("embeddings.LayerNorm.weight", {4}, v);
    c.write(d + "/duplicate.safetensors");
    fuzz::write_file(d + "/config.json", "{\"vocab_size\": 10}\n");
    fuzz::write_file(d + "/broken.safetensors", std::string("\x10\0\0\0\0\0\0\0{\"a\":{}}        ", 24));
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string& dir = checkpoint();
  fuzz::write_file(dir + "/model.safetensors.index.json", fuzz::view(data, size));
  try {
    io::CheckpointReader r(dir);
    FUZZ_CHECK(r.folder() == dir);
    for (const auto& n : r.names()) {
      FUZZ_CHECK(r.contains(n));
      const auto& info = r.info(n);
      FUZZ_CHECK(!r.file_name(n).empty());
      std::vector<float> out(info.numel());
      r.read(n, out.data(), out.size());
    }
    (void)r.metadata();
    fuzz::accepted("CheckpointReader (sharded)");
  } catch (const Error& e) {
    fuzz::rejected("CheckpointReader (sharded)", e);
  }
  return 0;
}
