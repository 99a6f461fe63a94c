// Hugging Face checkpoint access: a folder with config.json and model.safetensors (or shards
// listed in model.safetensors.index.json), or a single .safetensors file. Tensor names are
// normalised to the bare encoder's form: a leading "bert." or "roberta." is dropped and the old LayerNorm names
// "gamma"/"beta" become "weight"/"bias".
#pragma once
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>


#include "dynabert/io/safetensors.hpp"
#include "dynabert/io/json.hpp"

namespace dynabert::io {

/// "bert.encoder.layer.0.attention.output.LayerNorm.gamma" -> "encoder.layer.0.attention.output.LayerNorm.weight"
inline std::string normalize_hf_name(std::string n) {
  if (n.rfind("bert.", 0) == 0) n = n.substr(5);
  else if (n.rfind("roberta.", 0) == 0) n = n.substr(8);
  auto ends_with = [&](const std::string& s) { return n.size() >= s.size() && n.compare(n.size() - s.size(), s.size(), s) == 0; };
  if (ends_with("LayerNorm.gamma")) n = n.substr(0, n.size() - 5) + "weight";
  else if (ends_with("LayerNorm.beta")) n = n.substr(0, n.size() - 4) + "bias";
  return n;
}

/// Reads tensors of a (possibly sharded) Hugging Face checkpoint by normalised name.
class CheckpointReader {
 public:
  /// `path`: a checkpoint folder, or a .safetensors file.
  explicit CheckpointReader(const std::string& path) {
    namespace fs = std::filesystem;
    DYNABERT_REQUIRE(fs::exists(path), FormatError, path, ": no such file or folder");
    if (fs::is_directory(path)) {
      dir_ = path;
      const auto single = fs::path(path) / "model.safetensors";
      const auto index = fs::path(path) / "model.safetensors.index.json";
      if (fs::exists(single)) add_file(single.string());
      else if (fs::exists(index)) load_index(index.string());
      else if (fs::exists(fs::path(path) / "pytorch_model.bin"))
        raise<FormatError>(path, ": holds pytorch_model.bin only; convert it with tools/convert_hf.py");
      else raise<FormatError>(path, ": no model.safetensors or model.safetensors.index.json");
    } else {
      add_file(path);
    }
  }

  /// Folder of the checkpoint ("" when opened from a single file).
  const std::string& folder() const { return dir_; }
  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  /// Whether some tensor's name carried `prefix` ("bert." or "roberta.") before normalising.
  bool had_prefix(const std::string& prefix) const { return prefixes_.count(prefix) != 0; }
  std::vector<std::string> names() const {
    std::vector<std::string> v;
    for (auto& [k, _] : where_) v.push_back(k);
    return v;
  }
  /// Header entry of a tensor by normalised name.
  const TensorInfo& info(const std::string& name) const { return file_of(name).info(original(name)); }
  /// Name of the file holding tensor `name`.
  const std::string& file_name(const std::string& name) const { return file_of(name).path(); }
  template <class T>
  void read(const std::string& name, T* dst, std::uint64_t count) const {
    file_of(name).read(original(name), dst, count);
  }
  void read_i8(const std::string& name, std::int8_t* dst, std::uint64_t count) const {
    file_of(name).read_i8(original(name), dst, count);
  }
  /// Metadata of the first file.
  const std::map<std::string, std::string>& metadata() const { return files_.front()->metadata(); }

 private:
  void add_file(const std::string& f) {
    files_.push_back(std::make_unique<SafetensorsFile>(f));
    const std::size_t idx = files_.size() - 1;
    for (auto& t : files_.back()->tensors()) {
      const std::string n = normalize_hf_name(t.name);
      for (const char* p : {"bert.", "roberta."})
        if (t.name.rfind(p, 0) == 0) prefixes_.insert(p);
      auto it = where_.find(n);
      DYNABERT_REQUIRE(it == where_.end(), FormatError, f, ": tensor '", t.name, "' duplicates '",
                       it->second.second, "' (both are '", n, "' after normalising names)");
      where_[n] = {idx, t.name};
    }
  }
  void load_index(const std::string& index) {
    const Json j = read_json_file(index);
    const Json* map = j.find("weight_map");
    DYNABERT_REQUIRE(map && map->is_object(), FormatError, index, ": missing object 'weight_map'");
    std::map<std::string, std::vector<std::string>> by_file;
    for (const auto& [tensor, file] : map->members()) {
      DYNABERT_REQUIRE(file.is_string(), FormatError, index, ": weight_map['", tensor, "'] is not a file name");
      by_file[file.as_string()].push_back(tensor);
    }
    DYNABERT_REQUIRE(!by_file.empty(), FormatError, index, ": weight_map is empty");
    for (auto& [file, tensors] : by_file) {
      DYNABERT_REQUIRE(file.find('/') == std::string::npos && file.find("..") == std::string::npos,
                       FormatError, index, ": shard name '", file, "' must be a plain file name");
      const std::string path = (std::filesystem::path(dir_) / file).string();
      add_file(path);
      for (auto& t : tensors)
        DYNABERT_REQUIRE(files_.back()->contains(t), FormatError, index, ": lists tensor '", t, "' in ",
                         file, ", which does not hold it");
    }
  }
  const SafetensorsFile& file_of(const std::string& name) const {
    auto it = where_.find(name);
    DYNABERT_REQUIRE(it != where_.end(), FormatError, files_.empty() ? dir_ : files_.front()->path(),
                     ": tensor '", name, "' is missing");
    return *files_[it->second.first];
  }
  const std::string& original(const std::string& name) const { return where_.at(name).second; }

  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::pair<std::size_t, std::string>> where_;  // normalised -> (file, original)
  std::set<std::string> prefixes_;                                      // model prefixes seen
};

}  // namespace dynabert::io
