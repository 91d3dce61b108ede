#include "backends/cuda/cuda_engine.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <numeric>

#include "backends/cuda/attention_layer.hpp"
#include "backends/cuda/cuda_check.hpp"
#include "backends/cuda/cuda_layers.hpp"
#include "backends/cuda/cuda_plan_format.hpp"
#include "backends/cuda/device_io.hpp"
#include "backends/cuda/host_shapes.hpp"
#include "backends/cuda/kernels/kernels.hpp"
#include "backends/cuda/precision.hpp"
#include "backends/cuda/strided_walk.hpp"
#include "backends/cuda/tactic_signature.hpp"
#include "builder/progress.hpp"
#include "builder/tactic_search.hpp"
#include "passes/passes.hpp"
#include "util/log.hpp"

namespace kiln::cuda {

using ir::k_no_node;
using ir::k_no_value;
using ir::ValueId;

namespace {

constexpr size_t k_alignment = 256;
constexpr size_t k_max_candidates = 8;
constexpr size_t k_max_matmul_workspace = size_t{32} << 20;

size_t aligned(size_t bytes) { return (bytes + k_alignment - 1) / k_alignment * k_alignment; }

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

std::string ms_text(double ms) {
  std::string text = std::to_string(ms);
  return text.substr(0, text.find('.') + 2) + " ms";
}

int64_t numel(const std::vector<int64_t>& shape) {
  return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>());
}

// The value of input `i` of the layer's bias Add that is not the chain.
ValueId other_input(const ir::Graph& g, ir::NodeId add, ValueId chain) {
  const ir::Node& n = g.node(add);
  return n.inputs[0] == chain ? n.inputs[1] : n.inputs[0];
}

}  // namespace

// What a matmul layer reads and applies at one instance's shapes.
struct MatmulParts {
  ValueId x = k_no_value, bias = k_no_value, residual = k_no_value;
  LtShape shape;
  ActParams post;             // applied after the matmul when the epilogue cannot
  bool bias_in_post = false;  // the bias too (batched products: one bias for every batch)
};

// A gather layer at one instance: its chain as one strided walk over the
// slice's input; or, where a view of the chain is no walk at these shapes,
// the slice into a scratch buffer of the instance and the transpose from it.
struct GatherParts {
  bool one_walk = true;
  StridedWalk walk;
  int64_t extent = 0;  // elements of the slice's input
  SliceParts slice;
  std::optional<DeviceBuffer> scratch;
};

// One operand of an attention layer at one instance: a 4-D strided view of
// the value it is read from (its chain's first input, or itself). Where a
// gather chain is no walk at these shapes, the gather runs into `staged`
// first and the view reads that.
struct AttentionOperandExec {
  ValueId source = k_no_value;
  int64_t offset = 0;
  std::array<int64_t, 4> strides{};
  Layer chain;  // the chain as a gather layer, when staged
  std::optional<GatherParts> staged_parts;
  std::optional<DeviceBuffer> staged;
};

// An attention layer at one instance: its problem sizes and strides (the
// data pointers are filled per run), worked out once.
struct AttentionExec {
  AttentionNodes nodes;
  std::array<AttentionOperandExec, 3> operands;  // Q, Kᵀ, V
  AttentionArgs args;
};

struct LayerExec {
  std::optional<ConvPlan> conv;
  std::unique_ptr<LtMatmul> matmul;
  MatmulParts matmul_parts;             // worked out once per instance, not per run
  SliceParts slice;                     // likewise: its arguments may be shape values of the instance
  std::vector<int64_t> expand_strides;  // an expand layer's walk over its input
  GatherParts gather;
  std::optional<AttentionExec> attention;
};

struct Instance {
  std::vector<std::vector<int64_t>> input_shapes;
  // The engine's activation layouts. The tables below are by value: the
  // graph's values, then the layout copies (ActivationLayouts::num_values).
  const ActivationLayouts* layouts = nullptr;
  std::vector<std::optional<std::vector<int64_t>>> shapes;  // by value
  std::vector<ValueId> root;                                // by value: the value whose memory it is
  std::vector<int64_t> offset;                              // by root value: arena offset, -1 if none
  DeviceBuffer arena;
  size_t arena_bytes = 0;
  DeviceBuffer workspace;
  size_t workspace_bytes = 0;
  // fp16/bf16 engines: where an fp32 input lands before its cast into the
  // arena, and an output is cast to before it is copied out (the largest
  // of them; the stream orders its reuse).
  DeviceBuffer boundary;
  std::vector<LayerExec> layers;
  // Device runs: the launches of every layer as one CUDA graph, captured on
  // the second run (the first loads every kernel module and cuDNN engine
  // lazily, which a capture must not see); `graph_failed` after a capture
  // failed once, so later runs do not retry it.
  CapturedGraph graph;
  int device_runs = 0;
  bool graph_failed = false;

  const std::vector<int64_t>& shape(ValueId v) const {
    const auto& s = shapes[static_cast<size_t>(v)];
    if (!s) throw Error(ErrorCode::internal, "cuda engine: a value without a shape at these input shapes");
    return *s;
  }
};

namespace {

constexpr size_t k_no_layer = static_cast<size_t>(-1);

// Everything a layer step needs to find its tensors.
struct Tensors {
  const ir::Graph& graph;
  const Instance& inst;
  std::function<const void*(ValueId)> constant;
  // The layer whose inputs in() reads: in its layout, a value or the value's
  // layout copy. k_no_layer: values as stored.
  size_t layer = k_no_layer;

