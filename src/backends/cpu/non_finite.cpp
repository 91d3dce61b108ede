#include "backends/cpu/non_finite.hpp"

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "util/parallel_for.hpp"

namespace kiln::cpu {

namespace {

// A float is NaN or infinite exactly when its exponent bits are all ones;
// adding one to that exponent field then carries into the sign bit. OR-ing
// the carries of a whole block needs only and/add/or, which every x86 vector
// width has (SSE2 lacks unsigned max and float compares cost more); the
// AVX-512 clone reads 64 bytes a step.
[[gnu::target_clones("avx512f", "avx2", "default")]] bool block_has_non_finite(const float* values,
                                                                               size_t n) {
  constexpr uint32_t k_exponent = 0x7f800000u;
  constexpr uint32_t k_exponent_one = 0x00800000u;
  constexpr size_t k_lanes = 16;
  uint32_t acc[k_lanes] = {};
  size_t i = 0;
  for (; i + k_lanes <= n; i += k_lanes) {
    uint32_t bits[k_lanes];
    std::memcpy(bits, values + i, sizeof(bits));
    for (size_t l = 0; l < k_lanes; ++l) acc[l] |= (bits[l] & k_exponent) + k_exponent_one;
  }
  uint32_t any = 0;
  for (size_t l = 0; l < k_lanes; ++l) any |= acc[l];
  for (; i < n; ++i) any |= std::isfinite(values[i]) ? 0u : 0x80000000u;
  return (any & 0x80000000u) != 0;
}

}  // namespace

bool has_non_finite(std::span<const float> values, int threads) {
  // Below a few MB a second thread costs more to start than it saves.
  constexpr size_t k_chunk = size_t{1} << 20;
  if (values.size() <= k_chunk) return block_has_non_finite(values.data(), values.size());
  const size_t chunks = (values.size() + k_chunk - 1) / k_chunk;
  std::atomic<bool> found{false};
  parallel_for(chunks, threads, [&](size_t c) {
    if (found.load(std::memory_order_relaxed)) return;
    const size_t begin = c * k_chunk;
    const size_t n = std::min(k_chunk, values.size() - begin);
    if (block_has_non_finite(values.data() + begin, n)) found.store(true, std::memory_order_relaxed);
  });
  return found.load();
}

bool has_non_finite(const Tensor& t, int threads) {
  if (t.dtype() == DType::float32) return has_non_finite(t.data<float>(), threads);
  if (t.dtype() == DType::float64) {
    for (double v : t.data<double>()) {
      if (!std::isfinite(v)) return true;
    }
  }
  return false;
}

}  // namespace kiln::cpu
