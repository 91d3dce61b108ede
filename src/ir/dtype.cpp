#include "kiln/dtype.hpp"

#include <iterator>

namespace kiln {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::undefined:
      return 0;
    case DType::boolean:
    case DType::int8:
    case DType::uint8:
      return 1;
    case DType::int16:
    case DType::uint16:
    case DType::float16:
    case DType::bfloat16:
      return 2;
    case DType::int32:
    case DType::uint32:
    case DType::float32:
      return 4;
    case DType::int64:
    case DType::uint64:
    case DType::float64:
      return 8;
  }
  return 0;
}

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::undefined:
      return "undefined";
    case DType::float32:
      return "float32";
    case DType::uint8:
      return "uint8";
    case DType::int8:
      return "int8";
    case DType::uint16:
      return "uint16";
    case DType::int16:
      return "int16";
    case DType::int32:
      return "int32";
    case DType::int64:
      return "int64";
    case DType::boolean:
      return "bool";
    case DType::float16:
      return "float16";
    case DType::float64:
      return "float64";
    case DType::uint32:
      return "uint32";
    case DType::uint64:
      return "uint64";
    case DType::bfloat16:
      return "bfloat16";
  }
  return "unknown";
}

std::optional<DType> dtype_from_onnx(int32_t onnx_code) {
  switch (onnx_code) {
    case 1:
    case 2:
    case 3:
    case 4:
    case 5:
    case 6:
    case 7:
    case 9:
    case 10:
    case 11:
    case 12:
    case 13:
    case 16:
      return static_cast<DType>(onnx_code);
    default:
      return std::nullopt;
  }
}

std::string onnx_type_name(int32_t onnx_code) {
  static constexpr std::string_view k_names[] = {
      "UNDEFINED",      "FLOAT",      "UINT8",          "INT8",       "UINT16",   "INT16",
      "INT32",          "INT64",      "STRING",         "BOOL",       "FLOAT16",  "DOUBLE",
      "UINT32",         "UINT64",     "COMPLEX64",      "COMPLEX128", "BFLOAT16", "FLOAT8E4M3FN",
      "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "UINT4",      "INT4",     "FLOAT4E2M1"};
  if (onnx_code >= 0 && static_cast<size_t>(onnx_code) < std::size(k_names)) {
    return std::string(k_names[onnx_code]) + " (" + std::to_string(onnx_code) + ")";
  }
  return "unknown (" + std::to_string(onnx_code) + ")";
}

bool is_floating(DType dtype) {
  return dtype == DType::float32 || dtype == DType::float64 || dtype == DType::float16 ||
         dtype == DType::bfloat16;
}

}  // namespace kiln