  void* ptr(ValueId v) const {
    const ValueId r = inst.root[static_cast<size_t>(v)];
    if (static_cast<size_t>(r) < graph.num_values() && is_constant(graph, r))
      return const_cast<void*>(constant(r));
    const int64_t off = inst.offset[static_cast<size_t>(r)];
    if (off < 0) {
      const std::string name =
          static_cast<size_t>(v) < graph.num_values() ? graph.value(v).name : "a layout copy";
      throw Error(ErrorCode::internal, "cuda engine: value '" + name + "' has no memory");
    }
    return static_cast<char*>(inst.arena.data()) + off;
  }
  // Elements of the plan's storage precision.
  const void* in(ValueId v) const { return ptr(layer == k_no_layer ? v : inst.layouts->read(layer, v)); }
  void* out(ValueId v) const { return ptr(v); }
};

// The slice output a gather layer's chain reads: the first view's (or the
// transpose's) data input.
ValueId gather_part(const ir::Graph& g, const Layer& layer) { return g.node(layer.nodes[1]).inputs[0]; }

std::vector<int64_t> transpose_perm(const ir::Node& n, size_t rank) {
  std::vector<int64_t> perm = n.attrs.get_ints("perm", {});
  if (perm.empty()) {
    for (size_t d = rank; d-- > 0;) perm.push_back(static_cast<int64_t>(d));
  }
  return perm;
}

GatherParts gather_parts(const ir::Graph& g, const Layer& layer, const Instance& inst,
                         const std::vector<std::optional<Tensor>>& host, ElemType type) {
  const ValueId part = gather_part(g, layer);
  Layer slice;
  slice.kind = LayerKind::slice;
  slice.nodes = {layer.nodes.front()};
  slice.output = part;
  GatherParts p;
  p.slice = slice_parts(g, slice, inst.shapes, host);
  const auto& x = inst.shape(g.node(layer.nodes.front()).inputs[0]);
  p.extent = numel(x);
  p.walk = StridedWalk::contiguous(x);
  p.walk.slice(p.slice.starts, p.slice.steps, inst.shape(part));
  for (size_t k = 1; k + 1 < layer.nodes.size() && p.one_walk; ++k)
    p.one_walk = p.walk.reshape(inst.shape(g.node(layer.nodes[k]).outputs[0]));
  if (p.one_walk) {
    const ir::Node& t = g.node(layer.nodes.back());
    p.walk.transpose(transpose_perm(t, inst.shape(t.inputs[0]).size()));
  } else {
    p.scratch.emplace(std::max<size_t>(static_cast<size_t>(numel(inst.shape(part))) * elem_size(type), 4));
  }
  return p;
}

// A gather layer's copy from x (its slice's input) into y.
void run_gather(const ir::Graph& g, const Layer& layer, const GatherParts& p, const Instance& inst,
                const void* x, void* y, ElemType type, cudaStream_t stream) {
  if (p.one_walk) {
    launch_strided_copy(type, x, y, static_cast<int>(p.walk.shape.size()), p.walk.shape.data(),
                        p.walk.strides.data(), p.walk.offset, p.extent, stream);
    return;
  }
  const auto& xs = inst.shape(g.node(layer.anchor()).inputs[0]);
  const auto& part = inst.shape(gather_part(g, layer));
  launch_slice(type, x, p.scratch->data(), static_cast<int>(xs.size()), xs.data(), p.slice.starts.data(),
               p.slice.steps.data(), part.data(), stream);
  const ir::Node& tr = g.node(layer.nodes.back());
  const auto& ts = inst.shape(tr.inputs[0]);
  const std::vector<int64_t> perm = transpose_perm(tr, ts.size());
  std::vector<int> perm32(perm.begin(), perm.end());
  launch_transpose(type, p.scratch->data(), y, static_cast<int>(ts.size()), ts.data(), perm32.data(), stream);
}

// Strides of a rank-3 ([batch·heads, rows, cols]) or rank-4 view as the
// kernel's [batch, heads, rows, cols].
std::array<int64_t, 4> as_bhrc(std::span<const int64_t> strides) {
  if (strides.size() == 4) return {strides[0], strides[1], strides[2], strides[3]};
  return {strides[0], 0, strides[1], strides[2]};
}

AttentionOperandExec attention_operand(const ir::Graph& g, const std::vector<ir::NodeId>& chain,
                                       ValueId operand, const Instance& inst,
                                       const std::vector<std::optional<Tensor>>& host, ElemType type) {
  AttentionOperandExec o;
  const auto& shape = inst.shape(operand);
  StridedWalk walk = StridedWalk::contiguous(shape);
  o.source = operand;
  // [Slice or Split, views..., Transpose] (a gather) or a Transpose, then
  // further Transposes: the walk of the first part, transposed by the rest.
  auto rest = std::find_if(chain.begin(), chain.end(),
                           [&](ir::NodeId n) { return g.node(n).op_type == "Transpose"; });
  if (rest != chain.end()) ++rest;
  if (rest - chain.begin() == 1) {  // a Transpose
    const ir::Node& t = g.node(chain.front());
    o.source = t.inputs[0];
    walk = StridedWalk::contiguous(inst.shape(t.inputs[0]));
    walk.transpose(transpose_perm(t, walk.shape.size()));
  } else if (!chain.empty()) {  // a gather
    o.chain.kind = LayerKind::gather;
    o.chain.nodes.assign(chain.begin(), rest);
    o.chain.output = g.node(o.chain.nodes.back()).outputs[0];
    GatherParts p = gather_parts(g, o.chain, inst, host, type);
    if (p.one_walk) {
      o.source = g.node(chain.front()).inputs[0];
      walk = std::move(p.walk);
    } else {
      const auto& staged_shape = inst.shape(o.chain.output);
      o.staged_parts = std::move(p);
      o.staged.emplace(std::max<size_t>(static_cast<size_t>(numel(staged_shape)) * elem_size(type), 4));
      walk = StridedWalk::contiguous(staged_shape);
    }
  }
  for (auto it = rest; it != chain.end(); ++it)
    walk.transpose(transpose_perm(g.node(*it), walk.shape.size()));
  o.offset = walk.offset;
  o.strides = as_bhrc(walk.strides);
  return o;
}

AttentionExec attention_exec(const ir::Graph& g, const Layer& layer, const Instance& inst,
                             const std::vector<std::optional<Tensor>>& host, ElemType type) {
  std::string why;
  auto nodes = attention_nodes(g, layer, &why);
  if (!nodes) throw Error(ErrorCode::internal, "cuda engine: an attention layer that does not hold: " + why);
  AttentionExec e;
  e.nodes = std::move(*nodes);
  const passes::AttentionMatch& m = e.nodes.match;
  const std::string where = g.node(m.softmax).describe();
  const auto& q = inst.shape(m.q);
  const auto& k_t = inst.shape(m.k_t);
  const auto& v = inst.shape(m.v);
  const size_t r = q.size();
  const bool fits = (r == 3 || r == 4) && k_t.size() == r && v.size() == r &&
                    std::equal(q.begin(), q.end() - 2, k_t.begin()) &&
                    std::equal(q.begin(), q.end() - 2, v.begin()) && k_t[r - 2] == q[r - 1] &&
                    v[r - 2] == k_t[r - 1];
  if (!fits) {
    throw Error(ErrorCode::unsupported, "cuda engine: attention at " + where + ": Q [" + shape_to_string(q) +
                                            "], Kᵀ [" + shape_to_string(k_t) + "], V [" + shape_to_string(v) +
                                            "] are no batched attention of equal batch dims");
  }
  AttentionArgs& a = e.args;
  a.batch = q[0];
  a.heads = r == 4 ? q[1] : 1;
  a.q_len = q[r - 2];
  a.head_dim = q[r - 1];
  a.kv_len = k_t[r - 1];
  a.v_dim = v[r - 1];
  if (!attention_supported(type, a.head_dim, a.v_dim))
    throw Error(ErrorCode::unsupported, "cuda engine: attention at " + where + ": head dims " +
                                            std::to_string(a.head_dim) + ", " + std::to_string(a.v_dim));
  const std::array<ValueId, 3> operands{m.q, m.k_t, m.v};
  for (size_t i = 0; i < 3; ++i)
    e.operands[i] = attention_operand(g, e.nodes.chains[i], operands[i], inst, host, type);
  a.q.strides = e.operands[0].strides;
  const auto& kt = e.operands[1].strides;
  a.k.strides = {kt[0], kt[1], kt[3], kt[2]};  // key j, feature d of Kᵀ's (d, j)
  a.v.strides = e.operands[2].strides;
  if (m.mask != k_no_value) {
    // Right-aligned broadcast onto the scores [..., Sq, Sk].
    const auto& ms = inst.shape(m.mask);
    const std::vector<int64_t> contiguous = StridedWalk::contiguous(ms).strides;
    std::vector<int64_t> strides(r, 0);
    for (size_t d = 0; d < r; ++d) {
      const int64_t j = static_cast<int64_t>(d) - static_cast<int64_t>(r - ms.size());
      if (j >= 0 && ms[static_cast<size_t>(j)] != 1) strides[d] = contiguous[static_cast<size_t>(j)];
    }
    a.mask.strides = as_bhrc(strides);
  }
  const auto& y = inst.shape(layer.output);
  std::vector<int64_t> out = StridedWalk::contiguous(y).strides;
  if (e.nodes.output_transpose != ir::k_no_node) {
    // Output dim perm[i] of the attention is dim i of the Transpose's output.
    const std::vector<int64_t> perm = transpose_perm(g.node(e.nodes.output_transpose), r);
    std::vector<int64_t> strides(r);
    for (size_t i = 0; i < r; ++i) strides[static_cast<size_t>(perm[i])] = out[i];
    out = std::move(strides);
  }
  a.out_strides = as_bhrc(out);
  a.n_scales = static_cast<int>(m.scales.size());
  for (size_t i = 0; i < m.scales.size(); ++i) a.divide_mask |= (m.scales[i].divide ? 1u : 0u) << i;
  return e;
}

ConvGeometry conv_geometry(const Plan& plan, const Layer& layer, const Instance& inst, Layout layout) {
  const ir::Graph& g = plan.graph;
  const ir::Node& n = g.node(layer.anchor());
  ConvGeometry geo;
  geo.type = plan.precision;
  geo.nhwc = layout == Layout::nhwc;
  const auto& x = inst.shape(n.inputs[0]);
  const auto& w = inst.shape(n.inputs[1]);
  const auto& y = inst.shape(n.outputs[0]);
  std::copy_n(x.begin(), 4, geo.x.begin());
  std::copy_n(w.begin(), 4, geo.w.begin());
  std::copy_n(y.begin(), 4, geo.y.begin());
  const auto strides = n.attrs.get_ints("strides", {1, 1});
  const auto dilations = n.attrs.get_ints("dilations", {1, 1});
  auto pads = n.attrs.get_ints("pads", {0, 0, 0, 0});
  if (n.attrs.get_string("auto_pad", "NOTSET") == "VALID") pads = {0, 0, 0, 0};
  if (strides.size() != 2 || dilations.size() != 2 || pads.size() != 4) {
    throw Error(ErrorCode::invalid_model, n.describe() + ": strides, dilations or pads of the wrong length");
  }
  geo.stride = {strides[0], strides[1]};
  geo.dilation = {dilations[0], dilations[1]};
  geo.pad_begin = {pads[0], pads[1]};
  geo.pad_end = {pads[2], pads[3]};
  return geo;
}

ActParams layer_activation(const ir::Graph& g, const Layer& layer) {
  if (layer.activation == k_no_node) return {};
  return *activation_of(g, g.node(layer.activation));
}

ValueId conv_bias(const ir::Graph& g, const Layer& layer) {
  const ir::Node& n = g.node(layer.anchor());
  return n.inputs.size() > 2 ? n.inputs[2] : k_no_value;
}

ValueId residual_of(const ir::Graph& g, const Layer& layer) {
  if (layer.residual_add == k_no_node) return k_no_value;
  return g.node(layer.residual_add).inputs[static_cast<size_t>(layer.residual_input)];
}

// What cuDNN's graph may include: bias, residual and a ReLU (any other
// activation runs in kiln's epilogue kernel, so nothing is fused then).
std::optional<ConvFusion> cudnn_fusion(const ir::Graph& g, const Layer& layer) {
  const ActParams act = layer_activation(g, layer);
  if (act.kind != Act::none && act.kind != Act::relu) return std::nullopt;
  ConvFusion f;
  f.bias = conv_bias(g, layer) != k_no_value;
  f.residual = layer.residual_add != k_no_node;
  f.relu = act.kind == Act::relu;
  if (!f.any()) return std::nullopt;
  return f;
}

MatmulParts matmul_parts(const Plan& plan, const Layer& layer, const Instance& inst) {
  const ir::Graph& g = plan.graph;
  const ir::Node& n = g.node(layer.anchor());
  MatmulParts p;
  p.shape.type = plan.precision;
  p.x = n.inputs[0];
  const auto& x = inst.shape(p.x);
  const auto& w = inst.shape(n.inputs[1]);
  const bool trans_b = n.op_type == "Gemm" && n.attrs.get_int("transB", 0) != 0;
  p.shape.k = x.back();
  p.shape.n = trans_b ? w[0] : w.back();
  if (w.size() == 2) {
    // W is one matrix: every row of X, whatever its batch dims, is a row of M.
    p.shape.m = numel(x) / std::max<int64_t>(1, p.shape.k);
  } else {
    // Same-rank batches (the backend's support check): one product per batch.
    p.shape.m = x[x.size() - 2];
    p.shape.batch = numel(x) / std::max<int64_t>(1, p.shape.m * p.shape.k);
    p.shape.stride_x = p.shape.m * p.shape.k;
    p.shape.stride_w = p.shape.k * p.shape.n;
    p.shape.stride_y = p.shape.m * p.shape.n;
  }
  if (n.op_type == "Gemm" && n.inputs.size() > 2) p.bias = n.inputs[2];
  if (layer.bias_add != k_no_node) p.bias = other_input(g, layer.bias_add, n.outputs[0]);
  p.residual = residual_of(g, layer);
  const ActParams act = layer_activation(g, layer);
  if (p.shape.batch > 1) {
    // cuBLASLt's bias epilogue would want a bias per batch: the epilogue
    // kernel adds the one bias to every row instead.
    p.bias_in_post = p.bias != k_no_value;
    p.post = act;
    return p;
  }
  p.shape.bias = p.bias != k_no_value;
  if (p.residual != k_no_value && act.kind == Act::none) {
    p.shape.accumulate = true;  // the residual as cuBLASLt's C
  } else if (p.residual == k_no_value && act.kind == Act::relu) {
    p.shape.epilogue = LtEpilogue::relu;
  } else if (p.residual == k_no_value && act.kind == Act::gelu_tanh) {
    p.shape.epilogue = LtEpilogue::gelu_tanh;
  } else {
    p.post = act;
  }
  return p;
}

// A layer's tactic as reports show it: a half engine's layers say so, and
// channels-last layers say "nhwc".
std::string reported_tactic(const Layer& layer, ElemType precision, Layout layout) {
  std::string name = layer.tactic.name.empty() ? layer_kind_name(layer.kind) : layer.tactic.name;
  if (precision != ElemType::f32) name += std::string(" ") + precision_name(precision);
  if (layout == Layout::nhwc) name += " nhwc";
  return name;
}

BroadcastShape broadcast(const std::vector<int64_t>& a, const std::vector<int64_t>& b,
                         const std::vector<int64_t>& y) {
  BroadcastShape s;
  s.rank = std::max<int>(1, static_cast<int>(y.size()));
  auto fill = [&](const std::vector<int64_t>& in, std::array<int64_t, k_max_rank>& strides) {
    std::vector<int64_t> padded(
        static_cast<size_t>(s.rank) - std::min(in.size(), static_cast<size_t>(s.rank)), 1);
    padded.insert(padded.end(), in.begin(), in.end());
    int64_t stride = 1;
    for (int d = s.rank - 1; d >= 0; --d) {
      strides[static_cast<size_t>(d)] = padded[static_cast<size_t>(d)] == 1 ? 0 : stride;
      stride *= padded[static_cast<size_t>(d)];
    }
  };
  for (int d = 0; d < s.rank; ++d) s.out[static_cast<size_t>(d)] = y.empty() ? 1 : y[static_cast<size_t>(d)];
  fill(a, s.a_strides);
  fill(b, s.b_strides);
  return s;
}

// A shape of rank <= 4 as a channels-last layer walks it: padded to
// [N, C, H, W] with leading 1s, then in memory order [N, H, W, C]. A binary
// layer in NHWC broadcasts over these (its operands are NHWC or layout-free,
// activation_layout.hpp), so each operand's strides follow its bytes.
std::vector<int64_t> channels_last_order(const std::vector<int64_t>& shape) {
  std::vector<int64_t> d(4 - std::min<size_t>(shape.size(), 4), 1);
  d.insert(d.end(), shape.begin(), shape.end());
  return {d[0], d[2], d[3], d[1]};
}

}  // namespace

