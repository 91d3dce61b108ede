#include "backends/cpu/swish.hpp"

#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "backends/cpu/cpu_features.hpp"
#include "backends/cpu/openmp_pool.hpp"

namespace kiln::cpu {

namespace {

// Floats per task: 64 KiB, a few L2-sized pieces per thread even for
// batch-1 tensors, and enough per task that handing tasks out costs nothing.
constexpr size_t k_chunk = 16 * 1024;

// exp(-x) as 2^t, t = -x log2(e) clamped to the normal range, split into an
// integer n and a fraction f in [-0.5, 0.5]: 2^f by its degree-6 Taylor
// polynomial (ln2^k / k!; the remainder is below 1.3e-7 relative), scaled
// by 2^n. Then x / (1 +
// exp(-x)) through the reciprocal estimate refined by one Newton step.
// GCC 12 reports the intrinsics' own undefined pass-through vectors as
// maybe-uninitialized when AVX-512 is enabled per function rather than for
// the whole file (which would let it use AVX-512 in the scalar fallback).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
__attribute__((target("avx512f"), always_inline)) inline __m512 swish16(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 t = _mm512_max_ps(
      _mm512_min_ps(_mm512_mul_ps(x, _mm512_set1_ps(-1.44269504088896341f)), _mm512_set1_ps(126.0f)),
      _mm512_set1_ps(-126.0f));
  const __m512 k = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(t, k);
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(1.540353039e-04f), f, _mm512_set1_ps(1.333355815e-03f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.618129108e-03f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550410866e-02f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402265070e-01f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931471806e-01f));
  p = _mm512_fmadd_ps(p, f, one);
  const __m512 d = _mm512_add_ps(one, _mm512_scalef_ps(p, k));
  __m512 r = _mm512_rcp14_ps(d);
  r = _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0f)));
  return _mm512_mul_ps(x, r);
}

__attribute__((target("avx512f"))) void swish_avx512(float* data, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(data + i, swish16(_mm512_loadu_ps(data + i)));
  if (i < n) {
    const auto tail = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(data + i, tail, swish16(_mm512_maskz_loadu_ps(tail, data + i)));
  }
}

#pragma GCC diagnostic pop

void swish_scalar(float* data, size_t n) {
  for (size_t i = 0; i < n; ++i) data[i] = data[i] / (1.0f + std::exp(-data[i]));
}

}  // namespace

bool native_swish_available() { return has_avx512f(); }

void swish_in_place(std::span<float> data) {
  const size_t tasks = (data.size() + k_chunk - 1) / k_chunk;
  const bool vector = native_swish_available();
  run_on_openmp_pool(tasks, [&](size_t t) {
    float* begin = data.data() + t * k_chunk;
    const size_t n = std::min(k_chunk, data.size() - t * k_chunk);
    if (vector) {
      swish_avx512(begin, n);
    } else {
      swish_scalar(begin, n);
    }
  });
}

}  // namespace kiln::cpu
