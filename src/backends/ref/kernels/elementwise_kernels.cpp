// Elementwise reference kernels: unary math, activations, broadcasting
// binary ops.
#include <algorithm>
#include <cmath>

#include "backends/ref/broadcast.hpp"
#include "backends/ref/dispatch.hpp"
#include "backends/ref/kernel.hpp"

namespace kiln::ref {

namespace {

template <typename T, typename Fn>
void unary(KernelContext& ctx, Fn&& fn) {
  auto in = ctx.input(0).data<T>();
  auto out = ctx.output(0).mutable_data<T>();
  for (size_t i = 0; i < in.size(); ++i) out[i] = fn(in[i]);
}

template <typename T, typename Out, typename Fn>
void binary(KernelContext& ctx, Fn&& fn) {
  const Tensor& a = ctx.input(0);
  const Tensor& b = ctx.input(1);
  Tensor& out = ctx.output(0);
  auto pa = a.data<T>();
  auto pb = b.data<T>();
  auto po = out.mutable_data<Out>();
  BroadcastWalker walk(out.shape(), {a.shape(), b.shape()});
  for (int64_t i = 0; i < walk.size(); ++i) {
    const auto& off = walk.offsets_for(i);
    po[static_cast<size_t>(i)] = fn(pa[static_cast<size_t>(off[0])], pb[static_cast<size_t>(off[1])]);
  }
}

}  // namespace

void register_elementwise_kernels(KernelRegistry& r) {
  r.add("Relu", [](KernelContext& ctx) {
    dispatch<float, double, int32_t, int64_t>(ctx.input(0).dtype(), [&](auto tag) {
      using T = decltype(tag);
      unary<T>(ctx, [](T x) { return std::max(x, T(0)); });
    });
  });
  r.add("Add", [](KernelContext& ctx) {
    dispatch<float, double, int32_t, int64_t>(ctx.input(0).dtype(), [&](auto tag) {
      using T = decltype(tag);
      binary<T, T>(ctx, [](T x, T y) { return static_cast<T>(x + y); });
    });
  });
}

}  // namespace kiln::ref