CudaEngine::CudaEngine(Plan plan) : m_plan(std::move(plan)) {
  m_constants.resize(m_plan.graph.num_values());
  m_matmul_weights.resize(m_plan.layers.size());
  m_krsc_weights.resize(m_plan.graph.num_values());
  // From the plan alone: a build and a load of its plan agree.
  m_layouts = ActivationLayouts::assign(m_plan.graph, m_plan.layers, m_plan.precision);
  if (m_plan.precision != ElemType::f32)
    log::info("cuda engine: " + std::string(precision_name(m_plan.precision)) + ": " +
              m_layouts.summary(m_plan.graph));
}

CudaEngine::~CudaEngine() = default;

size_t CudaEngine::upload_constant(ValueId v, const Tensor& host) {
  if (host.dtype() != DType::float32) {
    throw Error(ErrorCode::unsupported, "cuda: constant '" + m_plan.graph.value(v).name + "' is " +
                                            std::string(dtype_name(host.dtype())));
  }
  // The recipe's fp32 value, rounded on the host to the storage precision
  // (to nearest even, as the kernels' own conversions): a refit and a fresh
  // build of the same weights upload the same bytes.
  // fp32 goes up as it is, without a host copy.
  std::vector<std::byte> converted;
  std::span<const std::byte> bytes = host.bytes();
  if (m_plan.precision != ElemType::f32) {
    converted = to_storage(host.data<float>(), m_plan.precision);
    bytes = converted;
  }
  auto& slot = m_constants[static_cast<size_t>(v)];
  if (!slot || slot->size() != std::max<size_t>(bytes.size(), 4))
    slot.emplace(std::max<size_t>(bytes.size(), 4));
  // From pageable memory, cudaMemcpyAsync returns once the bytes are staged,
  // so they may go away at once; callers synchronize once after a batch of
  // uploads instead of once per weight.
  check(cudaMemcpyAsync(slot->data(), bytes.data(), bytes.size(), cudaMemcpyHostToDevice, m_device.stream()),
        "cudaMemcpyAsync(constant)");
  return bytes.size();
}

void CudaEngine::upload_structural_constants() {
  const ir::Graph& g = m_plan.graph;
  for (const Layer& layer : m_plan.layers) {
    if (layer.kind == LayerKind::shape) continue;  // read on the host only
    for (ir::NodeId id : layer.nodes) {
      for (ValueId v : g.node(id).inputs) {
        if (v == k_no_value || !is_constant(g, v) || g.value(v).recipe) continue;
        const Tensor* t = g.value(v).known_value();
        if (t && t->dtype() == DType::float32 && !m_constants[static_cast<size_t>(v)]) upload_constant(v, *t);
      }
    }
  }
  m_device.synchronize();
}

const void* CudaEngine::constant_ptr(ValueId v) const {
  const auto& slot = m_constants[static_cast<size_t>(v)];
  if (!slot)
    throw Error(ErrorCode::internal,
                "cuda engine: constant '" + m_plan.graph.value(v).name + "' not on the GPU");
  return slot->data();
}

void CudaEngine::prepare_matmul_weights() {
  // Gemm with transB holds W as [N, K]; cuBLASLt reads [K, N]: transposed
  // once per refit, on the GPU, from the value just uploaded (elements of
  // the storage precision move unconverted).
  const ir::Graph& g = m_plan.graph;
  for (size_t i = 0; i < m_plan.layers.size(); ++i) {
    const Layer& layer = m_plan.layers[i];
    if (layer.kind != LayerKind::matmul) continue;
    const ir::Node& n = g.node(layer.anchor());
    if (n.op_type != "Gemm" || n.attrs.get_int("transB", 0) == 0) continue;
    const ValueId w = n.inputs[1];
    const auto shape = g.value(w).type.static_shape();
    const size_t bytes = static_cast<size_t>(shape[0] * shape[1]) * elem_size(m_plan.precision);
    auto& slot = m_matmul_weights[i];
    if (!slot) slot.emplace(std::max<size_t>(bytes, 4));
    const int perm[2] = {1, 0};
    launch_transpose(m_plan.precision, constant_ptr(w), slot->data(), 2, shape.data(), perm,
                     m_device.stream());
  }
  m_device.synchronize();
}

void CudaEngine::prepare_conv_weights() {
  // A channels-last conv reads W [K, C/g, R, S] as KRSC. The recipe's value
  // is uploaded KCRS (as every constant) and transposed here, once per
  // refit; where nothing but channels-last convs' weight inputs reads it,
  // the KCRS copy is freed (a refit uploads it again). A structural weight
  // is uploaded once: its KRSC copy, made at the first refit, stays valid.
  const ir::Graph& g = m_plan.graph;
  std::vector<bool> nhwc_conv(g.num_nodes(), false);  // by node: the anchor of a channels-last conv
  for (size_t i = 0; i < m_plan.layers.size(); ++i) {
    if (m_plan.layers[i].kind == LayerKind::conv && m_layouts.of_layer(i) == Layout::nhwc)
      nhwc_conv[static_cast<size_t>(m_plan.layers[i].anchor())] = true;
  }
  // By value: read as a channels-last conv's weight; read any other way.
  std::vector<bool> krsc(g.num_values(), false), other(g.num_values(), false);
  for (ir::NodeId id = 0; id < static_cast<ir::NodeId>(g.num_nodes()); ++id) {
    const auto& ins = g.node(id).inputs;
    for (size_t k = 0; k < ins.size(); ++k) {
      if (ins[k] == k_no_value) continue;
      const bool weight = nhwc_conv[static_cast<size_t>(id)] && k == 1;
      (weight ? krsc : other)[static_cast<size_t>(ins[k])] = true;
    }
  }
  for (ValueId v : g.outputs()) other[static_cast<size_t>(v)] = true;
  std::vector<size_t> freed;
  for (size_t v = 0; v < g.num_values(); ++v) {
    if (!krsc[v] || !m_constants[v]) continue;
    const auto shape = g.value(static_cast<ValueId>(v)).type.static_shape();
    const size_t bytes = static_cast<size_t>(numel(shape)) * elem_size(m_plan.precision);
    auto& slot = m_krsc_weights[v];
    if (!slot) slot.emplace(std::max<size_t>(bytes, 4));
    const int perm[4] = {0, 2, 3, 1};
    launch_transpose(m_plan.precision, m_constants[v]->data(), slot->data(), 4, shape.data(), perm,
                     m_device.stream());
    if (!other[v]) freed.push_back(v);
  }
  m_device.synchronize();
  for (size_t v : freed) m_constants[v].reset();
}

