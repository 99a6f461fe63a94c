// Shared by the libFuzzer targets of tests/fuzz (docs/hardening.md).
//
// Every target feeds one input to a reader of the library and catches dynabert::Error only: any
// other exception (std::bad_alloc included: inputs must be bounded), crash, leak, timeout or
// out-of-memory is a finding. Readers that take a path get the input through a file in a scratch
// folder of this process (in /dev/shm when there is one, so no input touches the disk).
// FUZZ_CHECK states an invariant of a successful read; its failure aborts (a finding too).
#pragma once
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <system_error>

#include <unistd.h>

#define FUZZ_CHECK(cond)                                                                     \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      std::fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);     \
      std::abort();                                                                          \
    }                                                                                        \
  } while (0)

namespace fuzz {

/// This process's scratch folder, created on first use and removed at exit. Folders left by
/// fuzzer processes that died (a crash aborts without running atexit) are swept on creation.
inline const std::string& scratch() {
  // never destroyed, so that the atexit handler below can still use it at exit
  static const std::string* const dir = new std::string([] {
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::path base = fs::is_directory("/dev/shm", ec) ? fs::path("/dev/shm") : fs::temp_directory_path();
    const std::string prefix = "dynabert_fuzz_";
    for (auto& e : fs::directory_iterator(base, ec)) {  // leftovers of dead fuzzer processes
      const std::string n = e.path().filename().string();
      if (n.rfind(prefix, 0) != 0) continue;
      const long pid = std::strtol(n.c_str() + prefix.size(), nullptr, 10);
      if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) fs::remove_all(e.path(), ec);
    }
    const fs::path d = base / (prefix + std::to_string(::getpid()));
    fs::remove_all(d, ec);
    fs::create_directories(d, ec);
    if (ec) {
      std::fprintf(stderr, "fuzz: cannot create %s: %s\n", d.c_str(), ec.message().c_str());
      std::abort();
    }
    std::atexit([] {
      std::error_code e2;
      std::filesystem::remove_all(scratch(), e2);
    });
    return d.string();
  }());
  return *dir;
}

/// A folder under the scratch folder (created when missing).
inline std::string folder(const std::string& name) {
  const std::string d = scratch() + "/" + name;
  std::error_code ec;
  std::filesystem::create_directories(d, ec);
  if (ec) std::abort();
  return d;
}

/// Writes `bytes` to `path` (aborts when the scratch file system refuses: not a finding).
inline const std::string& write_file(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) {
    std::fprintf(stderr, "fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
  return path;
}

/// FUZZ_VERBOSE=1 in the environment: each input's outcome is printed (to see what a seed or a
/// finding exercises: `FUZZ_VERBOSE=1 build/fuzz/tests/fuzz/fuzz_config file...`).
inline bool verbose() {
  static const bool v = std::getenv("FUZZ_VERBOSE") != nullptr;
  return v;
}
inline void accepted(const char* what) {
  if (verbose()) std::fprintf(stderr, "fuzz: %s: accepted\n", what);
}
inline void rejected(const char* what, const std::exception& e) {
  if (verbose()) std::fprintf(stderr, "fuzz: %s: rejected: %s\n", what, e.what());
}

inline std::string_view view(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

/// Splits `s` at the first `sep`: (before, after); after is empty when there is none.
inline std::pair<std::string_view, std::string_view> split(std::string_view s, char sep) {
  const auto at = s.find(sep);
  if (at == std::string_view::npos) return {s, {}};
  return {s.substr(0, at), s.substr(at + 1)};
}

}  // namespace fuzz
