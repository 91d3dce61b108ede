// Conv layers: one oneDNN convolution with the fused bias, residual sum and
// activation. Tactics: oneDNN's own choice (convolution_auto, layout any:
// brgconv/nhwc on avx512_core), direct on nChw16c blocks, direct on nhwc,
// winograd (F(2x2,3x3) or F(4x4,3x3), whose weights kiln transforms itself
// at build and refit, winograd_weights.hpp), and for a 1x1 conv a GEMM (one
// oneDNN matmul over the nhwc activations); each in f32, and in bf16 (f32
// accumulation) when enabled. Candidates that resolve to the same kernel
// and layouts are timed once; reference kernels are never candidates while
// an optimized one exists.
//
// A layer may also carry a depthwise 3x3 conv that reads only its 1x1 conv's
// result (layer_partition.cpp attaches it). The build times that pair both
// ways: as one primitive, the depthwise conv a post-op of the 1x1 one, so the
// wide intermediate (MobileNet's 6x expansion) is consumed tile by tile while
// still in cache; and as two primitives, each with its own best tactic. The
// faster wins and the plan records which.
#include <optional>
#include <string>

#include "backends/cpu/instance_builder.hpp"
#include "backends/cpu/layer_partition.hpp"
#include "backends/cpu/spatial_pads.hpp"
#include "backends/cpu/swish.hpp"
#include "backends/cpu/tactics.hpp"
#include "backends/cpu/winograd_weights.hpp"

namespace kiln::cpu {

using ir::k_no_node;
using ir::k_no_value;
using ir::NodeId;
using ir::ValueId;

namespace {

void append_activation(dnnl::post_ops& po, const InstanceBuilder& b, NodeId activation, std::string* name,
                       bool swish = false, bool with_swish = true) {
  if (activation == k_no_node) return;
  if (swish) {
    if (!with_swish) return;                                              // kiln's pass after the primitive
    po.append_eltwise(1.0f, dnnl::algorithm::eltwise_swish, 1.0f, 0.0f);  // x * sigmoid(1 * x)
    if (name) *name += "+swish";
    return;
  }
  std::optional<Eltwise> e = eltwise_for(b.graph(), b.node(activation));
  if (!e) throw Error(ErrorCode::internal, "fused activation has no oneDNN equivalent");
  if (e->input_scale != 1) throw Error(ErrorCode::internal, "a fused activation that scales its input");
  po.append_eltwise(e->scale, e->alg, e->alpha, e->beta);
  if (e->clip_unit) po.append_eltwise(1.0f, dnnl::algorithm::eltwise_clip, 0.0f, 1.0f);
  if (name) *name += "+" + eltwise_name(*e);
}

}  // namespace

dnnl::post_ops fused_post_ops(const InstanceBuilder& b, const LayerDesc& layer, std::string* name,
                              bool with_swish) {
  dnnl::post_ops po;
  if (layer.residual_add != k_no_node) {
    po.append_sum(1.0f);
    if (name) *name += "+sum";
  }
  append_activation(po, b, layer.activation, name, has_swish(b.graph(), layer), with_swish);
  return po;
}

namespace {

// A candidate's primitive: a convolution, or for a 1x1 conv a matmul.
using Pd = dnnl::primitive_desc_base;

constexpr int k_dw_weights_arg = DNNL_ARG_ATTR_POST_OP_DW | DNNL_ARG_WEIGHTS;
constexpr int k_dw_bias_arg = DNNL_ARG_ATTR_POST_OP_DW | DNNL_ARG_BIAS;

const char* algo_name(ConvAlgo a) {
  switch (a) {
    case ConvAlgo::automatic:
      return "auto";
    case ConvAlgo::direct:
      return "direct";
    case ConvAlgo::winograd:
      return "winograd";
    case ConvAlgo::gemm:
      return "gemm";
  }
  return "?";
}

std::string tactic_name(const Tactic& t) {
  const char* layout = t.layout == Layout::any        ? "any"
                       : t.layout == Layout::nhwc     ? "nhwc"
                       : t.layout == Layout::plain_in ? "nchw>nChw16c"
                                                      : "nChw16c";
  return std::string("conv:") + algo_name(t.algo) + "/" + layout + "/" +
         (t.precision == Prec::bf16 ? "bf16" : "f32");
}

constexpr const char* k_native_swish = "+native_swish";

// One convolution primitive's problem: the node's geometry and values, and
// the post-ops fused into it (possibly a whole depthwise conv).
struct ConvProblem {
  ValueId x = k_no_value, w = k_no_value, bias = k_no_value;
  ValueId out = k_no_value;       // the value the primitive writes
  ValueId residual = k_no_value;  // the tensor a sum post-op adds, if any
  Dims src, weights, dst, strides, dilates, pad_l, pad_r;
  int64_t groups = 1;
  dnnl::post_ops post_ops;
  std::string post_name;
  // A depthwise conv fused as a post-op: its weights ({C, 1, 1, 3, 3}) and bias.
  ValueId dw_w = k_no_value, dw_bias = k_no_value;
  Dims dw_weights;
  // Set when the post-ops only fit one precision (the depthwise post-op's).
  std::optional<Prec> precision;

