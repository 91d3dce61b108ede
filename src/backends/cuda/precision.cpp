#include "backends/cuda/precision.hpp"

#include <cstdint>
#include <cstring>

#include "kiln/error.hpp"
#include "util/half.hpp"

namespace kiln::cuda {

ElemType storage_precision(const std::set<Precision>& enabled) {
  if (enabled.count(Precision::fp16)) return ElemType::f16;
  if (enabled.count(Precision::bf16)) return ElemType::bf16;
  return ElemType::f32;
}

size_t elem_size(ElemType type) { return type == ElemType::f32 ? 4 : 2; }

const char* precision_name(ElemType type) {
  switch (type) {
    case ElemType::f32:
      return "fp32";
    case ElemType::f16:
      return "fp16";
    case ElemType::bf16:
      return "bf16";
  }
  return "unknown";
}

std::vector<std::byte> to_storage(std::span<const float> values, ElemType type) {
  std::vector<std::byte> out(values.size() * elem_size(type));
  if (type == ElemType::f32) {
    if (!values.empty()) std::memcpy(out.data(), values.data(), out.size());
    return out;
  }
  std::vector<uint16_t> bits(values.size());
  for (size_t i = 0; i < values.size(); ++i)
    bits[i] = type == ElemType::f16 ? float_to_half(values[i]) : float_to_bfloat16(values[i]);
  if (!bits.empty()) std::memcpy(out.data(), bits.data(), out.size());
  return out;
}

}  // namespace kiln::cuda
