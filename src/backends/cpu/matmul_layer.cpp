// MatMul and Gemm layers as one oneDNN matmul with the fused bias, residual
// sum and activation. With constant 2-d weights, activations of any rank are
// flattened to [M, K] (no copy) and the weights are reordered at refit into
// the tactic's layout. Tactics: precision (f32, bf16) x weight layout
// (oneDNN's choice, plain ab, transposed ba) x every implementation oneDNN
// offers for it, deduplicated by implementation and layouts; reference
// kernels are never candidates while an optimized one exists. The plan
// records layout and implementation, and loading recreates exactly that
// primitive or fails. Gemm's alpha, beta and a C that is no row bias are
// post-ops on the product (GemmTerms).
// Activation x activation products (attention) run batched, reading
// transposed operands through strides instead of copying them.
#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "backends/cpu/instance_builder.hpp"
#include "backends/cpu/tactics.hpp"

namespace kiln::cpu {

using ir::k_no_node;
using ir::k_no_value;
using ir::ValueId;

namespace {

// Where the layer's residual goes: in place over the residual when it dies
// here, else a copy of it into a fresh slot (the sum post-op adds to dst).
int define_output(InstanceBuilder& b, const LayerDesc& layer, const Md& full,
                  std::initializer_list<ValueId> reads) {
  if (layer.residual_add == k_no_node) return b.define(layer.output, full);
  const ValueId residual = b.node(layer.residual_add).inputs[static_cast<size_t>(layer.residual_input)];
  bool read_here = false;
  for (ValueId r : reads) read_here = read_here || r == residual;
  int dst = read_here ? -1 : b.try_inplace(residual, layer.output, full);
  if (dst < 0) {
    const int from = b.use_current(residual);
    dst = b.define(layer.output, full);
    b.add_reorder(from, dst);
  }
  return dst;
}

// Gemm's alpha * A'B' + beta * C where that is more than a product plus a
// row bias (alpha or beta not 1, or a C that broadcasts along N or holds a
// value per row): the product scaled by an output scale (alpha / beta, or
// alpha without C), then post-ops adding C broadcast over [M, N] (binary)
// and multiplying by beta (linear). Only one linear post-op: oneDNN 2.6's
// matmul computed linear(2) -> add -> linear(0.5) as if both were
// linear(2) (the conformance Gemm beta case gave 4x its expected output),
// so an activation that is a linear (HardSigmoid) is not fused after a
// beta (layer_partition.cpp).
struct GemmTerms {
  float alpha = 1, beta = 1;
  ValueId c = k_no_value;
  Dims c_dims;  // C as a [M or 1, N or 1] matrix