  bool has_bias() const { return bias != k_no_value; }
  bool fused_dw() const { return dw_w != k_no_value; }
};

ConvProblem conv_problem(const InstanceBuilder& b, const ir::Node& n) {
  const ir::Attributes& a = n.attrs;
  ConvProblem p;
  p.x = n.inputs[0];
  p.w = n.inputs[1];
  p.bias = n.inputs.size() > 2 ? n.inputs[2] : k_no_value;
  p.src = to_dims(b.shape(p.x));
  p.dst = to_dims(b.shape(n.outputs[0]));
  const Dims wdims = to_dims(b.shape(p.w));
  const size_t nd = p.src.size() - 2;
  if (p.src.size() < 3 || p.src.size() > 5 || wdims.size() != p.src.size() || p.dst.size() != p.src.size()) {
    throw Error(ErrorCode::unsupported, "convolution over other than 1, 2 or 3 spatial dims");
  }
  p.groups = a.get_int("group", 1);
  p.weights = wdims;
  if (p.groups > 1) {
    p.weights = {p.groups, wdims[0] / p.groups};
    p.weights.insert(p.weights.end(), wdims.begin() + 1, wdims.end());
  }
  std::vector<int64_t> strides = a.get_ints("strides", std::vector<int64_t>(nd, 1));
  std::vector<int64_t> dilations = a.get_ints("dilations", std::vector<int64_t>(nd, 1));
  if (strides.size() != nd || dilations.size() != nd) {
    throw Error(ErrorCode::unsupported, "strides/dilations of the wrong length");
  }
  std::vector<int64_t> window(nd);
  for (size_t i = 0; i < nd; ++i) window[i] = (wdims[2 + i] - 1) * dilations[i] + 1;
  // auto_pad becomes explicit (possibly asymmetric) pads for these sizes.
  const SpatialPads pads = explicit_pads(a, std::span<const int64_t>(p.src.data() + 2, nd),
                                         std::span<const int64_t>(p.dst.data() + 2, nd), window, strides);
  p.strides = Dims(strides.begin(), strides.end());
  p.dilates = Dims(nd);
  for (size_t i = 0; i < nd; ++i) p.dilates[i] = dilations[i] - 1;
  p.pad_l = pads.begin;
  p.pad_r = pads.end;
  return p;
}

// A 1x1 conv with stride 1, no padding, one group: over nhwc activations it
// is one [N*H*W, I] x [I, O] product.
bool gemm_shaped(const ConvProblem& p) {
  return p.groups == 1 && !p.fused_dw() && p.weights.size() == 4 && p.weights[2] == 1 && p.weights[3] == 1 &&
         p.strides == Dims{1, 1} && p.pad_l == Dims{0, 0} && p.pad_r == Dims{0, 0} && p.dilates == Dims{0, 0};
}

// The GEMM's matrices: M = N*H*W rows of the nhwc input and output.
int64_t gemm_rows(const ConvProblem& p) { return p.dst[0] * p.dst[2] * p.dst[3]; }

Md nhwc_md(const Dims& dims, Dt dt) { return Md(dims, dt, dnnl::memory::format_tag::nhwc); }

std::optional<Pd> make_gemm_pd(InstanceBuilder& b, const ConvProblem& p, Dt dt) {
  if (!gemm_shaped(p)) return std::nullopt;
  const int64_t m = gemm_rows(p), k = p.weights[1], n = p.weights[0];
  Md src = plain_md(Dims{m, k}, dt);
  Md w({k, n}, dt, dnnl::memory::format_tag::any);
  Md dst = plain_md(Dims{m, n}, dt);
  dnnl::primitive_attr attr = b.attr();
  attr.set_post_ops(p.post_ops);
  try {
    auto desc = p.has_bias() ? dnnl::matmul::desc(src, w, plain_md(Dims{1, n}, Dt::f32), dst)
                             : dnnl::matmul::desc(src, w, dst);
    return dnnl::matmul::primitive_desc(desc, attr, b.engine());
  } catch (const dnnl::error&) {
    return std::nullopt;
  }
}

std::optional<Pd> make_pd(InstanceBuilder& b, const ConvProblem& p, const Tactic& t) {
  using Tag = dnnl::memory::format_tag;
  if (t.algo == ConvAlgo::gemm) return make_gemm_pd(b, p, t.precision == Prec::bf16 ? Dt::bf16 : Dt::f32);
  const Dt dt = t.precision == Prec::bf16 ? Dt::bf16 : Dt::f32;
  // The tactic's layout for 1, 2 or 3 spatial dims: channels last, or
  // channel blocks of 16.
  const size_t nd = p.src.size() - 2;
  const Tag last = nd == 1 ? Tag::nwc : nd == 3 ? Tag::ndhwc : Tag::nhwc;
  const Tag blocked = nd == 1 ? Tag::nCw16c : nd == 3 ? Tag::nCdhw16c : Tag::nChw16c;
  const Tag plain = nd == 1 ? Tag::ncw : nd == 3 ? Tag::ncdhw : Tag::nchw;
  const Tag act = t.layout == Layout::any ? Tag::any : t.layout == Layout::nhwc ? last : blocked;
  Md src(p.src, dt, t.layout == Layout::plain_in ? plain : act);
  Md dst(p.dst, dt, act);
  Md w(p.weights, dt, Tag::any);
  Md bias(Dims{p.dst[1]}, Dt::f32, Tag::x);
  dnnl::algorithm alg = t.algo == ConvAlgo::direct     ? dnnl::algorithm::convolution_direct
                        : t.algo == ConvAlgo::winograd ? dnnl::algorithm::convolution_winograd
                                                       : dnnl::algorithm::convolution_auto;
  dnnl::primitive_attr attr = b.attr();
  attr.set_post_ops(p.post_ops);
  try {
    auto desc = p.has_bias()
                    ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, alg, src, w, bias,
                                                      dst, p.strides, p.dilates, p.pad_l, p.pad_r)
                    : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, alg, src, w, dst,
                                                      p.strides, p.dilates, p.pad_l, p.pad_r);
    return dnnl::convolution_forward::primitive_desc(desc, attr, b.engine());
  } catch (const dnnl::error&) {
    return std::nullopt;  // this algorithm, layout or post-op chain is not implemented for the problem
  }
}

