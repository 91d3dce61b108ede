// Element types. The numeric values are ONNX's TensorProto.DataType codes and
// are part of kiln's persistent formats: never renumber an entry.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kiln {

enum class DType : int32_t {
  undefined = 0,
  float32 = 1,
  uint8 = 2,
  int8 = 3,
  uint16 = 4,
  int16 = 5,
  int32 = 6,
  int64 = 7,
  // 8 is ONNX's string: kiln has no string tensors.
  boolean = 9,
  float16 = 10,
  float64 = 11,
  uint32 = 12,
  uint64 = 13,
  // 14, 15 are complex types: unsupported.
  bfloat16 = 16,
};

// Bytes per element; 0 for undefined.
size_t dtype_size(DType dtype);
std::string_view dtype_name(DType dtype);  // "float32", "int64", ...
// Maps an ONNX TensorProto.DataType code; nullopt for codes kiln cannot hold.
std::optional<DType> dtype_from_onnx(int32_t onnx_code);
// ONNX's name for a TensorProto.DataType code ("FLOAT8E4M3FN", "INT4", ...),
// for messages about types kiln cannot hold; the number for an unknown code.
std::string onnx_type_name(int32_t onnx_code);
bool is_floating(DType dtype);

// The C++ type that stores one element. float16/bfloat16 are stored as raw
// uint16_t bits, bool as uint8_t.
template <typename T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::float32;
}
template <>
constexpr DType dtype_of<double>() {
  return DType::float64;
}
template <>
constexpr DType dtype_of<int8_t>() {
  return DType::int8;
}
template <>
constexpr DType dtype_of<uint8_t>() {
  return DType::uint8;
}
template <>
constexpr DType dtype_of<int16_t>() {
  return DType::int16;
}
template <>
constexpr DType dtype_of<uint16_t>() {
  return DType::uint16;
}
template <>
constexpr DType dtype_of<int32_t>() {
  return DType::int32;
}
template <>
constexpr DType dtype_of<uint32_t>() {
  return DType::uint32;
}
template <>
constexpr DType dtype_of<int64_t>() {
  return DType::int64;
}
template <>
constexpr DType dtype_of<uint64_t>() {
  return DType::uint64;
}
template <>
constexpr DType dtype_of<bool>() {
  return DType::boolean;
}

}  // namespace kiln
