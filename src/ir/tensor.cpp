#include "kiln/tensor.hpp"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include "ir/storage_pool.hpp"
#include "ir/tensor_limits.hpp"
#include "util/byte_size.hpp"

namespace kiln {

int64_t shape_numel(std::span<const int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    // A hostile shape must not wrap around to a small count (and a short buffer).
    if (__builtin_mul_overflow(n, d, &n)) {
      throw Error(ErrorCode::invalid_model,
                  "shape " + shape_to_string(shape) + " has more elements than int64 counts");
    }
  }
  return n;
}

namespace {

constexpr uint64_t k_default_max_tensor_bytes = uint64_t{16} << 30;

uint64_t max_tensor_bytes_from_env() {
  const char* text = std::getenv("KILN_MAX_TENSOR_BYTES");
  if (!text || !*text) return k_default_max_tensor_bytes;
  auto size = parse_byte_size(text);
  if (!size.ok() || size.bytes == 0) {
    throw Error(ErrorCode::invalid_argument,
                "KILN_MAX_TENSOR_BYTES: " + (size.ok() ? "0 bytes" : size.error));
  }
  return size.bytes;
}

std::atomic<uint64_t>& max_tensor_bytes_setting() {
  static std::atomic<uint64_t> bytes{max_tensor_bytes_from_env()};
  return bytes;
}

}  // namespace

uint64_t max_tensor_bytes() { return max_tensor_bytes_setting().load(std::memory_order_relaxed); }

void set_max_tensor_bytes(uint64_t bytes) {
  max_tensor_bytes_setting().store(bytes, std::memory_order_relaxed);
}

std::string shape_to_string(std::span<const int64_t> shape) {
  if (shape.empty()) return "scalar";
  std::string s;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += 'x';
    s += std::to_string(shape[i]);
  }
  return s;
}

Tensor Tensor::zeros(DType dtype, std::vector<int64_t> shape) {
  return allocate(dtype, std::move(shape), true);
}

Tensor Tensor::uninitialized(DType dtype, std::vector<int64_t> shape) {
  return allocate(dtype, std::move(shape), false);
}

Tensor Tensor::allocate(DType dtype, std::vector<int64_t> shape, bool zero) {
  for (int64_t d : shape) {
    if (d < 0)
      throw Error(ErrorCode::invalid_argument, "negative dimension in shape " + shape_to_string(shape));
  }
  if (dtype_size(dtype) == 0) throw Error(ErrorCode::internal, "Tensor::zeros: undefined dtype");
  uint64_t wanted = 0;
  bool overflow =
      __builtin_mul_overflow(static_cast<uint64_t>(shape_numel(shape)), dtype_size(dtype), &wanted);
  if (overflow || wanted > max_tensor_bytes()) {
    throw Error(ErrorCode::invalid_model,
                "a " + std::string(dtype_name(dtype)) + " tensor of shape " + shape_to_string(shape) +
                    " needs " + (overflow ? std::string("more than 2^64") : std::to_string(wanted)) +
                    " bytes, above the limit of " + std::to_string(max_tensor_bytes()) +
                    " bytes (KILN_MAX_TENSOR_BYTES sets it)");
  }
  Tensor t;
  t.m_dtype = dtype;
  t.m_shape = std::move(shape);
  // At least one byte so data() is never null, even for empty tensors. Large
  // blocks are recycled (storage_pool.hpp says why).
  const size_t bytes = (std::max<size_t>(t.byte_size(), 1) + 63) / 64 * 64;
  std::shared_ptr<std::byte> storage = allocate_storage(bytes);
  if (zero) std::memset(storage.get(), 0, bytes);
  t.m_data = storage.get();
  t.m_owner = std::move(storage);
  t.m_writable = true;
  return t;
}