Md dw_md(const Pd& pd, int arg) { return pd.query_md(dnnl::query::exec_arg_md, arg); }

std::vector<TimedArg> timed_args(const ConvProblem& p, const Tactic& t, const Pd& pd) {
  std::vector<TimedArg> args = {
      {DNNL_ARG_SRC, pd.src_desc()}, {DNNL_ARG_WEIGHTS, pd.weights_desc()}, {DNNL_ARG_DST, pd.dst_desc()}};
  if (t.algo == ConvAlgo::gemm) {
    const Dt dt = pd.src_desc().data_type();
    args[0].seen_as = nhwc_md(p.src, dt);
    args[2].seen_as = nhwc_md(p.dst, dt);
  }
  if (p.has_bias()) args.push_back({DNNL_ARG_BIAS, pd.weights_desc(1)});
  if (p.fused_dw()) {
    args.push_back({k_dw_weights_arg, dw_md(pd, k_dw_weights_arg)});
    args.push_back({k_dw_bias_arg, dw_md(pd, k_dw_bias_arg)});
  }
  return args;
}

struct ConvChoice {
  Tactic tactic;
  Pd pd;

  // The output's layout as the next layer sees it (a GEMM writes nhwc).
  Md dst_layout(const ConvProblem& p) const {
    return tactic.algo == ConvAlgo::gemm ? nhwc_md(p.dst, pd.dst_desc().data_type()) : pd.dst_desc();
  }
};

