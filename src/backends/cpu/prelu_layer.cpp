// PRelu with a constant slope: oneDNN's prelu primitive, the slope as its
// weights broadcast the numpy way (right-aligned, size-1 dims shared; per
// channel before opset 7), which oneDNN's shared-axes broadcast covers.
#include "backends/cpu/instance_builder.hpp"

namespace kiln::cpu {

void build_prelu_layer(InstanceBuilder& b, LayerDesc& layer) {
  const ir::Node& n = b.node(layer.anchor());
  if (n.op_type != "PRelu" || n.inputs.size() != 2) {
    throw Error(ErrorCode::invalid_model, "a prelu layer whose node is not a PRelu of two inputs");
  }
  const ir::ValueId x = n.inputs[0];
  const ir::ValueId slope = n.inputs[1];
  const ir::ValueId y = n.outputs[0];
  const auto& shape = b.shape(x);
  const auto& slope_shape = b.shape(slope);
  if (slope_shape.size() > shape.size()) {
    throw Error(ErrorCode::invalid_model, "node '" + n.name + "' (PRelu): slope of a higher rank than X");
  }
  Dims w(shape.size() - slope_shape.size(), 1);
  w.insert(w.end(), slope_shape.begin(), slope_shape.end());
  // Before opset 7 a rank-1 slope held one value per channel (axis 1), as
  // the reference kernel reads it.
  if (n.opset < 7 && slope_shape.size() == 1 && shape.size() >= 2 && slope_shape[0] == shape[1]) {
    w.assign(shape.size(), 1);
    w[1] = shape[1];
  }
  for (size_t i = 0; i < w.size(); ++i) {
    if (w[i] != 1 && w[i] != shape[i]) {
      throw Error(ErrorCode::invalid_model, "node '" + n.name + "' (PRelu): slope does not broadcast to X");
    }
  }
  // Plain activations: the slope's plain layout then matches them.
  const int src = b.use_plain(x, Dt::f32);
  const Md w_md = plain_md(w, Dt::f32);
  dnnl::prelu_forward::desc desc(dnnl::prop_kind::forward_inference, b.slot(src).md, w_md);
  dnnl::prelu_forward::primitive_desc pd(desc, b.attr(), b.engine());
  layer.tactic.name = "prelu";
  int dst = b.try_inplace(x, y, pd.dst_desc());
  if (dst < 0) dst = b.define(y, pd.dst_desc());
  b.add_primitive(pd, {{DNNL_ARG_SRC, src},
                       {DNNL_ARG_WEIGHTS, b.weight_slot(slope, w_md, pd.weights_desc())},
                       {DNNL_ARG_DST, dst}});
}

}  // namespace kiln::cpu
