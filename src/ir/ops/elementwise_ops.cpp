// Shape inference for elementwise ops: unary math, activations, comparisons,
// logic, broadcasting binary / variadic ops, Where and Cast.
#include <string>

#include "ir/op_schema.hpp"

namespace kiln::ir {

namespace {

void same_as_input0(InferContext& ctx) { ctx.set_output(0, ctx.input(0)); }

void bool_like_input0(InferContext& ctx) { ctx.set_output(0, {DType::boolean, ctx.input(0).shape}); }

// Before opset 7 the binary arithmetic, logic and comparison ops broadcast
// only when asked (attribute `broadcast`), and then only B onto A, aligned at
// `axis` (default: trailing). The output always has A's shape.
bool uses_legacy_broadcast(const InferContext& ctx) { return ctx.opset() < 7 && ctx.num_inputs() == 2; }

void broadcast_inputs(InferContext& ctx, DType out_dtype) {
  if (uses_legacy_broadcast(ctx)) {
    const ValueType& a = ctx.input(0);
    const ValueType& b = ctx.input(1);
    if (a.shape && b.shape) {
      // B, padded with trailing 1s up to `axis`, must broadcast onto A
      // without changing A's shape.
      Dims b_dims = *b.shape;
      if (ctx.attrs().get_int("broadcast", 0) != 0 && ctx.attrs().has("axis")) {
        auto rank = static_cast<int64_t>(a.shape->size());
        int64_t axis = ctx.normalize_axis(ctx.attrs().get_int("axis"), rank);
        while (axis + static_cast<int64_t>(b_dims.size()) < rank) b_dims.emplace_back(1);
      }
      std::optional<Dims> dims = broadcast_dims(*a.shape, b_dims);
      if (!dims || dims->size() != a.shape->size()) {
        ctx.fail("B " + b.to_string() + " does not broadcast onto A " + a.to_string());
      }
    }
    ctx.set_output(0, {out_dtype, a.shape});
    return;
  }
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

void infer_prelu(InferContext& ctx) {
  const ValueType& x = ctx.input(0);
  const ValueType& slope = ctx.input(1);
  if (x.shape && slope.shape) {
    // The slope must broadcast onto X without changing X's shape; rank-1
    // slopes of X's channel count are the pre-opset-7 per-channel form.
    std::optional<Dims> dims = broadcast_dims(*x.shape, *slope.shape);
    bool channel_form = ctx.opset() < 7 && slope.shape->size() == 1 && x.shape->size() >= 2 &&
                        (*slope.shape)[0] == (*x.shape)[1];
    if (!channel_form && (!dims || dims->size() != x.shape->size())) {
      ctx.fail("slope " + slope.to_string() + " does not broadcast to X " + x.to_string());
    }
  }
  ctx.set_output(0, x);
}

void infer_cast(InferContext& ctx) {
  int64_t to = ctx.attrs().get_int("to");
  std::optional<DType> dtype = dtype_from_onnx(static_cast<int32_t>(to));
  if (!dtype) ctx.unsupported("cannot cast to ONNX type " + onnx_type_name(static_cast<int32_t>(to)));
  ctx.set_output(0, {*dtype, ctx.input(0).shape});
}

}  // namespace

void register_elementwise_ops(OpRegistry& r) {
  for (const char* op : {"Relu",     "LeakyRelu",  "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
                         "Erf",      "Gelu",       "Sqrt",    "Exp",         "Log",       "Neg",
                         "Abs",      "Reciprocal", "Floor",   "Ceil",        "Round",     "Sign",
                         "Softplus", "Softsign",   "Elu",     "Selu",        "Celu",      "ThresholdedRelu",
                         "Sin",      "Cos",        "Tan",     "Asin",        "Acos",      "Atan",
                         "Sinh",     "Cosh",       "Asinh",   "Acosh",       "Atanh",     "Not",
                         "Clip"}) {
    r.add(op, same_as_input0);
  }
  for (const char* op : {"IsNaN", "IsInf"}) r.add(op, bool_like_input0);
  r.add("PRelu", infer_prelu);
  for (const char* op : {"Add", "Sub", "Mul", "Div", "Pow", "Mod", "Min", "Max", "Sum", "Mean", "And", "Or",
                         "Xor", "BitShift"}) {
    r.add(op, [](InferContext& ctx) { broadcast_inputs(ctx, ctx.input_dtype(0)); });
  }
  for (const char* op : {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"}) {
    r.add(op, [](InferContext& ctx) { broadcast_inputs(ctx, DType::boolean); });
  }
  r.add("Where", [](InferContext& ctx) {
    DType cond = ctx.input_dtype(0);
    if (cond != DType::undefined && cond != DType::boolean) ctx.fail("condition must be bool");
    broadcast_inputs(ctx, ctx.input_dtype(1));
  });
  r.add("Cast", infer_cast);
  r.add("CastLike", [](InferContext& ctx) { ctx.set_output(0, {ctx.input_dtype(1), ctx.input(0).shape}); });
}

}  // namespace kiln::ir