// Kiln's swish pass over a timed primitive's output. Padding included: a
// blocked layout's padded channels hold zeros, and swish(0) is 0.
void swish_after(dnnl::memory& dst) { swish_in_place(memory_floats(dst)); }

// The chosen conv's swish as oneDNN's post-op or as kiln's pass after the
// primitive without it: the two timed together, the same algorithm and
// layouts either way. Only the activation changes, never the layouts the
// rest of the model sees: offered as candidates of their own, the pass won
// EfficientNet-B0's depthwise convs at batch 1 in nhwc where the post-op's
// best was 16-channel blocks, and the per-channel scale and pooling after
// them then ran slower in nhwc than the pass saved.
void choose_swish_pass(InstanceBuilder& b, const ConvProblem& swish_pass, const LayoutMoves& moves,
                       const std::string& signature, ConvChoice& choice) {
  std::optional<Pd> pass_pd = make_pd(b, swish_pass, choice.tactic);
  if (!pass_pd) return;
  const std::string name = tactic_name(choice.tactic);
  std::vector<builder::TacticCandidate> candidates = {
      {name, primitive_timer(b, choice.pd, timed_args(swish_pass, choice.tactic, choice.pd), moves)},
      {name + k_native_swish,
       primitive_timer(b, *pass_pd, timed_args(swish_pass, choice.tactic, *pass_pd), moves, swish_after)}};
  double ms = 0;
  if (choose_tactic(b, signature + "|swish_pass", candidates, &ms, true) != 1) return;
  choice.tactic.native_swish = true;
  choice.tactic.time_ms = ms;
  choice.pd = *pass_pd;
}