  bool plain_bias(int64_t n) const {
    return alpha == 1 && (c == k_no_value || (beta == 1 && c_dims[0] == 1 && c_dims[1] == n));
  }
};

std::optional<GemmTerms> gemm_terms(const InstanceBuilder& b, const ir::Node& n, int64_t M, int64_t N) {
  if (n.op_type != "Gemm") return std::nullopt;
  GemmTerms t;
  t.alpha = n.attrs.get_float("alpha", 1.0f);
  t.beta = n.attrs.get_float("beta", 1.0f);
  if (n.inputs.size() < 3 || n.inputs[2] == k_no_value || t.beta == 0) return t;
  t.c = n.inputs[2];
  const auto& cs = b.shape(t.c);
  if (cs.size() > 2) throw Error(ErrorCode::invalid_model, "node '" + n.name + "' (Gemm): C of rank > 2");
  t.c_dims = Dims(2 - cs.size(), 1);
  t.c_dims.insert(t.c_dims.end(), cs.begin(), cs.end());
  if ((t.c_dims[0] != 1 && t.c_dims[0] != M) || (t.c_dims[1] != 1 && t.c_dims[1] != N)) {
    throw Error(ErrorCode::invalid_model, "node '" + n.name + "' (Gemm): C does not broadcast to [M, N]");
  }
  return t;
}

// Appends the Gemm terms after the output scale to `po`; returns the execution argument of C's
// binary post-op, or 0 when there is none.
int append_gemm_terms(dnnl::post_ops& po, const GemmTerms& t, std::string* name) {
  using A = dnnl::algorithm;
  if (t.c == k_no_value) {
    *name += "+scale(" + std::to_string(t.alpha) + ")";
    return 0;
  }
  const int arg = DNNL_ARG_ATTR_MULTIPLE_POST_OP(po.len()) | DNNL_ARG_SRC_1;
  po.append_binary(A::binary_add, plain_md(t.c_dims, Dt::f32));
  if (t.beta != 1) po.append_eltwise(1.0f, A::eltwise_linear, t.beta, 0.0f);
  *name += "+gemm(alpha=" + std::to_string(t.alpha) + ",beta=" + std::to_string(t.beta) +
           ",c=" + dims_string(t.c_dims) + ")";
  return arg;
}

// `from`'s sum and eltwise post-ops (what fused_post_ops makes) after `to`'s.
void append_post_ops(dnnl::post_ops& to, const dnnl::post_ops& from) {
  for (int i = 0; i < from.len(); ++i) {
    if (from.kind(i) == dnnl::primitive::kind::sum) {
      float scale = 1;
      from.get_params_sum(i, scale);
      to.append_sum(scale);
    } else if (from.kind(i) == dnnl::primitive::kind::eltwise) {
      float scale = 1, alpha = 0, beta = 0;
      dnnl::algorithm alg{};
      from.get_params_eltwise(i, scale, alg, alpha, beta);
      to.append_eltwise(scale, alg, alpha, beta);
    } else {
      throw Error(ErrorCode::internal, "a fused post-op other than sum or eltwise after Gemm terms");
    }
  }
}

ValueId bias_of(const InstanceBuilder& b, const LayerDesc& layer) {
  const ir::Node& n = b.node(layer.anchor());
  if (n.op_type == "Gemm") return n.inputs.size() > 2 ? n.inputs[2] : k_no_value;
  if (layer.bias_add == k_no_node) return k_no_value;
  const ir::Node& add = b.node(layer.bias_add);
  const ValueId y = n.outputs[0];
  return add.inputs[0] == y ? add.inputs[1] : add.inputs[0];
}

// oneDNN's name for a blocked layout ("ab", "ba", "BA16a64b"): dims from
// outermost to innermost stride, upper case when blocked, then the blocks.
std::string layout_tag(const Md& md) {
  if (md.data.format_kind != dnnl_blocked) return "opaque";
  const auto& blocking = md.data.format_desc.blocking;
  std::vector<int> order(static_cast<size_t>(md.data.ndims));
  for (size_t d = 0; d < order.size(); ++d) order[d] = static_cast<int>(d);
  std::stable_sort(order.begin(), order.end(),
                   [&](int x, int y) { return blocking.strides[x] > blocking.strides[y]; });
  std::string tag;
  for (int d : order) {
    bool blocked = false;
    for (int k = 0; k < blocking.inner_nblks; ++k) blocked = blocked || blocking.inner_idxs[k] == d;
    tag += static_cast<char>((blocked ? 'A' : 'a') + d);
  }
  for (int k = 0; k < blocking.inner_nblks; ++k) {
    tag += std::to_string(blocking.inner_blks[k]) + static_cast<char>('a' + blocking.inner_idxs[k]);
  }
  return tag;
}

const char* prec_name(Prec p) { return p == Prec::bf16 ? "bf16" : "f32"; }

// Weights kiln's own reorder can write at refit (weight_reorder.hpp); other
// layouts would need dnnl::reorder, JIT-compiled on every cache hit.
bool refit_friendly(const Md& weights) {
  return weights.data.format_kind == dnnl_blocked && weights.data.extra.flags == dnnl_memory_extra_flag_none;
}

bool is_ref(const std::string& impl) { return impl.rfind("ref", 0) == 0; }

// Every implementation oneDNN offers for `desc`, in its order of preference;
// empty when there is none. The iterator behind next_impl() reads the
// operation descriptor through a pointer, so it is iterated here, while
// `desc` is alive (iterating a primitive_desc whose desc was a temporary
// reads freed memory and stops after the first implementation).
std::vector<dnnl::matmul::primitive_desc> implementations(const dnnl::matmul::desc& desc,
                                                          const dnnl::primitive_attr& attr,
                                                          const dnnl::engine& engine) {
  std::vector<dnnl::matmul::primitive_desc> out;
  dnnl::matmul::primitive_desc pd;
  try {
    pd = dnnl::matmul::primitive_desc(desc, attr, engine);
  } catch (const dnnl::error&) {
    return out;  // nothing for this precision and layout
  }
  do {
    out.push_back(pd);  // a copy keeps this implementation; next_impl() replaces only `pd`'s
  } while (pd.next_impl());
  return out;
}

struct MatmulCandidate {
  Prec prec = Prec::f32;
  WeightLayout layout = WeightLayout::any;
  dnnl::matmul::primitive_desc pd;
  std::string impl;
  std::string name;  // "matmul:f32/brg:avx512_core/BA16a64b" + post-ops
};

void build_weight_matmul(InstanceBuilder& b, LayerDesc& layer) {
  const ir::Node& n = b.node(layer.anchor());
  const bool gemm = n.op_type == "Gemm";
  const bool trans_a = gemm && n.attrs.get_int("transA", 0) != 0;
  const bool trans_b = gemm && n.attrs.get_int("transB", 0) != 0;
  const ValueId A = n.inputs[0];
  const ValueId B = n.inputs[1];
  const auto& as = b.shape(A);
  const auto& bs = b.shape(B);
  if (bs.size() != 2) throw Error(ErrorCode::unsupported, "constant MatMul weights must be 2-d");
  const int64_t K = trans_b ? bs[1] : bs[0];
  const int64_t N = trans_b ? bs[0] : bs[1];
  int64_t M = 1;
  if (trans_a) {
    M = as[1];
  } else {
    for (size_t i = 0; i + 1 < as.size(); ++i) M *= as[i];
  }
  const Md w_view = trans_b ? Md({K, N}, Dt::f32, Dims{1, K}) : plain_md(Dims{K, N}, Dt::f32);
  const std::optional<GemmTerms> terms = gemm_terms(b, n, M, N);
  const bool gemm_post = terms && !terms->plain_bias(N);
  const ValueId bias = gemm_post ? k_no_value : terms ? terms->c : bias_of(b, layer);
  std::string post_name;
  dnnl::post_ops chain;
  const int c_arg = gemm_post ? append_gemm_terms(chain, *terms, &post_name) : 0;
  append_post_ops(chain, fused_post_ops(b, layer, &post_name));
  dnnl::primitive_attr attr = b.attr();
  attr.set_post_ops(chain);
  if (gemm_post) {
    const float scale = terms->c != k_no_value ? terms->alpha / terms->beta : terms->alpha;
    if (scale != 1) attr.set_output_scales(0, {scale});
  }
  const Md c_md = c_arg ? plain_md(terms->c_dims, Dt::f32) : Md();

  auto make_desc = [&](Prec prec, WeightLayout layout) {
    using Tag = dnnl::memory::format_tag;
    const Dt dt = prec == Prec::bf16 ? Dt::bf16 : Dt::f32;
    Md src = trans_a ? Md({M, K}, dt, Dims{1, M}) : plain_md(Dims{M, K}, dt);
    const Tag tag = layout == WeightLayout::plain        ? Tag::ab
                    : layout == WeightLayout::transposed ? Tag::ba
                                                         : Tag::any;
    Md w({K, N}, dt, tag);
    Md dst = plain_md(Dims{M, N}, dt);
    return bias != k_no_value ? dnnl::matmul::desc(src, w, plain_md(Dims{1, N}, Dt::f32), dst)
                              : dnnl::matmul::desc(src, w, dst);
  };
  auto candidate = [&](Prec prec, WeightLayout layout, const dnnl::matmul::primitive_desc& pd) {
    MatmulCandidate c{prec, layout, pd, pd.impl_info_str(), {}};
    c.name = std::string("matmul:") + prec_name(prec) + "/" + c.impl + "/" + layout_tag(pd.weights_desc()) +
             post_name;
    return c;
  };

  std::optional<MatmulCandidate> chosen;
  if (b.tuning()) {
    // Candidates: per precision (bf16 first when enabled, the heuristic
    // favourite), oneDNN's preferred weight layout and the two plain ones,
    // each with every implementation oneDNN offers for it. oneDNN's first
    // choice stays first, so level 0 keeps it.
    std::vector<Prec> precs = {Prec::f32};
    if (bf16_enabled(b)) precs.insert(precs.begin(), Prec::bf16);
    std::vector<MatmulCandidate> all;
    std::vector<std::string> seen;  // implementation + layouts: identical candidates are timed once
    for (Prec p : precs) {
      for (WeightLayout layout : {WeightLayout::any, WeightLayout::plain, WeightLayout::transposed}) {
        const dnnl::matmul::desc desc = make_desc(p, layout);
        for (const dnnl::matmul::primitive_desc& pd : implementations(desc, attr, b.engine())) {
          std::string identity = std::string(pd.impl_info_str()) + md_string(pd.src_desc()) +
                                 md_string(pd.weights_desc()) + md_string(pd.dst_desc());
          if (std::find(seen.begin(), seen.end(), identity) != seen.end()) continue;
          seen.push_back(std::move(identity));
          all.push_back(candidate(p, layout, pd));
        }
      }
    }
    bool any_fast = false;
    bool any_friendly = false;
    for (const MatmulCandidate& c : all) {
      any_fast = any_fast || !is_ref(c.impl);
      any_friendly = any_friendly || refit_friendly(c.pd.weights_desc());
    }
    std::vector<MatmulCandidate> offered;
    for (MatmulCandidate& c : all) {
      // Reference kernels are orders of magnitude slower: not worth timing
      // while an optimized one exists.
      if (any_fast && is_ref(c.impl)) continue;
      if (any_friendly && !refit_friendly(c.pd.weights_desc())) continue;
      offered.push_back(std::move(c));
    }
    if (offered.empty()) throw Error(ErrorCode::unsupported, "oneDNN has no matmul for this problem");

    const Md current = b.md_of(A);
    const Md from =
        plain_md(trans_a ? Dims{K, M} : Dims{M, K}, is_plain(current) ? current.data_type() : Dt::f32);
    std::vector<builder::TacticCandidate> candidates;
    for (const MatmulCandidate& c : offered) {
      std::vector<TimedArg> args = {{DNNL_ARG_SRC, c.pd.src_desc()},
                                    {DNNL_ARG_WEIGHTS, c.pd.weights_desc()},
                                    {DNNL_ARG_DST, c.pd.dst_desc()}};
      if (bias != k_no_value) args.push_back({DNNL_ARG_BIAS, c.pd.bias_desc()});
      if (c_arg) args.push_back({c_arg, c_md});
      candidates.push_back(
          {c.name, primitive_timer(b, c.pd, args,
                                   LayoutMoves{trans_a ? std::nullopt : std::optional<Md>(from), {}, {}})});
    }
    // The candidate names (implementation and layouts) join this in the
    // timing-cache key, so a machine or kiln offering other candidates
    // never reads these timings as its own.
    std::string signature = "matmul|a=" + md_string(current) + "|m=" + std::to_string(M) +
                            "|k=" + std::to_string(K) + "|n=" + std::to_string(N) +
                            "|ta=" + (trans_a ? "1" : "0") + "|tb=" + (trans_b ? "1" : "0") +
                            "|b=" + (bias != k_no_value ? "1" : "0") + "|post=" + post_name;
    double ms = 0;
    const size_t index = choose_tactic(b, signature, candidates, &ms);
    chosen = offered[index];
    layer.tactic = Tactic(ConvAlgo::automatic, Layout::any, chosen->prec, chosen->name, ms);
    layer.tactic.weights = chosen->layout;
    layer.tactic.impl = chosen->impl;
  } else {
    // The plan's choice, exactly: the same precision, requested weight
    // layout and oneDNN implementation.
    const Tactic& t = layer.tactic;
    const dnnl::matmul::desc desc = make_desc(t.precision, t.weights);
    std::string available;
    for (const dnnl::matmul::primitive_desc& pd : implementations(desc, attr, b.engine())) {
      const std::string impl = pd.impl_info_str();
      if (t.impl.empty() || impl == t.impl) {
        chosen = candidate(t.precision, t.weights, pd);
        break;
      }
      available += (available.empty() ? "" : ", ") + impl;
    }
    if (!chosen) {
      throw Error(
          ErrorCode::invalid_model,
          "node '" + n.name + "' (" + n.op_type + "): the plan's tactic " + t.name +
              " needs oneDNN implementation '" + t.impl + "', which is not available on this machine (" +
              (available.empty() ? std::string("oneDNN offers none") : "oneDNN offers " + available) + ")");
    }
  }
  const dnnl::matmul::primitive_desc& pd = chosen->pd;
  const Dt dt = chosen->prec == Prec::bf16 ? Dt::bf16 : Dt::f32;

  std::vector<std::pair<int, int>> args;
  const int a_full = b.use_plain(A, dt);
  args.emplace_back(DNNL_ARG_SRC, b.view(a_full, pd.src_desc()));
  args.emplace_back(DNNL_ARG_WEIGHTS, b.weight_slot(B, w_view, pd.weights_desc()));
  if (bias != k_no_value) {
    args.emplace_back(DNNL_ARG_BIAS, b.weight_slot(bias, plain_md(Dims{1, N}, Dt::f32), pd.bias_desc()));
  }
  if (c_arg) args.emplace_back(c_arg, b.weight_slot(terms->c, c_md, c_md));
  const Md full = plain_md(b.shape(n.outputs[0]), dt);
  const int dst = define_output(b, layer, full, {A});
  args.emplace_back(DNNL_ARG_DST, b.view(dst, pd.dst_desc()));
  b.add_primitive(pd, std::move(args));
}

// `md` with leading size-1 dims up to `rank`.
Md pad_rank(const Md& md, size_t rank) {
  Dims dims = md.dims();
  if (dims.size() >= rank) return md;
  Dims padded(rank - dims.size(), 1);
  padded.insert(padded.end(), dims.begin(), dims.end());
  return md.reshape(padded);
}

void build_activation_matmul(InstanceBuilder& b, LayerDesc& layer) {
  const ir::Node& n = b.node(layer.anchor());
  const ValueId A = n.inputs[0];
  const ValueId B = n.inputs[1];
  const ValueId bias = bias_of(b, layer);
  const auto& out = b.shape(n.outputs[0]);
  const size_t rank = out.size();
  std::string post_name;
  const dnnl::post_ops post_ops = fused_post_ops(b, layer, &post_name);

  const int a_slot = b.use_strided(A, Dt::f32);
  const int b_slot = b.use_strided(B, Dt::f32);
  const Md a_md = pad_rank(b.slot(a_slot).md, rank);
  const Md b_md = pad_rank(b.slot(b_slot).md, rank);
  const Md dst_md = plain_md(out, Dt::f32);
  Dims bias_dims(rank, 1);
  bias_dims.back() = out.back();
  dnnl::primitive_attr attr = b.attr();
  attr.set_post_ops(post_ops);
  auto desc = bias != k_no_value ? dnnl::matmul::desc(a_md, b_md, plain_md(bias_dims, Dt::f32), dst_md)
                                 : dnnl::matmul::desc(a_md, b_md, dst_md);
  dnnl::matmul::primitive_desc pd(desc, attr, b.engine());
  layer.tactic = Tactic(ConvAlgo::automatic, Layout::any, Prec::f32, "matmul:batched/f32" + post_name, 0);

  std::vector<std::pair<int, int>> args;
  args.emplace_back(DNNL_ARG_SRC, b.view(a_slot, a_md));
  args.emplace_back(DNNL_ARG_WEIGHTS, b.view(b_slot, b_md));
  if (bias != k_no_value) {
    args.emplace_back(DNNL_ARG_BIAS, b.weight_slot(bias, plain_md(bias_dims, Dt::f32), pd.bias_desc()));
  }
  const int dst = define_output(b, layer, dst_md, {A, B});
  args.emplace_back(DNNL_ARG_DST, dst);
  b.add_primitive(pd, std::move(args));
}

}  // namespace

void build_matmul_layer(InstanceBuilder& b, LayerDesc& layer) {
  const ir::Node& n = b.node(layer.anchor());
  if (n.op_type == "Gemm" || b.is_fixed(n.inputs[1])) {
    build_weight_matmul(b, layer);
  } else {
    build_activation_matmul(b, layer);
  }
}

}  // namespace kiln::cpu
