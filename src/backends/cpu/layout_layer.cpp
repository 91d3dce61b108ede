// Layout-only layers. Reshape, Flatten, Squeeze, Unsqueeze and Identity are
// views of a plain tensor (no copy; a blocked input is reordered to plain
// once). Transpose is a strided view: consumers that read strides (matmul,
// reorders) take it as is, others get one reorder. Concat is oneDNN concat
// over plain inputs.
#include "backends/cpu/instance_builder.hpp"

namespace kiln::cpu {

using ir::ValueId;

void build_view_layer(InstanceBuilder& b, LayerDesc& layer) {
  const ir::Node& n = b.node(layer.anchor());
  const ValueId x = n.inputs[0];
  const ValueId y = n.outputs[0];
  const Md current = b.md_of(x);
  const Dt dt = current.data_type() == Dt::bf16 ? Dt::bf16 : Dt::f32;
  if (n.op_type == "Transpose") {
    const auto& in = b.shape(x);
    std::vector<int64_t> perm = n.attrs.get_ints("perm", {});
    if (perm.empty()) {
      for (size_t i = in.size(); i-- > 0;) perm.push_back(static_cast<int64_t>(i));
    }
    const int src = b.use_strided(x, dt);
    const Md md = b.slot(src).md;
    const Dims dims = md.dims();
    Dims out_dims, out_strides;
    for (int64_t p : perm) {
      out_dims.push_back(dims.at(static_cast<size_t>(p)));
      out_strides.push_back(md.data.format_desc.blocking.strides[p]);
    }
    layer.tactic.name = "view:transpose";
    b.define_view(y, src, Md(out_dims, dt, out_strides));
    return;
  }
  const int src = b.use_plain(x, dt);
  layer.tactic.name = "view:" + n.op_type;
  b.define_view(y, src, plain_md(b.shape(y), dt));
}

void build_concat_layer(InstanceBuilder& b, LayerDesc& layer) {
  const ir::Node& n = b.node(layer.anchor());
  const ValueId y = n.outputs[0];
  const int64_t rank = static_cast<int64_t>(b.shape(y).size());
  int64_t axis = n.attrs.get_int("axis");
  if (axis < 0) axis += rank;
  if (axis < 0 || axis >= rank) throw Error(ErrorCode::invalid_model, "Concat axis out of range");
  std::vector<Md> srcs;
  std::vector<std::pair<int, int>> args;
  for (ValueId v : n.inputs) {
    if (b.shape(v).empty() || b.shape(v)[static_cast<size_t>(axis)] == 0)
      continue;  // empty inputs add nothing
    const int s = b.use_plain(v, Dt::f32);
    args.emplace_back(DNNL_ARG_MULTIPLE_SRC + static_cast<int>(srcs.size()), s);
    srcs.push_back(b.slot(s).md);
  }
  const Md dst_md = plain_md(b.shape(y), Dt::f32);
  dnnl::concat::primitive_desc pd(dst_md, static_cast<int>(axis), srcs, b.engine(), b.attr());
  layer.tactic.name = "concat";
  args.emplace_back(DNNL_ARG_DST, b.define(y, dst_md));
  b.add_primitive(pd, std::move(args));
}

}  // namespace kiln::cpu
