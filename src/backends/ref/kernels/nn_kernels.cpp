// Neural-network reference kernels: Gemm and MatMul here; convolution,
// pooling and normalization live in the nn_*_kernels.cpp files registered
// below.
#include "backends/ref/kernels/nn_kernels.hpp"

#include <algorithm>
#include <type_traits>

#include "backends/ref/broadcast.hpp"
#include "backends/ref/dispatch.hpp"

namespace kiln::ref {

namespace {

// Floats accumulate in double so long dot products stay well inside the
// conformance tolerance; integers wrap in their own type, as ONNX expects.
template <typename T>
using Acc = std::conditional_t<std::is_floating_point_v<T>, double, T>;

template <typename T>
void run_gemm(KernelContext& ctx) {
  const Tensor& a = ctx.input(0);
  const Tensor& b = ctx.input(1);
  Tensor& y = ctx.output(0);
  const bool trans_a = ctx.attrs().get_int("transA", 0) != 0;
  const bool trans_b = ctx.attrs().get_int("transB", 0) != 0;
  const Acc<T> alpha = static_cast<Acc<T>>(ctx.attrs().get_float("alpha", 1.0f));
  const Acc<T> beta = static_cast<Acc<T>>(ctx.attrs().get_float("beta", 1.0f));
  const int64_t m_size = y.dim(0), n_size = y.dim(1);
  const int64_t k_size = trans_a ? a.dim(0) : a.dim(1);
  // Element (i, k) of op(A) is at i * a_row + k * a_col.
  const int64_t a_row = trans_a ? 1 : k_size, a_col = trans_a ? m_size : 1;
  const int64_t b_row = trans_b ? 1 : n_size, b_col = trans_b ? k_size : 1;
  auto pa = a.data<T>();
  auto pb = b.data<T>();
  auto py = y.mutable_data<T>();
  const T* pc = nullptr;
  std::vector<int64_t> c_strides{0, 0};
  if (ctx.has_input(2)) {
    pc = ctx.input(2).data<T>().data();
    c_strides = broadcast_strides(ctx.input(2).shape(), 2);
  }
  std::vector<Acc<T>> row(static_cast<size_t>(n_size));
  for (int64_t i = 0; i < m_size; ++i) {
    std::fill(row.begin(), row.end(), Acc<T>(0));
    for (int64_t k = 0; k < k_size; ++k) {
      const Acc<T> av = static_cast<Acc<T>>(pa[static_cast<size_t>(i * a_row + k * a_col)]);
      const T* bk = pb.data() + k * b_row;
      for (int64_t j = 0; j < n_size; ++j)
        row[static_cast<size_t>(j)] += av * static_cast<Acc<T>>(bk[j * b_col]);
    }
    for (int64_t j = 0; j < n_size; ++j) {
      Acc<T> v = alpha * row[static_cast<size_t>(j)];
      if (pc) v += beta * static_cast<Acc<T>>(pc[i * c_strides[0] + j * c_strides[1]]);
      py[static_cast<size_t>(i * n_size + j)] = static_cast<T>(v);
    }
  }
}

template <typename T>
void run_matmul(KernelContext& ctx) {
  const Tensor& a = ctx.input(0);
  const Tensor& b = ctx.input(1);
  Tensor& y = ctx.output(0);
  // Promote vectors to matrices as numpy does: [K] x ... is [1, K], ... x [K] is [K, 1].
  std::vector<int64_t> sa = a.shape(), sb = b.shape();
  if (sa.size() == 1) sa.insert(sa.begin(), 1);
  if (sb.size() == 1) sb.push_back(1);
  const int64_t m_size = sa[sa.size() - 2], k_size = sa.back(), n_size = sb.back();
  std::vector<int64_t> batch_a(sa.begin(), sa.end() - 2), batch_b(sb.begin(), sb.end() - 2);
  const size_t batch_rank = std::max(batch_a.size(), batch_b.size());
  std::vector<int64_t> batch(batch_rank);
  for (size_t d = 0; d < batch_rank; ++d) {
    auto dim_of = [&](const std::vector<int64_t>& s) {
      const size_t pad = batch_rank - s.size();
      return d < pad ? int64_t(1) : s[d - pad];
    };
    batch[d] = std::max(dim_of(batch_a), dim_of(batch_b));
    if (dim_of(batch_a) == 0 || dim_of(batch_b) == 0) batch[d] = 0;
  }
  std::vector<int64_t> stride_a = broadcast_strides(batch_a, batch_rank);
  std::vector<int64_t> stride_b = broadcast_strides(batch_b, batch_rank);
  const int64_t num_batch = shape_numel(batch);
  auto pa = a.data<T>();
  auto pb = b.data<T>();
  auto py = y.mutable_data<T>();
  std::vector<int64_t> index(batch_rank, 0);
  std::vector<Acc<T>> row(static_cast<size_t>(n_size));
  for (int64_t bi = 0; bi < num_batch; ++bi) {
    int64_t off_a = 0, off_b = 0;
    for (size_t d = 0; d < batch_rank; ++d) {
      off_a += index[d] * stride_a[d];
      off_b += index[d] * stride_b[d];
    }
    const T* ma = pa.data() + off_a * m_size * k_size;
    const T* mb = pb.data() + off_b * k_size * n_size;
    T* my = py.data() + bi * m_size * n_size;
    for (int64_t i = 0; i < m_size; ++i) {
      std::fill(row.begin(), row.end(), Acc<T>(0));
      for (int64_t k = 0; k < k_size; ++k) {
        const Acc<T> av = static_cast<Acc<T>>(ma[i * k_size + k]);
        const T* bk = mb + k * n_size;
        for (int64_t j = 0; j < n_size; ++j) row[static_cast<size_t>(j)] += av * static_cast<Acc<T>>(bk[j]);
      }
      for (int64_t j = 0; j < n_size; ++j) my[i * n_size + j] = static_cast<T>(row[static_cast<size_t>(j)]);
    }
    next_index(index, batch);
  }
}

std::optional<std::string> check_matmul(const ir::Node& /*node*/, std::span<const DType> dtypes) {
  if (auto why = require_dtypes(dtypes, {DType::float32, DType::float64, DType::int32, DType::int64,
                                         DType::uint32, DType::uint64})) {
    return why;
  }
  for (DType d : dtypes) {
    if (d != DType::undefined && d != dtypes[0]) return std::string("inputs have mixed types");
  }
  return std::nullopt;
}

}  // namespace

void register_nn_kernels(KernelRegistry& r) {
  r.add(
      "Gemm",
      [](KernelContext& ctx) {
        dispatch<float, double, int32_t, int64_t, uint32_t, uint64_t>(
            ctx.input(0).dtype(), [&](auto tag) { run_gemm<decltype(tag)>(ctx); });
      },
      check_matmul);
  r.add(
      "MatMul",
      [](KernelContext& ctx) {
        dispatch<float, double, int32_t, int64_t, uint32_t, uint64_t>(
            ctx.input(0).dtype(), [&](auto tag) { run_matmul<decltype(tag)>(ctx); });
      },
      check_matmul);
  register_nn_conv_kernels(r);
  register_nn_pool_kernels(r);
  register_nn_norm_kernels(r);
}

}  // namespace kiln::ref