// With tuning, times the candidates for `p` with its input now laid out as
// `from` and returns the fastest (`compared`: its time will be weighed
// against another choice's, so even a lone candidate is timed); without,
// recreates `stored`. `swish_pass`, where given, is `p` without its swish
// post-op: an f32 winner is then also timed as that primitive followed by
// kiln's swish pass (choose_swish_pass, Tactic::native_swish). Throws
// kiln::Error(unsupported) when oneDNN has no convolution for the problem.
ConvChoice choose_conv(InstanceBuilder& b, const ConvProblem& p, const Md& from, const Tactic& stored,
                       bool compared = false, const ConvProblem* swish_pass = nullptr) {
  if (!b.tuning()) {
    if (stored.native_swish && !swish_pass) {
      throw Error(ErrorCode::invalid_model,
                  "the plan's tactic " + stored.name + " runs a swish this conv lacks");
    }
    std::optional<Pd> pd = make_pd(b, stored.native_swish ? *swish_pass : p, stored);
    if (!pd) {
      throw Error(ErrorCode::invalid_model,
                  "the plan's tactic " + stored.name + " is not available for this convolution");
    }
    return {stored, *pd};
  }
  std::vector<Tactic> tactics;
  std::vector<Prec> precisions = {Prec::f32};
  if (bf16_enabled(b)) precisions.insert(precisions.begin(), Prec::bf16);  // the heuristic favourite
  if (p.precision) precisions = {*p.precision};
  for (Prec prec : precisions) {
    // A fused depthwise conv only on nChw16c blocks: oneDNN 2.6.3's jit_1x1
    // kernel with the depthwise post-op on nhwc activations computes wrong
    // results (off by up to the activation's clip bound; kiln's tests caught
    // it), and with layout any oneDNN picks nhwc.
    if (p.fused_dw()) {
      tactics.emplace_back(ConvAlgo::direct, Layout::blocked, prec);
      continue;
    }
    tactics.emplace_back(ConvAlgo::automatic, Layout::any, prec);
    tactics.emplace_back(ConvAlgo::direct, Layout::blocked, prec);
    tactics.emplace_back(ConvAlgo::direct, Layout::nhwc, prec);
    tactics.emplace_back(ConvAlgo::winograd, Layout::any, prec);
    tactics.emplace_back(ConvAlgo::gemm, Layout::nhwc, prec);
    // A stem (RGB in): oneDNN's direct kernels read a few plain channels as
    // they are, where the other layouts need the whole input reordered first
    // (0.3 ms of MobileNetV3-Small's 6 at batch 8).
    if (p.src[1] <= 4 && p.weights.size() == p.src.size())
      tactics.emplace_back(ConvAlgo::direct, Layout::plain_in, prec);
  }
  // Each candidate pays for the reorders its layouts imply: its input from
  // the producer's layout, the residual into its output layout, and (from a
  // second tuning pass on) its output into what the consumer read last pass.
  LayoutMoves moves{from, std::nullopt, b.previous_consumer_layout(p.out)};
  if (p.residual != k_no_value) moves.residual = b.md_of(p.residual);
  std::vector<std::string> seen;  // implementation + layouts: identical candidates are timed once
  std::vector<std::pair<Tactic, Pd>> usable;
  bool any_fast = false;
  bool any_blocked = false;
  // A kernel that cannot take the swish post-op (oneDNN's winograd takes
  // only ReLU and sums) still competes, as the primitive without it followed
  // by kiln's swish pass: EfficientNetV2's stride-1 3x3 convs otherwise
  // never met the winograd kernels that serve ResNet's.
  const bool pass_candidates = swish_pass && native_swish_available();
  for (Tactic t : tactics) {
    auto cand = make_pd(b, p, t);
    if (!cand && pass_candidates && t.precision == Prec::f32) {
      cand = make_pd(b, *swish_pass, t);
      t.native_swish = cand.has_value();
    }
    if (!cand) continue;
    std::string identity = cand->impl_info_str() + md_string(cand->src_desc()) +
                           md_string(cand->weights_desc()) + md_string(cand->dst_desc());
    if (std::find(seen.begin(), seen.end(), identity) != seen.end()) continue;
    seen.push_back(identity);
    any_fast = any_fast || std::string(cand->impl_info_str()).rfind("ref", 0) != 0;
    any_blocked = any_blocked || cand->weights_desc().data.format_kind == dnnl_blocked;
    usable.emplace_back(t, *cand);
  }
  std::vector<builder::TacticCandidate> candidates;
  std::vector<std::pair<Tactic, Pd>> offered;
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
    const Md wd = cand.weights_desc();
    const bool fast_weights = wd.data.format_kind == dnnl_blocked || winograd_layout_supported(wd);
    if (!slow_refit_ok && any_blocked && !fast_weights) continue;
    t.name = tactic_name(t);
    if (t.native_swish) {
      candidates.push_back({t.name + k_native_swish,
                            primitive_timer(b, cand, timed_args(*swish_pass, t, cand), moves, swish_after)});
    } else {
      candidates.push_back({t.name, primitive_timer(b, cand, timed_args(p, t, cand), moves)});
    }
    offered.emplace_back(t, cand);
  }
  if (candidates.empty()) throw Error(ErrorCode::unsupported, "oneDNN has no convolution for this problem");
  std::string signature = "conv|x=" + md_string(from) + "|w=" + dims_string(p.weights) +
                          "|y=" + dims_string(p.dst) + "|s=" + dims_string(p.strides) +
                          "|d=" + dims_string(p.dilates) + "|p=" + dims_string(p.pad_l) + "," +
                          dims_string(p.pad_r) + "|b=" + (p.has_bias() ? "1" : "0") + "|post=" + p.post_name;
  if (moves.residual) signature += "|r=" + md_string(*moves.residual);
  if (moves.consumer) signature += "|to=" + md_string(*moves.consumer);
  double ms = 0;
  const size_t index = choose_tactic(b, signature, candidates, &ms, compared);
  ConvChoice choice{offered[index].first, offered[index].second};
  choice.tactic.time_ms = ms;
  if (swish_pass && !choice.tactic.native_swish && choice.tactic.precision == Prec::f32 &&
      native_swish_available()) {
    choose_swish_pass(b, *swish_pass, moves, signature, choice);
  }
  // The primitive's post-ops, then kiln's pass: "conv:direct/nChw16c/f32+sum+native_swish [...]".
  if (choice.tactic.native_swish) {
    choice.tactic.name += swish_pass->post_name + k_native_swish;
  } else {
    choice.tactic.name += p.post_name;
  }
  choice.tactic.name += std::string(" [") + choice.pd.impl_info_str() + "]";
  return choice;
}

