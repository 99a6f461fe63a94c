// Owning, 64-byte aligned, non-initialising buffers. Every weight and workspace buffer uses
// these, so SIMD loads of packed panels are aligned and no hidden reallocation happens.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>
#include <utility>

namespace dynabert {

inline constexpr std::size_t kAlignment = 64;

/// Allocations made by every AlignedBuffer so far (tests check that hot paths make none).
inline std::atomic<long>& aligned_allocations() {
  static std::atomic<long> n{0};
  return n;
}

/// An array of trivially copyable T aligned to kAlignment. Size is set at construction, by
/// `resize` (which discards contents) or by `ensure` (grow-only: reallocates only when the new size
/// exceeds the capacity, so buffers reused across calls stop allocating once they have seen the
/// largest size); never grows by itself.
template <class T>
class AlignedBuffer {
  static_assert(std::is_trivially_copyable_v<T>, "AlignedBuffer holds trivially copyable types");

 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(std::size_t n, bool zero = false) { resize(n, zero); }
  AlignedBuffer(const AlignedBuffer& o) : AlignedBuffer(o.size_) {
    if (size_) std::memcpy(data_, o.data_, size_ * sizeof(T));
  }
  AlignedBuffer(AlignedBuffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)),
        capacity_(std::exchange(o.capacity_, 0)) {}
  AlignedBuffer& operator=(AlignedBuffer o) noexcept {
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    std::swap(capacity_, o.capacity_);
    return *this;
  }
  ~AlignedBuffer() { std::free(data_); }

  /// Reallocates to n elements (contents discarded; zeroed when `zero`).
  void resize(std::size_t n, bool zero = false) {
    std::free(data_);
    data_ = nullptr;
    size_ = capacity_ = 0;
    if (n == 0) return;
    if (n > (~std::size_t{0} - kAlignment) / sizeof(T)) throw std::bad_alloc();
    std::size_t bytes = (n * sizeof(T) + kAlignment - 1) / kAlignment * kAlignment;
    data_ = static_cast<T*>(std::aligned_alloc(kAlignment, bytes));
    if (!data_) throw std::bad_alloc();
    aligned_allocations().fetch_add(1, std::memory_order_relaxed);
    size_ = capacity_ = n;
    if (zero) std::memset(static_cast<void*>(data_), 0, bytes);
  }
  /// Sets the size to n, reallocating (contents discarded) only when n exceeds the capacity.
  /// Returns data().
  T* ensure(std::size_t n) {
    if (n > capacity_) resize(n);
    size_ = n;
    return data_;
  }
  std::size_t capacity() const noexcept { return capacity_; }
  void fill_zero() {
    if (size_) std::memset(static_cast<void*>(data_), 0, size_ * sizeof(T));
  }

  T* data() noexcept { return data_; }
  const T* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  T& operator[](std::size_t i) noexcept { return data_[i]; }
  const T& operator[](std::size_t i) const noexcept { return data_[i]; }
  T* begin() noexcept { return data_; }
  T* end() noexcept { return data_ + size_; }
  const T* begin() const noexcept { return data_; }
  const T* end() const noexcept { return data_ + size_; }

 private:
  T* data_ = nullptr;
  std::size_t size_ = 0, capacity_ = 0;
};

/// Rounds n up to a multiple of m.
constexpr std::size_t round_up(std::size_t n, std::size_t m) { return (n + m - 1) / m * m; }

}  // namespace dynabert
