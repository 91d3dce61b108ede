#include "backends/cpu/bilinear.hpp"

#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "backends/cpu/cpu_features.hpp"
#include "backends/cpu/openmp_pool.hpp"

namespace kiln::cpu {

namespace {

// Output rows per task.
constexpr int64_t k_rows_per_task = 8;
// Longest input row blended on the stack; longer rows blend per output.
constexpr int64_t k_max_blended = 4096;

// GCC 12 reports the intrinsics' own undefined pass-through vectors as
// maybe-uninitialized when AVX-512 is enabled per function (swish.cpp).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// One output row from its blended input row `row` (`in_width` floats, with
// room for 32): 16 columns at a time, both taps picked from the row. A row
// of up to 32 floats sits in two registers and is picked by permutes (an
// upsample's input row usually is: 14 or 28 columns); a longer one is
// gathered (from L1). Then the tail.
__attribute__((target("avx512f"))) void row_avx512(const float* row, int64_t in_width,
                                                   const BilinearPlanes::Taps& cols, float* out,
                                                   int64_t width) {
  int64_t x = 0;
  if (in_width <= 32) {
    const __m512 first = _mm512_loadu_ps(row);
    const __m512 second = _mm512_loadu_ps(row + 16);
    for (; x + 16 <= width; x += 16) {
      const __m512i lo = _mm512_loadu_si512(cols.lo.data() + x);
      const __m512i hi = _mm512_loadu_si512(cols.hi.data() + x);
      const __m512 w = _mm512_loadu_ps(cols.weight.data() + x);
      const __m512 a = _mm512_permutex2var_ps(first, lo, second);
      const __m512 b = _mm512_permutex2var_ps(first, hi, second);
      _mm512_storeu_ps(out + x, _mm512_fmadd_ps(w, _mm512_sub_ps(b, a), a));
    }
  }
  for (; x + 16 <= width; x += 16) {
    const __m512i lo = _mm512_loadu_si512(cols.lo.data() + x);
    const __m512i hi = _mm512_loadu_si512(cols.hi.data() + x);
    const __m512 w = _mm512_loadu_ps(cols.weight.data() + x);
    const __m512 a = _mm512_i32gather_ps(lo, row, 4);
    const __m512 b = _mm512_i32gather_ps(hi, row, 4);
    _mm512_storeu_ps(out + x, _mm512_fmadd_ps(w, _mm512_sub_ps(b, a), a));
  }
  for (; x < width; ++x) {
    const float a = row[cols.lo[static_cast<size_t>(x)]], b = row[cols.hi[static_cast<size_t>(x)]];
    out[x] = a + cols.weight[static_cast<size_t>(x)] * (b - a);
  }
}

#pragma GCC diagnostic pop

void row_scalar(const float* row, const BilinearPlanes::Taps& cols, float* out, int64_t width) {
  for (int64_t x = 0; x < width; ++x) {
    const float a = row[cols.lo[static_cast<size_t>(x)]], b = row[cols.hi[static_cast<size_t>(x)]];
    out[x] = a + cols.weight[static_cast<size_t>(x)] * (b - a);
  }
}

}  // namespace

BilinearPlanes::Taps BilinearPlanes::taps(int64_t in, int64_t out) {
  Taps t;
  for (int64_t o = 0; o < out; ++o) {
    const float x = std::max(
        0.0f, (static_cast<float>(o) + 0.5f) * static_cast<float>(in) / static_cast<float>(out) - 0.5f);
    const int64_t lo = std::min<int64_t>(static_cast<int64_t>(std::floor(x)), in - 1);
    t.lo.push_back(static_cast<int32_t>(lo));
    t.hi.push_back(static_cast<int32_t>(std::min<int64_t>(lo + 1, in - 1)));
    t.weight.push_back(x - static_cast<float>(lo));
  }
  return t;
}

BilinearPlanes::BilinearPlanes(int64_t planes, int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w)
    : m_planes(planes),
      m_in_h(in_h),
      m_in_w(in_w),
      m_out_h(out_h),
      m_out_w(out_w),
      m_rows(taps(in_h, out_h)),
      m_cols(taps(in_w, out_w)) {}

void BilinearPlanes::run(const float* src, float* dst) const {
  const int64_t chunks = (m_out_h + k_rows_per_task - 1) / k_rows_per_task;
  const bool vector = has_avx512f();
  run_on_openmp_pool(static_cast<size_t>(m_planes * chunks), [&](size_t task) {
    const auto p = static_cast<int64_t>(task) / chunks, c = static_cast<int64_t>(task) % chunks;
    const float* plane = src + p * m_in_h * m_in_w;
    float blended[k_max_blended];
    // The permutes load 32 floats: those past the row are defined, unused.
    if (m_in_w < 32) std::fill(blended + m_in_w, blended + 32, 0.0f);
    for (int64_t y = c * k_rows_per_task; y < std::min(m_out_h, (c + 1) * k_rows_per_task); ++y) {
      const float* top = plane + m_rows.lo[static_cast<size_t>(y)] * m_in_w;
      const float* bottom = plane + m_rows.hi[static_cast<size_t>(y)] * m_in_w;
      const float wy = m_rows.weight[static_cast<size_t>(y)];
      float* out = dst + (p * m_out_h + y) * m_out_w;
      if (m_in_w <= k_max_blended) {
        for (int64_t x = 0; x < m_in_w; ++x) blended[x] = top[x] + wy * (bottom[x] - top[x]);
        if (vector) {
          row_avx512(blended, m_in_w, m_cols, out, m_out_w);
        } else {
          row_scalar(blended, m_cols, out, m_out_w);
        }
        continue;
      }
      for (int64_t x = 0; x < m_out_w; ++x) {
        const auto lo = static_cast<size_t>(m_cols.lo[static_cast<size_t>(x)]);
        const auto hi = static_cast<size_t>(m_cols.hi[static_cast<size_t>(x)]);
        const float a = top[lo] + wy * (bottom[lo] - top[lo]);
        const float b = top[hi] + wy * (bottom[hi] - top[hi]);
        out[x] = a + m_cols.weight[static_cast<size_t>(x)] * (b - a);
      }
    }
  });
}

}  // namespace kiln::cpu