const void* CudaEngine::conv_weight(const Instance& inst, size_t layer) const {
  const ValueId w = m_plan.graph.node(m_plan.layers[layer].anchor()).inputs[1];
  if (m_layouts.of_layer(layer) != Layout::nhwc)
    return Tensors{m_plan.graph, inst, [this](ValueId v) { return constant_ptr(v); }}.in(w);
  const auto& slot = m_krsc_weights[static_cast<size_t>(w)];
  if (!slot)
    throw Error(ErrorCode::internal,
                "cuda engine: the KRSC weight '" + m_plan.graph.value(w).name + "' is not on the GPU");
  return slot->data();
}

std::unique_ptr<Instance> CudaEngine::create_instance(const std::vector<std::vector<int64_t>>& input_shapes) {
  const auto start = Clock::now();
  const ir::Graph& g = m_plan.graph;
  auto inst = std::make_unique<Instance>();
  inst->input_shapes = input_shapes;
  // Shapes at these input shapes, and the host values of the shape layers
  // (a Reshape's run-time target is a constant of the instance).
  InstanceValues known = instance_values(g, m_plan.specs, input_shapes, m_plan.layers);
  inst->layouts = &m_layouts;
  inst->shapes = std::move(known.shapes);
  for (const Layer& layer : m_plan.layers) {
    if (auto problem = instance_problem(g, layer, inst->shapes))
      throw Error(ErrorCode::unsupported, "cuda engine: " + *problem);
  }
  // The graph's values, then the layout copies, each of its source's shape.
  const size_t nv = m_layouts.num_values();
  inst->shapes.resize(nv);
  for (const LayoutConversion& c : m_layouts.conversions())
    inst->shapes[static_cast<size_t>(c.copy)] = inst->shapes[static_cast<size_t>(c.from)];
  inst->root.resize(nv);
  std::iota(inst->root.begin(), inst->root.end(), 0);
  // Lifetimes over layer indices: a graph input lives from -1, an output to the end.
  const auto n_layers = static_cast<int64_t>(m_plan.layers.size());
  std::vector<int64_t> first(nv, -2), last(nv, -2);
  for (ValueId v : g.inputs()) first[static_cast<size_t>(v)] = -1;
  for (int64_t i = 0; i < n_layers; ++i) {
    const Layer& layer = m_plan.layers[static_cast<size_t>(i)];
    const ir::Node& anchor = g.node(layer.anchor());
    // A shape layer reads shapes, not memory, and its outputs live on the host.
    if (layer.kind == LayerKind::shape) continue;
    const auto li = static_cast<size_t>(i);
    if (layer.kind == LayerKind::view) {
      inst->root[static_cast<size_t>(layer.output)] =
          inst->root[static_cast<size_t>(m_layouts.read(li, anchor.inputs[0]))];
    } else {
      first[static_cast<size_t>(layer.output)] = i;
    }
    for (ir::NodeId id : layer.nodes) {
      for (ValueId in : g.node(id).inputs) {
        if (in == k_no_value || known.host[static_cast<size_t>(in)]) continue;
        auto& l = last[static_cast<size_t>(inst->root[static_cast<size_t>(m_layouts.read(li, in))])];
        l = std::max(l, i);
      }
    }
    // Layout copies made after this layer live from it on; so does their source.
    for (size_t c : m_layouts.after(li)) {
      const LayoutConversion& conv = m_layouts.conversions()[c];
      first[static_cast<size_t>(conv.copy)] = i;
      auto& l = last[static_cast<size_t>(inst->root[static_cast<size_t>(conv.from)])];
      l = std::max(l, i);
    }
  }
  // Copies made before a layer (of graph inputs) live from that layer on.
  for (const LayoutConversion& conv : m_layouts.conversions()) {
    if (!conv.before) continue;
    first[static_cast<size_t>(conv.copy)] = static_cast<int64_t>(conv.layer);
    auto& l = last[static_cast<size_t>(inst->root[static_cast<size_t>(conv.from)])];
    l = std::max(l, static_cast<int64_t>(conv.layer));
  }
  for (ValueId v : g.outputs())
    last[static_cast<size_t>(inst->root[static_cast<size_t>(m_layouts.output(v))])] = n_layers;
  // Greedy by size: largest first, each at the lowest offset free over its lifetime.
  struct Block {
    ValueId value;
    size_t bytes;
    int64_t first, last;
    size_t offset = 0;
  };
  std::vector<Block> blocks;
  for (size_t v = 0; v < nv; ++v) {
    const bool graph_value = v < g.num_values();
    if (first[v] == -2 || inst->root[v] != static_cast<ValueId>(v) ||
        (graph_value && is_constant(g, static_cast<ValueId>(v))))
      continue;
    // An input only shape layers read (its shape is all they need) is not
    // copied to the GPU.
    if (first[v] == -1 && last[v] == -2) continue;
    if (!inst->shapes[v]) {
      throw Error(ErrorCode::unsupported,
                  "cuda engine: the shape of '" +
                      (graph_value ? g.value(static_cast<ValueId>(v)).name : std::string("a layout copy")) +
                      "' is not known at these input shapes");
    }
    const size_t bytes = aligned(static_cast<size_t>(numel(*inst->shapes[v])) * elem_size(m_plan.precision));
    blocks.push_back(
        {static_cast<ValueId>(v), std::max(bytes, k_alignment), first[v], std::max(last[v], first[v])});
  }
  std::sort(blocks.begin(), blocks.end(), [](const Block& a, const Block& b) { return a.bytes > b.bytes; });
  std::vector<const Block*> placed;
  inst->offset.assign(nv, -1);
  for (Block& b : blocks) {
    std::vector<const Block*> live;
    for (const Block* p : placed) {
      if (p->first <= b.last && b.first <= p->last) live.push_back(p);
    }
    std::sort(live.begin(), live.end(), [](const Block* x, const Block* y) { return x->offset < y->offset; });
    size_t offset = 0;
    for (const Block* p : live) {
      if (offset + b.bytes <= p->offset) break;
      offset = std::max(offset, p->offset + p->bytes);
    }
    b.offset = offset;
    inst->arena_bytes = std::max(inst->arena_bytes, offset + b.bytes);
    inst->offset[static_cast<size_t>(b.value)] = static_cast<int64_t>(offset);
    placed.push_back(&b);
  }
  inst->arena = DeviceBuffer(inst->arena_bytes);
  if (m_plan.precision != ElemType::f32) {
    size_t boundary = 0;
    for (const auto* values : {&g.inputs(), &g.outputs()}) {
      for (ValueId v : *values) {
        if (inst->shapes[static_cast<size_t>(v)])
          boundary = std::max(boundary, static_cast<size_t>(numel(*inst->shapes[static_cast<size_t>(v)])));
      }
    }
    inst->boundary = DeviceBuffer(std::max<size_t>(boundary * sizeof(float), 4));
  }
  const double memory_ms = ms_since(start);
  inst->layers.resize(m_plan.layers.size());
  for (size_t i = 0; i < m_plan.layers.size(); ++i) {
    const Layer& layer = m_plan.layers[i];
    if (layer.kind == LayerKind::slice)
      inst->layers[i].slice = slice_parts(g, layer, inst->shapes, known.host);
    if (layer.kind == LayerKind::gather)
      inst->layers[i].gather = gather_parts(g, layer, *inst, known.host, m_plan.precision);
    if (layer.kind == LayerKind::attention)
      inst->layers[i].attention = attention_exec(g, layer, *inst, known.host, m_plan.precision);
    if (layer.kind == LayerKind::expand) {
      inst->layers[i].expand_strides =
          expand_strides(inst->shape(g.node(layer.anchor()).inputs[0]), inst->shape(layer.output));
    }
  }
  double conv_ms = 0, matmul_ms = 0;
  size_t convs = 0, matmuls = 0;
  // Conv and matmul layers at these shapes, from the plan's choices.
  for (size_t i = 0; i < m_plan.layers.size(); ++i) {
    const auto layer_start = Clock::now();
    const Layer& layer = m_plan.layers[i];
    if (layer.kind == LayerKind::conv && layer.tactic.cudnn.engine >= 0) {
      const ConvGeometry geo = conv_geometry(m_plan, layer, *inst, m_layouts.of_layer(i));
      const ConvFusion fusion = layer.tactic.fused ? *cudnn_fusion(g, layer) : ConvFusion{};
      try {
        inst->layers[i].conv.emplace(conv_plan(m_device.cudnn(), geo, fusion, layer.tactic.cudnn));
      } catch (const Error&) {
        // The recorded engine does not take these shapes (another batch size
        // of a dynamic range): cuDNN's first heuristic choice does.
        // The layer's fusion is fixed by the plan, so any engine will do.
        auto candidates = conv_candidates(m_device.cudnn(), geo, fusion, 1, false, true);
        if (candidates.empty()) throw;
        inst->layers[i].conv.emplace(std::move(candidates.front().plan));
      }
      inst->workspace_bytes = std::max(inst->workspace_bytes, inst->layers[i].conv->workspace());
      conv_ms += ms_since(layer_start);
      ++convs;
    } else if (layer.kind == LayerKind::matmul && !layer.tactic.lt_algo.empty()) {
      const MatmulParts& parts = inst->layers[i].matmul_parts = matmul_parts(m_plan, layer, *inst);
      auto mm = std::make_unique<LtMatmul>(m_device.cublaslt(), parts.shape);
      LtAlgoBytes algo{};
      std::copy_n(layer.tactic.lt_algo.begin(), algo.size(), algo.begin());
      if (!mm->select(algo)) {
        auto offered = mm->candidates(1, k_max_matmul_workspace);
        if (offered.empty() || !mm->select(offered.front())) {
          throw Error(ErrorCode::unsupported, "cuda: cuBLASLt has no algorithm for " +
                                                  g.node(layer.anchor()).describe() + " at these shapes");
        }
      }
      inst->workspace_bytes = std::max(inst->workspace_bytes, mm->workspace());
      inst->layers[i].matmul = std::move(mm);
      matmul_ms += ms_since(layer_start);
      ++matmuls;
    }
  }
  inst->workspace = DeviceBuffer(inst->workspace_bytes);
  log::info("cuda engine: instance for input shapes " +
            (input_shapes.empty() ? std::string("()") : shape_to_string(input_shapes.front())) + " in " +
            ms_text(ms_since(start)) + ": memory plan and arena " + ms_text(memory_ms) + ", " +
            std::to_string(convs) + " cuDNN plans " + ms_text(conv_ms) + ", " + std::to_string(matmuls) +
            " cuBLASLt matmuls " + ms_text(matmul_ms) + ", " +
            std::to_string(m_layouts.conversions().size()) + " layout conversions");
  return inst;
}

