// Constant folding: a node whose inputs are all structural constants (or
// whose outputs static inference already knows) is evaluated once, here, on
// the reference kernels, and its outputs become constants. Refittable
// weights are never folded into anything: their values must stay
// replaceable.
#include <algorithm>
#include <optional>
#include <string_view>

#include "passes/lowering_passes.hpp"
#include "passes/node_eval.hpp"

namespace kiln::passes {

using ir::k_no_value;
using ir::NodeId;
using ir::ValueId;

namespace {

// A folded tensor becomes part of the engine key and of every plan: past
// this size, computing it at run time is the better trade.
constexpr size_t k_max_folded_bytes = size_t{16} << 20;

bool is_random(std::string_view op) { return op.substr(0, 6) == "Random" || op == "Multinomial"; }

bool outputs_known(const ir::Graph& graph, const ir::Node& node) {
  for (ValueId out : node.outputs) {
    if (out != k_no_value && !graph.value(out).inferred_value) return false;
  }
  return !node.outputs.empty();
}

// The dims a live Shape node reports (its start/end attributes applied).
std::optional<ir::Dims> shape_dims(const GraphRewriter& rw, ValueId v) {
  NodeId p = rw.producer(v);
  if (p == ir::k_no_node) return std::nullopt;
  const ir::Node& shape = rw.graph().node(p);
  if (shape.op_type != "Shape" || shape.inputs.empty()) return std::nullopt;
  const ir::ValueType& t = rw.graph().value(shape.inputs[0]).type;
  if (!t.shape) return std::nullopt;
  const auto rank = static_cast<int64_t>(t.shape->size());
  auto clamp_axis = [&](int64_t a) { return std::clamp(a < 0 ? a + rank : a, int64_t{0}, rank); };
  const int64_t start = clamp_axis(shape.attrs.get_int("start", 0));
  const int64_t end = clamp_axis(shape.attrs.get_int("end", rank));
  if (start >= end) return ir::Dims{};
  return ir::Dims(t.shape->begin() + start, t.shape->begin() + end);
}

// Positions that a Slice (opset >= 10) of a 1-D tensor of `n` elements picks.
std::optional<std::vector<int64_t>> slice_positions(const ir::Graph& g, const ir::Node& slice, int64_t n) {
  if (slice.opset < 10 || slice.inputs.size() < 3) return std::nullopt;
  auto known = [&](size_t i) -> const Tensor* {
    return i < slice.inputs.size() && slice.inputs[i] != k_no_value ? structural_value(g, slice.inputs[i])
                                                                    : nullptr;
  };
  const Tensor* starts = known(1);
  const Tensor* ends = known(2);
  if (!starts || !ends || starts->numel() != 1 || ends->numel() != 1) return std::nullopt;
  if (slice.inputs.size() > 3 && slice.inputs[3] != k_no_value) {
    const Tensor* axes = known(3);
    if (!axes || axes->numel() != 1 || (axes->int_at(0) != 0 && axes->int_at(0) != -1)) return std::nullopt;
  }
  int64_t step = 1;
  if (slice.inputs.size() > 4 && slice.inputs[4] != k_no_value) {
    const Tensor* steps = known(4);
    if (!steps || steps->numel() != 1 || steps->int_at(0) == 0) return std::nullopt;
    step = steps->int_at(0);
  }
  int64_t s = starts->int_at(0), e = ends->int_at(0);
  if (s < 0) s += n;
  if (e < 0) e += n;
  std::vector<int64_t> picked;
  if (step > 0) {
    for (int64_t i = std::clamp<int64_t>(s, 0, n); i < std::clamp<int64_t>(e, 0, n); i += step)
      picked.push_back(i);
  } else {
    for (int64_t i = std::clamp<int64_t>(s, 0, n - 1); i > std::clamp<int64_t>(e, -1, n - 1); i += step) {
      picked.push_back(i);
    }
  }
  return picked;
}

// Gather or Slice of a Shape whose picked dims are all static, though the
// whole shape is not: the result is known before run time.
std::optional<Tensor> fold_partial_shape(const GraphRewriter& rw, const ir::Node& node) {
  if (node.inputs.empty() || node.outputs.size() != 1) return std::nullopt;
  auto dims = shape_dims(rw, node.inputs[0]);
  if (!dims) return std::nullopt;
  const auto n = static_cast<int64_t>(dims->size());
  std::vector<int64_t> positions;
  std::vector<int64_t> out_shape;
  if (node.op_type == "Gather") {
    const Tensor* indices = node.inputs.size() == 2 ? structural_value(rw.graph(), node.inputs[1]) : nullptr;
    if (!indices || node.attrs.get_int("axis", 0) != 0 || is_floating(indices->dtype())) return std::nullopt;
    for (int64_t i = 0; i < indices->numel(); ++i) {
      int64_t p = indices->int_at(i);
      if (p < 0) p += n;
      if (p < 0 || p >= n) return std::nullopt;
      positions.push_back(p);
    }
    out_shape = indices->shape();
  } else if (node.op_type == "Slice") {
    auto picked = slice_positions(rw.graph(), node, n);
    if (!picked) return std::nullopt;
    positions = std::move(*picked);
    out_shape = {static_cast<int64_t>(positions.size())};
  } else {
    return std::nullopt;
  }
  std::vector<int64_t> values;
  for (int64_t p : positions) {
    const ir::Dim& d = (*dims)[static_cast<size_t>(p)];
    if (!d.is_static()) return std::nullopt;
    values.push_back(d.value());
  }
  return Tensor::from_values<int64_t>(std::move(out_shape), values);
}

}  // namespace

void fold_constants(GraphRewriter& rewriter) {
  ir::Graph& graph = rewriter.graph();
  for (NodeId n : rewriter.live_order()) {
    const ir::Node& node = graph.node(n);
    if (node.outputs.empty() || is_random(node.op_type)) continue;

    std::vector<Tensor> results;
    if (auto partial = fold_partial_shape(rewriter, node)) {
      results.push_back(std::move(*partial));
    } else if (outputs_known(graph, node)) {
      for (ValueId out : node.outputs)
        results.push_back(out == k_no_value ? Tensor() : *graph.value(out).inferred_value);
    } else {
      // Only Constant may fold with no inputs at all.
      if (node.inputs.empty() && node.op_type != "Constant") continue;
      std::vector<const Tensor*> inputs;
      bool all_constant = true;
      for (ValueId in : node.inputs) {
        if (in == k_no_value) {
          inputs.push_back(nullptr);
          continue;
        }
        const Tensor* t = structural_value(graph, in);
        all_constant = all_constant && t != nullptr;
        inputs.push_back(t);
      }
      if (!all_constant) continue;
      std::optional<std::vector<Tensor>> evaluated;
      try {
        evaluated = evaluate_node(node, inputs, k_max_folded_bytes);
      } catch (const Error& e) {
        // Left for run time, where the backend reports it with full context.
        if (e.code() != ErrorCode::unsupported) throw;
      }
      if (!evaluated) continue;
      results = std::move(*evaluated);
    }
    for (size_t i = 0; i < node.outputs.size(); ++i) {
      if (node.outputs[i] == k_no_value) continue;
      ir::Value& v = graph.value(node.outputs[i]);
      v.initializer = results[i];
      v.inferred_value.reset();
      v.type = ir::ValueType::of(results[i]);
    }
    rewriter.remove_node(n);
  }
}

}  // namespace kiln::passes
