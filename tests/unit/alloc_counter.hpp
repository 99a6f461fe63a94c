// Counts heap allocations by replacing the global operator new/delete of the test program that
// includes this header (include it from exactly one translation unit). AlignedBuffer counts its
// own allocations; this catches everything else (std::vector, std::string, ...).
#pragma once

#include <atomic>
#include <cstdlib>
#include <new>

// GCC sees malloc/free behind a replaced operator new/delete as a mismatch: it is not.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

namespace test_alloc {
inline std::atomic<long> count{0};
}  // namespace test_alloc

void* operator new(std::size_t n) {
  ++test_alloc::count;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
// The nothrow forms too (std::stable_sort's temporary buffer uses them): a nothrow new left to the
// runtime would be freed by the delete below, which the sanitizers report as a mismatch.
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  ++test_alloc::count;
  return std::malloc(n ? n : 1);
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return operator new(n, t); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