void CudaEngine::run_conv(const Instance& inst, size_t index, const ConvPlan& plan, bool fused,
                          void* workspace) const {
  const ir::Graph& g = m_plan.graph;
  const Layer& layer = m_plan.layers[index];
  const ir::Node& n = g.node(layer.anchor());
  const Tensors t{g, inst, [this](ValueId v) { return constant_ptr(v); }, index};
  const ValueId bias = conv_bias(g, layer), residual = residual_of(g, layer);
  ConvPointers p{t.in(n.inputs[0]), conv_weight(inst, index), nullptr, nullptr, t.out(layer.output)};
  if (fused) {
    p.bias = bias != k_no_value ? t.in(bias) : nullptr;
    p.residual = residual != k_no_value ? t.in(residual) : nullptr;
  }
  plan.run(m_device.cudnn(), p, workspace);
  const ActParams act = layer_activation(g, layer);
  if (!fused && (bias != k_no_value || residual != k_no_value || act.kind != Act::none)) {
    const auto& y = inst.shape(layer.output);
    // Channels-last: [N*H*W, C, 1], the bias still per channel.
    const bool nhwc = m_layouts.of_layer(index) == Layout::nhwc;
    launch_bias_act(m_plan.precision, p.y, bias != k_no_value ? t.in(bias) : nullptr,
                    residual != k_no_value ? t.in(residual) : nullptr, p.y, nhwc ? y[0] * y[2] * y[3] : y[0],
                    y[1], nhwc ? 1 : y[2] * y[3], act, m_device.stream());
  }
}

void CudaEngine::run_matmul(const Instance& inst, size_t index, const LtMatmul& matmul,
                            void* workspace) const {
  const ir::Graph& g = m_plan.graph;
  const Layer& layer = m_plan.layers[index];
  const ir::Node& n = g.node(layer.anchor());
  const Tensors t{g, inst, [this](ValueId v) { return constant_ptr(v); }, index};
  const MatmulParts& parts = inst.layers[index].matmul_parts;
  const void* w = m_matmul_weights[index] ? m_matmul_weights[index]->data() : t.in(n.inputs[1]);
  void* y = t.out(layer.output);
  matmul.run(t.in(parts.x), w, parts.shape.bias ? t.in(parts.bias) : nullptr,
             parts.shape.accumulate ? t.in(parts.residual) : nullptr, y, workspace, m_device.stream());
  if (parts.bias_in_post) {
    // Rows of N: the bias is per column, the epilogue kernel's "channel".
    const int64_t rows = numel(inst.shape(layer.output)) / std::max<int64_t>(1, parts.shape.n);
    launch_bias_act(m_plan.precision, y, t.in(parts.bias),
                    parts.residual != k_no_value ? t.in(parts.residual) : nullptr, y, rows, parts.shape.n, 1,
                    parts.post, m_device.stream());
  } else if ((parts.residual != k_no_value && !parts.shape.accumulate) || parts.post.kind != Act::none) {
    launch_bias_act(m_plan.precision, y, nullptr,
                    parts.residual != k_no_value && !parts.shape.accumulate ? t.in(parts.residual) : nullptr,
                    y, 1, 1, numel(inst.shape(layer.output)), parts.post, m_device.stream());
  }
}

void CudaEngine::run_conversions(const Instance& inst, const std::vector<size_t>& conversions) const {
  const Tensors t{m_plan.graph, inst, [this](ValueId v) { return constant_ptr(v); }};
  for (size_t c : conversions) {
    const LayoutConversion& conv = m_layouts.conversions()[c];
    const auto& s = inst.shape(conv.from);  // [N, C, H, W]
    // NCHW -> NHWC moves C last; NHWC (in memory [N, H, W, C]) -> NCHW moves it back.
    const bool to_nhwc = conv.to == Layout::nhwc;
    const int64_t in_shape[4] = {s[0], to_nhwc ? s[1] : s[2], to_nhwc ? s[2] : s[3], to_nhwc ? s[3] : s[1]};
    const int to_nhwc_perm[4] = {0, 2, 3, 1}, to_nchw_perm[4] = {0, 3, 1, 2};
    launch_transpose(m_plan.precision, t.ptr(conv.from), t.ptr(conv.copy), 4, in_shape,
                     to_nhwc ? to_nhwc_perm : to_nchw_perm, m_device.stream());
  }
}

void CudaEngine::run_layer(const Instance& inst, size_t index, void* workspace) const {
  run_conversions(inst, m_layouts.before(index));
  run_layer_kernels(inst, index, workspace);
  run_conversions(inst, m_layouts.after(index));
}

