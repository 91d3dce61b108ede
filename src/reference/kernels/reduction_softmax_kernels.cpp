// Normalizing reference kernels (Softmax, LogSoftmax, Hardmax) and TopK.
//
// Before opset 13 the normalizing ops coerce the input to 2-D at `axis` and
// normalize over the whole flattened trailing block; from 13 they normalize
// over the single `axis`. Both are the [outer, n, inner] view below, with
// inner == 1 in the old form.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "reference/dispatch.hpp"
#include "reference/kernel.hpp"
#include "reference/kernels/reduction_kernels.hpp"

namespace kiln::ref {

namespace {

// A tensor seen as [outer, n, inner]: lines of n elements, inner apart.
struct LineView {
  int64_t outer = 1;
  int64_t n = 1;
  int64_t inner = 1;
};

LineView single_axis_view(const std::vector<int64_t>& shape, int64_t axis) {
  LineView v;
  const auto a = static_cast<size_t>(axis);
  for (size_t d = 0; d < a; ++d) v.outer *= shape[d];
  v.n = shape[a];
  for (size_t d = a + 1; d < shape.size(); ++d) v.inner *= shape[d];
  return v;
}

LineView normalize_view(const KernelContext& ctx, const std::vector<int64_t>& shape) {
  const auto rank = static_cast<int64_t>(shape.size());
  if (ctx.opset() >= 13) {
    int64_t axis = ctx.attrs().get_int("axis", -1);
    if (axis < 0) axis += rank;
    return single_axis_view(shape, axis);
  }
  int64_t axis = ctx.attrs().get_int("axis", 1);
  if (axis < 0) axis += rank;
  LineView v;
  v.n = 1;
  for (int64_t d = 0; d < rank; ++d) (d < axis ? v.outer : v.n) *= shape[static_cast<size_t>(d)];
  return v;
}

enum class NormalizeKind { softmax, log_softmax, hardmax };

// Each line is normalized in double, after subtracting its maximum so that
// exp cannot overflow.
template <typename T>
void normalize(KernelContext& ctx, NormalizeKind kind) {
  const Tensor& in = ctx.input(0);
  const LineView v = normalize_view(ctx, in.shape());
  auto src = in.data<T>();
  auto dst = ctx.output(0).mutable_data<T>();
  auto at = [&](int64_t o, int64_t k, int64_t i) { return static_cast<size_t>((o * v.n + k) * v.inner + i); };
  for (int64_t o = 0; o < v.outer; ++o) {
    for (int64_t i = 0; i < v.inner; ++i) {
      if (v.n == 0) continue;
      int64_t arg = 0;
      double max = static_cast<double>(src[at(o, 0, i)]);
      for (int64_t k = 1; k < v.n; ++k) {
        const auto x = static_cast<double>(src[at(o, k, i)]);
        if (x > max) {
          max = x;
          arg = k;
        }
      }
      if (kind == NormalizeKind::hardmax) {
        for (int64_t k = 0; k < v.n; ++k) dst[at(o, k, i)] = static_cast<T>(k == arg ? 1 : 0);
        continue;
      }
      double sum = 0.0;
      for (int64_t k = 0; k < v.n; ++k) sum += std::exp(static_cast<double>(src[at(o, k, i)]) - max);
      const double log_sum = std::log(sum);
      for (int64_t k = 0; k < v.n; ++k) {
        const double shifted = static_cast<double>(src[at(o, k, i)]) - max;
        dst[at(o, k, i)] =
            static_cast<T>(kind == NormalizeKind::softmax ? std::exp(shifted) / sum : shifted - log_sum);
      }
    }
  }
}

template <typename T>
void top_k(KernelContext& ctx) {
  const Tensor& in = ctx.input(0);
  int64_t axis = ctx.attrs().get_int("axis", -1);
  if (axis < 0) axis += in.rank();
  const LineView v = single_axis_view(in.shape(), axis);
  const int64_t k = ctx.opset() < 10 ? ctx.attrs().get_int("k") : ctx.input(1).int_at(0);
  const bool largest = ctx.attrs().get_int("largest", 1) != 0;
  auto src = in.data<T>();
  auto values = ctx.output(0).mutable_data<T>();
  auto indices = ctx.output(1).mutable_data<int64_t>();
  std::vector<int64_t> order(static_cast<size_t>(v.n));
  for (int64_t o = 0; o < v.outer; ++o) {
    for (int64_t i = 0; i < v.inner; ++i) {
      auto value = [&](int64_t j) { return src[static_cast<size_t>((o * v.n + j) * v.inner + i)]; };
      std::iota(order.begin(), order.end(), int64_t{0});
      // Ties go to the lower index, so the result is deterministic. The
      // output is always sorted, which `sorted = 0` also permits.
      std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t b) {
        const T va = value(a);
        const T vb = value(b);
        if (va != vb) return largest ? va > vb : va < vb;
        return a < b;
      });
      for (int64_t j = 0; j < k; ++j) {
        const auto out = static_cast<size_t>((o * k + j) * v.inner + i);
        values[out] = value(order[static_cast<size_t>(j)]);
        indices[out] = order[static_cast<size_t>(j)];
      }
    }
  }
}

std::optional<std::string> check_float_input0(const ir::Node&, std::span<const DType> dtypes) {
  return require_dtypes(dtypes.first(1), {DType::float32, DType::float64});
}

}  // namespace

void register_reduction_softmax_kernels(KernelRegistry& r) {
  const std::pair<const char*, NormalizeKind> normalizers[] = {
      {"Softmax", NormalizeKind::softmax},
      {"LogSoftmax", NormalizeKind::log_softmax},
      {"Hardmax", NormalizeKind::hardmax},
  };
  for (const auto& [op, kind] : normalizers) {
    r.add(
        op,
        [kind = kind](KernelContext& ctx) {
          dispatch<float, double>(ctx.input(0).dtype(),
                                  [&](auto tag) { normalize<decltype(tag)>(ctx, kind); });
        },
        check_float_input0);
  }
  r.add(
      "TopK",
      [](KernelContext& ctx) {
        dispatch<float, double, int32_t, int64_t>(ctx.input(0).dtype(),
                                                  [&](auto tag) { top_k<decltype(tag)>(ctx); });
      },
      [](const ir::Node&, std::span<const DType> dtypes) {
        return require_dtypes(dtypes.first(1), {DType::float32, DType::float64, DType::int32, DType::int64});
      });
}

}  // namespace kiln::ref
