// Exceptions thrown by dynabert. Every bad input (shapes, ids, multipliers, malformed files) is
// reported with one of these, with a message naming what was wrong; never undefined behaviour.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
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
/// One argument of an error message, type-erased: messages are assembled by one non-template
/// function, so the hundreds of checks in the library do not each instantiate stream code.
struct Piece {
  enum Kind { kText, kInt, kUInt, kDouble, kOther } kind = kText;
  std::string_view text;
  long long i = 0;
  unsigned long long u = 0;
  double d = 0;
  std::string other;  ///< anything else, already streamed
};
inline Piece piece(std::string_view s) { return {Piece::kText, s, 0, 0, 0, {}}; }
inline Piece piece(const char* s) { return piece(std::string_view(s ? s : "(null)")); }
inline Piece piece(const std::string& s) { return piece(std::string_view(s)); }
inline Piece piece(char c) { return {Piece::kOther, {}, 0, 0, 0, std::string(1, c)}; }
inline Piece piece(bool b) { return piece(b ? "true" : "false"); }
template <class T>
Piece piece(const T& v) {
  if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) return {Piece::kInt, {}, static_cast<long long>(v), 0, 0, {}};
  else if constexpr (std::is_integral_v<T>) return {Piece::kUInt, {}, 0, static_cast<unsigned long long>(v), 0, {}};
  else if constexpr (std::is_floating_point_v<T>) return {Piece::kDouble, {}, 0, 0, static_cast<double>(v), {}};
  else if constexpr (std::is_enum_v<T>) return {Piece::kInt, {}, static_cast<long long>(v), 0, 0, {}};
  else {
    std::ostringstream os;
    os << v;
    return {Piece::kOther, {}, 0, 0, 0, os.str()};
  }
}
/// The message of pieces, formatted as an ostream would (default precision for doubles).
inline std::string join(const Piece* p, std::size_t n) {
  std::ostringstream os;
  for (std::size_t k = 0; k < n; ++k) switch (p[k].kind) {
      case Piece::kText: os << p[k].text; break;
      case Piece::kInt: os << p[k].i; break;
      case Piece::kUInt: os << p[k].u; break;
      case Piece::kDouble: os << p[k].d; break;
      default: os << p[k].other;
    }
  return os.str();
}
template <class... Args>
std::string concat(Args&&... args) {
  const Piece pieces[] = {piece(args)..., piece("")};
  return join(pieces, sizeof...(Args));
}
/// Throws E with the joined message (out of line and cold: keeps the checks' fast paths small).
template <class E>
[[noreturn]] __attribute__((noinline, cold)) void throw_pieces(const Piece* p, std::size_t n) {
  throw E(join(p, n));
}
}  // namespace detail

/// Throws E with the streamed concatenation of args.
template <class E = InputError, class... Args>
[[noreturn]] __attribute__((cold)) inline void raise(Args&&... args) {
  const detail::Piece pieces[] = {detail::piece(args)..., detail::piece("")};
  detail::throw_pieces<E>(pieces, sizeof...(Args));
}

}  // namespace dynabert

/// Throws `Exc` with the concatenated message when `cond` is false.
#define DYNABERT_REQUIRE(cond, Exc, ...)                 \
  do {                                                   \
    if (!(cond)) ::dynabert::raise<Exc>(__VA_ARGS__);    \
  } while (0)