void CudaEngine::run_layer_kernels(const Instance& inst, size_t index, void* workspace) const {
  const ir::Graph& g = m_plan.graph;
  const Layer& layer = m_plan.layers[index];
  const ir::Node& n = g.node(layer.anchor());
  const Tensors t{g, inst, [this](ValueId v) { return constant_ptr(v); }, index};
  const cudaStream_t stream = m_device.stream();
  const ElemType type = m_plan.precision;
  const bool nhwc = m_layouts.of_layer(index) == Layout::nhwc;
  switch (layer.kind) {
    case LayerKind::conv:
      run_conv(inst, index, *inst.layers[index].conv, layer.tactic.fused, workspace);
      return;
    case LayerKind::matmul:
      run_matmul(inst, index, *inst.layers[index].matmul, workspace);
      return;
    case LayerKind::unary:
      launch_unary(*activation_of(g, n), type, t.in(n.inputs[0]), t.out(layer.output),
                   numel(inst.shape(layer.output)), stream);
      return;
    case LayerKind::binary: {
      const auto& a = inst.shape(n.inputs[0]);
      const auto& b = inst.shape(n.inputs[1]);
      const auto& y = inst.shape(layer.output);
      launch_binary(binary_op_of(n), {}, type, t.in(n.inputs[0]), t.in(n.inputs[1]), t.out(layer.output),
                    nhwc ? broadcast(channels_last_order(a), channels_last_order(b), channels_last_order(y))
                         : broadcast(a, b, y),
                    stream);
      return;
    }
    case LayerKind::pool: {
      const auto& x = inst.shape(n.inputs[0]);
      const auto& y = inst.shape(layer.output);
      const auto kernel = n.attrs.get_ints("kernel_shape");
      const auto strides = n.attrs.get_ints("strides", {1, 1});
      const auto dilations = n.attrs.get_ints("dilations", {1, 1});
      auto pads = n.attrs.get_ints("pads", {0, 0, 0, 0});
      if (n.attrs.get_string("auto_pad", "NOTSET") == "VALID") pads = {0, 0, 0, 0};
      Pool2d p;
      p.n = x[0], p.c = x[1], p.h = x[2], p.w = x[3], p.out_h = y[2], p.out_w = y[3];
      p.kernel_h = kernel.at(0), p.kernel_w = kernel.at(1);
      p.stride_h = strides.at(0), p.stride_w = strides.at(1);
      p.pad_top = pads.at(0), p.pad_left = pads.at(1);
      p.dilation_h = dilations.at(0), p.dilation_w = dilations.at(1);
      p.count_include_pad = n.attrs.get_int("count_include_pad", 0) != 0;
      const auto pool = n.op_type == "MaxPool" ? (nhwc ? launch_max_pool2d_nhwc : launch_max_pool2d)
                                               : (nhwc ? launch_avg_pool2d_nhwc : launch_avg_pool2d);
      pool(type, t.in(n.inputs[0]), t.out(layer.output), p, stream);
      return;
    }
    case LayerKind::reduce: {
      const auto& x = inst.shape(n.inputs[0]);
      if (nhwc) {
        // [N, H*W, C] in memory; the [N, C] result is [N, C, 1, 1] in either layout.
        launch_reduce_nhwc(type, n.op_type == "GlobalMaxPool", t.in(n.inputs[0]), t.out(layer.output), x[0],
                           numel(x) / std::max<int64_t>(1, x[0] * x[1]), x[1], stream);
        return;
      }
      const int64_t rows = x[0] * x[1];
      launch_reduce_rows(type, n.op_type == "GlobalMaxPool", t.in(n.inputs[0]), t.out(layer.output), rows,
                         numel(x) / std::max<int64_t>(1, rows), stream);
      return;
    }
    case LayerKind::softmax: {
      const auto& x = inst.shape(n.inputs[0]);
      const int64_t cols = x.empty() ? 1 : x.back();
      launch_softmax(type, n.op_type == "LogSoftmax", t.in(n.inputs[0]), t.out(layer.output),
                     numel(x) / std::max<int64_t>(1, cols), cols, stream);
      return;
    }
    case LayerKind::layer_norm: {
      const auto& x = inst.shape(n.inputs[0]);
      const int64_t cols = x.back();
      const ValueId beta = n.inputs.size() > 2 ? n.inputs[2] : k_no_value;
      launch_layer_norm(type, t.in(n.inputs[0]), t.in(n.inputs[1]), beta != k_no_value ? t.in(beta) : nullptr,
                        t.out(layer.output), numel(x) / std::max<int64_t>(1, cols), cols,
                        n.attrs.get_float("epsilon", 1e-5f), stream);
      return;
    }
    case LayerKind::transpose: {
      const auto& x = inst.shape(n.inputs[0]);
      const std::vector<int64_t> perm = transpose_perm(n, x.size());
      std::vector<int> perm32(perm.begin(), perm.end());
      launch_transpose(type, t.in(n.inputs[0]), t.out(layer.output), static_cast<int>(x.size()), x.data(),
                       perm32.data(), stream);
      return;
    }
    case LayerKind::concat: {
      const auto& y = inst.shape(layer.output);
      int64_t axis = n.attrs.get_int("axis");
      if (axis < 0) axis += static_cast<int64_t>(y.size());
      const int64_t outer = numel({y.begin(), y.begin() + axis});
      const int64_t y_inner = numel({y.begin() + axis, y.end()});
      int64_t offset = 0;
      for (ValueId in : n.inputs) {
        const auto& x = inst.shape(in);
        const int64_t x_inner = numel({x.begin() + axis, x.end()});
        launch_concat_part(type, t.in(in), t.out(layer.output), outer, x_inner, y_inner, offset, stream);
        offset += x_inner;
      }
      return;
    }
    case LayerKind::slice: {
      const auto& x = inst.shape(n.inputs[0]);
      const auto& y = inst.shape(layer.output);
      const SliceParts& p = inst.layers[index].slice;
      launch_slice(type, t.in(n.inputs[0]), t.out(layer.output), static_cast<int>(x.size()), x.data(),
                   p.starts.data(), p.steps.data(), y.data(), stream);
      return;
    }
    case LayerKind::view:
      return;  // the output is the input's memory
    case LayerKind::shape:
      return;  // evaluated on the host when the instance was made
    case LayerKind::gather:
      run_gather(g, layer, inst.layers[index].gather, inst, t.in(n.inputs[0]), t.out(layer.output), type,
                 stream);
      return;
    case LayerKind::attention: {
      const AttentionExec& e = *inst.layers[index].attention;
      AttentionArgs a = e.args;
      std::array<const void*, 3> data{};
      for (size_t i = 0; i < 3; ++i) {
        const AttentionOperandExec& o = e.operands[i];
        if (o.staged) {
          run_gather(g, o.chain, *o.staged_parts, inst, t.in(g.node(o.chain.anchor()).inputs[0]),
                     o.staged->data(), type, stream);
          data[i] =
              static_cast<const char*>(o.staged->data()) + o.offset * static_cast<int64_t>(elem_size(type));
        } else {
          data[i] =
              static_cast<const char*>(t.in(o.source)) + o.offset * static_cast<int64_t>(elem_size(type));
        }
      }
      a.q.data = data[0];
      a.k.data = data[1];
      a.v.data = data[2];
      const passes::AttentionMatch& m = e.nodes.match;
      if (m.mask != k_no_value) a.mask.data = t.in(m.mask);
      for (size_t i = 0; i < m.scales.size(); ++i) a.scales[i] = constant_ptr(m.scales[i].value);
      a.out = t.out(layer.output);
      launch_attention(type, a, stream);
      return;
    }
    case LayerKind::expand: {
      const auto& y = inst.shape(layer.output);
      launch_strided_copy(type, t.in(n.inputs[0]), t.out(layer.output), static_cast<int>(y.size()), y.data(),
                          inst.layers[index].expand_strides.data(), 0, numel(inst.shape(n.inputs[0])),
                          stream);
      return;
    }
  }
}

void CudaEngine::choose_tactics(Instance& inst, const CompileSettings& settings,
                                builder::TimingCache& timing_cache) {
  const ir::Graph& g = m_plan.graph;
  size_t tuned = 0;
  for (const Layer& l : m_plan.layers) tuned += l.kind == LayerKind::conv || l.kind == LayerKind::matmul;
  builder::BuildProgress progress("cuda: timing layers", tuned);
  const std::string platform = m_plan.fingerprint.to_string();
  for (size_t i = 0; i < m_plan.layers.size(); ++i) {
    Layer& layer = m_plan.layers[i];
    if (layer.kind != LayerKind::conv && layer.kind != LayerKind::matmul) continue;
    const std::string where = g.node(layer.anchor()).describe();
    std::vector<builder::TacticCandidate> candidates;
    std::string signature;
    if (layer.kind == LayerKind::conv) {
      // At the layout the conv runs at (and its weight as it will read it).
      const ConvGeometry geo = conv_geometry(m_plan, layer, inst, m_layouts.of_layer(i));
      const auto fusion = cudnn_fusion(g, layer);
      std::vector<ConvCandidate> offered;
      std::vector<bool> fused;
      if (fusion) {
        for (ConvCandidate& c : conv_candidates(m_device.cudnn(), geo, *fusion, k_max_candidates, false)) {
          offered.push_back(std::move(c));
          fused.push_back(true);
        }
      }
      for (ConvCandidate& c : conv_candidates(m_device.cudnn(), geo, {}, k_max_candidates, false)) {
        offered.push_back(std::move(c));
        fused.push_back(false);
      }
      if (offered.empty()) throw Error(ErrorCode::unsupported, "cuda: cuDNN has no engine for " + where);
      size_t workspace = 0;
      for (const ConvCandidate& c : offered) workspace = std::max(workspace, c.plan.workspace());
      auto scratch = std::make_shared<DeviceBuffer>(workspace);
      for (size_t c = 0; c < offered.size(); ++c) {
        const std::string name = offered[c].choice.name() + (fused[c] ? " fused" : "");
        candidates.push_back({name, [this, &inst, &offered, &fused, c, i, scratch] {
                                return time_on_stream(m_device.stream(), [&] {
                                  run_conv(inst, i, offered[c].plan, fused[c], scratch->data());
                                });
                              }});
      }
      signature = conv_signature(geo, fusion ? &*fusion : nullptr);
      const builder::TacticChoice choice = builder::search_tactics(
          builder::layer_key(platform, 1, signature, candidates), candidates, settings, &timing_cache);
      layer.tactic.cudnn = offered[choice.index].choice;
      layer.tactic.fused = fused[choice.index];
      layer.tactic.name = choice.tactic;
      for (const auto& timing : choice.timings) {
        if (timing.tactic == choice.tactic) layer.tactic.time_ms = timing.time_ms;
      }
      inst.layers[i].conv.emplace(offered[choice.index].plan);
      inst.workspace_bytes = std::max(inst.workspace_bytes, inst.layers[i].conv->workspace());
    } else {
      const MatmulParts& parts = inst.layers[i].matmul_parts = matmul_parts(m_plan, layer, inst);
      LtMatmul probe(m_device.cublaslt(), parts.shape);
      const std::vector<LtAlgoBytes> algos = probe.candidates(k_max_candidates, k_max_matmul_workspace);
      if (algos.empty()) throw Error(ErrorCode::unsupported, "cuda: cuBLASLt has no algorithm for " + where);
      auto scratch = std::make_shared<DeviceBuffer>(k_max_matmul_workspace);
      std::vector<std::shared_ptr<LtMatmul>> matmuls;  // one per candidate, with its algorithm
      std::vector<size_t> algo_of;                     // by candidate: index into algos
      for (size_t c = 0; c < algos.size(); ++c) {
        auto mm = std::make_shared<LtMatmul>(m_device.cublaslt(), parts.shape);
        if (!mm->select(algos[c])) continue;
        uint64_t h = 1469598103934665603ull;
        for (uint8_t b : algos[c]) h = (h ^ b) * 1099511628211ull;
        char hex[17];
        std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
        candidates.push_back({"cublasLt:" + std::string(hex), [this, &inst, mm, i, scratch] {
                                return time_on_stream(m_device.stream(),
                                                      [&] { run_matmul(inst, i, *mm, scratch->data()); });
                              }});
        matmuls.push_back(std::move(mm));
        algo_of.push_back(c);
      }
      if (candidates.empty())
        throw Error(ErrorCode::unsupported, "cuda: cuBLASLt rejects every algorithm for " + where);
      signature = matmul_signature(parts.shape);
      const builder::TacticChoice choice = builder::search_tactics(
          builder::layer_key(platform, 1, signature, candidates), candidates, settings, &timing_cache);
      const size_t algo_index = algo_of[choice.index];
      layer.tactic.lt_algo.assign(algos[algo_index].begin(), algos[algo_index].end());
      layer.tactic.name = choice.tactic;
      for (const auto& timing : choice.timings) {
        if (timing.tactic == choice.tactic) layer.tactic.time_ms = timing.time_ms;
      }
      auto mm = std::make_unique<LtMatmul>(m_device.cublaslt(), parts.shape);
      mm->select(algos[algo_index]);
      inst.workspace_bytes = std::max(inst.workspace_bytes, mm->workspace());
      inst.layers[i].matmul = std::move(mm);
    }
    progress.advance();
  }
  progress.finish();
  inst.workspace = DeviceBuffer(inst.workspace_bytes);
}

