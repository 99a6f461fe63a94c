// Schema and ParameterSet<T>: named tensors in one flat, aligned buffer. This is the storage of
// every model's parameters and gradients (BertWeights is a ParameterSet with BERT's schema; a
// user's own model declares its own). Blocks (layers/) bind raw views into it once; the optimizer
// and gradient clipping walk it as one buffer.
//
// Mutable access (the non-const tensor() and buffer()) counts as a change: version() increases,
// so a model that keeps packed copies of its weights knows when to repack them.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "dynabert/core/aligned.hpp"
#include "dynabert/core/error.hpp"

namespace dynabert {

/// Name, shape and place of one tensor in a flat buffer.
struct TensorSpec {
  std::string name;
  std::vector<std::int64_t> shape;
  std::size_t offset = 0;  ///< in elements, from the start of the buffer
  std::size_t numel() const {
    std::size_t n = 1;
    for (auto d : shape) n *= static_cast<std::size_t>(d);
    return n;
  }
};

/// The tensors of a model, in declaration order (the order of checkpoints and of the buffer).
class Schema {
 public:
  /// Declares a tensor; throws InputError for a repeated name or a negative dimension.
  void add(std::string name, std::vector<std::int64_t> shape) {
    for (auto d : shape) DYNABERT_REQUIRE(d >= 0, InputError, "tensor '", name, "' has a negative dimension");
    DYNABERT_REQUIRE(index_.emplace(name, specs_.size()).second, InputError, "tensor '", name, "' declared twice");
    specs_.push_back({std::move(name), std::move(shape), 0});
  }
  const std::vector<TensorSpec>& specs() const { return specs_; }
  bool has(const std::string& name) const { return index_.count(name) != 0; }

 private:
  std::vector<TensorSpec> specs_;
  std::map<std::string, std::size_t> index_;
};

/// Every tensor of a schema in one zero-initialised, 64-byte aligned buffer (each tensor starts
/// on a 64-byte boundary).
template <class T>
class ParameterSet {
 public:
  ParameterSet() = default;
  explicit ParameterSet(const Schema& schema) : specs_(schema.specs()) {
    std::size_t off = 0;
    for (std::size_t i = 0; i < specs_.size(); ++i) {
      specs_[i].offset = off;
      off += round_up(specs_[i].numel(), kAlignment / sizeof(T));
      index_[specs_[i].name] = i;
    }
    data_.resize(off, true);
  }
  ParameterSet(const ParameterSet&) = default;
  ParameterSet(ParameterSet&&) noexcept = default;
  /// Copies values in place when both sets have the same tensors (views into this set stay
  /// valid); otherwise takes the other's layout.
  ParameterSet& operator=(const ParameterSet& o) {
    if (this == &o) return *this;
    if (same_layout(o)) {
      std::copy(o.data_.begin(), o.data_.end(), data_.begin());
    } else {
      specs_ = o.specs_;
      index_ = o.index_;
      data_ = o.data_;
    }
    ++version_;
    return *this;
  }
  ParameterSet& operator=(ParameterSet&& o) noexcept {
    specs_ = std::move(o.specs_);
    index_ = std::move(o.index_);
    data_ = std::move(o.data_);
    ++version_;
    return *this;
  }

  const std::vector<TensorSpec>& specs() const { return specs_; }
  bool has(const std::string& name) const { return index_.count(name) != 0; }
  const TensorSpec& spec(const std::string& name) const {
    auto it = index_.find(name);
    DYNABERT_REQUIRE(it != index_.end(), InputError, "model has no tensor '", name, "'");
    return specs_[it->second];
  }
  /// Mutable view of a tensor (counts as a change).
  T* tensor(const std::string& name) {
    ++version_;
    return data_.data() + spec(name).offset;
  }
  const T* tensor(const std::string& name) const { return data_.data() + spec(name).offset; }
  /// A view of tensor `name` for binding a block (writes through it are not counted as changes:
  /// gradient sets, or callers that call touch()).
  T* view(const std::string& name) { return data_.data() + spec(name).offset; }
  const T* view(const std::string& name) const { return data_.data() + spec(name).offset; }
  /// The tensor, or null when the set has no tensor of that name (no change counted).
  const T* find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : data_.data() + specs_[it->second].offset;
  }
  /// Mutable view of the whole buffer (counts as a change).
  AlignedBuffer<T>& buffer() {
    ++version_;
    return data_;
  }
  const AlignedBuffer<T>& buffer() const { return data_; }
  /// Raw pointer to the start of the buffer, without counting a change (for blocks that bind
  /// views once and write gradients through them).
  T* data_unversioned() { return data_.data(); }
  const T* data() const { return data_.data(); }
  std::size_t num_parameters() const {
    std::size_t n = 0;
    for (auto& s : specs_) n += s.numel();
    return n;
  }
  /// Increases with every mutable access.
  std::uint64_t version() const { return version_; }
  /// Records a change made through a view obtained earlier.
  void touch() { ++version_; }
  void fill_zero() {
    data_.fill_zero();
    ++version_;
  }
  bool same_layout(const ParameterSet& o) const {
    if (specs_.size() != o.specs_.size() || data_.size() != o.data_.size()) return false;
    for (std::size_t i = 0; i < specs_.size(); ++i)
      if (specs_[i].name != o.specs_[i].name || specs_[i].shape != o.specs_[i].shape) return false;
    return true;
  }

  /// Copies every tensor of `from` into this set's tensor of the same name, converting values.
  template <class U>
  void copy_values_from(const ParameterSet<U>& from) {
    for (auto& s : specs_) {
      const U* src = from.tensor(s.name);
      T* dst = data_.data() + s.offset;
      for (std::size_t i = 0; i < s.numel(); ++i) dst[i] = static_cast<T>(src[i]);
    }
    ++version_;
  }

 private:
  std::vector<TensorSpec> specs_;
  std::map<std::string, std::size_t> index_;
  AlignedBuffer<T> data_;
  std::uint64_t version_ = 0;
};

}  // namespace dynabert
