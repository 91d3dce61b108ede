// MatMul and Gemm layers as one oneDNN matmul with the fused bias, residual
// sum and activation. With constant 2-d weights, activations of any rank are
// flattened to [M, K] (no copy) and the weights are reordered into oneDNN's
// preferred layout once, at refit; tactics are the precision (f32, bf16).
// Activation x activation products (attention) run batched, reading
// transposed operands through strides instead of copying them.
#include <optional>

#include "backends/cpu/instance_builder.hpp"
#include "backends/cpu/tactics.hpp"

namespace kiln::cpu {

using ir::k_no_node;
using ir::k_no_value;
using ir::ValueId;

namespace {

// Where the layer's residual goes: in place over the residual when it dies
// here, else a copy of it into a fresh slot (the sum post-op adds to dst).
int define_output(InstanceBuilder& b, const LayerDesc& layer, const Md& full, std::initializer_list<ValueId> reads) {
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

ValueId bias_of(const InstanceBuilder& b, const LayerDesc& layer) {
  const ir::Node& n = b.node(layer.anchor());
  if (n.op_type == "Gemm") return n.inputs.size() > 2 ? n.inputs[2] : k_no_value;
  if (layer.bias_add == k_no_node) return k_no_value;
  const ir::Node& add = b.node(layer.bias_add);
  const ValueId y = n.outputs[0];
  return add.inputs[0] == y ? add.inputs[1] : add.inputs[0];
}

void build_weight_matmul(InstanceBuilder& b, LayerDesc& layer) {
  const ir::Node& n = b.node(layer.anchor());
  const bool gemm = n.op_type == "Gemm";
  const bool trans_a = gemm && n.attrs.get_int("transA", 0) != 0;
  const bool trans_b = gemm && n.attrs.get_int("transB", 0) != 0;
  const ValueId A = n.inputs[0];
  const ValueId B = n.inputs[1];
  const ValueId bias = bias_of(b, layer);
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
  std::string post_name;
  const dnnl::post_ops post_ops = fused_post_ops(b, layer, &post_name);

  auto make_pd = [&](Prec prec) {
    const Dt dt = prec == Prec::bf16 ? Dt::bf16 : Dt::f32;
    Md src = trans_a ? Md({M, K}, dt, Dims{1, M}) : plain_md(Dims{M, K}, dt);
    Md w({K, N}, dt, dnnl::memory::format_tag::any);
    Md dst = plain_md(Dims{M, N}, dt);
    dnnl::primitive_attr attr = b.attr();
    attr.set_post_ops(post_ops);
    auto desc = bias != k_no_value
                    ? dnnl::matmul::desc(src, w, plain_md(Dims{1, N}, Dt::f32), dst)
                    : dnnl::matmul::desc(src, w, dst);
    return dnnl::matmul::primitive_desc(desc, attr, b.engine());
  };
  auto name_of = [&](Prec prec) {
    return std::string("matmul:") + (prec == Prec::bf16 ? "bf16" : "f32") + post_name;
  };

  Prec prec = layer.tactic.precision;
  if (b.tuning()) {
    std::vector<Prec> precs = {Prec::f32};
    if (bf16_enabled(b)) precs.insert(precs.begin(), Prec::bf16);
    const Md current = b.md_of(A);
    const Md from = plain_md(trans_a ? Dims{K, M} : Dims{M, K}, is_plain(current) ? current.data_type() : Dt::f32);
    std::vector<builder::TacticCandidate> candidates;
    for (Prec p : precs) {
      auto pd = make_pd(p);
      std::vector<TimedArg> args = {{DNNL_ARG_SRC, pd.src_desc()},
                                    {DNNL_ARG_WEIGHTS, pd.weights_desc()},
                                    {DNNL_ARG_DST, pd.dst_desc()}};
      if (bias != k_no_value) args.push_back({DNNL_ARG_BIAS, pd.bias_desc()});
      candidates.push_back({name_of(p), primitive_timer(b, pd, args, trans_a ? std::nullopt : std::optional<Md>(from))});
    }
    std::string signature = "matmul|a=" + md_string(current) + "|m=" + std::to_string(M) + "|k=" +
                            std::to_string(K) + "|n=" + std::to_string(N) + "|ta=" + (trans_a ? "1" : "0") +
                            "|tb=" + (trans_b ? "1" : "0") + "|b=" + (bias != k_no_value ? "1" : "0") +
                            "|post=" + post_name;
    double ms = 0;
    size_t index = choose_tactic(b, signature, candidates, &ms);
    prec = precs[index];
    layer.tactic = Tactic{ConvAlgo::automatic, Layout::any, prec, name_of(prec), ms};
  }
  const Dt dt = prec == Prec::bf16 ? Dt::bf16 : Dt::f32;
  auto pd = make_pd(prec);

  std::vector<std::pair<int, int>> args;
  const int a_full = b.use_plain(A, dt);
  args.emplace_back(DNNL_ARG_SRC, b.view(a_full, pd.src_desc()));
  args.emplace_back(DNNL_ARG_WEIGHTS, b.weight_slot(B, w_view, pd.weights_desc()));
  if (bias != k_no_value) {
    args.emplace_back(DNNL_ARG_BIAS, b.weight_slot(bias, plain_md(Dims{1, N}, Dt::f32), pd.bias_desc()));
  }
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
  layer.tactic = Tactic{ConvAlgo::automatic, Layout::any, Prec::f32, "matmul:batched/f32" + post_name, 0};

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
