// Reduction reference kernels: the Reduce* family and ArgMax/ArgMin.
//
// Floating-point reductions accumulate in double so that the reference stays
// an accurate oracle for long reductions; integer ones accumulate in int64.
#include "reference/kernels/reduction_kernels.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>

#include "reference/dispatch.hpp"
#include "reference/kernel.hpp"

namespace kiln::ref {

namespace {

int64_t axes_input_opset(const std::string& op) { return op == "ReduceSum" ? 13 : 18; }

// Which axes of `rank` are reduced; nullopt means the node is a no-op
// (empty axes with noop_with_empty_axes). Mirrors the shape inference.
std::optional<std::vector<bool>> reduced_axes(const KernelContext& ctx, int64_t rank) {
  std::vector<int64_t> axes;
  if (ctx.opset() >= axes_input_opset(ctx.node().op_type)) {
    if (ctx.has_input(1)) axes = ctx.input(1).to_int_vector();
    if (axes.empty() && ctx.attrs().get_int("noop_with_empty_axes", 0) != 0) return std::nullopt;
  } else {
    axes = ctx.attrs().get_ints("axes", {});
  }
  std::vector<bool> reduced(static_cast<size_t>(rank), axes.empty());
  for (int64_t axis : axes) {
    const int64_t a = axis < 0 ? axis + rank : axis;
    if (a < 0 || a >= rank) {
      throw Error(ErrorCode::invalid_model, "axis " + std::to_string(axis) + " is out of range");
    }
    reduced[static_cast<size_t>(a)] = true;
  }
  return reduced;
}

// Maps each input element, in order, to the flat index of the output element
// it reduces into, by an odometer over the input's multi-index.
class ReduceWalker {
 public:
  ReduceWalker(std::span<const int64_t> shape, const std::vector<bool>& reduced)
      : m_shape(shape.begin(), shape.end()), m_out_strides(shape.size()), m_index(shape.size()) {
    int64_t stride = 1;
    for (size_t d = m_shape.size(); d-- > 0;) {
      if (!reduced[d]) {
        m_out_strides[d] = stride;
        stride *= m_shape[d];
      }
    }
  }
  // The output index for the current input element; then moves to the next.
  size_t next() {
    const auto out = static_cast<size_t>(m_out);
    for (size_t d = m_shape.size(); d-- > 0;) {
      ++m_index[d];
      m_out += m_out_strides[d];
      if (m_index[d] < m_shape[d]) break;
      m_out -= m_out_strides[d] * m_index[d];
      m_index[d] = 0;
    }
    return out;
  }

