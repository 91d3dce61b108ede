// Pooling layers (MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool) on
// whatever layout the producer chose: oneDNN pools blocked layouts natively,
// so a conv stack keeps its layout through them.
#include "backends/cpu/instance_builder.hpp"

namespace kiln::cpu {

void build_pool_layer(InstanceBuilder& b, LayerDesc& layer) {
  const ir::Node& n = b.node(layer.anchor());
  const ir::ValueId x = n.inputs[0];
  const ir::ValueId y = n.outputs[0];
  const auto& in = b.shape(x);
  const auto& out = b.shape(y);
  const bool global = n.op_type == "GlobalAveragePool" || n.op_type == "GlobalMaxPool";
  const bool is_max = n.op_type == "MaxPool" || n.op_type == "GlobalMaxPool";
  Dims kernel, strides, dilation{0, 0}, pad_l{0, 0}, pad_r{0, 0};
  if (global) {
    kernel = {in[2], in[3]};
    strides = {1, 1};
  } else {
    const ir::Attributes& a = n.attrs;
    std::vector<int64_t> k = a.get_ints("kernel_shape");
    std::vector<int64_t> s = a.get_ints("strides", {1, 1});
    std::vector<int64_t> d = a.get_ints("dilations", {1, 1});
    std::vector<int64_t> p = a.get_ints("pads", {0, 0, 0, 0});
    if (a.get_string("auto_pad", "NOTSET") == "VALID") p = {0, 0, 0, 0};
    if (k.size() != 2 || s.size() != 2 || d.size() != 2 || p.size() != 4) {
      throw Error(ErrorCode::unsupported, "kernel/strides/dilations/pads of the wrong length");
    }
    kernel = {k[0], k[1]};
    strides = {s[0], s[1]};
    dilation = {d[0] - 1, d[1] - 1};
    pad_l = {p[0], p[1]};
    // ceil_mode: extend the right padding so oneDNN yields inference's size.
    for (size_t i = 0; i < 2; ++i) {
      const int64_t window = (k[i] - 1) * d[i] + 1;
      pad_r[i] = std::max<int64_t>(p[2 + i], (out[2 + i] - 1) * s[i] + window - in[2 + i] - p[i]);
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
