// Shape inference for reductions (Reduce*, ArgMax/ArgMin), the normalizing
// ops (Softmax, LogSoftmax, Hardmax), TopK, and the losses that reduce
// per-class scores (NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss).
//
// The Reduce* family moved `axes` from an attribute to an optional input
// (ReduceSum at opset 13, the others at 18); both forms are handled here.
#include <string>

#include "ir/op_schema.hpp"

namespace kiln::ir {

namespace {

// The opset from which `op` takes its axes as an input rather than an attribute.
int64_t axes_input_opset(const std::string& op) { return op == "ReduceSum" ? 13 : 18; }

// Reduced axes, or nullopt when they are an input whose value is unknown now.
// An empty result means "every axis" unless `noop` is set.
struct ReduceAxes {
  std::optional<std::vector<int64_t>> axes;
  bool noop = false;
};

ReduceAxes reduce_axes(InferContext& ctx) {
  ReduceAxes result;
  const Node& node = ctx.node();
  if (ctx.opset() >= axes_input_opset(node.op_type)) {
    if (ctx.attrs().has("axes")) ctx.fail("axes is an input, not an attribute, at this opset");
    if (ctx.has_input(1)) {
      const Tensor* value = ctx.input_value(1);
      if (value == nullptr) return result;
      result.axes = value->to_int_vector();
    } else {
      result.axes = std::vector<int64_t>{};
    }
    result.noop = ctx.attrs().get_int("noop_with_empty_axes", 0) != 0;
  } else {
    result.axes = ctx.attrs().get_ints("axes", {});
  }
  if (result.noop && !result.axes->empty()) result.noop = false;
  return result;
}

void infer_reduce(InferContext& ctx) {
  const ValueType& in = ctx.input(0);
  const bool keepdims = ctx.attrs().get_int("keepdims", 1) != 0;
  ReduceAxes ra = reduce_axes(ctx);
  if (ra.noop) {
    ctx.set_output(0, in);
    return;
  }
  if (!in.shape || !ra.axes) {
    // Without the axes, keepdims still fixes the rank.
    if (in.shape && keepdims) {
      ctx.set_output(0, ValueType::of_rank(in.dtype, in.shape->size()));
    } else {
      ctx.set_output(0, ValueType::unknown_shape(in.dtype));
    }
    return;
  }
  const Dims& dims = *in.shape;
  const auto rank = static_cast<int64_t>(dims.size());
  std::vector<bool> reduced(dims.size(), ra.axes->empty());
  for (int64_t axis : *ra.axes) {
    auto a = static_cast<size_t>(ctx.normalize_axis(axis, rank));
    if (reduced[a]) ctx.fail("axis " + std::to_string(axis) + " is listed twice");
    reduced[a] = true;
  }
  Dims out;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (!reduced[i]) {
      out.push_back(dims[i]);
    } else if (keepdims) {
      out.push_back(Dim(1));
    }
  }
  ctx.set_output(0, {in.dtype, out});
}

void infer_arg_reduce(InferContext& ctx) {
  const ValueType& in = ctx.input(0);
  const bool keepdims = ctx.attrs().get_int("keepdims", 1) != 0;
  if (ctx.opset() < 12 && ctx.attrs().has("select_last_index")) {
    ctx.fail("select_last_index needs opset 12");
  }
  if (!in.shape) {
    ctx.set_output(0, ValueType::unknown_shape(DType::int64));
    return;
  }
  const Dims& dims = *in.shape;
  auto axis = static_cast<size_t>(
      ctx.normalize_axis(ctx.attrs().get_int("axis", 0), static_cast<int64_t>(dims.size())));
  Dims out;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i != axis) {
      out.push_back(dims[i]);
    } else if (keepdims) {
      out.push_back(Dim(1));
    }
  }
  ctx.set_output(0, {DType::int64, out});
}