 private:
  std::vector<int64_t> m_shape;
  std::vector<int64_t> m_out_strides;
  std::vector<int64_t> m_index;
  int64_t m_out = 0;
};

// Calls fn(input_index, output_index) for every input element in order.
template <typename Fn>
void for_each_reduced(std::span<const int64_t> shape, const std::vector<bool>& reduced, Fn&& fn) {
  ReduceWalker walker(shape, reduced);
  const auto n = static_cast<size_t>(shape_numel(shape));
  for (size_t i = 0; i < n; ++i) fn(i, walker.next());
}

template <typename T>
using Acc = std::conditional_t<std::is_floating_point_v<T>, double, int64_t>;

// The lowest and highest accumulator values: the identities of Max and Min,
// and so the results of reducing an empty set.
template <typename T>
Acc<T> lowest() {
  if constexpr (std::is_floating_point_v<T>) return -std::numeric_limits<double>::infinity();
  return std::numeric_limits<T>::lowest();
}
template <typename T>
Acc<T> highest() {
  if constexpr (std::is_floating_point_v<T>) return std::numeric_limits<double>::infinity();
  return std::numeric_limits<T>::max();
}

// A reduction as an identity, a step folding one element into the
// accumulator, and a finish mapping (accumulator, element count) to the result.
template <typename T, typename Step, typename Finish>
void reduce(KernelContext& ctx, const std::vector<bool>& reduced, Acc<T> identity, Step step, Finish finish) {
  const Tensor& in = ctx.input(0);
  Tensor& out = ctx.output(0);
  auto src = in.data<T>();
  auto dst = out.mutable_data<T>();
  std::vector<Acc<T>> acc(dst.size(), identity);
  for_each_reduced(in.shape(), reduced, [&](size_t i, size_t o) { acc[o] = step(acc[o], src[i]); });
  const int64_t count = dst.empty() ? 0 : in.numel() / out.numel();
  for (size_t o = 0; o < dst.size(); ++o) dst[o] = static_cast<T>(finish(acc[o], count));
}

// LogSumExp subtracts the per-output maximum first so exp cannot overflow.
template <typename T>
void reduce_log_sum_exp(KernelContext& ctx, const std::vector<bool>& reduced) {
  const Tensor& in = ctx.input(0);
  auto src = in.data<T>();
  auto dst = ctx.output(0).mutable_data<T>();
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> max(dst.size(), -inf);
  for_each_reduced(in.shape(), reduced, [&](size_t i, size_t o) {
    const auto x = static_cast<double>(src[i]);
    if (x > max[o] || (std::isnan(x) && !std::isnan(max[o]))) max[o] = x;  // NaN propagates
  });
  std::vector<double> sum(dst.size(), 0.0);
  for_each_reduced(in.shape(), reduced, [&](size_t i, size_t o) {
    if (std::isfinite(max[o])) sum[o] += std::exp(static_cast<double>(src[i]) - max[o]);
  });
  for (size_t o = 0; o < dst.size(); ++o) {
    // A non-finite maximum (empty set, all -inf, or +inf present) is the answer itself.
    dst[o] = static_cast<T>(std::isfinite(max[o]) ? max[o] + std::log(sum[o]) : max[o]);
  }
}

template <typename T>
void run_reduce(KernelContext& ctx, const std::string& op, const std::vector<bool>& reduced) {
  using A = Acc<T>;
  auto plus = [](A a, T x) { return static_cast<A>(a + static_cast<A>(x)); };
  auto square = [](A a, T x) { return static_cast<A>(a + static_cast<A>(x) * static_cast<A>(x)); };
  auto same = [](A a, int64_t) { return a; };
  if (op == "ReduceSum") {
    reduce<T>(ctx, reduced, A(0), plus, same);
  } else if (op == "ReduceSumSquare") {
    reduce<T>(ctx, reduced, A(0), square, same);
  } else if (op == "ReduceL1") {
    reduce<T>(
        ctx, reduced, A(0), [](A a, T x) { return static_cast<A>(a + std::abs(static_cast<A>(x))); }, same);
  } else if (op == "ReduceL2") {
    reduce<T>(ctx, reduced, A(0), square, [](A a, int64_t) { return std::sqrt(static_cast<double>(a)); });
  } else if (op == "ReduceMean") {
    reduce<T>(ctx, reduced, A(0), plus, [](A a, int64_t count) {
      // Integer means truncate like numpy's mean cast back to the type; an
      // empty integer mean has no value, so give 0 rather than trap.
      if constexpr (std::is_integral_v<A>) return count == 0 ? A(0) : static_cast<A>(a / count);
      return static_cast<A>(a / static_cast<A>(count));
    });
  } else if (op == "ReduceProd") {
    reduce<T>(
        ctx, reduced, A(1), [](A a, T x) { return static_cast<A>(a * static_cast<A>(x)); }, same);
  } else if (op == "ReduceMax") {
    // A NaN anywhere in the set is the result (numpy's max, torch.amax);
    // std::max(a, NaN) would return a.
    reduce<T>(
        ctx, reduced, lowest<T>(),
        [](A a, T x) {
          return is_nan(a) || is_nan(x) ? a + static_cast<A>(x) : std::max(a, static_cast<A>(x));
        },
        same);
  } else if (op == "ReduceMin") {
    reduce<T>(
        ctx, reduced, highest<T>(),
        [](A a, T x) {
          return is_nan(a) || is_nan(x) ? a + static_cast<A>(x) : std::min(a, static_cast<A>(x));
        },
        same);
  } else if constexpr (std::is_floating_point_v<T>) {
    if (op == "ReduceLogSum") {
      reduce<T>(ctx, reduced, A(0), plus, [](A a, int64_t) { return std::log(a); });
    } else if (op == "ReduceLogSumExp") {
      reduce_log_sum_exp<T>(ctx, reduced);
    }
  }
}

// ReduceMax / ReduceMin of bool (opset 20): any and all.
void reduce_bool(KernelContext& ctx, const std::vector<bool>& reduced, bool is_max) {
  const Tensor& in = ctx.input(0);
  auto src = in.bytes();
  auto dst = ctx.output(0).mutable_bytes();
  std::vector<bool> acc(dst.size(), !is_max);
  for_each_reduced(in.shape(), reduced, [&](size_t i, size_t o) {
    const bool x = src[i] != std::byte{0};
    acc[o] = is_max ? (acc[o] || x) : (acc[o] && x);
  });
  for (size_t o = 0; o < dst.size(); ++o) dst[o] = std::byte{acc[o] ? uint8_t{1} : uint8_t{0}};
}

void reduce_kernel(KernelContext& ctx) {
  const Tensor& in = ctx.input(0);
  const std::optional<std::vector<bool>> reduced = reduced_axes(ctx, in.rank());
  if (!reduced) {
    ctx.set_output(0, in);
    return;
  }
  const std::string& op = ctx.node().op_type;
  if (in.dtype() == DType::boolean) {
    reduce_bool(ctx, *reduced, op == "ReduceMax");
    return;
  }
  dispatch<float, double, int32_t, int64_t>(in.dtype(),
                                            [&](auto tag) { run_reduce<decltype(tag)>(ctx, op, *reduced); });
}

std::optional<std::string> check_reduce(const ir::Node& node, std::span<const DType> dtypes) {
  const bool log_op = node.op_type == "ReduceLogSum" || node.op_type == "ReduceLogSumExp";
  if (log_op) return require_dtypes(dtypes.first(1), {DType::float32, DType::float64});
  const bool min_max = node.op_type == "ReduceMax" || node.op_type == "ReduceMin";
  if (min_max && node.opset >= 20) {
    return require_dtypes(dtypes.first(1),
                          {DType::float32, DType::float64, DType::int32, DType::int64, DType::boolean});
  }
  return require_dtypes(dtypes.first(1), {DType::float32, DType::float64, DType::int32, DType::int64});
}

// ArgMax/ArgMin over one axis, viewing the input as [outer, n, inner].
template <typename T>
void arg_reduce(KernelContext& ctx, bool is_max) {
  const Tensor& in = ctx.input(0);
  const int64_t rank = in.rank();
  int64_t axis = ctx.attrs().get_int("axis", 0);
  if (axis < 0) axis += rank;
  const bool last = ctx.attrs().get_int("select_last_index", 0) != 0;
  const auto& shape = in.shape();
  const int64_t n = shape[static_cast<size_t>(axis)];
  int64_t outer = 1;
  int64_t inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= shape[static_cast<size_t>(d)];
  for (int64_t d = axis + 1; d < rank; ++d) inner *= shape[static_cast<size_t>(d)];
  if (n == 0 && outer * inner > 0) {
    throw Error(ErrorCode::invalid_model, "ArgMax/ArgMin over an empty axis has no answer");
  }
  auto src = in.data<T>();
  auto dst = ctx.output(0).mutable_data<int64_t>();
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i < inner; ++i) {
      const int64_t base = o * n * inner + i;
      int64_t best = 0;
      T best_value = src[static_cast<size_t>(base)];
      for (int64_t k = 1; k < n; ++k) {
        const T v = src[static_cast<size_t>(base + k * inner)];
        const bool better =
            is_max ? (last ? v >= best_value : v > best_value) : (last ? v <= best_value : v < best_value);
        if (better) {
          best = k;
          best_value = v;
        }
      }
      dst[static_cast<size_t>(o * inner + i)] = best;
    }
  }
}

}  // namespace

void register_reduction_kernels(KernelRegistry& r) {
  for (const char* op : {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                         "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}) {
    r.add(op, reduce_kernel, check_reduce);
  }
  for (const char* op : {"ArgMax", "ArgMin"}) {
    const bool is_max = std::string(op) == "ArgMax";
    r.add(
        op,
        [is_max](KernelContext& ctx) {
          dispatch<float, double, int32_t, int64_t>(
              ctx.input(0).dtype(), [&](auto tag) { arg_reduce<decltype(tag)>(ctx, is_max); });
        },
        [](const ir::Node&, std::span<const DType> dtypes) {
          return require_dtypes(dtypes, {DType::float32, DType::float64, DType::int32, DType::int64});
        });
  }
  register_reduction_softmax_kernels(r);
  register_reduction_loss_kernels(r);
}

}  // namespace kiln::ref
