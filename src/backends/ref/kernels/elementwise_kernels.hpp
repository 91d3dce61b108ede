// Helpers shared by the elementwise reference kernels (unary ops in
// elementwise_kernels.cpp, broadcasting ops in elementwise_binary_kernels.cpp).
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "backends/ref/broadcast.hpp"
#include "backends/ref/dispatch.hpp"
#include "backends/ref/kernel.hpp"

namespace kiln::ref::elementwise {

inline const std::vector<DType> k_float_types = {DType::float32, DType::float64};
inline const std::vector<DType> k_int_types = {DType::int8,  DType::uint8,  DType::int16, DType::uint16,
                                               DType::int32, DType::uint32, DType::int64, DType::uint64};
inline const std::vector<DType> k_numeric_types = {
    DType::float32, DType::float64, DType::int8,   DType::uint8, DType::int16,
    DType::uint16,  DType::int32,   DType::uint32, DType::int64, DType::uint64};
inline const std::vector<DType> k_all_types = {DType::float32, DType::float64, DType::int8,   DType::uint8,
                                               DType::int16,   DType::uint16,  DType::int32,  DType::uint32,
                                               DType::int64,   DType::uint64,  DType::boolean};

template <typename Fn>
void dispatch_float(DType dtype, Fn&& fn) {
  dispatch<float, double>(dtype, std::forward<Fn>(fn));
}

template <typename Fn>
void dispatch_numeric(DType dtype, Fn&& fn) {
  dispatch<float, double, int8_t, uint8_t, int16_t, uint16_t, int32_t, uint32_t, int64_t, uint64_t>(
      dtype, std::forward<Fn>(fn));
}

template <typename Fn>
void dispatch_all(DType dtype, Fn&& fn) {
  dispatch<float, double, int8_t, uint8_t, int16_t, uint16_t, int32_t, uint32_t, int64_t, uint64_t, bool>(
      dtype, std::forward<Fn>(fn));
}

// Reports the first present input whose dtype is not in `allowed`, or inputs
// that should share one dtype but do not.
inline std::optional<std::string> check_dtypes(std::span<const DType> input_dtypes,
                                               const std::vector<DType>& allowed, bool same_type) {
  DType first = DType::undefined;
  for (size_t i = 0; i < input_dtypes.size(); ++i) {
    DType d = input_dtypes[i];
    if (d == DType::undefined) continue;
    if (std::find(allowed.begin(), allowed.end(), d) == allowed.end()) {
      return "input " + std::to_string(i) + " has unsupported type " + std::string(dtype_name(d));
    }
    if (first == DType::undefined) first = d;
    if (same_type && d != first) {
      return "inputs have different types " + std::string(dtype_name(first)) + " and " +
             std::string(dtype_name(d));
    }
  }
  return std::nullopt;
}

inline SupportFn only(const std::vector<DType>& allowed) {
  return [allowed](const ir::Node&, std::span<const DType> dtypes) {
    return check_dtypes(dtypes, allowed, true);
  };
}

// Input `i`'s shape as it broadcasts against the others. Before opset 7 the
// binary ops broadcast B onto A at `axis` (numpy aligns trailing dims), so B
// gets trailing 1s to line up with that axis.
inline std::vector<int64_t> aligned_shape(const KernelContext& ctx, size_t i) {
  const Tensor& t = ctx.input(i);
  std::vector<int64_t> shape = t.shape();
  if (i == 1 && ctx.opset() < 7 && ctx.num_inputs() == 2 && ctx.attrs().get_int("broadcast", 0) != 0 &&
      ctx.attrs().has("axis")) {
    int64_t rank = ctx.input(0).rank();
    int64_t axis = ctx.attrs().get_int("axis");
    if (axis < 0) axis += rank;
    while (axis + static_cast<int64_t>(shape.size()) < rank) shape.push_back(1);
  }
  return shape;
}

// Calls fn(out_index, offsets) for every output element, where offsets[k] is
// the flat index that input k contributes. Same-shape inputs skip the walker.
template <typename Fn>
void for_each_broadcast(const std::vector<int64_t>& out_shape,
                        const std::vector<std::vector<int64_t>>& shapes, Fn&& fn) {
  int64_t n = shape_numel(out_shape);
  bool all_same = std::all_of(shapes.begin(), shapes.end(), [&](const auto& s) { return s == out_shape; });
  if (all_same) {
    std::vector<int64_t> offsets(shapes.size());
    for (int64_t i = 0; i < n; ++i) {
      std::fill(offsets.begin(), offsets.end(), i);
      fn(static_cast<size_t>(i), offsets);
    }
    return;
  }
  BroadcastWalker walk(out_shape, shapes);
  for (int64_t i = 0; i < n; ++i) fn(static_cast<size_t>(i), walk.offsets_for(i));
}

// out[i] = fn(a[i], b[i]) with broadcasting; A, B, Out are storage types.
template <typename A, typename B, typename Out, typename Fn>
void binary(KernelContext& ctx, Fn&& fn) {
  auto pa = ctx.input(0).data<A>();
  auto pb = ctx.input(1).data<B>();
  Tensor& out = ctx.output(0);
  auto po = out.mutable_data<Out>();
  for_each_broadcast(out.shape(), {aligned_shape(ctx, 0), aligned_shape(ctx, 1)},
                     [&](size_t i, const std::vector<int64_t>& off) {
                       po[i] = fn(pa[static_cast<size_t>(off[0])], pb[static_cast<size_t>(off[1])]);
                     });
}

void register_binary_kernels(KernelRegistry& registry);

}  // namespace kiln::ref::elementwise
