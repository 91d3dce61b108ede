// Pooling reference kernels: MaxPool (with optional Indices), AveragePool,
// LpPool and their Global* forms, for any number of spatial axes.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <variant>

#include "backends/ref/dispatch.hpp"
#include "backends/ref/kernels/nn_kernels.hpp"
#include "ir/ops/nn_geometry.hpp"

namespace kiln::ref {

namespace {

enum class PoolKind { max, average, lp };

// The window table for this node, from the input and inferred output shapes.
struct PoolPlan {
  std::vector<int64_t> in_sp;
  std::vector<int64_t> table;
  int64_t channels = 0;  // N * C
  int64_t num_in = 0;
  int64_t num_out = 0;
  int64_t num_k = 0;
};

PoolPlan plan_pool(const KernelContext& ctx, const Tensor& x, const Tensor& y) {
  const size_t rank = static_cast<size_t>(x.rank()) - 2;
  PoolPlan p;
  p.in_sp.assign(x.shape().begin() + 2, x.shape().end());
  std::vector<int64_t> out_sp(y.shape().begin() + 2, y.shape().end());
  ir::nn::Window win = ir::nn::read_window(ctx.attrs(), rank, {});
  std::vector<int64_t> pb(rank), pe(rank);
  for (size_t d = 0; d < rank; ++d) {
    ir::nn::WindowDim wd = ir::nn::window_dim(win, d, p.in_sp[d]);
    pb[d] = wd.pad_begin;
    pe[d] = wd.pad_end;
  }
  p.table = window_table(p.in_sp, out_sp, win.kernel, win.strides, win.dilations, pb, pe);
  p.channels = x.dim(0) * x.dim(1);
  p.num_in = shape_numel(p.in_sp);
  p.num_out = shape_numel(out_sp);
  p.num_k = shape_numel(win.kernel);
  return p;
}

// Column-major flat index of each row-major spatial offset, for MaxPool's
// storage_order = 1.
std::vector<int64_t> column_major_offsets(std::span<const int64_t> shape) {
  std::vector<int64_t> result(static_cast<size_t>(shape_numel(shape)));
  if (result.empty()) return result;
  std::vector<int64_t> index(shape.size(), 0);
  size_t pos = 0;
  do {
    int64_t offset = 0;
    for (size_t d = shape.size(); d-- > 0;) offset = offset * shape[d] + index[d];
    result[pos++] = offset;
  } while (next_index(index, shape));
  return result;
}

template <typename T>
void run_max_pool(KernelContext& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  PoolPlan p = plan_pool(ctx, x, y);
  const bool want_indices = ctx.num_outputs() > 1 && ctx.node().outputs[1] != ir::k_no_value;
  const bool column_major = ctx.attrs().get_int("storage_order", 0) != 0;
  std::vector<int64_t> col = column_major ? column_major_offsets(p.in_sp) : std::vector<int64_t>{};
  auto px = x.data<T>();
  auto py = y.mutable_data<T>();
  std::span<int64_t> pi;
  if (want_indices) pi = ctx.output(1).mutable_data<int64_t>();
  std::vector<T> best(static_cast<size_t>(p.num_out));
  std::vector<int64_t> arg(static_cast<size_t>(p.num_out));
  for (int64_t c = 0; c < p.channels; ++c) {
    const T* xin = px.data() + c * p.num_in;
    std::fill(best.begin(), best.end(), std::numeric_limits<T>::lowest());
    std::fill(arg.begin(), arg.end(), -1);
    for (int64_t kp = 0; kp < p.num_k; ++kp) {
      const int64_t* row = p.table.data() + kp * p.num_out;
      for (int64_t op = 0; op < p.num_out; ++op) {
        const int64_t off = row[op];
        const size_t o = static_cast<size_t>(op);
        // Strictly greater keeps the first maximum, as the ONNX reference does.
        if (off >= 0 && (arg[o] < 0 || xin[off] > best[o])) {
          best[o] = xin[off];
          arg[o] = off;
        }
      }
    }
    for (int64_t op = 0; op < p.num_out; ++op) {
      const size_t o = static_cast<size_t>(op);
      py[static_cast<size_t>(c * p.num_out + op)] = best[o];
      if (want_indices) {
        int64_t off = arg[o] < 0 ? 0 : (column_major ? col[static_cast<size_t>(arg[o])] : arg[o]);
        pi[static_cast<size_t>(c * p.num_out + op)] = c * p.num_in + off;
      }
    }
  }
}

double lp_norm_p(const ir::Attributes& attrs) {
  // LpPool-1 stored p as a float; later versions as an int.
  auto it = attrs.all().find("p");
  if (it == attrs.all().end()) return 2.0;
  if (const float* f = std::get_if<float>(&it->second)) return *f;
  return static_cast<double>(attrs.get_int("p"));
}

template <typename T>
void run_sum_pool(KernelContext& ctx, PoolKind kind) {
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  PoolPlan p = plan_pool(ctx, x, y);
  const bool include_pad = ctx.attrs().get_int("count_include_pad", 0) != 0;
  const double power = kind == PoolKind::lp ? lp_norm_p(ctx.attrs()) : 1.0;
  auto px = x.data<T>();
  auto py = y.mutable_data<T>();
  std::vector<double> sum(static_cast<size_t>(p.num_out));
  std::vector<int64_t> count(static_cast<size_t>(p.num_out));
  for (int64_t c = 0; c < p.channels; ++c) {
    const T* xin = px.data() + c * p.num_in;
    std::fill(sum.begin(), sum.end(), 0.0);
    std::fill(count.begin(), count.end(), 0);
    for (int64_t kp = 0; kp < p.num_k; ++kp) {
      const int64_t* row = p.table.data() + kp * p.num_out;
      for (int64_t op = 0; op < p.num_out; ++op) {
        const int64_t off = row[op];
        const size_t o = static_cast<size_t>(op);
        if (off >= 0) {
          const double v = static_cast<double>(xin[off]);
          sum[o] += kind == PoolKind::lp ? std::pow(std::fabs(v), power) : v;
          ++count[o];
        } else if (off == k_in_padding && include_pad) {
          ++count[o];
        }
      }
    }
    for (int64_t op = 0; op < p.num_out; ++op) {
      const size_t o = static_cast<size_t>(op);
      double v = kind == PoolKind::lp ? std::pow(sum[o], 1.0 / power)
                                      : (count[o] > 0 ? sum[o] / static_cast<double>(count[o]) : 0.0);
      py[static_cast<size_t>(c * p.num_out + op)] = static_cast<T>(v);
    }
  }
}

template <typename T>
void run_global_pool(KernelContext& ctx, PoolKind kind) {
  const Tensor& x = ctx.input(0);
  auto px = x.data<T>();
  auto py = ctx.output(0).mutable_data<T>();
  const int64_t channels = x.dim(0) * x.dim(1);
  const int64_t size = channels == 0 ? 0 : x.numel() / channels;
  const double power = kind == PoolKind::lp ? lp_norm_p(ctx.attrs()) : 1.0;
  for (int64_t c = 0; c < channels; ++c) {
    const T* xin = px.data() + c * size;
    double acc = kind == PoolKind::max ? -std::numeric_limits<double>::infinity() : 0.0;
    for (int64_t i = 0; i < size; ++i) {
      const double v = static_cast<double>(xin[i]);
      if (kind == PoolKind::max) {
        acc = std::max(acc, v);
      } else if (kind == PoolKind::lp) {
        acc += std::pow(std::fabs(v), power);
      } else {
        acc += v;
      }
    }
    if (kind == PoolKind::average) acc /= static_cast<double>(size);
    if (kind == PoolKind::lp) acc = std::pow(acc, 1.0 / power);
    py[static_cast<size_t>(c)] = static_cast<T>(acc);
  }
}

std::optional<std::string> check_float_pool(const ir::Node& /*node*/, std::span<const DType> dtypes) {
  return require_dtypes(dtypes, {DType::float32, DType::float64});
}

std::optional<std::string> check_max_pool(const ir::Node& node, std::span<const DType> dtypes) {
  if (auto why = require_dtypes(
          dtypes, {DType::float32, DType::float64, DType::int8, DType::uint8, DType::int32, DType::int64})) {
    return why;
  }
  const int64_t order = node.attrs.get_int("storage_order", 0);
  if (order != 0 && order != 1) return "storage_order " + std::to_string(order) + " is not 0 or 1";
  return std::nullopt;
}

}  // namespace

void register_nn_pool_kernels(KernelRegistry& r) {
  r.add(
      "MaxPool",
      [](KernelContext& ctx) {
        dispatch<float, double, int8_t, uint8_t, int32_t, int64_t>(
            ctx.input(0).dtype(), [&](auto tag) { run_max_pool<decltype(tag)>(ctx); });
      },
      check_max_pool);
  for (auto [op, kind] : {std::pair{"AveragePool", PoolKind::average}, std::pair{"LpPool", PoolKind::lp}}) {
    r.add(
        op,
        [kind = kind](KernelContext& ctx) {
          dispatch<float, double>(ctx.input(0).dtype(),
                                  [&](auto tag) { run_sum_pool<decltype(tag)>(ctx, kind); });
        },
        check_float_pool);
  }
  for (auto [op, kind] :
       {std::pair{"GlobalAveragePool", PoolKind::average}, std::pair{"GlobalMaxPool", PoolKind::max},
        std::pair{"GlobalLpPool", PoolKind::lp}}) {
    r.add(
        op,
        [kind = kind](KernelContext& ctx) {
          dispatch<float, double>(ctx.input(0).dtype(),
                                  [&](auto tag) { run_global_pool<decltype(tag)>(ctx, kind); });
        },
        check_float_pool);
  }
}

}  // namespace kiln::ref
