// Pooling layers (MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool) on
// whatever layout the producer chose: oneDNN pools blocked layouts natively,
// so a conv stack keeps its layout through them. 1-D, 2-D and 3-D pools, with
// auto_pad and ceil_mode resolved to explicit pads per instance. An f32
// GlobalAveragePool over channels-last or channel blocks is kiln's loop
// (global_pool.hpp: it keeps each thread on its own part of the tensor).
#include "backends/cpu/global_pool.hpp"
#include "backends/cpu/instance_builder.hpp"
#include "backends/cpu/spatial_pads.hpp"

namespace kiln::cpu {

void build_pool_layer(InstanceBuilder& b, LayerDesc& layer) {
  const ir::Node& n = b.node(layer.anchor());
  const ir::ValueId x = n.inputs[0];
  const ir::ValueId y = n.outputs[0];
  const auto& in = b.shape(x);
  const auto& out = b.shape(y);
  const bool global = n.op_type == "GlobalAveragePool" || n.op_type == "GlobalMaxPool";
  const bool is_max = n.op_type == "MaxPool" || n.op_type == "GlobalMaxPool";
  if (in.size() < 3 || in.size() > 5 || out.size() != in.size()) {
    throw Error(ErrorCode::unsupported, "pooling over other than 1, 2 or 3 spatial dims");
  }
  const size_t nd = in.size() - 2;
  const std::span<const int64_t> in_sp(in.data() + 2, nd), out_sp(out.data() + 2, nd);
  Dims kernel(in_sp.begin(), in_sp.end()), strides(nd, 1), dilation(nd, 0), pad_l(nd, 0), pad_r(nd, 0);
  if (!global) {
    const ir::Attributes& a = n.attrs;
    std::vector<int64_t> k = a.get_ints("kernel_shape");
    std::vector<int64_t> s = a.get_ints("strides", std::vector<int64_t>(nd, 1));
    std::vector<int64_t> d = a.get_ints("dilations", std::vector<int64_t>(nd, 1));
    if (k.size() != nd || s.size() != nd || d.size() != nd) {
      throw Error(ErrorCode::unsupported, "kernel/strides/dilations of the wrong length");
    }
    std::vector<int64_t> window(nd);
    for (size_t i = 0; i < nd; ++i) window[i] = (k[i] - 1) * d[i] + 1;
    // auto_pad and ceil_mode become explicit (possibly asymmetric) pads.
    SpatialPads pads = explicit_pads(a, in_sp, out_sp, window, s);
    kernel = Dims(k.begin(), k.end());
    strides = Dims(s.begin(), s.end());
    for (size_t i = 0; i < nd; ++i) dilation[i] = d[i] - 1;
    pad_l = pads.begin;
    pad_r = pads.end;
  }
  if (n.op_type == "GlobalAveragePool") {
    const int src = b.use_current(x);
    const Md src_md = b.slot(src).md;
    const std::optional<NestedPool> p = nested_pool(src_md);
    const std::optional<Md> dst_md = p ? layout_like(src_md, to_dims(out)) : std::nullopt;
    if (dst_md) {
      const int dst = b.define(y, *dst_md);
      const auto partial = static_cast<size_t>(b.temp(plain_md(Dims{p->tasks() * p->inner}, Dt::f32)));
      Instance* inst = &b.instance();
      b.add_function([inst, p = *p, in = static_cast<size_t>(src), out = static_cast<size_t>(dst),
                      partial](RunContext&) {
        global_average(p, slot_floats(inst->slots[in]), slot_floats(inst->slots[out]),
                       memory_floats(inst->slots[partial].mem));
      });
      layer.tactic.name = "native:global_average";
      return;
    }
  }
  const bool include_pad = n.attrs.get_int("count_include_pad", 0) != 0;
  const dnnl::algorithm alg = is_max        ? dnnl::algorithm::pooling_max
                              : include_pad ? dnnl::algorithm::pooling_avg_include_padding
                                            : dnnl::algorithm::pooling_avg_exclude_padding;
  int src = b.use_current(x);
  Md src_md = b.slot(src).md;
  if (!is_strided(src_md) && src_md.data.format_kind != dnnl_blocked) src = b.use_plain(x, Dt::f32);
  src_md = b.slot(src).md;
  Md dst_any(to_dims(out), src_md.data_type(), dnnl::memory::format_tag::any);
  dnnl::pooling_v2_forward::desc desc(dnnl::prop_kind::forward_inference, alg, src_md, dst_any, strides,
                                      kernel, dilation, pad_l, pad_r);
  dnnl::pooling_v2_forward::primitive_desc pd(desc, b.attr(), b.engine());
  layer.tactic.name = std::string("pool:") + (is_max ? "max" : "avg");
  const int dst = b.define(y, pd.dst_desc());
  b.add_primitive(pd, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}});
}

}  // namespace kiln::cpu
