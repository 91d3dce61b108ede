// What the CPU kiln runs on offers beyond the baseline x86-64 it is built
// for: kiln's own AVX-512 loops check here and fall back to portable code.
#pragma once

namespace kiln::cpu {

inline bool has_avx512f() {
  static const bool available = __builtin_cpu_supports("avx512f");
  return available;
}

// AVX-512's 16-bit lane operations on 256-bit registers too (BW and VL).
inline bool has_avx512bw_vl() {
  static const bool available =
      has_avx512f() && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  return available;
}

}  // namespace kiln::cpu
