#include "backends/cpu/broadcast_binary.hpp"

#include <algorithm>
#include <cstring>
#include <string>
#include <thread>

#include "backends/cpu/openmp_symbols.hpp"
#include "kiln/error.hpp"
#include "util/parallel_for.hpp"

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

// The thread count oneDNN runs with: the engine sets it (omp_set_num_threads)
// before every run. Looked up at run time, as the engine does, so this
// library needs no link to the OpenMP runtime.
int engine_threads() {
  using Fn = int (*)();
  static Fn fn = openmp_symbol<Fn>("omp_get_max_threads");
  return fn ? fn() : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
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
  const int workers = threads > 0 ? threads : engine_threads();
  parallel_for(static_cast<size_t>(items), items > 1 ? workers : 1, [&](size_t item) {
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
