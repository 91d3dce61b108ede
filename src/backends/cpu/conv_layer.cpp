// Conv layers: one oneDNN convolution with the fused bias, residual sum and
// activation. Tactics: oneDNN's own choice (convolution_auto, layout any:
// brgconv/nhwc on avx512_core), direct on nChw16c blocks, direct on nhwc,
// and winograd (F(2x2,3x3) or F(4x4,3x3), whose weights kiln transforms
// itself at build and refit, winograd_weights.hpp); each in
// f32, and in bf16 (f32 accumulation) when enabled. Candidates that resolve
// to the same kernel and layouts are timed once; reference kernels are never
// candidates while an optimized one exists.
#include <optional>

#include "backends/cpu/instance_builder.hpp"
#include "backends/cpu/tactics.hpp"
#include "backends/cpu/winograd_weights.hpp"

namespace kiln::cpu {

using ir::k_no_node;
using ir::k_no_value;
using ir::ValueId;

dnnl::post_ops fused_post_ops(const InstanceBuilder& b, const LayerDesc& layer, std::string* name) {
  dnnl::post_ops po;
  if (layer.residual_add != k_no_node) {
    po.append_sum(1.0f);
    if (name) *name += "+sum";
  }
  if (layer.activation != k_no_node) {
    std::optional<Eltwise> e = eltwise_for(b.graph(), b.node(layer.activation));
    if (!e) throw Error(ErrorCode::internal, "fused activation has no oneDNN equivalent");
    po.append_eltwise(1.0f, e->alg, e->alpha, e->beta);
    if (name) *name += "+" + eltwise_name(*e);
  }
  return po;
}

namespace {

const char* algo_name(ConvAlgo a) {
  switch (a) {
    case ConvAlgo::automatic: return "auto";
    case ConvAlgo::direct: return "direct";
    case ConvAlgo::winograd: return "winograd";
  }
  return "?";
}

std::string tactic_name(const Tactic& t) {
  const char* layout = t.layout == Layout::any ? "any" : t.layout == Layout::nhwc ? "nhwc" : "nChw16c";
  return std::string("conv:") + algo_name(t.algo) + "/" + layout + "/" +
         (t.precision == Prec::bf16 ? "bf16" : "f32");
}

struct ConvProblem {
  Dims src, weights, dst, strides, dilates, pad_l, pad_r;
  int64_t groups = 1;
  bool has_bias = false;
  dnnl::post_ops post_ops;
  std::string post_name;
};

std::optional<dnnl::convolution_forward::primitive_desc> make_pd(InstanceBuilder& b, const ConvProblem& p,
                                                                 const Tactic& t) {
  using Tag = dnnl::memory::format_tag;
  const Dt dt = t.precision == Prec::bf16 ? Dt::bf16 : Dt::f32;
  const Tag act = t.layout == Layout::any ? Tag::any : t.layout == Layout::nhwc ? Tag::nhwc : Tag::nChw16c;
  Md src(p.src, dt, act);
  Md dst(p.dst, dt, act);
  Md w(p.weights, dt, Tag::any);
  Md bias(Dims{p.dst[1]}, Dt::f32, Tag::x);
  dnnl::algorithm alg = t.algo == ConvAlgo::direct     ? dnnl::algorithm::convolution_direct
                        : t.algo == ConvAlgo::winograd ? dnnl::algorithm::convolution_winograd
                                                       : dnnl::algorithm::convolution_auto;
  dnnl::primitive_attr attr = b.attr();
  attr.set_post_ops(p.post_ops);
  try {
    auto desc = p.has_bias ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, alg, src, w, bias,
                                                             dst, p.strides, p.dilates, p.pad_l, p.pad_r)
                           : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, alg, src, w, dst,
                                                             p.strides, p.dilates, p.pad_l, p.pad_r);
    return dnnl::convolution_forward::primitive_desc(desc, attr, b.engine());
  } catch (const dnnl::error&) {
    return std::nullopt;  // this algorithm or layout is not implemented for the problem
  }
}

}  // namespace

