// Span<T>: a non-owning view of n contiguous values (C++17 has no std::span). Caches and block
// outputs hand out spans into buffers they own, so that reusing them across calls allocates
// nothing.
#pragma once
#include <cstddef>

namespace dynabert {

template <class T>
class Span {
 public:
  Span() = default;
  Span(T* data, std::size_t n) : data_(data), size_(n) {}
  T* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  T& operator[](std::size_t i) const noexcept { return data_[i]; }
  T* begin() const noexcept { return data_; }
  T* end() const noexcept { return data_ + size_; }
  operator Span<const T>() const noexcept { return {data_, size_}; }

 private:
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace dynabert