std::unique_ptr<CudaEngine> CudaEngine::build(const ir::Graph& lowered, std::span<const InputSpec> specs,
                                              const CompileSettings& settings,
                                              builder::TimingCache& timing_cache,
                                              const Fingerprint& fingerprint) {
  check_engine_specs(lowered, specs, "cuda");
  // The partitioner checked each node on the whole model; an extracted
  // segment can differ (a shape value another segment computes arrives as
  // an input when it cannot be computed again), and a layer of a node the
  // GPU cannot run would compute garbage.
  for (ir::NodeId id = 0; id < static_cast<ir::NodeId>(lowered.num_nodes()); ++id) {
    if (auto why = unsupported_reason(lowered, id))
      throw Error(ErrorCode::unsupported, "cuda: " + lowered.node(id).describe() + ": " + *why);
  }
  Plan plan;
  plan.graph = lowered;
  plan.specs.assign(specs.begin(), specs.end());
  plan.layers = partition_layers(lowered);
  plan.fingerprint = fingerprint;
  plan.precision = storage_precision(settings.enabled_precisions);
  plan.layers = fuse_attention(lowered, std::move(plan.layers));
  // Weights leave the plan; their values go to the GPU.
  std::vector<std::pair<ValueId, Tensor>> weights;
  for (size_t i = 0; i < plan.graph.num_values(); ++i) {
    ir::Value& v = plan.graph.value(static_cast<ValueId>(i));
    if (!v.recipe || v.producer != k_no_node) continue;
    if (!v.initializer) {
      throw Error(ErrorCode::invalid_argument,
                  "cuda: weight '" + v.name + "' of the lowered graph has no value");
    }
    v.type = ir::ValueType::of(*v.initializer);
    weights.emplace_back(static_cast<ValueId>(i), std::move(*v.initializer));
    v.initializer.reset();
  }
  plan.source_weight_count = source_weight_count(plan.graph);
  std::unique_ptr<CudaEngine> engine(new CudaEngine(std::move(plan)));
  engine->upload_structural_constants();
  for (const auto& [v, host] : weights) engine->m_weight_bytes += engine->upload_constant(v, host);
  engine->m_device.synchronize();
  engine->prepare_matmul_weights();
  engine->prepare_conv_weights();
  engine->m_ready = true;
  std::vector<std::vector<int64_t>> opt;
  for (const InputSpec& s : engine->m_plan.specs) opt.push_back(s.opt);
  auto inst = engine->create_instance(opt);
  engine->choose_tactics(*inst, settings, timing_cache);
  engine->m_instances[opt] = std::move(inst);
  if (settings.debug) {
    for (const LayerReport& r : engine->info().layers) {
      log::info("cuda: layer '" + r.name + "' (" + r.op + "): " + r.tactic +
                (r.time_ms > 0 ? " " + std::to_string(r.time_ms) + " ms" : ""));
    }
  }
  return engine;
}

std::unique_ptr<CudaEngine> CudaEngine::from_plan(Plan plan) {
  const auto start = Clock::now();
  std::unique_ptr<CudaEngine> engine(new CudaEngine(std::move(plan)));
  log::info("cuda engine: device context (CUDA, cuDNN and cuBLASLt handles) in " + ms_text(ms_since(start)));
  engine->upload_structural_constants();
  // The instance at the opt shapes is made here, as a build makes it: its
  // cuDNN plans are finalized (some engines compile kernels then) and its
  // arena allocated as part of the load, whose time reports it, so the
  // first run after a cache hit costs what every other run costs.
  std::vector<std::vector<int64_t>> opt;
  for (const InputSpec& s : engine->m_plan.specs) opt.push_back(s.opt);
  engine->m_instances[opt] = engine->create_instance(opt);
  return engine;
}

Instance& CudaEngine::instance_for(const std::vector<std::vector<int64_t>>& shapes) {
  auto it = m_instances.find(shapes);
  if (it != m_instances.end()) return *it->second;
  // Every distinct shape set keeps its arena: bound the count, dropping the
  // oldest-made first (the opt instance is rebuilt on demand like any other).
  constexpr size_t k_max_instances = 4;
  if (m_instances.size() >= k_max_instances) {
    // A device run may still be using the instance's arena and graph.
    m_device.synchronize();
    m_instances.erase(m_instances.begin());
  }
  return *m_instances.emplace(shapes, create_instance(shapes)).first->second;
}

void CudaEngine::check_finished() const {
  check(cudaStreamSynchronize(m_device.stream()), "cuda engine run");
  check(cudaGetLastError(), "cuda engine run");
}

std::vector<Tensor> CudaEngine::execute(std::span<const Tensor> inputs, std::vector<LayerTiming>* timings) {
  if (!m_ready)
    throw Error(ErrorCode::invalid_argument, "cuda engine has no weights: refit() has not succeeded");
  check_engine_inputs(m_plan.graph, m_plan.specs, inputs, "cuda");
  std::vector<std::vector<int64_t>> shapes;
  for (const Tensor& t : inputs) shapes.push_back(t.shape());
  const Instance& inst = instance_for(shapes);
  const ir::Graph& g = m_plan.graph;
  const Tensors t{g, inst, [this](ValueId v) { return constant_ptr(v); }};
  const cudaStream_t stream = m_device.stream();
  // fp32 in, the storage precision inside: a half engine's first step casts
  // each input on the GPU, its last casts each output back.
  const ElemType type = m_plan.precision;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const ValueId v = g.inputs()[i];
    if (inst.offset[static_cast<size_t>(inst.root[static_cast<size_t>(v)])] < 0)
      continue;  // read by no layer
    void* landing = type == ElemType::f32 ? t.ptr(v) : inst.boundary.data();
    check(cudaMemcpyAsync(landing, inputs[i].bytes().data(), inputs[i].byte_size(), cudaMemcpyHostToDevice,
                          stream),
          "cudaMemcpyAsync(input)");
    if (type != ElemType::f32)
      launch_cast(ElemType::f32, type, landing, t.ptr(v), static_cast<int64_t>(inputs[i].numel()), stream);
  }
  for (size_t i = 0; i < m_plan.layers.size(); ++i) {
    if (!timings) {
      run_layer(inst, i, inst.workspace.data());
      continue;
    }
    const Layer& layer = m_plan.layers[i];
    if (layer.kind == LayerKind::shape) continue;  // no GPU work to time
    LayerTiming timing;
    timing.name = g.node(layer.anchor()).name;
    for (ir::NodeId id : layer.nodes) {
      timing.nodes.push_back(g.node(id).name);
      timing.op += (timing.op.empty() ? "" : "+") + g.node(id).op_type;
    }
    timing.tactic = reported_tactic(layer, m_plan.precision, m_layouts.of_layer(i));
    timing.kind = "cuda";
    timing.ms = time_on_stream(stream, [&] { run_layer(inst, i, inst.workspace.data()); });
    timings->push_back(std::move(timing));
  }
  std::vector<Tensor> outputs;
  for (ValueId v : g.outputs()) {
    Tensor out = Tensor::zeros(DType::float32, inst.shape(v));
    const void* from = t.ptr(m_layouts.output(v));  // NCHW at the boundary
    if (type != ElemType::f32) {
      launch_cast(type, ElemType::f32, from, inst.boundary.data(), static_cast<int64_t>(out.numel()), stream);
      from = inst.boundary.data();
    }
    check(cudaMemcpyAsync(out.mutable_bytes().data(), from, out.byte_size(), cudaMemcpyDeviceToHost, stream),
          "cudaMemcpyAsync(output)");
    outputs.push_back(std::move(out));
  }
  check_finished();
  return outputs;
}

std::vector<Tensor> CudaEngine::run(std::span<const Tensor> inputs) { return execute(inputs, nullptr); }

std::vector<Tensor> CudaEngine::run_profiled(std::span<const Tensor> inputs,
                                             std::vector<LayerTiming>& timings) {
  timings.clear();
  return execute(inputs, &timings);
}

