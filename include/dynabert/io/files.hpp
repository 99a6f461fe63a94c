// Crash-safe file writing. Every file the library writes goes through write_atomically: written to
// "<path>.tmp.<pid>", flushed to the disk (fsync), renamed over <path>, and the rename made durable
// (fsync of the folder). A kill or a power cut at any point leaves either the old file or the new
// one, never a mix; a failure (full or read-only disk) is an IoError naming the path and the
// system's reason, and removes the temporary file. Folders are published the same way
// (publish_folder). Orphans of killed writers (*.tmp.<pid> files, *.tmp folders) are removed by
// remove_orphans.
#pragma once
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

#include <fcntl.h>
#include <unistd.h>

#include "dynabert/core/error.hpp"

namespace dynabert::io {

/// fsync of a file or folder (IoError when the system refuses).
inline void sync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  DYNABERT_REQUIRE(fd >= 0, IoError, path, ": cannot open to sync (", std::strerror(errno), ")");
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  DYNABERT_REQUIRE(rc == 0 || err == EINVAL, IoError, path, ": cannot sync to disk (", std::strerror(err), ")");
}

/// The folder holding `path` ("." for a bare name).
inline std::string parent_folder(const std::string& path) {
  const auto p = std::filesystem::path(path).parent_path();
  return p.empty() ? std::string(".") : p.string();
}

/// Creates `folder` and its parents; IoError (not a filesystem exception) when it cannot.
inline void create_folders(const std::string& folder) {
  std::error_code ec;
  std::filesystem::create_directories(folder, ec);
  DYNABERT_REQUIRE(!ec, IoError, folder, ": cannot create the folder (", ec.message(), ")");
  DYNABERT_REQUIRE(std::filesystem::is_directory(folder, ec), IoError, folder, ": exists and is not a folder");
}

/// Writes `path` through `write(std::ofstream&)` into a temporary file, syncs and renames it.
template <class WriteFn>
void write_atomically(const std::string& path, WriteFn&& write) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    DYNABERT_REQUIRE(out.good(), IoError, tmp, ": cannot create (", std::strerror(errno), ")");
    write(out);
    out.flush();
    if (!out.good()) {
      const int err = errno;
      out.close();
      std::remove(tmp.c_str());
      raise<IoError>(tmp, ": write failed (", std::strerror(err), ")");
    }
  }
  try {
    sync_path(tmp);
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    raise<IoError>(path, ": cannot rename ", tmp, " into place (", std::strerror(err), ")");
  }
  sync_path(parent_folder(path));
}

/// Makes the finished folder `tmp` (every file in it already synced) appear as `final` (which must
/// not exist), durably. Nothing else points at `final` before this returns.
inline void publish_folder(const std::string& tmp, const std::string& final) {
  sync_path(tmp);
  std::error_code ec;
  std::filesystem::rename(tmp, final, ec);
  DYNABERT_REQUIRE(!ec, IoError, final, ": cannot rename ", tmp, " into place (", ec.message(), ")");
  sync_path(parent_folder(final));
}

/// Where a program writes an output folder that it replaces whole (dynabert_export,
/// dynabert_rewire): `final` (the --out path without a trailing slash) and `tmp`, a hidden sibling
/// unique to this process, which the program fills and then hands to replace_folder().
struct OutputFolder {
  std::string final, tmp;
};

/// Checks an output folder before anything is written: it must not be, contain or lie inside
/// `input` (the folder read; "" when there is none); an existing `out` must be a folder that holds a checkpoint
/// (config.json or model.safetensors) or nothing, unless `force`: a typo never deletes a folder
/// of other files. InputError names what is wrong.
inline OutputFolder plan_output_folder(const std::string& out, const std::string& input, bool force = false) {
  namespace fs = std::filesystem;
  DYNABERT_REQUIRE(!out.empty(), InputError, "the output folder is empty");
  fs::path o = fs::path(out);
  while (!o.has_filename() && o.has_parent_path() && o != o.root_path()) o = o.parent_path();  // "x/" -> "x"
  DYNABERT_REQUIRE(o.has_filename() && o.filename() != "." && o.filename() != "..", InputError, "--out ", out,
                   " does not name a folder of its own");
  std::error_code ec;
  const fs::path out_abs = fs::weakly_canonical(fs::absolute(o, ec), ec);
  const fs::path in_abs = input.empty() ? fs::path() : fs::weakly_canonical(fs::absolute(input, ec), ec);
  auto inside = [](const fs::path& a, const fs::path& b) {  // a is b or below b
    auto ai = a.begin(), bi = b.begin();
    for (; bi != b.end() && !bi->empty(); ++ai, ++bi)
      if (ai == a.end() || *ai != *bi) return false;
    return true;
  };
  DYNABERT_REQUIRE(input.empty() || (!inside(out_abs, in_abs) && !inside(in_abs, out_abs)), InputError, "--out ", out,
                   " overlaps ", input, ": write to a folder of its own");
  if (fs::exists(o, ec)) {
    DYNABERT_REQUIRE(fs::is_directory(o, ec), InputError, "--out ", out, " exists and is not a folder");
    const bool checkpoint = fs::exists(o / "config.json", ec) || fs::exists(o / "model.safetensors", ec);
    DYNABERT_REQUIRE(force || checkpoint || fs::is_empty(o, ec), InputError, "--out ", out,
                     " exists and holds files that are not a checkpoint: choose another folder (or --force to replace it)");
  }
  const fs::path tmp = o.parent_path() / ("." + o.filename().string() + ".tmp." + std::to_string(::getpid()));
  return {o.string(), tmp.string()};
}

/// Puts the finished folder `f.tmp` (every file in it synced) in place of `f.final`, durably: an
/// existing final folder is first renamed aside and removed only after the new one is in place, so
/// a kill leaves the old folder, or the new one, or both side by side (then the old one is named
/// ".<name>.old.<pid>").
inline void replace_folder(const OutputFolder& f) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(f.final, ec)) {
    publish_folder(f.tmp, f.final);
    return;
  }
  const fs::path o(f.final);
  const std::string old = (o.parent_path() / ("." + o.filename().string() + ".old." + std::to_string(::getpid()))).string();
  fs::rename(f.final, old, ec);
  DYNABERT_REQUIRE(!ec, IoError, f.final, ": cannot move the previous folder aside (", ec.message(), ")");
  publish_folder(f.tmp, f.final);
  fs::remove_all(old, ec);
}

/// Removes, in `folder` (not below), what killed writers leave: files "*.tmp.<digits>" and
/// folders "*.tmp". Returns how many were removed.
inline int remove_orphans(const std::string& folder) {
  namespace fs = std::filesystem;
  int n = 0;
  std::error_code ec;
  if (!fs::is_directory(folder, ec)) return 0;
  for (auto& e : fs::directory_iterator(folder, ec)) {
    const std::string name = e.path().filename().string();
    const auto at = name.rfind(".tmp");
    if (at == std::string::npos) continue;
    const std::string rest = name.substr(at + 4);
    const bool tmp_file = rest.size() > 1 && rest[0] == '.' && rest.find_first_not_of("0123456789", 1) == std::string::npos;
    const bool tmp_folder = rest.empty() && e.is_directory(ec);
    if (tmp_file || tmp_folder) {
      fs::remove_all(e.path(), ec);
      n += !ec;
    }
  }
  return n;
}

}  // namespace dynabert::io
