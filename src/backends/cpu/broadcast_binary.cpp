#include "backends/cpu/broadcast_binary.hpp"

#include <algorithm>
#include <cstring>
#include <string>

#include "backends/cpu/openmp_pool.hpp"
#include "kiln/error.hpp"

namespace kiln::cpu {

int64_t BroadcastShape::numel() const {
  int64_t n = 1;
  for (int64_t d : out) n *= d;
  return n;
}

BroadcastShape canonical_broadcast(std::span<const int64_t> out, std::span<const int64_t> a,
                                   std::span<const int64_t> b) {
  if (a.size() > out.size() || b.size() > out.size()) {
    throw Error(ErrorCode::invalid_model, "a binary operand has a higher rank than its result");
  }
  // Per output dim: its size and whether each operand broadcasts along it.
  struct Axis {
    int64_t size;
    bool a_bcast, b_bcast;
  };
  std::vector<Axis> axes;
  for (size_t i = 0; i < out.size(); ++i) {
    const size_t lead_a = out.size() - a.size();
    const size_t lead_b = out.size() - b.size();
    const int64_t da = i < lead_a ? 1 : a[i - lead_a];
    const int64_t db = i < lead_b ? 1 : b[i - lead_b];
    if ((da != 1 && da != out[i]) || (db != 1 && db != out[i])) {
      throw Error(ErrorCode::invalid_model, "binary operands do not broadcast to the result's shape");
    }
    if (out[i] == 1) continue;  // both operands are 1 there too: no dim at all
    const Axis axis{out[i], da == 1, db == 1};
    if (!axes.empty() && axes.back().a_bcast == axis.a_bcast && axes.back().b_bcast == axis.b_bcast) {
      axes.back().size *= axis.size;  // same pattern as its neighbour: one dim
    } else {
      axes.push_back(axis);
    }
  }
  BroadcastShape s;
  for (const Axis& axis : axes) {
    s.out.push_back(axis.size);
    s.a.push_back(axis.a_bcast ? 1 : axis.size);
    s.b.push_back(axis.b_bcast ? 1 : axis.size);
  }
  if (s.out.empty()) s.out = s.a = s.b = {1};  // a one-element result
  return s;
}

namespace {

// fn(i) for i in [0, items): on the engine's OpenMP pool (threads 0), or on
// `threads` threads of their own (callers outside an engine).
template <typename Fn>
void for_items(int64_t items, int threads, Fn&& fn) {
  if (items <= 1) {
    if (items == 1) fn(size_t{0});
  } else if (threads > 0) {
    parallel_for(static_cast<size_t>(items), threads, fn);
  } else {
    run_on_openmp_pool(static_cast<size_t>(items), fn);
  }
}

template <BinaryOp Op>
inline float apply(float x, float y) {
  if constexpr (Op == BinaryOp::add) return x + y;
  if constexpr (Op == BinaryOp::sub) return x - y;
  if constexpr (Op == BinaryOp::mul) return x * y;
  return x / y;
}

// One contiguous run of the innermost dim: each operand steps by 1 (full)
// or 0 (broadcast along it). Separate loops per case so each vectorises
// without index arithmetic; the clones give wide registers where present.
template <BinaryOp Op>
[[gnu::target_clones("avx512f", "avx2", "default")]] void run_row(const float* a, int64_t sa, const float* b,
                                                                  int64_t sb, float* y, int64_t n) {
  if (sa == 1 && sb == 1) {
    for (int64_t i = 0; i < n; ++i) y[i] = apply<Op>(a[i], b[i]);
  } else if (sa == 1) {
    const float c = b[0];
    for (int64_t i = 0; i < n; ++i) y[i] = apply<Op>(a[i], c);
  } else if (sb == 1) {
    const float c = a[0];
    for (int64_t i = 0; i < n; ++i) y[i] = apply<Op>(c, b[i]);
  } else {
    const float c = apply<Op>(a[0], b[0]);
    for (int64_t i = 0; i < n; ++i) y[i] = c;
  }
}

// Rows of `full` against one row of `row` repeated: y[r][i] = full[r][i]
// (op) row[i], or row[i] (op) full[r][i] when the repeated row is the first
// operand. Len, where not 0, is the row length known at compile time: a
// blocked layout's 16 or 8 floats, one vector per row with no loop around it.
template <BinaryOp Op, bool RowFirst, int64_t Len>
[[gnu::target_clones("avx512f", "avx2", "default")]] void run_repeated_row(const float* full,
                                                                           const float* row, float* y,
                                                                           int64_t rows, int64_t len) {
  if constexpr (Len != 0) len = Len;
  for (int64_t r = 0; r < rows; ++r) {
    const float* f = full + r * len;
    float* out = y + r * len;
    // out is full itself or apart from both: no element depends on another
    // (without this GCC assumes overlap and keeps the loop scalar).
#pragma GCC ivdep
    for (int64_t i = 0; i < len; ++i) out[i] = RowFirst ? apply<Op>(row[i], f[i]) : apply<Op>(f[i], row[i]);
  }
}

template <BinaryOp Op, bool RowFirst>
void run_repeated_rows_of(const float* full, const float* row, float* y, int64_t rows, int64_t len) {
  if (len == 16) return run_repeated_row<Op, RowFirst, 16>(full, row, y, rows, len);
  if (len == 8) return run_repeated_row<Op, RowFirst, 8>(full, row, y, rows, len);
  run_repeated_row<Op, RowFirst, 0>(full, row, y, rows, len);
}

// [G, P, L] (op) [G, 1, L], either way round (G may be absent): each group's
// P rows meet the same L values, as a per-channel scale or bias does over a
// channels-last or channel-blocked tensor. False for other shapes.
template <BinaryOp Op>
bool run_repeated_rows(const BroadcastShape& s, const float* a, const float* b, float* y, int threads) {
  if (!repeats_rows(s)) return false;
  const size_t rank = s.out.size();
  const bool b_repeats = s.b[rank - 2] == 1;
  const int64_t groups = rank == 3 ? s.out[0] : 1;
  const int64_t rows = s.out[rank - 2];
  const int64_t len = s.out.back();
  const float* full = b_repeats ? a : b;
  const float* repeated = b_repeats ? b : a;
  // Items of about 16K elements over all groups' rows together: a 7x7
  // image's 49 rows per group are too little work to hand out alone.
  constexpr int64_t k_item_elements = 16384;
  const int64_t total_rows = groups * rows;
  const int64_t rows_per_item = std::max<int64_t>(1, k_item_elements / len);
  const int64_t items = (total_rows + rows_per_item - 1) / rows_per_item;
  for_items(items, threads, [&](size_t item) {
    const int64_t last = std::min(total_rows, (static_cast<int64_t>(item) + 1) * rows_per_item);
    for (int64_t r = static_cast<int64_t>(item) * rows_per_item; r < last;) {
      const int64_t g = r / rows;
      const int64_t end = std::min(last, (g + 1) * rows);
      if (b_repeats) {
        run_repeated_rows_of<Op, false>(full + r * len, repeated + g * len, y + r * len, end - r, len);
      } else {
        run_repeated_rows_of<Op, true>(full + r * len, repeated + g * len, y + r * len, end - r, len);
      }
      r = end;
    }
  });
  return true;
}

// Columns [c0, c1) of rows [first, last) of the canonical shape (a row is
// every dim but the innermost).
template <BinaryOp Op>
void run_rows(const BroadcastShape& s, const std::vector<int64_t>& stride_a,
              const std::vector<int64_t>& stride_b, const float* a, const float* b, float* y, int64_t first,
              int64_t last, int64_t c0, int64_t c1) {
  const size_t rank = s.out.size();
  const int64_t len = s.out[rank - 1];
  const int64_t sa = stride_a[rank - 1], sb = stride_b[rank - 1];
  // The first row's multi-index, then an odometer: no division per row.
  std::vector<int64_t> index(rank, 0);
  int64_t offset_a = c0 * sa, offset_b = c0 * sb;
  for (int64_t r = first, d = static_cast<int64_t>(rank) - 2; d >= 0; --d) {
    const size_t k = static_cast<size_t>(d);
    index[k] = r % s.out[k];
    r /= s.out[k];
    offset_a += index[k] * stride_a[k];
    offset_b += index[k] * stride_b[k];
  }
  for (int64_t r = first; r < last; ++r) {
    run_row<Op>(a + offset_a, sa, b + offset_b, sb, y + r * len + c0, c1 - c0);
    for (int64_t d = static_cast<int64_t>(rank) - 2; d >= 0; --d) {
      const size_t k = static_cast<size_t>(d);
      offset_a += stride_a[k];
      offset_b += stride_b[k];
      if (++index[k] < s.out[k]) break;
      offset_a -= stride_a[k] * s.out[k];
      offset_b -= stride_b[k] * s.out[k];
      index[k] = 0;
    }
  }
}

// Row-major element strides of an operand's canonical dims, 0 where it
// broadcasts.
std::vector<int64_t> strides_of(const std::vector<int64_t>& dims) {
  std::vector<int64_t> strides(dims.size(), 0);
  int64_t step = 1;
  for (size_t i = dims.size(); i-- > 0;) {
    strides[i] = dims[i] == 1 ? 0 : step;
    step *= dims[i];
  }
  return strides;
}

template <BinaryOp Op>
void run(const BroadcastShape& s, const float* a, const float* b, float* y, int threads) {
  const int64_t total = s.numel();
  if (total == 0) return;
  if (run_repeated_rows<Op>(s, a, b, y, threads)) return;
  const std::vector<int64_t> stride_a = strides_of(s.a);
  const std::vector<int64_t> stride_b = strides_of(s.b);
  const int64_t len = s.out.back();
  const int64_t rows = total / len;
  // Items of about 16K elements: whole rows where rows are short, pieces of
  // one row where they are long (a full + full add is a single row). Small
  // tensors stay on the calling thread, where starting workers would cost
  // more than the loop.
  constexpr int64_t k_item_elements = 16384;
  const int64_t rows_per_item = std::max<int64_t>(1, k_item_elements / len);
  const int64_t pieces = len > k_item_elements ? (len + k_item_elements - 1) / k_item_elements : 1;
  const int64_t piece_len = (len + pieces - 1) / pieces;
  const int64_t items = pieces > 1 ? rows * pieces : (rows + rows_per_item - 1) / rows_per_item;
  for_items(items, threads, [&](size_t item) {
    const auto i = static_cast<int64_t>(item);
    if (pieces > 1) {
      const int64_t row = i / pieces, c0 = (i % pieces) * piece_len;
      run_rows<Op>(s, stride_a, stride_b, a, b, y, row, row + 1, c0, std::min(len, c0 + piece_len));
    } else {
      const int64_t first = i * rows_per_item;
      run_rows<Op>(s, stride_a, stride_b, a, b, y, first, std::min(rows, first + rows_per_item), 0, len);
    }
  });
}

}  // namespace

bool repeats_rows(const BroadcastShape& s) {
  const size_t rank = s.out.size();
  if (rank < 2 || rank > 3 || s.a.back() != s.out.back() || s.b.back() != s.out.back()) return false;
  if (rank == 3 && (s.a[0] != s.out[0] || s.b[0] != s.out[0])) return false;
  // Canonical dims alternate their broadcast pattern: exactly one operand is
  // 1 along the rows.
  return (s.a[rank - 2] == 1) != (s.b[rank - 2] == 1);
}

void broadcast_binary(BinaryOp op, const BroadcastShape& shape, const float* a, const float* b, float* y,
                      int threads) {
  switch (op) {
    case BinaryOp::add:
      return run<BinaryOp::add>(shape, a, b, y, threads);
    case BinaryOp::sub:
      return run<BinaryOp::sub>(shape, a, b, y, threads);
    case BinaryOp::mul:
      return run<BinaryOp::mul>(shape, a, b, y, threads);
    case BinaryOp::div:
      return run<BinaryOp::div>(shape, a, b, y, threads);
  }
}

}  // namespace kiln::cpu
