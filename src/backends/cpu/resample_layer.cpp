// Resize / Upsample on oneDNN's resampling primitive, for the nodes whose
// ONNX semantics it reproduces exactly (see resample_layer.hpp). The
// primitive reads the producer's layout as it is (plain, nhwc or blocked);
// a graph output is written plain, so returning it is a plain copy, and a
// 2-D linear one by kiln's own loop (bilinear.hpp).
#include "backends/cpu/resample_layer.hpp"

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "backends/cpu/bilinear.hpp"
#include "backends/cpu/instance_builder.hpp"
#include "backends/cpu/layer_partition.hpp"
#include "ir/ops/tensor_params.hpp"

namespace kiln::cpu {

using ir::k_no_value;

namespace {

// oneDNN 2.6's nearest index (resampling_utils::nearest_idx), evaluated in
// float with the same operations and order, so it rounds as oneDNN does.
int64_t onednn_nearest(int64_t y, int64_t out_len, int64_t in_len) {
  const float s =
      (static_cast<float>(y) + 0.5f) * static_cast<float>(in_len) / static_cast<float>(out_len) - 0.5f;
  return static_cast<int64_t>(std::roundf(s));
}

// What no shape can change: the modes, attributes and rank.
std::optional<std::string> static_mismatch(const ir::Node& node, size_t rank) {
  const ir::ResizeModes m = ir::resize_modes(node);
  if (m.mode != "nearest" && m.mode != "linear") return "mode '" + m.mode + "'";
  if (m.transform == "tf_crop_and_resize") return "tf_crop_and_resize (roi)";
  if (m.transform != "half_pixel" && m.transform != "pytorch_half_pixel" && m.transform != "asymmetric" &&
      m.transform != "tf_half_pixel_for_nn" && m.transform != "align_corners")
    return "coordinate_transformation_mode '" + m.transform + "'";
  if (m.mode == "linear" && m.transform != "half_pixel" && m.transform != "pytorch_half_pixel")
    return "linear " + m.transform + " (oneDNN maps half_pixel only)";
  if (node.attrs.get_int("antialias", 0) != 0) return "antialias";
  if (node.attrs.has("axes")) return "the axes attribute";
  if (node.attrs.get_string("keep_aspect_ratio_policy", "stretch") != "stretch")
    return "keep_aspect_ratio_policy";
  if (rank != 4 && rank != 5) return "rank " + std::to_string(rank) + " (oneDNN resamples 2-D and 3-D)";
  return std::nullopt;
}

}  // namespace

std::optional<std::string> resample_mismatch(const ir::Node& node, std::span<const Tensor* const> inputs,
                                             std::span<const int64_t> in_shape) {
  const size_t rank = in_shape.size();
  if (auto why = static_mismatch(node, rank)) return why;
  const ir::ResizeModes m = ir::resize_modes(node);
  std::optional<ir::ResizeArgs> args;
  try {
    args = ir::resize_args(node, inputs, in_shape);
  } catch (const Error& e) {
    return std::string(e.what());
  }
  if (!args) return "scales or sizes unknown at build time";
  for (size_t a = 0; a < rank; ++a) {
    const int64_t in = in_shape[a];
    const int64_t out = args->out_shape[a];
    const double scale = args->scales[a];
    if (in <= 0 || out <= 0) return "an empty axis";
    if (a < 2) {
      if (out != in || scale != 1.0) return "it resizes the batch or channel axis";
      continue;
    }
    if (m.mode == "linear") {
      // ONNX maps with the node's scale, oneDNN with the size ratio.
      if (scale != static_cast<double>(out) / static_cast<double>(in))
        return "scale " + std::to_string(scale) + " is not the size ratio " + std::to_string(out) + "/" +
               std::to_string(in);
      if (out == in) continue;  // an unresized axis maps onto itself
      if (m.transform == "pytorch_half_pixel" && out == 1)
        return "pytorch_half_pixel onto a length-1 axis (ONNX reads coordinate -0.5)";
      continue;
    }
    for (int64_t y = 0; y < out; ++y) {
      const int64_t want =
          std::clamp<int64_t>(ir::resize_nearest_index(
                                  m.nearest, *ir::resize_source_coordinate(m, y, scale, in, 0.0, 1.0), scale),
                              0, in - 1);
      if (want != onednn_nearest(y, out, in))
        return "nearest " + m.transform + "/" + m.nearest + " picks other inputs than oneDNN's rounding";
    }
  }
  return std::nullopt;
}

std::optional<std::string> resample_mismatch(const ir::Graph& graph, const ir::Node& node) {
  if (node.inputs.empty() || node.inputs[0] == k_no_value) return "no data input";
  const ir::ValueType& t = graph.value(node.inputs[0]).type;
  if (t.dtype != DType::float32) return "data of type " + std::string(dtype_name(t.dtype));
  for (ir::ValueId v : node.outputs) {
    if (v != k_no_value && graph.value(v).type.dtype != DType::float32) return "output type";
  }
  if (!t.shape) return "input rank unknown";
  if (auto why = static_mismatch(node, t.shape->size())) return why;
  // Scales and sizes computed from input shapes (torch's interpolate to the
  // input's size) are known once the shapes are: the layer decides then.
  const std::vector<bool> shape_only = shape_only_values(graph);
  bool all_constant = true;
  std::vector<const Tensor*> values;
  for (size_t i = 0; i < node.inputs.size(); ++i) {
    const ir::ValueId v = node.inputs[i];
    values.push_back(v == k_no_value ? nullptr : graph.value(v).known_value());
    if (i == 0 || v == k_no_value) continue;
    if (!shape_only[static_cast<size_t>(v)]) return "scales or sizes depend on input data";
    all_constant = all_constant && values.back() != nullptr;
  }
  std::vector<int64_t> dims;
  for (const ir::Dim& d : *t.shape) {
    if (!d.is_static()) return std::nullopt;  // decided per shape set
    dims.push_back(d.value());
  }
  if (!all_constant) return std::nullopt;
  return resample_mismatch(node, values, dims);
}

void build_resample_layer(InstanceBuilder& b, LayerDesc& layer) {
  const ir::Node& n = b.node(layer.anchor());
  const ir::ValueId x = n.inputs[0];
  const ir::ValueId y = n.outputs[0];
  const std::vector<int64_t>& in = b.shape(x);
  const std::vector<int64_t>& out = b.shape(y);
  std::vector<const Tensor*> values;
  for (ir::ValueId v : n.inputs) values.push_back(b.known(v));
  // The partition decided what the graph's shapes and constants could tell;
  // at these shapes, a node oneDNN would compute differently runs on the
  // reference kernel instead.
  if (auto why = resample_mismatch(n, values, in)) {
    build_aux_layer(b, layer);
    layer.tactic.name += " (" + *why + ")";
    return;
  }
  const bool graph_output = b.is_graph_output(y);
  int src = -1;
  Md dst_md;
  if (graph_output) {
    // Plain in and out: the (small) source is cheaper to reorder than the
    // upsampled result would be. The primitive still writes into the arena,
    // never into the returned tensor: its jit kernel stores non-temporally,
    // which needs 64-byte alignment that a Tensor's storage does not have.
    src = b.use_plain(x, Dt::f32);
    dst_md = plain_md(out, Dt::f32);
  } else {
    src = b.use_current(x);
    const Md cur = b.slot(src).md;
    if (!is_strided(cur) && cur.data.format_kind != dnnl_blocked) src = b.use_plain(x, Dt::f32);
    dst_md = Md(to_dims(out), Dt::f32, dnnl::memory::format_tag::any);  // the source's layout
  }
  const bool linear = ir::resize_modes(n).mode == "linear";
  if (graph_output && linear && in.size() == 4) {
    // kiln's loop (bilinear.hpp): oneDNN's jit resampling over plain planes
    // was a tenth of a segmentation network's time.
    const int dst = b.define(y, dst_md);
    auto pass = std::make_shared<const BilinearPlanes>(in[0] * in[1], in[2], in[3], out[2], out[3]);
    Instance* inst = &b.instance();
    b.add_function(
        [inst, pass, src, dst](RunContext&) {
          pass->run(slot_floats(inst->slots[static_cast<size_t>(src)]),
                    slot_floats(inst->slots[static_cast<size_t>(dst)]));
        },
        "Resize", "native:bilinear");
    layer.tactic.name = "native:bilinear";
    return;
  }
  const dnnl::algorithm alg =
      linear ? dnnl::algorithm::resampling_linear : dnnl::algorithm::resampling_nearest;
  dnnl::resampling_forward::desc desc(dnnl::prop_kind::forward_inference, alg, b.slot(src).md, dst_md);
  dnnl::resampling_forward::primitive_desc pd(desc, b.attr(), b.engine());
  layer.tactic.name = std::string("resample:") + (linear ? "linear" : "nearest");
  const int dst = b.define(y, pd.dst_desc());
  b.add_primitive(pd, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}});
}

}  // namespace kiln::cpu