// Adds the primitive: input, weights, bias (and a fused depthwise conv's),
// and the output. With a residual (the value the sum post-op adds), the
// output starts as a copy of it unless it can be written in place.
void emit_conv(InstanceBuilder& b, const ConvProblem& p, const ConvChoice& choice) {
  const Pd& pd = choice.pd;
  const bool gemm = choice.tactic.algo == ConvAlgo::gemm;
  const ValueId out = p.out;
  const ValueId residual = p.residual;
  const Md dst_md = choice.dst_layout(p);
  std::vector<std::pair<int, int>> args;
  if (gemm) {
    // The nhwc activations as [N*H*W, C] matrices, and the [O, I, 1, 1]
    // kernel read as its transpose [I, O]: views, no copies.
    const int64_t k = p.weights[1], n = p.weights[0];
    args.emplace_back(DNNL_ARG_SRC,
                      b.view(b.use(p.x, nhwc_md(p.src, pd.src_desc().data_type())), pd.src_desc()));
    args.emplace_back(DNNL_ARG_WEIGHTS,
                      b.weight_slot(p.w, Md({k, n}, Dt::f32, Dims{1, k}), pd.weights_desc()));
    if (p.has_bias()) {
      args.emplace_back(DNNL_ARG_BIAS,
                        b.weight_slot(p.bias, plain_md(Dims{1, n}, Dt::f32), pd.weights_desc(1)));
    }
  } else {
    args.emplace_back(DNNL_ARG_SRC, b.use(p.x, pd.src_desc()));
    args.emplace_back(DNNL_ARG_WEIGHTS, b.weight_slot(p.w, plain_md(p.weights, Dt::f32), pd.weights_desc()));
    if (p.has_bias()) {
      args.emplace_back(DNNL_ARG_BIAS,
                        b.weight_slot(p.bias, plain_md(Dims{p.dst[1]}, Dt::f32), pd.weights_desc(1)));
    }
  }
  if (p.fused_dw()) {
    args.emplace_back(k_dw_weights_arg,
                      b.weight_slot(p.dw_w, plain_md(p.dw_weights, Dt::f32), dw_md(pd, k_dw_weights_arg)));
    args.emplace_back(k_dw_bias_arg, b.weight_slot(p.dw_bias, plain_md(Dims{p.dw_weights[0]}, Dt::f32),
                                                   dw_md(pd, k_dw_bias_arg)));
  }
  int dst = -1;
  if (residual != k_no_value) {
    b.note_consumer_layout(residual, dst_md);
    if (residual != p.x) dst = b.try_inplace(residual, out, dst_md);
    if (dst < 0) {
      const int from = b.use_current(residual);
      dst = b.define(out, dst_md);
      b.add_reorder(from, dst);  // the sum post-op adds to what dst holds
    }
  } else {
    dst = b.define(out, dst_md);
  }
  args.emplace_back(DNNL_ARG_DST, gemm ? b.view(dst, pd.dst_desc()) : dst);
  b.add_primitive(pd, std::move(args));
}

