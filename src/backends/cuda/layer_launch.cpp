#include "backends/cuda/layer_launch.hpp"

#include <algorithm>
#include <array>
#include <string>
#include <vector>

#include "backends/cuda/cuda_layers.hpp"
#include "backends/cuda/kernels/kernels.hpp"
#include "backends/cuda/layer_parts.hpp"
#include "backends/cuda/precision.hpp"

namespace kiln::cuda {

using ir::k_no_value;
using ir::ValueId;

namespace {

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

// A gather chain's copy from x (its slice's input) into y: a gather
// layer's, or an attention operand's staged one.
void run_gather_chain(const ir::Graph& g, const Layer& layer, const GatherParts& p, const Instance& inst,
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

// One layer's launch at one instance: what every kind's launch reads.
struct LayerStep {
  const ir::Graph& g;
  const Layer& layer;
  const ir::Node& n;  // the layer's anchor
  const Instance& inst;
  const LayerExec& exec;
  const InstanceTensors& t;
  cudaStream_t stream;
  ElemType type;
  bool nhwc;  // the layer runs channels-last

  void run_unary() const;
  void run_binary() const;
  void run_pool() const;
  void run_reduce() const;
  void run_softmax() const;
  void run_layer_norm() const;
  void run_transpose() const;
  void run_concat() const;
  void run_slice() const;
  void run_gather() const;
  void run_attention() const;
  void run_expand() const;
};

void LayerStep::run_unary() const {
  launch_unary(*activation_of(g, n), type, t.in(n.inputs[0]), t.out(layer.output),
               numel(inst.shape(layer.output)), stream);
}

void LayerStep::run_binary() const {
  const auto& a = inst.shape(n.inputs[0]);
  const auto& b = inst.shape(n.inputs[1]);
  const auto& y = inst.shape(layer.output);
  launch_binary(binary_op_of(n), {}, type, t.in(n.inputs[0]), t.in(n.inputs[1]), t.out(layer.output),
                nhwc ? broadcast(channels_last_order(a), channels_last_order(b), channels_last_order(y))
                     : broadcast(a, b, y),
                stream);
}

void LayerStep::run_pool() const {
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
}

void LayerStep::run_reduce() const {
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
}

void LayerStep::run_softmax() const {
  const auto& x = inst.shape(n.inputs[0]);
  const int64_t cols = x.empty() ? 1 : x.back();
  launch_softmax(type, n.op_type == "LogSoftmax", t.in(n.inputs[0]), t.out(layer.output),
                 numel(x) / std::max<int64_t>(1, cols), cols, stream);
}

void LayerStep::run_layer_norm() const {
  const auto& x = inst.shape(n.inputs[0]);
  const int64_t cols = x.back();
  const ValueId beta = n.inputs.size() > 2 ? n.inputs[2] : k_no_value;
  launch_layer_norm(type, t.in(n.inputs[0]), t.in(n.inputs[1]), beta != k_no_value ? t.in(beta) : nullptr,
                    t.out(layer.output), numel(x) / std::max<int64_t>(1, cols), cols,
                    n.attrs.get_float("epsilon", 1e-5f), stream);
}

void LayerStep::run_transpose() const {
  const auto& x = inst.shape(n.inputs[0]);
  const std::vector<int64_t> perm = transpose_perm(n, x.size());
  std::vector<int> perm32(perm.begin(), perm.end());
  launch_transpose(type, t.in(n.inputs[0]), t.out(layer.output), static_cast<int>(x.size()), x.data(),
                   perm32.data(), stream);
}

void LayerStep::run_concat() const {
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
}

void LayerStep::run_slice() const {
  const auto& x = inst.shape(n.inputs[0]);
  std::vector<int64_t> y = inst.shape(layer.output);
  const SliceParts& p = exec.slice;
  // The kernel walks a window of x's rank: a dropped axis is a dim of 1.
  if (p.dropped_axis >= 0) y.insert(y.begin() + p.dropped_axis, 1);
  launch_slice(type, t.in(n.inputs[0]), t.out(layer.output), static_cast<int>(x.size()), x.data(),
               p.starts.data(), p.steps.data(), y.data(), stream);
}

void LayerStep::run_gather() const {
  run_gather_chain(g, layer, exec.gather, inst, t.in(n.inputs[0]), t.out(layer.output), type, stream);
}

void LayerStep::run_attention() const {
  const AttentionExec& e = *exec.attention;
  AttentionArgs a = e.args;
  std::array<const void*, 3> data{};
  for (size_t i = 0; i < 3; ++i) {
    const AttentionOperandExec& o = e.operands[i];
    if (o.staged) {
      run_gather_chain(g, o.chain, *o.staged_parts, inst, t.in(g.node(o.chain.anchor()).inputs[0]),
                       o.staged->data(), type, stream);
      data[i] = static_cast<const char*>(o.staged->data()) + o.offset * static_cast<int64_t>(elem_size(type));
    } else {
      data[i] = static_cast<const char*>(t.in(o.source)) + o.offset * static_cast<int64_t>(elem_size(type));
    }
  }
  a.q.data = data[0];
  a.k.data = data[1];
  a.v.data = data[2];
  const passes::AttentionMatch& m = e.nodes.match;
  if (m.mask != k_no_value) a.mask.data = t.in(m.mask);
  for (size_t i = 0; i < m.scales.size(); ++i) a.scales[i] = t.constant(m.scales[i].value);
  a.out = t.out(layer.output);
  launch_attention(type, a, stream);
}

void LayerStep::run_expand() const {
  const auto& y = inst.shape(layer.output);
  launch_strided_copy(type, t.in(n.inputs[0]), t.out(layer.output), static_cast<int>(y.size()), y.data(),
                      exec.expand_strides.data(), 0, numel(inst.shape(n.inputs[0])), stream);
}

}  // namespace

InstanceTensors LayerLauncher::tensors(const Instance& inst, size_t layer) const {
  return {m_plan.graph, inst, [&weights = m_weights](ValueId v) { return weights.constant(v); }, layer};
}

const void* LayerLauncher::conv_weight(const Instance& inst, size_t layer) const {
  const ValueId w = m_plan.graph.node(m_plan.layers[layer].anchor()).inputs[1];
  if (m_layouts.of_layer(layer) != Layout::nhwc) return tensors(inst).in(w);
  return m_weights.krsc_weight(w);
}

void LayerLauncher::run_conv(const Instance& inst, size_t index, const ConvPlan& plan, bool fused,
                             void* workspace) const {
  const ir::Graph& g = m_plan.graph;
  const Layer& layer = m_plan.layers[index];
  const ir::Node& n = g.node(layer.anchor());
  const InstanceTensors t = tensors(inst, index);
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

void LayerLauncher::run_matmul(const Instance& inst, size_t index, const LtMatmul& matmul,
                               void* workspace) const {
  const ir::Graph& g = m_plan.graph;
  const Layer& layer = m_plan.layers[index];
  const ir::Node& n = g.node(layer.anchor());
  const InstanceTensors t = tensors(inst, index);
  const MatmulParts& parts = inst.layers[index].matmul_parts;
  const void* w = m_weights.matmul_weight(index);
  if (!w) w = t.in(n.inputs[1]);
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

void LayerLauncher::run_conversions(const Instance& inst, const std::vector<size_t>& conversions) const {
  const InstanceTensors t = tensors(inst);
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

void LayerLauncher::run(const Instance& inst, size_t index, void* workspace) const {
  run_conversions(inst, m_layouts.before(index));
  run_kernels(inst, index, workspace);
  run_conversions(inst, m_layouts.after(index));
}

void LayerLauncher::run_kernels(const Instance& inst, size_t index, void* workspace) const {
  const ir::Graph& g = m_plan.graph;
  const Layer& layer = m_plan.layers[index];
  const ir::Node& n = g.node(layer.anchor());
  const InstanceTensors t = tensors(inst, index);
  const cudaStream_t stream = m_device.stream();
  const ElemType type = m_plan.precision;
  const bool nhwc = m_layouts.of_layer(index) == Layout::nhwc;
  const LayerStep step{g, layer, n, inst, inst.layers[index], t, stream, type, nhwc};
  switch (layer.kind) {
    case LayerKind::conv:
      run_conv(inst, index, *inst.layers[index].conv, layer.tactic.fused, workspace);
      return;
    case LayerKind::matmul:
      run_matmul(inst, index, *inst.layers[index].matmul, workspace);
      return;
    case LayerKind::unary:
      step.run_unary();
      return;
    case LayerKind::binary:
      step.run_binary();
      return;
    case LayerKind::pool:
      step.run_pool();
      return;
    case LayerKind::reduce:
      step.run_reduce();
      return;
    case LayerKind::softmax:
      step.run_softmax();
      return;
    case LayerKind::layer_norm:
      step.run_layer_norm();
      return;
    case LayerKind::transpose:
      step.run_transpose();
      return;
    case LayerKind::concat:
      step.run_concat();
      return;
    case LayerKind::slice:
      step.run_slice();
      return;
    case LayerKind::view:
      return;  // the output is the input's memory
    case LayerKind::shape:
      return;  // evaluated on the host when the instance was made
    case LayerKind::gather:
      step.run_gather();
      return;
    case LayerKind::attention:
      step.run_attention();
      return;
    case LayerKind::expand:
      step.run_expand();
      return;
  }
}

}  // namespace kiln::cuda
