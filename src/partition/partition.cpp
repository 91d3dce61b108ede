#include "partition/partition.hpp"

#include <algorithm>
#include <map>
#include <queue>

#include "ir/op_schema.hpp"

namespace kiln::partition {

using ir::k_no_node;
using ir::k_no_value;
using ir::NodeId;
using ir::ValueId;

std::vector<ir::ValueType> types_at(const ir::Graph& lowered, std::span<const InputSpec> specs,
                                    const std::vector<int64_t> InputSpec::*which) {
  ir::Graph copy = lowered;
  for (size_t i = 0; i < copy.inputs().size() && i < specs.size(); ++i) {
    ir::Value& v = copy.value(copy.inputs()[i]);
    v.type = ir::ValueType::of_static(specs[i].dtype, specs[i].*which);
  }
  // Declared intermediate shapes would mask what inference finds.
  std::vector<bool> is_input(copy.num_values(), false);
  for (ValueId id : copy.inputs()) is_input[static_cast<size_t>(id)] = true;
  for (size_t v = 0; v < copy.num_values(); ++v) {
    ir::Value& value = copy.value(static_cast<ValueId>(v));
    if (!is_input[v] && !value.initializer && value.producer != k_no_node) {
      value.type.shape.reset();
      value.inferred_value.reset();
    }
  }
  ir::infer_shapes(copy);
  std::vector<ir::ValueType> types;
  types.reserve(copy.num_values());
  for (size_t v = 0; v < copy.num_values(); ++v) types.push_back(copy.value(static_cast<ValueId>(v)).type);
  return types;
}

namespace {

// Whether `value` has a static shape at every corner of the input range.
bool is_static_everywhere(ValueId value, std::span<const std::vector<ir::ValueType>> corners) {
  for (const auto& types : corners) {
    if (!types[static_cast<size_t>(value)].is_static()) return false;
  }
  return true;
}

}  // namespace

std::vector<Segment> plan_segments(const ir::Graph& lowered, const Backend& backend,
                                   std::span<const InputSpec> specs, int min_block_size) {
  const size_t n_nodes = lowered.num_nodes();
  // Shapes at the range's corners cost three inferences over a graph copy;
  // a graph the backend fully supports (every cache hit of a supported
  // model) never needs them.
  std::vector<std::vector<ir::ValueType>> corners;
  auto corner_types = [&]() -> std::span<const std::vector<ir::ValueType>> {
    if (corners.empty()) {
      for (auto which : {&InputSpec::min, &InputSpec::opt, &InputSpec::max}) {
        corners.push_back(types_at(lowered, specs, which));
      }
    }
    return corners;
  };
  // Inside an engine, shapes that static inference cannot tell are fine: the
  // engine infers them at run time. A tensor that comes out of a fallback
  // node into an engine must have a shape known over the whole range, since
  // it becomes an engine input with a min/opt/max spec.
  std::vector<std::optional<std::string>> refusal(n_nodes);
  for (NodeId id : lowered.topological_order()) {
    auto n = static_cast<size_t>(id);
    refusal[n] = backend.unsupported_reason(lowered, id);
    if (refusal[n]) continue;
    for (ValueId in : lowered.node(id).inputs) {
      if (in == k_no_value) continue;
      NodeId producer = lowered.value(in).producer;
      if (producer != k_no_node && refusal[static_cast<size_t>(producer)] &&
          !is_static_everywhere(in, corner_types())) {
        refusal[n] =
            "input '" + lowered.value(in).name + "' comes from a fallback node and its shape depends on data";
        break;
      }
    }
  }

  // Kahn's algorithm with two ready queues, ordered by node id for
  // determinism: engine nodes first, fallback nodes only when no engine node
  // is ready.
  std::vector<int> waiting(n_nodes, 0);
  std::vector<std::vector<NodeId>> users(lowered.num_values());
  for (size_t n = 0; n < n_nodes; ++n) {
    for (ValueId in : lowered.node(static_cast<NodeId>(n)).inputs) {
      if (in == k_no_value) continue;
      NodeId producer = lowered.value(in).producer;
      if (producer == k_no_node) continue;
      ++waiting[n];
      users[static_cast<size_t>(in)].push_back(static_cast<NodeId>(n));
    }
  }
  using Queue = std::priority_queue<NodeId, std::vector<NodeId>, std::greater<>>;
  Queue ready_engine, ready_fallback;
  auto push = [&](NodeId n) { (refusal[static_cast<size_t>(n)] ? ready_fallback : ready_engine).push(n); };
  for (size_t n = 0; n < n_nodes; ++n) {
    if (waiting[n] == 0) push(static_cast<NodeId>(n));
  }
  std::vector<Segment> segments;
  auto take = [&](Queue& queue, bool engine) {
    NodeId n = queue.top();
    queue.pop();
    if (segments.empty() || segments.back().engine != engine) {
      segments.push_back(Segment{engine, {}, engine ? "" : *refusal[static_cast<size_t>(n)]});
    }
    segments.back().nodes.push_back(n);
    for (ValueId out : lowered.node(n).outputs) {
      if (out == k_no_value) continue;
      for (NodeId user : users[static_cast<size_t>(out)]) {
        if (--waiting[static_cast<size_t>(user)] == 0) push(user);
      }
    }
  };
  size_t taken = 0;
  while (taken < n_nodes) {
    if (!ready_engine.empty()) {
      take(ready_engine, true);
    } else if (!ready_fallback.empty()) {
      // All ready fallback nodes go together, so the next engine segment
      // sees as many of its inputs computed as possible: those ready now,
      // not the ones they make ready (a chain of fallback nodes with low ids
      // would otherwise go first and defer the others past the next engine
      // segment, splitting it).
      Queue now;
      std::swap(now, ready_fallback);
      const size_t count = now.size();
      for (size_t i = 0; i < count; ++i) take(now, false);
      taken += count - 1;
    } else {
      throw Error(ErrorCode::invalid_model, lowered.source + ": the graph has a cycle");
    }
    ++taken;
  }

  // Too-small engine segments fall back; neighbouring fallbacks merge.
  std::vector<Segment> merged;
  for (Segment& s : segments) {
    if (s.engine && static_cast<int>(s.nodes.size()) < min_block_size) {
      s.engine = false;
      s.fallback_reason = std::to_string(s.nodes.size()) + " supported node(s), fewer than min_block_size " +
                          std::to_string(min_block_size);
    }
    if (!merged.empty() && !merged.back().engine && !s.engine) {
      merged.back().nodes.insert(merged.back().nodes.end(), s.nodes.begin(), s.nodes.end());
    } else {
      merged.push_back(std::move(s));
    }
  }
  return merged;
}

std::vector<bool> recomputable_shape_values(const ir::Graph& lowered, std::span<const ir::ValueType> at_min,
                                            std::span<const ir::ValueType> at_opt,
                                            std::span<const ir::ValueType> at_max) {
  auto static_everywhere = [&](ValueId v) {
    const auto i = static_cast<size_t>(v);
    return at_min[i].is_static() && at_opt[i].is_static() && at_max[i].is_static();
  };
  // Shape vectors and the indices, sizes and scalars made from them; a
  // larger tensor is better received than computed twice.
  constexpr int64_t k_max_elements = 64;
  auto small_integer = [&](ValueId v) {
    const ir::ValueType& t = at_max[static_cast<size_t>(v)];
    return (t.dtype == DType::int64 || t.dtype == DType::int32) && static_everywhere(v) &&
           shape_numel(t.static_shape()) <= k_max_elements;
  };
  auto constant = [&](ValueId v) {
    const ir::Value& value = lowered.value(v);
    return (value.initializer && !value.recipe) || value.inferred_value.has_value();
  };
  std::vector<bool> recompute(lowered.num_values(), false);
  for (NodeId id : lowered.topological_order()) {
    const ir::Node& n = lowered.node(id);
    if (!n.domain.empty() && n.domain != "ai.onnx") continue;
    bool ok = false;
    if (n.op_type == "Shape" || n.op_type == "Size") {
      ok = !n.inputs.empty() && n.inputs[0] != k_no_value && static_everywhere(n.inputs[0]);
    } else if (!n.inputs.empty() && n.op_type.rfind("Random", 0) != 0) {
      ok = true;
      for (ValueId in : n.inputs) {
        if (in != k_no_value && !recompute[static_cast<size_t>(in)] && !constant(in)) ok = false;
      }
    }
    if (!ok) continue;
    for (ValueId out : n.outputs) {
      if (out != k_no_value && !small_integer(out)) ok = false;
    }
    if (!ok) continue;
    for (ValueId out : n.outputs) {
      if (out != k_no_value) recompute[static_cast<size_t>(out)] = true;
    }
  }
  return recompute;
}

Subgraph extract_subgraph(const ir::Graph& lowered, const Segment& segment,
                          const std::vector<bool>& recompute) {
  auto recomputed = [&](ValueId v) { return !recompute.empty() && recompute[static_cast<size_t>(v)]; };
  Subgraph sub;
  sub.graph.source = lowered.source;
  std::vector<bool> inside(lowered.num_nodes(), false);
  for (NodeId n : segment.nodes) inside[static_cast<size_t>(n)] = true;

  // Values read after the segment: by nodes outside it, or as graph outputs.
  // A recomputed value is not read itself: the values its nodes read are.
  std::vector<bool> read_outside(lowered.num_values(), false);
  auto mark_read = [&](auto&& self, ValueId v) -> void {
    if (!recomputed(v)) {
      read_outside[static_cast<size_t>(v)] = true;
      return;
    }
    for (ValueId in : lowered.node(lowered.value(v).producer).inputs) {
      if (in != k_no_value) self(self, in);
    }
  };
  for (size_t n = 0; n < lowered.num_nodes(); ++n) {
    if (inside[n]) continue;
    for (ValueId in : lowered.node(static_cast<NodeId>(n)).inputs) {
      if (in != k_no_value) mark_read(mark_read, in);
    }
  }
  for (ValueId out : lowered.outputs()) read_outside[static_cast<size_t>(out)] = true;

  std::map<ValueId, ValueId> local;  // parent value → subgraph value
  std::map<int32_t, int32_t> local_source;
  auto renumber = [&](auto&& self, ir::WeightRecipe& recipe) -> void {
    if (recipe.op == ir::WeightRecipe::Op::source) {
      auto [it, added] = local_source.emplace(recipe.index, static_cast<int32_t>(local_source.size()));
      if (added) sub.sources.push_back(recipe.index);
      recipe.index = it->second;
    }
    for (auto& arg : recipe.args) self(self, arg);
  };
  auto add_node = [&](auto&& map, NodeId n) {
    ir::Node node = lowered.node(n);
    for (ValueId& in : node.inputs) {
      if (in != k_no_value) in = map(map, in);
    }
    for (ValueId& out : node.outputs) {
      if (out == k_no_value) continue;
      const ir::Value& v = lowered.value(out);
      ValueId id = sub.graph.add_value(v.name, v.type);
      sub.graph.value(id).inferred_value = v.inferred_value;
      local.emplace(out, id);
      out = id;
    }
    sub.graph.add_node(std::move(node));
  };
  auto map_input = [&](auto&& self, ValueId parent) -> ValueId {
    if (auto it = local.find(parent); it != local.end()) return it->second;
    const ir::Value& v = lowered.value(parent);
    ValueId id;
    if (recomputed(parent) && !v.inferred_value && !inside[static_cast<size_t>(v.producer)]) {
      // Computed again here, after the values it reads.
      add_node(self, v.producer);
      return local.at(parent);
    }
    if (v.initializer) {
      id = sub.graph.add_initializer(v.name, *v.initializer);
      ir::Value& copy = sub.graph.value(id);
      copy.type = v.type;
      copy.placeholder = v.placeholder;
      if (v.recipe) {
        copy.recipe = v.recipe;
        renumber(renumber, *copy.recipe);
      }
    } else if (v.producer != k_no_node && v.inferred_value) {
      // Computed outside but known before run time: a constant here.
      id = sub.graph.add_initializer(v.name, *v.inferred_value);
    } else {
      id = sub.graph.add_value(v.name, v.type);
      sub.graph.add_input(id);
      sub.inputs.push_back(parent);
    }
    local.emplace(parent, id);
    return id;
  };
  for (NodeId n : segment.nodes) add_node(map_input, n);
  for (NodeId n : segment.nodes) {
    for (ValueId out : lowered.node(n).outputs) {
      if (out != k_no_value && read_outside[static_cast<size_t>(out)]) {
        sub.graph.add_output(local.at(out));
        sub.outputs.push_back(out);
      }
    }
  }
  return sub;
}

std::optional<std::string> first_unsupported_node(const Backend& backend, const ir::Graph& graph) {
  for (NodeId id = 0; id < static_cast<NodeId>(graph.num_nodes()); ++id) {
    if (auto why = backend.unsupported_reason(graph, id)) return graph.node(id).describe() + ": " + *why;
  }
  return std::nullopt;
}

std::optional<std::vector<InputSpec>> subgraph_specs(const Subgraph& sub,
                                                     std::span<const ir::ValueType> at_min,
                                                     std::span<const ir::ValueType> at_opt,
                                                     std::span<const ir::ValueType> at_max) {
  std::vector<InputSpec> specs;
  for (size_t i = 0; i < sub.inputs.size(); ++i) {
    auto v = static_cast<size_t>(sub.inputs[i]);
    if (!at_min[v].is_static() || !at_opt[v].is_static() || !at_max[v].is_static()) return std::nullopt;
    specs.push_back(InputSpec{sub.graph.value(sub.graph.inputs()[i]).name, at_opt[v].dtype,
                              at_min[v].static_shape(), at_opt[v].static_shape(), at_max[v].static_shape()});
  }
  return specs;
}

}  // namespace kiln::partition
