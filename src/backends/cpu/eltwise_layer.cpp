// Elementwise layers: unary activations/math as oneDNN eltwise, and
// Add/Sub/Mul/Div as oneDNN binary with numpy broadcasting of the second
// operand. Both work on the producer's layout (blocked included) and write
// in place over an input that dies here.
#include <optional>

#include "backends/cpu/instance_builder.hpp"

namespace kiln::cpu {

using ir::ValueId;

void build_eltwise_layer(InstanceBuilder& b, LayerDesc& layer) {
  const ir::Node& n = b.node(layer.anchor());
  std::string why;
  std::optional<Eltwise> e = eltwise_for(b.graph(), n, &why);
  if (!e) throw Error(ErrorCode::unsupported, why);
  const ValueId x = n.inputs[0];
  const ValueId y = n.outputs[0];
  const int src = b.use_current(x);
  const Md md = b.slot(src).md;
  dnnl::eltwise_forward::desc desc(dnnl::prop_kind::forward_inference, e->alg, md, e->alpha, e->beta);
  dnnl::eltwise_forward::primitive_desc pd(desc, b.attr(), b.engine());
  layer.tactic.name = "eltwise:" + eltwise_name(*e);
  int dst = b.try_inplace(x, y, pd.dst_desc());
  if (dst < 0) dst = b.define(y, pd.dst_desc());
  b.add_primitive(pd, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}});
}

void build_binary_layer(InstanceBuilder& b, LayerDesc& layer) {
  const ir::Node& n = b.node(layer.anchor());
  ValueId x = n.inputs[0];
  ValueId z = n.inputs[1];
  const ValueId y = n.outputs[0];
  const auto& out = b.shape(y);
  // oneDNN broadcasts only its second source: put the full-size operand
  // first. c - x and c / x become -(x - c) and (x / c)^-1 as a post-op.
  auto full = [&](ValueId v) { return b.shape(v) == out && !b.is_fixed(v); };
  dnnl::post_ops post_ops;
  if (!full(x) && full(z)) {
    std::swap(x, z);
    if (n.op_type == "Sub") post_ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_linear, -1.0f, 0.0f);
    if (n.op_type == "Div") post_ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_pow, 1.0f, -1.0f);
  } else if (!full(x)) {
    build_aux_layer(b, layer);  // both operands broadcast: no oneDNN primitive
    return;
  }
  const dnnl::algorithm alg = n.op_type == "Add"   ? dnnl::algorithm::binary_add
                              : n.op_type == "Sub" ? dnnl::algorithm::binary_sub
                              : n.op_type == "Mul" ? dnnl::algorithm::binary_mul
                                                   : dnnl::algorithm::binary_div;
  Dims padded(out.size() > 0 ? out.size() : 1, 1);
  {
    const auto& zs = b.shape(z);
    for (size_t i = 0; i < zs.size(); ++i) padded[padded.size() - zs.size() + i] = zs[i];
  }
  int src0 = b.use_current(x);
  int src1 = -1;
  const bool same = b.shape(z) == out && !b.is_fixed(z);
  if (same) {
    src1 = b.use(z, b.slot(src0).md);
  } else if (b.is_fixed(z)) {
    src1 = b.weight_slot(z, plain_md(padded, Dt::f32), plain_md(padded, Dt::f32));
  } else {
    src1 = b.view(b.use_plain(z, Dt::f32), plain_md(padded, Dt::f32));
  }
  dnnl::primitive_attr attr = b.attr();
  attr.set_post_ops(post_ops);
  std::optional<dnnl::binary::primitive_desc> pd;
  try {
    dnnl::binary::desc desc(alg, b.slot(src0).md, b.slot(src1).md, b.slot(src0).md);
    pd = dnnl::binary::primitive_desc(desc, attr, b.engine());
  } catch (const dnnl::error&) {
    // Mixed layouts oneDNN cannot combine: fall back to plain f32 for both.
    src0 = b.use_plain(x, Dt::f32);
    if (same) src1 = b.use_plain(z, Dt::f32);
    dnnl::binary::desc desc(alg, b.slot(src0).md, b.slot(src1).md, b.slot(src0).md);
    pd = dnnl::binary::primitive_desc(desc, attr, b.engine());
  }
  layer.tactic.name = "binary:" + n.op_type;
  int dst = (z == x) ? -1 : b.try_inplace(x, y, pd->dst_desc());
  if (dst >= 0 && b.slot(src0).md != b.slot(dst).md) dst = -1;
  if (dst < 0) dst = b.define(y, pd->dst_desc());
  b.add_primitive(*pd, {{DNNL_ARG_SRC_0, src0}, {DNNL_ARG_SRC_1, src1}, {DNNL_ARG_DST, dst}});
}

}  // namespace kiln::cpu