void build_conv_layer(InstanceBuilder& b, LayerDesc& layer) {
  const ir::Node& n = b.node(layer.anchor());
  const ValueId x = n.inputs[0];
  const ValueId w = n.inputs[1];
  const ValueId bias = n.inputs.size() > 2 ? n.inputs[2] : k_no_value;
  const ir::Attributes& a = n.attrs;

  ConvProblem p;
  p.src = to_dims(b.shape(x));
  p.dst = to_dims(b.shape(n.outputs[0]));
  const Dims wdims = to_dims(b.shape(w));
  p.groups = a.get_int("group", 1);
  p.weights = wdims;
  if (p.groups > 1) {
    p.weights = {p.groups, wdims[0] / p.groups, wdims[1], wdims[2], wdims[3]};
  }
  std::vector<int64_t> strides = a.get_ints("strides", {1, 1});
  std::vector<int64_t> dilations = a.get_ints("dilations", {1, 1});
  std::vector<int64_t> pads = a.get_ints("pads", {0, 0, 0, 0});
  if (a.get_string("auto_pad", "NOTSET") == "VALID") pads = {0, 0, 0, 0};
  if (strides.size() != 2 || dilations.size() != 2 || pads.size() != 4) {
    throw Error(ErrorCode::unsupported, "strides/dilations/pads of the wrong length");
  }
  p.strides = {strides[0], strides[1]};
  p.dilates = {dilations[0] - 1, dilations[1] - 1};
  p.pad_l = {pads[0], pads[1]};
  p.pad_r = {pads[2], pads[3]};
  p.has_bias = bias != k_no_value;
  p.post_ops = fused_post_ops(b, layer, &p.post_name);

  std::optional<dnnl::convolution_forward::primitive_desc> pd;
  if (b.tuning()) {
    std::vector<Tactic> tactics;
    std::vector<Prec> precisions = {Prec::f32};
    if (bf16_enabled(b)) precisions.insert(precisions.begin(), Prec::bf16);  // the heuristic favourite
    for (Prec prec : precisions) {
      tactics.push_back({ConvAlgo::automatic, Layout::any, prec, {}, 0});
      tactics.push_back({ConvAlgo::direct, Layout::blocked, prec, {}, 0});
      tactics.push_back({ConvAlgo::direct, Layout::nhwc, prec, {}, 0});
      tactics.push_back({ConvAlgo::winograd, Layout::any, prec, {}, 0});
    }
    const Md from = b.md_of(x);
    std::vector<builder::TacticCandidate> candidates;
    std::vector<Tactic> offered;
    std::vector<dnnl::convolution_forward::primitive_desc> pds;
    std::vector<std::string> seen;  // implementation + layouts: identical candidates are timed once
    std::vector<std::pair<Tactic, dnnl::convolution_forward::primitive_desc>> usable;
    bool any_fast = false;
    bool any_blocked = false;
    for (const Tactic& t : tactics) {
      auto cand = make_pd(b, p, t);
      if (!cand) continue;
      std::string identity = cand->impl_info_str() + md_string(cand->src_desc()) + md_string(cand->weights_desc()) +
                             md_string(cand->dst_desc());
      if (std::find(seen.begin(), seen.end(), identity) != seen.end()) continue;
      seen.push_back(identity);
      any_fast = any_fast || std::string(cand->impl_info_str()).rfind("ref", 0) != 0;
      any_blocked = any_blocked || cand->weights_desc().data.format_kind == dnnl_blocked;
      usable.emplace_back(t, *cand);
    }
    for (auto& [t, cand] : usable) {
      // oneDNN's reference kernels are orders of magnitude slower: not worth
      // timing while an optimized kernel exists.
      if (any_fast && std::string(cand.impl_info_str()).rfind("ref", 0) == 0) continue;
      // Opaque weight layouts other than the winograd ones kiln transforms
      // itself (winograd_weights.hpp) can only be made by oneDNN's reorder,
      // which is slow (the winograd one took 10-15 ms per 256x256 3x3 layer)
      // and paid at every refit. They are candidates only where refit speed
      // was traded away: engines that are not refittable, or optimization
      // level 4 and up.
      const CompileSettings& settings = *b.tuning()->settings;
      const bool slow_refit_ok = !settings.refittable || settings.optimization_level >= 4;
      const dnnl::memory::desc wd = cand.weights_desc();
      const bool fast_weights = wd.data.format_kind == dnnl_blocked || winograd_layout_supported(wd);
      if (!slow_refit_ok && any_blocked && !fast_weights) continue;
      t.name = tactic_name(t);
      std::vector<TimedArg> args = {{DNNL_ARG_SRC, cand.src_desc()},
                                    {DNNL_ARG_WEIGHTS, cand.weights_desc()},
                                    {DNNL_ARG_DST, cand.dst_desc()}};
      if (p.has_bias) args.push_back({DNNL_ARG_BIAS, cand.bias_desc()});
      candidates.push_back({t.name, primitive_timer(b, cand, args, from)});
      offered.push_back(t);
      pds.push_back(cand);
    }
    if (candidates.empty()) throw Error(ErrorCode::unsupported, "oneDNN has no convolution for this problem");
    std::string signature = "conv|x=" + md_string(from) + "|w=" + dims_string(p.weights) + "|y=" +
                            dims_string(p.dst) + "|s=" + dims_string(p.strides) + "|d=" + dims_string(p.dilates) +
                            "|p=" + dims_string(p.pad_l) + "," + dims_string(p.pad_r) + "|b=" +
                            (p.has_bias ? "1" : "0") + "|post=" + p.post_name;
    double ms = 0;
    size_t index = choose_tactic(b, signature, candidates, &ms);
    layer.tactic = offered[index];
    layer.tactic.name += p.post_name + " [" + pds[index].impl_info_str() + "]";
    layer.tactic.time_ms = ms;
    pd = pds[index];
  } else {
    pd = make_pd(b, p, layer.tactic);
    if (!pd) {
      throw Error(ErrorCode::invalid_model, "the plan's tactic " + layer.tactic.name +
                                                " is not available for this convolution");
    }
  }

  std::vector<std::pair<int, int>> args;
  args.emplace_back(DNNL_ARG_SRC, b.use(x, pd->src_desc()));
  args.emplace_back(DNNL_ARG_WEIGHTS, b.weight_slot(w, plain_md(p.weights, Dt::f32), pd->weights_desc()));
  if (p.has_bias) {
    args.emplace_back(DNNL_ARG_BIAS, b.weight_slot(bias, plain_md(Dims{p.dst[1]}, Dt::f32), pd->bias_desc()));
  }
  int dst = -1;
  if (layer.residual_add != k_no_node) {
    const ValueId residual = b.node(layer.residual_add).inputs[static_cast<size_t>(layer.residual_input)];
    if (residual != x) dst = b.try_inplace(residual, layer.output, pd->dst_desc());
    if (dst < 0) {
      const int from = b.use_current(residual);
      dst = b.define(layer.output, pd->dst_desc());
      b.add_reorder(from, dst);  // the sum post-op adds to what dst holds
    }
  } else {
    dst = b.define(layer.output, pd->dst_desc());
  }
  args.emplace_back(DNNL_ARG_DST, dst);
  b.add_primitive(*pd, std::move(args));
}

}  // namespace kiln::cpu