// Softmax, LogSoftmax and Hardmax keep the input's shape; only the axis needs
// checking. Before opset 13 the default axis is 1 (the input is coerced to
// 2-D there); from 13 it is -1.
void infer_normalize(InferContext& ctx) {
  const ValueType& in = ctx.input(0);
  if (!is_floating(in.dtype)) ctx.fail("input must be a floating-point tensor");
  if (in.shape) {
    const int64_t fallback = ctx.opset() < 13 ? 1 : -1;
    const auto rank = static_cast<int64_t>(in.shape->size());
    const int64_t axis = ctx.attrs().get_int("axis", fallback);
    // A rank-0 input has no axis, but the coerced (< 13) form tolerates
    // axis == rank (an empty trailing block).
    if (ctx.opset() < 13) {
      if (axis < -rank || axis > rank) ctx.fail("axis " + std::to_string(axis) + " is out of range");
    } else {
      ctx.normalize_axis(axis, rank);
    }
  }
  ctx.set_output(0, in);
}

void infer_topk(InferContext& ctx) {
  const ValueType& in = ctx.input(0);
  std::optional<int64_t> k;
  if (ctx.opset() < 10) {
    k = ctx.attrs().get_int("k");
  } else {
    const Tensor* kv = ctx.input_value(1);
    if (kv != nullptr) {
      if (kv->numel() != 1) ctx.fail("k must hold a single value");
      k = kv->int_at(0);
    }
  }
  if (k && *k < 0) ctx.fail("k must be non-negative, got " + std::to_string(*k));
  if (ctx.opset() < 11) {
    if (ctx.attrs().has("largest") || ctx.attrs().has("sorted")) {
      ctx.fail("largest and sorted need opset 11");
    }
  }
  if (!in.shape) {
    ctx.set_output(0, ValueType::unknown_shape(in.dtype));
    ctx.set_output(1, ValueType::unknown_shape(DType::int64));
    return;
  }
  Dims dims = *in.shape;
  auto axis = static_cast<size_t>(
      ctx.normalize_axis(ctx.attrs().get_int("axis", -1), static_cast<int64_t>(dims.size())));
  if (k) {
    if (dims[axis].is_static() && *k > dims[axis].value()) {
      ctx.fail("k = " + std::to_string(*k) + " exceeds the axis size " + dims[axis].to_string());
    }
    dims[axis] = Dim(*k);
  } else {
    dims[axis] = Dim();
  }
  ctx.set_output(0, {in.dtype, dims});
  ctx.set_output(1, {DType::int64, dims});
}

// NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss: scores [N, C, d...]
// and labels [N, d...]; the loss is [N, d...] for reduction "none", else a
// scalar. SoftmaxCrossEntropyLoss may also output the log-probabilities.
void infer_loss(InferContext& ctx) {
  const ValueType& scores = ctx.input(0);
  const ValueType& labels = ctx.input(1);
  if (!is_floating(scores.dtype)) ctx.fail("scores must be a floating-point tensor");
  if (labels.dtype != DType::int32 && labels.dtype != DType::int64) {
    ctx.fail("labels must be int32 or int64");
  }
  const std::string reduction = ctx.attrs().get_string("reduction", "mean");
  if (reduction != "none" && reduction != "sum" && reduction != "mean") {
    ctx.fail("unknown reduction '" + reduction + "'");
  }
  if (scores.shape) {
    if (scores.shape->size() < 2) ctx.fail("scores must have rank >= 2");
    if (labels.shape && labels.shape->size() + 1 != scores.shape->size()) {
      ctx.fail("labels must have rank " + std::to_string(scores.shape->size() - 1));
    }
  }
  if (reduction != "none") {
    ctx.set_output(0, {scores.dtype, Dims{}});
  } else if (labels.shape) {
    ctx.set_output(0, {scores.dtype, labels.shape});
  } else if (scores.shape) {
    Dims dims = *scores.shape;
    dims.erase(dims.begin() + 1);
    ctx.set_output(0, {scores.dtype, dims});
  } else {
    ctx.set_output(0, ValueType::unknown_shape(scores.dtype));
  }
  if (ctx.num_outputs() > 1) ctx.set_output(1, scores);
}

}  // namespace

void register_reduction_ops(OpRegistry& r) {
  for (const char* op : {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                         "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}) {
    r.add(op, infer_reduce);
  }
  for (const char* op : {"ArgMax", "ArgMin"}) r.add(op, infer_arg_reduce);
  for (const char* op : {"Softmax", "LogSoftmax", "Hardmax"}) r.add(op, infer_normalize);
  r.add("TopK", infer_topk);
  for (const char* op : {"NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"}) r.add(op, infer_loss);
}

}  // namespace kiln::ir
