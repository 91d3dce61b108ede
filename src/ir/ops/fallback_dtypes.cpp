// Output dtypes of a node that static inference cannot run.
//
// infer_shapes skips a node when one of its inputs has no type (its producer
// is an op kiln does not compute) and keeps the outputs of a node it cannot
// compute as declared, which for an exporter's intermediate values is
// nothing. Without a dtype, everything downstream was skipped too: one
// unsupported ScatterND left Swin's mask chain (Shape, ConstantOfShape,
// Equal, Where) untyped, and every Where was then reported as having an
// "undefined" condition, burying the real cause.
//
// Most ops' output dtypes follow from their attributes or from any one of
// the inputs that share the type variable T (ONNX requires those to agree),
// so one known input is enough. This file knows, per op, which; anything it
// does not know stays undefined rather than guessed.
#include <algorithm>
#include <initializer_list>
#include <string_view>

#include "ir/op_schema.hpp"

namespace kiln::ir {

namespace {

bool one_of(std::string_view op, std::initializer_list<std::string_view> ops) {
  return std::find(ops.begin(), ops.end(), op) != ops.end();
}

// The first known dtype among `inputs`; undefined when none is.
DType first_known(std::span<const DType> dtypes, std::initializer_list<size_t> inputs) {
  for (size_t i : inputs) {
    if (i < dtypes.size() && dtypes[i] != DType::undefined) return dtypes[i];
  }
  return DType::undefined;
}

DType first_known_of_all(std::span<const DType> dtypes) {
  for (DType d : dtypes) {
    if (d != DType::undefined) return d;
  }
  return DType::undefined;
}

DType attribute_dtype(const Node& node, const std::string& name, DType fallback) {
  if (!node.attrs.has(name)) return fallback;
  return dtype_from_onnx(static_cast<int32_t>(node.attrs.get_int(name))).value_or(DType::undefined);
}

}  // namespace

std::vector<DType> fallback_output_dtypes(const Node& node, std::span<const DType> in) {
  std::vector<DType> out(node.outputs.size(), DType::undefined);
  if (out.empty() || (!node.domain.empty() && node.domain != "ai.onnx")) return out;
  const std::string& op = node.op_type;
  DType& first = out[0];
  if (one_of(op, {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor",
                  "IsNaN", "IsInf"})) {
    first = DType::boolean;
  } else if (one_of(op, {"Shape", "Size", "NonZero", "ArgMax", "ArgMin"})) {
    first = DType::int64;
  } else if (op == "Cast") {
    first = attribute_dtype(node, "to", DType::undefined);
  } else if (op == "CastLike") {
    first = first_known(in, {1});
  } else if (op == "ConstantOfShape") {
    first = node.attrs.has("value") ? node.attrs.get_tensor("value").dtype() : DType::float32;
  } else if (op == "EyeLike") {
    first = attribute_dtype(node, "dtype", first_known(in, {0}));
  } else if (op == "Where") {
    first = first_known(in, {1, 2});
  } else if (op == "OneHot") {
    first = first_known(in, {2});
  } else if (op == "ScatterND" || op == "ScatterElements" || op == "Scatter") {
    first = first_known(in, {0, 2});
  } else if (op == "Gemm") {
    first = first_known(in, {0, 1, 2});
  } else if (one_of(op, {"Add", "Sub", "Mul", "Div", "Mod", "Min", "Max", "Sum", "Mean", "BitShift", "Concat",
                         "Range", "MatMul", "Einsum", "PRelu"})) {
    // Every input is of the one type T.
    first = first_known_of_all(in);
  } else if (find_schema(node.domain, op)) {
    // Every other op kiln knows gives its first output the type of its
    // first input (unary math, data movement, convolutions, pooling,
    // normalizations, reductions, Pow's base).
    first = first_known(in, {0});
  }
  if (op == "Split") std::fill(out.begin(), out.end(), first);
  if ((op == "TopK" || op == "MaxPool") && out.size() > 1) out[1] = DType::int64;
  if (op == "Dropout" && out.size() > 1) out[1] = node.opset < 10 ? first : DType::boolean;
  if (op == "SoftmaxCrossEntropyLoss" && out.size() > 1) out[1] = first;
  return out;
}

}  // namespace kiln::ir
