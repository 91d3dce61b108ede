// Shape inference for elementwise ops: unary math, activations, and
// broadcasting binary / variadic ops.
#include "ir/op_schema.hpp"

namespace kiln::ir {

namespace {

void same_as_input0(InferContext& ctx) { ctx.set_output(0, ctx.input(0)); }

void broadcast_inputs(InferContext& ctx, DType out_dtype) {
  std::optional<Dims> dims = Dims{};
  for (size_t i = 0; i < ctx.num_inputs(); ++i) {
    if (!ctx.has_input(i)) continue;
    const ValueType& t = ctx.input(i);
    if (!dims || !t.shape) {
      dims.reset();
      continue;
    }
    dims = broadcast_dims(*dims, *t.shape);
    if (!dims) {
      ctx.fail("input shapes do not broadcast: " + ctx.input(0).to_string() + " and " + t.to_string());
    }
  }
  ctx.set_output(0, {out_dtype, dims});
}

}  // namespace

void register_elementwise_ops(OpRegistry& r) {
  for (const char* op : {"Relu"}) r.add(op, same_as_input0);
  for (const char* op : {"Add"}) {
    r.add(op, [](InferContext& ctx) { broadcast_inputs(ctx, ctx.input_dtype(0)); });
  }
}

}  // namespace kiln::ir
