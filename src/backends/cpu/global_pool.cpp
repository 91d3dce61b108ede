#include "backends/cpu/global_pool.hpp"

#include <algorithm>

#include "backends/cpu/float_vectors.hpp"
#include "backends/cpu/openmp_pool.hpp"

namespace kiln::cpu {

namespace {

// Floats per task: 64 KiB of input.
constexpr int64_t k_task_floats = 16 * 1024;
// Groups (images, or image x channel block) per thread from which each
// group is one task: enough to share the work evenly, and no partial sums to
// combine. Over [8,1536,7,7] channels-last at 2 threads, 8 whole images took
// 31 us against 42 us as 40 pieces and their combine.
constexpr int64_t k_groups_per_thread_for_whole_tasks = 4;

// acc[i] = sum over `rows` rows of x[r * inner + i].
//
// Strips of 64 columns summed down the rows in four registers (256
// consecutive bytes read per row, four independent add chains), then strips
// of 16 in two (even and odd rows, so consecutive adds do not wait for each
// other), then the columns past the last 16. Summing whole rows into acc in
// memory instead made every row wait on the previous row's stores: 140 us
// against 21 us over [1,112,112,32]. Strips of 16 alone read wide
// channels-last rows 64 bytes at a time.
[[gnu::target_clones("avx512f", "avx2", "default")]] void sum_rows(const float* x, float* acc, int64_t rows,
                                                                   int64_t inner) {
  if (inner == 8) {
    // Rows of an 8-channel block (nChw8c, as grouped convs of 8 channels per
    // group write): two rows per register, folded at the end. As a column
    // loop this was scalar: 0.47 ms over RegNetY's [8,48,56,56].
    const int64_t n = rows * 8;
    Floats16 s0 = {}, s1 = {}, s2 = {}, s3 = {};
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
      s0 += load16(x + i);
      s1 += load16(x + i + 16);
      s2 += load16(x + i + 32);
      s3 += load16(x + i + 48);
    }
    for (; i + 16 <= n; i += 16) s0 += load16(x + i);
    const Floats16 sum = (s0 + s1) + (s2 + s3);
    for (int64_t k = 0; k < 8; ++k) acc[k] = sum[k] + sum[k + 8] + (i < n ? x[i + k] : 0.0f);
    return;
  }
  int64_t i0 = 0;
  for (; i0 + 64 <= inner; i0 += 64) {
    Floats16 s0 = {}, s1 = {}, s2 = {}, s3 = {};
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = x + r * inner + i0;
      s0 += load16(row);
      s1 += load16(row + 16);
      s2 += load16(row + 32);
      s3 += load16(row + 48);
    }
    store16(acc + i0, s0);
    store16(acc + i0 + 16, s1);
    store16(acc + i0 + 32, s2);
    store16(acc + i0 + 48, s3);
  }
  for (; i0 + 16 <= inner; i0 += 16) {
    Floats16 even = {}, odd = {};
    int64_t r = 0;
    for (; r + 1 < rows; r += 2) {
      even += load16(x + r * inner + i0);
      odd += load16(x + (r + 1) * inner + i0);
    }
    if (r < rows) even += load16(x + r * inner + i0);
    store16(acc + i0, even + odd);
  }
  for (; i0 < inner; ++i0) {
    float sum = 0.0f;
    for (int64_t r = 0; r < rows; ++r) sum += x[r * inner + i0];
    acc[i0] = sum;
  }
}

}  // namespace

std::optional<NestedPool> nested_pool(const Md& md) {
  const size_t rank = static_cast<size_t>(md.data.ndims);
  if (rank < 3 || rank > 5 || md.data_type() != Dt::f32) return std::nullopt;
  const std::vector<size_t> order = stride_order(md);
  const std::optional<Dims> nested = nested_dims(md, order);
  if (!nested) return std::nullopt;
  // The spatial dims (2 ...) must follow each other in `order`.
  const auto first = std::find(order.begin(), order.end(), size_t{2});
  for (size_t k = 0; k + 2 < rank; ++k) {
    if (first + static_cast<std::ptrdiff_t>(k) >= order.end() ||
        *(first + static_cast<std::ptrdiff_t>(k)) != k + 2)
      return std::nullopt;
  }
  const auto at = static_cast<size_t>(first - order.begin());
  NestedPool p{1, 1, 1, 0};
  for (size_t i = 0; i < nested->size(); ++i) {
    const int64_t d = (*nested)[i];
    (i < at ? p.outer : i < at + rank - 2 ? p.rows : p.inner) *= d;
  }
  if (p.inner < 8) return std::nullopt;
  p.chunk_rows = std::max<int64_t>(1, k_task_floats / p.inner);
  return p;
}

// out[i] = scale * sum over c of part[c * inner + i]: the tasks' partial sums
// of one group, a row of `inner` floats at a time so the adds are vector-wide
// (column by column, strided, the combine took as long as the sums).
[[gnu::target_clones("avx512f", "avx2", "default")]] void combine_partials(const float* part, float* out,
                                                                           int64_t chunks, int64_t inner,
                                                                           float scale) {
  int64_t i0 = 0;
  for (; i0 + 16 <= inner; i0 += 16) {
    Floats16 sum = load16(part + i0);
    for (int64_t c = 1; c < chunks; ++c) sum += load16(part + c * inner + i0);
    store16(out + i0, sum * scale);
  }
  for (; i0 < inner; ++i0) {
    float sum = 0.0f;
    for (int64_t c = 0; c < chunks; ++c) sum += part[c * inner + i0];
    out[i0] = sum * scale;
  }
}

void global_average(const NestedPool& p, const float* x, float* y, std::span<float> partial) {
  const int64_t chunks = p.chunks();
  const float scale = 1.0f / static_cast<float>(p.rows);
  if (chunks == 1 || p.outer >= k_groups_per_thread_for_whole_tasks * openmp_threads()) {
    // One task per group: its sums are the group's, nothing to combine.
    run_on_openmp_pool(static_cast<size_t>(p.outer), [&](size_t task) {
      const auto o = static_cast<int64_t>(task);
      float* out = y + o * p.inner;
      sum_rows(x + o * p.rows * p.inner, out, p.rows, p.inner);
      combine_partials(out, out, 1, p.inner, scale);
    });
    return;
  }
  run_on_openmp_pool(static_cast<size_t>(p.tasks()), [&](size_t task) {
    const auto t = static_cast<int64_t>(task);
    const int64_t o = t / chunks, c = t % chunks;
    const int64_t first = c * p.chunk_rows, rows = std::min(p.rows, first + p.chunk_rows) - first;
    const float* src = x + (o * p.rows + first) * p.inner;
    float* acc = partial.data() + t * p.inner;
    sum_rows(src, acc, rows, p.inner);
  });
  const auto combine = [&](size_t group) {
    const auto o = static_cast<int64_t>(group);
    combine_partials(partial.data() + o * chunks * p.inner, y + o * p.inner, chunks, p.inner, scale);
  };
  if (p.outer == 1) {
    combine(0);  // one group: a parallel region would cost more than its adds
  } else {
    run_on_openmp_pool(static_cast<size_t>(p.outer), combine);
  }
}

}  // namespace kiln::cpu