// The layer's 1x1 conv and its depthwise follower, fused or as two
// primitives, whichever the timing (or the plan) says.
void build_pointwise_depthwise(InstanceBuilder& b, LayerDesc& layer) {
  const ir::Node& pw_node = b.node(layer.anchor());
  const ir::Node& dw_node = b.node(layer.dw_conv);
  const ValueId mid = dw_node.inputs[0];  // the 1x1 conv's result, read only by the depthwise conv
  ConvProblem pw = conv_problem(b, pw_node);
  pw.post_ops = fused_post_ops(b, layer, &pw.post_name);
  pw.out = mid;
  ConvProblem dw = conv_problem(b, dw_node);
  append_activation(dw.post_ops, b, layer.dw_activation, &dw.post_name);
  dw.out = layer.output;

  ConvProblem fused = pw;
  fused.out = layer.output;
  fused.dw_w = dw.w;
  fused.dw_bias = dw.bias;
  fused.dw_weights = dw.weights;
  const auto append_dw = [&](Prec prec) {
    ConvProblem f = fused;
    f.precision = prec;
    const Dt precision = prec == Prec::bf16 ? Dt::bf16 : Dt::f32;
    // dnnl::post_ops is a shared handle: a copy would grow pw's chain too.
    f.post_name.clear();
    f.post_ops = fused_post_ops(b, layer, &f.post_name);
    f.post_ops.append_dw(precision, Dt::f32, precision, 3, dw.strides[0], 1, 0, {});
    f.post_name += "+dw3s" + std::to_string(dw.strides[0]);
    append_activation(f.post_ops, b, layer.dw_activation, &f.post_name);
    return f;
  };

  const Md from = b.md_of(pw.x);
  if (b.tuning()) {
    // Precision is per tactic; the depthwise post-op takes the 1x1's, so the
    // fused problem is posed once per precision the build allows.
    std::optional<ConvChoice> best_fused;
    std::vector<Prec> precisions = {Prec::f32};
    if (bf16_enabled(b)) precisions.push_back(Prec::bf16);
    for (Prec prec : precisions) {
      try {
        ConvChoice c = choose_conv(b, append_dw(prec), from, {}, true);
        if (!best_fused || c.tactic.time_ms < best_fused->tactic.time_ms) best_fused = std::move(c);
      } catch (const Error& e) {
        if (e.code() != ErrorCode::unsupported) throw;
      }
    }
    ConvChoice first = choose_conv(b, pw, from, {}, true);
    ConvChoice second = choose_conv(b, dw, first.dst_layout(pw), {}, true);
    layer.dw_fused = best_fused && best_fused->tactic.time_ms <= first.tactic.time_ms + second.tactic.time_ms;
    if (layer.dw_fused) {
      layer.tactic = best_fused->tactic;
      layer.dw_tactic = Tactic{};
      emit_conv(b, append_dw(best_fused->tactic.precision), *best_fused);
    } else {
      layer.tactic = first.tactic;
      layer.dw_tactic = second.tactic;
      emit_conv(b, pw, first);
      emit_conv(b, dw, second);
    }
    return;
  }
  if (layer.dw_fused) {
    const ConvProblem f = append_dw(layer.tactic.precision);
    emit_conv(b, f, choose_conv(b, f, from, layer.tactic));
  } else {
    const ConvChoice first = choose_conv(b, pw, from, layer.tactic);
    emit_conv(b, pw, first);
    emit_conv(b, dw, choose_conv(b, dw, first.dst_layout(pw), layer.dw_tactic));
  }
}

