// Exceptions thrown by dynabert. Every bad input (shapes, ids, multipliers, malformed files) is
// reported with one of these, with a message naming what was wrong; never undefined behaviour.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace dynabert {

/// Base of every dynabert exception.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A caller passed something impossible: token id out of range, wrong batch shape,
/// width/depth multiplier outside (0, 1], a sequence longer than the position table...
class InputError : public Error {
 public:
  using Error::Error;
};

/// A file (safetensors, config.json, index.json, vocab) is malformed or does not match the model.
class FormatError : public Error {
 public:
  using Error::Error;
};

/// The file system refused: a folder that cannot be created, a full or read-only disk, a rename
/// that failed. Nothing is left half-written when this is thrown.
class IoError : public Error {
 public:
  using Error::Error;
};

namespace detail {
template <class... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
}  // namespace detail

/// Throws E with the streamed concatenation of args.
template <class E = InputError, class... Args>
[[noreturn]] void raise(Args&&... args) {
  throw E(detail::concat(std::forward<Args>(args)...));
}

}  // namespace dynabert

/// Throws `Exc` with the concatenated message when `cond` is false.
#define DYNABERT_REQUIRE(cond, Exc, ...)                 \
  do {                                                   \
    if (!(cond)) ::dynabert::raise<Exc>(__VA_ARGS__);    \
  } while (0)