std::vector<TensorDesc> CudaEngine::output_descs(std::span<const TensorDesc> inputs) {
  const ir::Graph& g = m_plan.graph;
  check_engine_inputs(g, m_plan.specs, inputs, "cuda");
  std::vector<std::vector<int64_t>> shapes;
  for (const TensorDesc& d : inputs) shapes.push_back(d.shape);
  const Instance& inst = instance_for(shapes);
  std::vector<TensorDesc> out;
  for (ValueId v : g.outputs()) out.push_back({g.value(v).type.dtype, inst.shape(v)});
  return out;
}

size_t CudaEngine::captured_graphs() const {
  size_t n = 0;
  for (const auto& [shapes, inst] : m_instances) n += inst->graph.captured();
  return n;
}

void CudaEngine::enqueue_layers(Instance& inst, bool use_graph) {
  auto eager = [this, &inst] {
    for (size_t i = 0; i < m_plan.layers.size(); ++i) run_layer(inst, i, inst.workspace.data());
  };
  const cudaStream_t stream = m_device.stream();
  if (!use_graph || !cuda_graphs_enabled() || inst.graph_failed || inst.device_runs++ == 0) {
    eager();
    return;
  }
  if (!inst.graph.captured()) {
    std::string why;
    if (!inst.graph.capture(
            stream, [](void* f) { (*static_cast<decltype(eager)*>(f))(); }, &eager, why)) {
      inst.graph_failed = true;
      log::warn("cuda engine: no CUDA graph for input shapes " + shape_to_string(inst.input_shapes.front()) +
                (inst.input_shapes.size() > 1 ? ",..." : "") + ": " + why + "; launching layer by layer");
      eager();
      return;
    }
  }
  inst.graph.launch(stream);
}

void CudaEngine::run_device(std::span<const DeviceTensor> inputs, std::span<const DeviceTensor> outputs,
                            void* stream) {
  if (!m_ready)
    throw Error(ErrorCode::invalid_argument, "cuda engine has no weights: refit() has not succeeded");
  const ir::Graph& g = m_plan.graph;
  std::vector<TensorDesc> descs;
  std::vector<std::vector<int64_t>> shapes;
  for (const DeviceTensor& t : inputs) {
    descs.push_back({t.dtype, t.shape});
    shapes.push_back(t.shape);
  }
  check_engine_inputs(g, m_plan.specs, descs, "cuda");
  if (outputs.size() != g.outputs().size()) {
    throw Error(ErrorCode::invalid_argument, "cuda engine has " + std::to_string(g.outputs().size()) +
                                                 " outputs, the caller gave " +
                                                 std::to_string(outputs.size()));
  }
  const int gpu = probe_gpu().gpu->device;
  ScopedDevice on_gpu(gpu);
  Instance& inst = instance_for(shapes);
  for (size_t i = 0; i < inputs.size(); ++i) {
    const std::string what = "input '" + g.value(g.inputs()[i]).name + "'";
    if (inputs[i].device != gpu) {
      throw Error(ErrorCode::invalid_argument, what + " is on CUDA device " +
                                                   std::to_string(inputs[i].device) +
                                                   ", the engine runs on device " + std::to_string(gpu));
    }
    check_device_pointer(inputs[i].data, inputs[i].byte_size(), gpu, what);
  }
  for (size_t o = 0; o < outputs.size(); ++o) {
    const ValueId v = g.outputs()[o];
    const std::string what = "output '" + g.value(v).name + "'";
    const DType dtype = g.value(v).type.dtype;
    if (outputs[o].dtype != dtype || outputs[o].shape != inst.shape(v)) {
      throw Error(ErrorCode::invalid_argument,
                  what + " is " + std::string(dtype_name(dtype)) + "[" + shape_to_string(inst.shape(v)) +
                      "], the caller's tensor is " + std::string(dtype_name(outputs[o].dtype)) + "[" +
                      shape_to_string(outputs[o].shape) + "]");
    }
    if (outputs[o].device != gpu) {
      throw Error(ErrorCode::invalid_argument, what + " is on CUDA device " +
                                                   std::to_string(outputs[o].device) +
                                                   ", the engine runs on device " + std::to_string(gpu));
    }
    check_device_pointer(outputs[o].data, outputs[o].byte_size(), gpu, what);
  }
  if (!m_caller_ready) {
    m_caller_ready = std::make_unique<Event>();
    m_done = std::make_unique<Event>();
  }
  const cudaStream_t caller = static_cast<cudaStream_t>(stream);
  const cudaStream_t own = m_device.stream();
  const Tensors t{g, inst, [this](ValueId v) { return constant_ptr(v); }};
  // The engine's stream starts after what the caller enqueued before this
  // call (the producer of the inputs, the last reader of the outputs).
  stream_wait(own, caller, *m_caller_ready);
  // Inputs into the arena and outputs out of it, device to device, at the
  // engine's fp32 boundary. An engine that stores activations in another
  // precision casts instead (from the caller's memory into the arena, and
  // back into the caller's), as its host path does.
  const ElemType type = m_plan.precision;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const ValueId v = g.inputs()[i];
    if (inst.offset[static_cast<size_t>(inst.root[static_cast<size_t>(v)])] < 0)
      continue;  // read by no layer
    if (type != ElemType::f32) {
      launch_cast(ElemType::f32, type, inputs[i].data, t.ptr(v),
                  static_cast<int64_t>(inputs[i].byte_size() / sizeof(float)), own);
      continue;
    }
    check(cudaMemcpyAsync(t.ptr(v), inputs[i].data, inputs[i].byte_size(), cudaMemcpyDeviceToDevice, own),
          "cudaMemcpyAsync(input)");
  }
  enqueue_layers(inst, true);
  for (size_t o = 0; o < outputs.size(); ++o) {
    const void* from = t.ptr(m_layouts.output(g.outputs()[o]));  // NCHW at the boundary
    if (type != ElemType::f32) {
      launch_cast(type, ElemType::f32, from, outputs[o].data,
                  static_cast<int64_t>(outputs[o].byte_size() / sizeof(float)), own);
      continue;
    }
    check(cudaMemcpyAsync(outputs[o].data, from, outputs[o].byte_size(), cudaMemcpyDeviceToDevice, own),
          "cudaMemcpyAsync(output)");
  }
  // What the caller enqueues after this call starts after the run.
  stream_wait(caller, own, *m_done);
  // A bad launch configuration shows here; faults inside kernels show at
  // the caller's next synchronisation, as for any asynchronous CUDA work.
  check(cudaGetLastError(), "cuda engine run");
}

void CudaEngine::refit(std::span<const Tensor> source_weights) {
  m_ready = false;
  // Captured graphs hold the weights' addresses, which an upload may move.
  for (auto& [shapes, inst] : m_instances) {
    inst->graph.reset();
    inst->graph_failed = false;
    inst->device_runs = 0;
  }
  if (source_weights.size() < static_cast<size_t>(m_plan.source_weight_count)) {
    throw Error(ErrorCode::invalid_argument, "refit: " + std::to_string(source_weights.size()) +
                                                 " source weights, the plan reads " +
                                                 std::to_string(m_plan.source_weight_count));
  }
  const ir::Graph& g = m_plan.graph;
  size_t bytes = 0;
  for (size_t i = 0; i < g.num_values(); ++i) {
    const ir::Value& v = g.value(static_cast<ValueId>(i));
    if (!v.recipe || v.producer != k_no_node) continue;
    Tensor t;
    try {
      t = passes::evaluate_recipe(*v.recipe, source_weights);
    } catch (const Error& e) {
      throw e.with_context("refit: weight '" + v.name + "': ");
    }
    if (!v.type.is_static() || t.dtype() != v.type.dtype || t.shape() != v.type.static_shape()) {
      throw Error(ErrorCode::invalid_argument,
                  "refit: weight '" + v.name + "' is " + std::string(dtype_name(t.dtype())) + "[" +
                      t.shape_string() + "], the plan has " + v.type.to_string());
    }
    bytes += upload_constant(static_cast<ValueId>(i), t);
  }
  m_device.synchronize();
  prepare_matmul_weights();
  prepare_conv_weights();
  m_weight_bytes = bytes;
  m_ready = true;
}

std::vector<std::byte> CudaEngine::serialize() const { return serialize_plan(m_plan); }

EngineInfo CudaEngine::info() const {
  EngineInfo out;
  const ir::Graph& g = m_plan.graph;
  for (size_t i = 0; i < m_plan.layers.size(); ++i) {
    const Layer& layer = m_plan.layers[i];
    LayerReport r;
    r.name = g.node(layer.anchor()).name;
    if (layer.kind == LayerKind::attention) {
      r.name = g.node(attention_nodes(g, layer)->match.softmax).name;
      r.op = "Attention";
    } else {
      for (ir::NodeId id : layer.nodes) r.op += (r.op.empty() ? "" : "+") + g.node(id).op_type;
    }
    r.tactic = reported_tactic(layer, m_plan.precision, m_layouts.of_layer(i));
    r.time_ms = layer.tactic.time_ms;
    out.layers.push_back(std::move(r));
  }
  for (const auto& [shapes, inst] : m_instances)
    out.activation_bytes = std::max(out.activation_bytes, inst->arena_bytes);
  out.weight_bytes = m_weight_bytes;
  return out;
}

}  // namespace kiln::cuda