// ConvTranspose as oneDNN's deconvolution (f32, layouts oneDNN's choice,
// the bias fused; fusions anchor on Conv, so no post-ops). ONNX's weights
// [C_in, C_out / group, k...] are read in place as oneDNN's
// [group, C_out / group, C_in / group, k...] through strides.
void build_conv_transpose(InstanceBuilder& b, LayerDesc& layer) {
  const ir::Node& n = b.node(layer.anchor());
  const ValueId x = n.inputs[0];
  const ValueId w = n.inputs[1];
  const ValueId bias = n.inputs.size() > 2 ? n.inputs[2] : k_no_value;
  const ValueId y = n.outputs[0];
  const Dims src = to_dims(b.shape(x));
  const Dims dst = to_dims(b.shape(y));
  const Dims wd = to_dims(b.shape(w));
  if (src.size() < 3 || src.size() > 5 || wd.size() != src.size() || dst.size() != src.size()) {
    throw Error(ErrorCode::unsupported, "ConvTranspose over other than 1, 2 or 3 spatial dims");
  }
  const size_t nd = src.size() - 2;
  const int64_t groups = n.attrs.get_int("group", 1);
  const int64_t in_per_group = wd[0] / groups, out_per_group = wd[1];
  std::vector<int64_t> kernel(wd.begin() + 2, wd.end());
  int64_t k_size = 1;
  for (int64_t k : kernel) k_size *= k;
  const std::optional<SpatialPads> pads =
      conv_transpose_pads(n.attrs, std::span<const int64_t>(src.data() + 2, nd),
                          std::span<const int64_t>(dst.data() + 2, nd), kernel);
  if (!pads) throw Error(ErrorCode::unsupported, "ConvTranspose needs a negative pad for this output size");
  const ir::nn::Window window = ir::nn::read_window(n.attrs, nd, kernel);
  Dims strides(window.strides.begin(), window.strides.end()), dilates(nd);
  for (size_t i = 0; i < nd; ++i) dilates[i] = window.dilations[i] - 1;

  Dims w_dims{out_per_group, in_per_group}, w_strides{k_size, out_per_group * k_size};
  if (groups > 1) {
    w_dims.insert(w_dims.begin(), groups);
    w_strides.insert(w_strides.begin(), in_per_group * out_per_group * k_size);
  }
  int64_t inner = k_size;
  for (int64_t k : kernel) {
    inner /= k;
    w_dims.push_back(k);
    w_strides.push_back(inner);
  }
  const Md w_view(w_dims, Dt::f32, w_strides);
  using Tag = dnnl::memory::format_tag;
  const Md src_any(src, Dt::f32, Tag::any), dst_any(dst, Dt::f32, Tag::any), w_any(w_dims, Dt::f32, Tag::any);
  const Md bias_md(Dims{dst[1]}, Dt::f32, Tag::x);
  auto desc = bias != k_no_value
                  ? dnnl::deconvolution_forward::desc(
                        dnnl::prop_kind::forward_inference, dnnl::algorithm::deconvolution_direct, src_any,
                        w_any, bias_md, dst_any, strides, dilates, pads->begin, pads->end)
                  : dnnl::deconvolution_forward::desc(dnnl::prop_kind::forward_inference,
                                                      dnnl::algorithm::deconvolution_direct, src_any, w_any,
                                                      dst_any, strides, dilates, pads->begin, pads->end);
  dnnl::deconvolution_forward::primitive_desc pd(desc, b.attr(), b.engine());
  layer.tactic.name = std::string("deconv [") + pd.impl_info_str() + "]";
  std::vector<std::pair<int, int>> args = {{DNNL_ARG_SRC, b.use(x, pd.src_desc())},
                                           {DNNL_ARG_WEIGHTS, b.weight_slot(w, w_view, pd.weights_desc())}};
  if (bias != k_no_value) {
    args.emplace_back(DNNL_ARG_BIAS, b.weight_slot(bias, plain_md(Dims{dst[1]}, Dt::f32), pd.bias_desc()));
  }
  args.emplace_back(DNNL_ARG_DST, b.define(y, pd.dst_desc()));
  b.add_primitive(pd, std::move(args));
}

}  // namespace

void build_conv_layer(InstanceBuilder& b, LayerDesc& layer) {
  if (b.node(layer.anchor()).op_type == "ConvTranspose") {
    build_conv_transpose(b, layer);
    return;
  }
  if (layer.dw_conv != k_no_node) {
    build_pointwise_depthwise(b, layer);
    return;
  }
  ConvProblem p = conv_problem(b, b.node(layer.anchor()));
  p.post_ops = fused_post_ops(b, layer, &p.post_name);
  p.out = layer.output;
  if (layer.residual_add != k_no_node) {
    p.residual = b.node(layer.residual_add).inputs[static_cast<size_t>(layer.residual_input)];
  }
  // The same conv with its swish left to kiln's pass (swish.hpp).
  std::optional<ConvProblem> swish_pass;
  if (has_swish(b.graph(), layer)) {
    swish_pass = p;
    swish_pass->post_name.clear();
    swish_pass->post_ops = fused_post_ops(b, layer, &swish_pass->post_name, false);  // a new handle
  }
  ConvChoice choice =
      choose_conv(b, p, b.md_of(p.x), layer.tactic, false, swish_pass ? &*swish_pass : nullptr);
  if (b.tuning()) layer.tactic = choice.tactic;
  if (!choice.tactic.native_swish) {
    emit_conv(b, p, choice);
    return;
  }
  emit_conv(b, *swish_pass, choice);
  Instance* inst = &b.instance();
  const auto out = static_cast<size_t>(b.state(p.out).slot);
  b.add_function([inst, out](RunContext&) { swish_in_place(memory_floats(inst->slots[out].mem)); },
                 "Sigmoid+Mul", "native:swish");
}

}  // namespace kiln::cpu
