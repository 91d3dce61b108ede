// Tensor: a dense, row-major, typed n-d array with shared storage.
//
// A Tensor either owns its bytes (allocated by kiln, writable) or borrows them
// from a longer-lived owner such as a loaded model or a memory-mapped file
// (read-only). Borrowing is how kiln imports weights without copying them: the
// `owner` handle keeps the model's buffer alive for as long as any tensor
// points into it. Copying a Tensor is cheap and shares the storage; use
// clone() for a deep, writable copy.
//
// Thread-safety: const methods may be called concurrently; writing through
// mutable_data() while another thread reads is a data race, as with any buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kiln/dtype.hpp"
#include "kiln/error.hpp"

namespace kiln {

class Tensor {
 public:
  Tensor() = default;

  // A zero-filled, owned tensor. Owned storage is 64-byte aligned (a cache
  // line and an AVX-512 vector: oneDNN's non-temporal stores need it).
  static Tensor zeros(DType dtype, std::vector<int64_t> shape);
  // An owned tensor whose bytes are unspecified until written: for a
  // destination the caller fills completely (a copy, a reorder), where
  // zeroing first would be one more pass over memory.
  static Tensor uninitialized(DType dtype, std::vector<int64_t> shape);
  // A read-only view of `bytes`, kept alive by `owner`.
  // REQUIRES: bytes.size() == numel(shape) * dtype_size(dtype).
  static Tensor borrow(DType dtype, std::vector<int64_t> shape, std::span<const std::byte> bytes,
                       std::shared_ptr<const void> owner);
  template <typename T>
  static Tensor from_values(std::vector<int64_t> shape, std::span<const T> values);
  template <typename T>
  static Tensor scalar(T value) {
    return from_values<T>({}, std::span<const T>(&value, 1));
  }

  DType dtype() const { return m_dtype; }
  bool defined() const { return m_dtype != DType::undefined; }
  const std::vector<int64_t>& shape() const { return m_shape; }
  int64_t rank() const { return static_cast<int64_t>(m_shape.size()); }
  int64_t dim(int64_t axis) const;  // negative axes count from the end
  int64_t numel() const;
  size_t byte_size() const { return static_cast<size_t>(numel()) * dtype_size(m_dtype); }
  bool is_borrowed() const { return !m_writable; }

  std::span<const std::byte> bytes() const { return {m_data, byte_size()}; }
  // Throws kiln::Error if the tensor is borrowed (read-only).
  std::span<std::byte> mutable_bytes();

  template <typename T>
  std::span<const T> data() const {
    check_type(dtype_of<T>());
    return {reinterpret_cast<const T*>(m_data), static_cast<size_t>(numel())};
  }
  template <typename T>
  std::span<T> mutable_data() {
    check_type(dtype_of<T>());
    auto raw = mutable_bytes();
    return {reinterpret_cast<T*>(raw.data()), static_cast<size_t>(numel())};
  }

  // Same storage, another shape with the same element count.
  Tensor reshaped(std::vector<int64_t> shape) const;
  // A deep, owned, writable copy.
  Tensor clone() const;
  // Reads element `i` (flat index) of any numeric dtype as int64/double;
  // used by shape-carrying inputs (Reshape targets, Slice starts, ...).
  int64_t int_at(int64_t i) const;
  double float_at(int64_t i) const;
  std::vector<int64_t> to_int_vector() const;

  std::string shape_string() const;  // "1x3x224x224"; "scalar" for rank 0

 private:
  void check_type(DType requested) const;
  static Tensor allocate(DType dtype, std::vector<int64_t> shape, bool zero);

  DType m_dtype = DType::undefined;
  std::vector<int64_t> m_shape;
  std::shared_ptr<const void> m_owner;
  std::byte* m_data = nullptr;
  bool m_writable = false;
};

int64_t shape_numel(std::span<const int64_t> shape);
std::string shape_to_string(std::span<const int64_t> shape);

template <typename T>
Tensor Tensor::from_values(std::vector<int64_t> shape, std::span<const T> values) {
  Tensor t = zeros(dtype_of<T>(), std::move(shape));
  if (static_cast<int64_t>(values.size()) != t.numel()) {
    throw Error(ErrorCode::internal, "Tensor::from_values: " + std::to_string(values.size()) +
                                         " values for shape " + t.shape_string());
  }
  auto out = t.mutable_data<T>();
  for (size_t i = 0; i < values.size(); ++i) out[i] = values[i];
  return t;
}

}  // namespace kiln
