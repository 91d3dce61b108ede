// IEEE half (float16) and bfloat16 bits to and from float, rounding to
// nearest even, for the few places that convert 16-bit floats element by
// element (Cast on the reference backend, weight recipes).
#pragma once

#include <bit>
#include <cstdint>

namespace kiln {

inline float half_to_float(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1fu;
  const uint32_t mantissa = bits & 0x3ffu;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24 is exact in float.
    const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
    return std::bit_cast<float>(std::bit_cast<uint32_t>(magnitude) | sign);
  }
  if (exponent == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));  // inf, NaN
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

inline uint16_t float_to_half(float value) {
  uint32_t bits = std::bit_cast<uint32_t>(value);
  const auto sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  bits &= 0x7fffffffu;
  if (bits >= 0x47800000u) {  // |value| >= 65536 (or inf, NaN): every such float overflows
    return sign | (bits > 0x7f800000u ? 0x7e00u : 0x7c00u);
  }
  if (bits < 0x38800000u) {
    // Below half's smallest normal (2^-14): adding 0.5 puts the 10 result
    // bits at the bottom of a float's mantissa, and the FPU's own addition
    // rounds them to nearest even.
    const float shifted = std::bit_cast<float>(bits) + 0.5f;
    return sign | static_cast<uint16_t>(std::bit_cast<uint32_t>(shifted) - 0x3f000000u);
  }
  // Normal: rebias the exponent and round the 13 dropped bits to nearest
  // even; a carry into the exponent is correct (up to inf past 65504).
  const uint32_t odd = (bits >> 13) & 1u;
  bits += 0xc8000000u + 0xfffu + odd;  // (15 - 127) << 23, wrapping, plus the rounding bias
  return sign | static_cast<uint16_t>(bits >> 13);
}

inline float bfloat16_to_float(uint16_t bits) {
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

inline uint16_t float_to_bfloat16(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);  // quiet NaN
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

}  // namespace kiln
