#include "ir/op_versions.hpp"

#include <array>

#include "ir/op_schema.hpp"

namespace kiln::ir {

namespace {

constexpr int V = k_variadic;
constexpr Computes yes = Computes::yes;
constexpr Computes no = Computes::no;

OpVersion types_only(std::string_view op, int64_t since, Computes computes) {
  return {op, since, computes, true, 0, 0, 0, 0, {}};
}

OpVersion changed(std::string_view op, int64_t since, Computes computes, std::array<int, 4> arity,
                  std::string_view attributes = {}) {
  return {op, since, computes, false, arity[0], arity[1], arity[2], arity[3], attributes};
}

constexpr std::string_view k_reduce_attrs = "keepdims,noop_with_empty_axes";
constexpr std::string_view k_resize_attrs =
    "antialias,axes,coordinate_transformation_mode,cubic_coeff_a,exclude_outside,extrapolation_value,"
    "keep_aspect_ratio_policy,mode,nearest_mode";

// In opset order, then by name.
const std::vector<OpVersion>& table() {
  static const std::vector<OpVersion> versions = {
      // Opset 18.
      changed("BitwiseAnd", 18, no, {2, 2, 1, 1}),
      changed("BitwiseNot", 18, no, {1, 1, 1, 1}),
      changed("BitwiseOr", 18, no, {2, 2, 1, 1}),
      changed("BitwiseXor", 18, no, {2, 2, 1, 1}),
      changed("CenterCropPad", 18, no, {2, 2, 1, 1}, "axes"),
      changed("Col2Im", 18, no, {3, 3, 1, 1}, "dilations,pads,strides"),
      changed("GroupNormalization", 18, no, {3, 3, 1, 1}, "epsilon,num_groups"),
      changed("LpPool", 18, yes, {1, 1, 1, 1}, "auto_pad,ceil_mode,dilations,kernel_shape,p,pads,strides"),
      changed("Mish", 18, no, {1, 1, 1, 1}),
      changed("OptionalGetElement", 18, no, {1, 1, 1, 1}),
      changed("OptionalHasElement", 18, no, {0, 1, 1, 1}),
      changed("Pad", 18, yes, {2, 4, 1, 1}, "mode"),
      changed("ReduceL1", 18, yes, {1, 2, 1, 1}, k_reduce_attrs),
      changed("ReduceL2", 18, yes, {1, 2, 1, 1}, k_reduce_attrs),
      changed("ReduceLogSum", 18, yes, {1, 2, 1, 1}, k_reduce_attrs),
      changed("ReduceLogSumExp", 18, yes, {1, 2, 1, 1}, k_reduce_attrs),
      changed("ReduceMax", 18, yes, {1, 2, 1, 1}, k_reduce_attrs),
      changed("ReduceMean", 18, yes, {1, 2, 1, 1}, k_reduce_attrs),
      changed("ReduceMin", 18, yes, {1, 2, 1, 1}, k_reduce_attrs),
      changed("ReduceProd", 18, yes, {1, 2, 1, 1}, k_reduce_attrs),
      changed("ReduceSumSquare", 18, yes, {1, 2, 1, 1}, k_reduce_attrs),
      changed("Resize", 18, yes, {1, 4, 1, 1}, k_resize_attrs),
      changed("ScatterElements", 18, yes, {3, 3, 1, 1}, "axis,reduction"),
      changed("ScatterND", 18, yes, {3, 3, 1, 1}, "reduction"),
      changed("Split", 18, yes, {1, 2, 1, V}, "axis,num_outputs"),
      // Opset 19.
      changed("AveragePool", 19, yes, {1, 1, 1, 1},
              "auto_pad,ceil_mode,count_include_pad,dilations,kernel_shape,pads,strides"),
      // saturate only concerns float8 targets, which kiln refuses by type.
      changed("Cast", 19, yes, {1, 1, 1, 1}, "saturate,to"),
      changed("CastLike", 19, yes, {2, 2, 1, 1}, "saturate"),
      types_only("Constant", 19, yes),
      changed("DeformConv", 19, no, {3, 5, 1, 1}, "dilations,group,kernel_shape,offset_group,pads,strides"),
      changed("DequantizeLinear", 19, no, {2, 3, 1, 1}, "axis"),
      types_only("Equal", 19, yes),
      types_only("Identity", 19, yes),
      types_only("If", 19, no),
      types_only("Loop", 19, no),
      changed("Pad", 19, yes, {2, 4, 1, 1}, "mode"),  // adds mode "wrap"
      changed("QuantizeLinear", 19, no, {2, 3, 1, 1}, "axis,saturate"),
      types_only("Reshape", 19, yes),
      changed("Resize", 19, yes, {1, 4, 1, 1}, k_resize_attrs),  // adds half_pixel_symmetric
      types_only("Scan", 19, no),
      types_only("Shape", 19, yes),
      types_only("Size", 19, yes),
      // Opset 20.
      changed("AffineGrid", 20, no, {2, 2, 1, 1}, "align_corners"),
      types_only("ConstantOfShape", 20, yes),
      changed("DFT", 20, no, {1, 3, 1, 1}, "inverse,onesided"),
      changed("Gelu", 20, yes, {1, 1, 1, 1}, "approximate"),
      changed("GridSample", 20, no, {2, 2, 1, 1}, "align_corners,mode,padding_mode"),
      changed("ImageDecoder", 20, no, {1, 1, 1, 1}, "pixel_format"),
      types_only("IsInf", 20, yes),
      types_only("IsNaN", 20, yes),
      changed("ReduceMax", 20, yes, {1, 2, 1, 1}, k_reduce_attrs),  // adds bool
      changed("ReduceMin", 20, yes, {1, 2, 1, 1}, k_reduce_attrs),  // adds bool
      changed("RegexFullMatch", 20, no, {1, 1, 1, 1}, "pattern"),
      changed("StringConcat", 20, no, {2, 2, 1, 1}),
      changed("StringSplit", 20, no, {1, 1, 2, 2}, "delimiter,maxsplit"),
      // Opset 21: mostly int4/uint4 (and float8) added to type lists.
      types_only("Cast", 21, yes),
      types_only("CastLike", 21, yes),
      types_only("Constant", 21, yes),
      types_only("ConstantOfShape", 21, yes),
      changed("DequantizeLinear", 21, no, {2, 3, 1, 1}, "axis,block_size"),
      types_only("Flatten", 21, yes),
      changed("GroupNormalization", 21, no, {3, 3, 1, 1}, "epsilon,num_groups,stash_type"),
      types_only("Identity", 21, yes),
      types_only("If", 21, no),
      types_only("Loop", 21, no),
      types_only("Pad", 21, yes),
      types_only("QLinearMatMul", 21, no),
      changed("QuantizeLinear", 21, no, {2, 3, 1, 1}, "axis,block_size,output_dtype,saturate"),
      types_only("Reshape", 21, yes),
      types_only("Scan", 21, no),
      types_only("Shape", 21, yes),
      types_only("Size", 21, yes),
      types_only("Squeeze", 21, yes),
      types_only("Transpose", 21, yes),
      types_only("Unsqueeze", 21, yes),
  };
  return versions;
}

}  // namespace

const OpVersion* newer_op_version(std::string_view op_type, int64_t opset) {
  const OpVersion* found = nullptr;
  for (const OpVersion& v : table()) {
    if (v.op_type == op_type && v.since <= opset) found = &v;
  }
  return found;
}

const OpVersion* previous_op_version(const OpVersion& version) {
  return newer_op_version(version.op_type, version.since - 1);
}

std::optional<std::string> op_version_problem(const Node& node) {
  if (!node.domain.empty() && node.domain != "ai.onnx") return std::nullopt;
  if (!find_schema(node.domain, node.op_type)) return std::nullopt;
  if (node.opset > k_newest_onnx_opset) {
    return node.op_type + " at opset " + std::to_string(node.opset) +
           ": kiln knows the ONNX ops up to opset " + std::to_string(k_newest_onnx_opset);
  }
  const OpVersion* version = newer_op_version(node.op_type, node.opset);
  if (version && version->computes == Computes::no) {
    return node.op_type + " version " + std::to_string(version->since) + " (opset " +
           std::to_string(node.opset) + ") is not supported by kiln";
  }
  return std::nullopt;
}

}  // namespace kiln::ir