Tensor Tensor::borrow(DType dtype, std::vector<int64_t> shape, std::span<const std::byte> bytes,
                      std::shared_ptr<const void> owner) {
  Tensor t;
  t.m_dtype = dtype;
  t.m_shape = std::move(shape);
  if (bytes.size() != t.byte_size()) {
    throw Error(ErrorCode::invalid_model, "tensor of shape " + t.shape_string() + " and type " +
                                              std::string(dtype_name(dtype)) + " needs " +
                                              std::to_string(t.byte_size()) + " bytes, got " +
                                              std::to_string(bytes.size()));
  }
  // The const_cast is safe: m_writable=false makes every mutable accessor throw.
  t.m_data = const_cast<std::byte*>(bytes.data());
  t.m_owner = std::move(owner);
  t.m_writable = false;
  return t;
}

int64_t Tensor::dim(int64_t axis) const {
  int64_t r = rank();
  if (axis < 0) axis += r;
  if (axis < 0 || axis >= r) {
    throw Error(ErrorCode::internal,
                "axis " + std::to_string(axis) + " out of range for shape " + shape_string());
  }
  return m_shape[static_cast<size_t>(axis)];
}

int64_t Tensor::numel() const { return shape_numel(m_shape); }

std::span<std::byte> Tensor::mutable_bytes() {
  if (!m_writable) throw Error(ErrorCode::internal, "write to a borrowed (read-only) tensor");
  return {m_data, byte_size()};
}

Tensor Tensor::reshaped(std::vector<int64_t> shape) const {
  if (shape_numel(shape) != numel()) {
    throw Error(ErrorCode::invalid_argument,
                "cannot reshape " + shape_string() + " to " + shape_to_string(shape));
  }
  Tensor t = *this;
  t.m_shape = std::move(shape);
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = uninitialized(m_dtype, m_shape);
  if (byte_size() > 0) std::memcpy(t.m_data, m_data, byte_size());
  return t;
}

namespace {
template <typename Out, typename Fn>
Out read_as(const Tensor& t, int64_t i, Fn&& convert) {
  const std::byte* p = t.bytes().data();
  switch (t.dtype()) {
    case DType::float32:
      return convert(reinterpret_cast<const float*>(p)[i]);
    case DType::float64:
      return convert(reinterpret_cast<const double*>(p)[i]);
    case DType::int8:
      return convert(reinterpret_cast<const int8_t*>(p)[i]);
    case DType::uint8:
      return convert(reinterpret_cast<const uint8_t*>(p)[i]);
    case DType::boolean:
      return convert(reinterpret_cast<const uint8_t*>(p)[i]);
    case DType::int16:
      return convert(reinterpret_cast<const int16_t*>(p)[i]);
    case DType::uint16:
      return convert(reinterpret_cast<const uint16_t*>(p)[i]);
    case DType::int32:
      return convert(reinterpret_cast<const int32_t*>(p)[i]);
    case DType::uint32:
      return convert(reinterpret_cast<const uint32_t*>(p)[i]);
    case DType::int64:
      return convert(reinterpret_cast<const int64_t*>(p)[i]);
    case DType::uint64:
      return convert(reinterpret_cast<const uint64_t*>(p)[i]);
    default:
      throw Error(ErrorCode::unsupported,
                  "cannot read elements of type " + std::string(dtype_name(t.dtype())));
  }
}
}  // namespace

int64_t Tensor::int_at(int64_t i) const {
  return read_as<int64_t>(*this, i, [](auto v) { return static_cast<int64_t>(v); });
}

double Tensor::float_at(int64_t i) const {
  return read_as<double>(*this, i, [](auto v) { return static_cast<double>(v); });
}

std::vector<int64_t> Tensor::to_int_vector() const {
  std::vector<int64_t> out(static_cast<size_t>(numel()));
  for (int64_t i = 0; i < numel(); ++i) out[static_cast<size_t>(i)] = int_at(i);
  return out;
}

std::string Tensor::shape_string() const { return shape_to_string(m_shape); }

void Tensor::check_type(DType requested) const {
  if (requested != m_dtype) {
    throw Error(ErrorCode::internal, "tensor of type " + std::string(dtype_name(m_dtype)) + " accessed as " +
                                         std::string(dtype_name(requested)));
  }
}

}  // namespace kiln
