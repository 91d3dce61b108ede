// Pooling layers (MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool) on
// whatever layout the producer chose: oneDNN pools blocked layouts natively,
// so a conv stack keeps its layout through them. 1-D, 2-D and 3-D pools, with
// auto_pad and ceil_mode resolved to explicit pads per instance. An f32
// GlobalAveragePool over channels-last or channel blocks is kiln's loop
// (global_pool.hpp: it keeps each thread on its own part of the tensor).
#include <string>

#include "backends/cpu/global_pool.hpp"
#include "backends/cpu/instance_builder.hpp"
#include "backends/cpu/spatial_pads.hpp"

namespace kiln::cpu {

namespace {

bool is_strided_or_blocked(const Md& md) { return is_strided(md) || md.data.format_kind == dnnl_blocked; }

}  // namespace

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
  const bool include_pad = n.attrs.get_int("count_include_pad", 0) != 0;
  const dnnl::algorithm alg = is_max        ? dnnl::algorithm::pooling_max
                              : include_pad ? dnnl::algorithm::pooling_avg_include_padding
                                            : dnnl::algorithm::pooling_avg_exclude_padding;
  const auto pooling = [&](const Md& src_md) {
    const Md dst_any(to_dims(out), src_md.data_type(), dnnl::memory::format_tag::any);
    const dnnl::pooling_v2_forward::desc desc(dnnl::prop_kind::forward_inference, alg, src_md, dst_any,
                                              strides, kernel, dilation, pad_l, pad_r);
    return dnnl::pooling_v2_forward::primitive_desc(desc, b.attr(), b.engine());
  };
  const auto reference_only = [&](const Md& src_md) {
    try {
      return std::string(pooling(src_md).impl_info_str()).rfind("ref", 0) == 0;
    } catch (const dnnl::error&) {
      return true;
    }
  };
  int src = b.use_current(x);
  // bf16 in a layout oneDNN 2.6 pools only with its reference kernel (bf16
  // nChw8c, as the grouped convs of a bf16 RegNet write it: 12 ms for one
  // squeeze-and-excitation mean of [8,48,56,56], 63 of the model's 80):
  // the same layout in f32 instead, one conversion, then a fast kernel.
  if (b.slot(src).md.data_type() == Dt::bf16 && is_strided_or_blocked(b.slot(src).md) &&
      reference_only(b.slot(src).md)) {
    src = b.use(x, with_data_type(b.slot(src).md, Dt::f32));
  }
  if (n.op_type == "GlobalAveragePool") {
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
  if (!is_strided_or_blocked(b.slot(src).md)) src = b.use_plain(x, Dt::f32);
  const dnnl::pooling_v2_forward::primitive_desc pd = pooling(b.slot(src).md);
  // The implementation in the profile, "/ref" where it is oneDNN's
  // reference kernel (what the bench counts as reference time).
  const std::string impl = pd.impl_info_str();
  layer.tactic.name = std::string("pool:") + (is_max ? "max" : "avg") +
                      (impl.rfind("ref", 0) == 0 ? "/ref" : " [" + impl + "]");
  const int dst = b.define(y, pd.dst_desc());
  b.add_primitive(pd, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}});
}

}  // namespace kiln::cpu
