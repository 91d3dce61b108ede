#include "backends/cpu/channel_shuffle.hpp"

#include <vector>

namespace kiln::cpu {

using ir::k_no_node;
using ir::NodeId;
using ir::ValueId;

namespace {

// The one node reading `v`, when it is an `op` in a view layer and nothing
// else (a graph output included) reads `v`; k_no_node otherwise.
NodeId sole_view_reader(const InstanceBuilder& b, ValueId v, const char* op) {
  if (b.is_graph_output(v)) return k_no_node;
  const std::vector<NodeId> readers = b.readers(v);
  if (readers.size() != 1 || b.node(readers[0]).op_type != op ||
      b.layer_kind_of(readers[0]) != LayerKind::view)
    return k_no_node;
  return readers[0];
}

// A float tensor held as f32 or (in a bf16 build) as bf16: types the gather
// pass reads and writes.
bool gatherable_value(InstanceBuilder& b, ValueId v) {
  if (b.instance().types[static_cast<size_t>(v)].dtype != DType::float32) return false;
  if (b.gathered(v)) return true;
  const Dt dt = b.md_of(v).data_type();
  return dt == Dt::f32 || dt == Dt::bf16;
}

}  // namespace

bool build_gathered_shuffle(InstanceBuilder& b, LayerDesc& layer) {
  const ir::Node& n = b.node(layer.anchor());
  if (n.op_type != "Concat" || layer.nodes.size() != 1 || n.outputs.size() != 1) return false;
  const ValueId c = n.outputs[0];
  const std::vector<int64_t> dims = b.shape(c);
  int64_t axis = n.attrs.get_int("axis");
  if (axis < 0) axis += static_cast<int64_t>(dims.size());
  if (dims.size() != 4 || axis != 1 || !gatherable_value(b, c)) return false;
  for (ValueId v : n.inputs) {
    if (v == ir::k_no_value || !gatherable_value(b, v)) return false;
    const std::vector<int64_t>& s = b.shape(v);
    if (s.size() != 4 || s[0] != dims[0] || s[2] != dims[2] || s[3] != dims[3]) return false;
  }
  const NodeId split = sole_view_reader(b, c, "Reshape");
  if (split == k_no_node) return false;
  const ValueId r = b.node(split).outputs[0];
  const std::vector<int64_t>& rd = b.shape(r);
  if (rd.size() != 5 || rd[0] != dims[0] || rd[1] * rd[2] != dims[1] || rd[3] != dims[2] || rd[4] != dims[3])
    return false;
  const NodeId swap = sole_view_reader(b, r, "Transpose");
  if (swap == k_no_node || b.node(swap).attrs.get_ints("perm", {}) != std::vector<int64_t>{0, 2, 1, 3, 4})
    return false;
  const ValueId t = b.node(swap).outputs[0];
  const NodeId merge = sole_view_reader(b, t, "Reshape");
  if (merge == k_no_node) return false;
  const ValueId y = b.node(merge).outputs[0];
  if (b.shape(y) != dims || b.is_graph_output(y)) return false;
  // The Concat's channels in order, then the shuffle's: channel j * g + i of
  // y is channel i * (C / g) + j of the Concat.
  std::vector<ChannelSource> concat;
  for (ValueId v : n.inputs) {
    for (int64_t ch = 0; ch < b.shape(v)[1]; ++ch) concat.push_back({v, ch});
  }
  const int64_t groups = rd[1], per_group = rd[2];
  std::vector<ChannelSource> shuffled(concat.size());
  for (int64_t i = 0; i < groups; ++i) {
    for (int64_t j = 0; j < per_group; ++j) {
      shuffled[static_cast<size_t>(j * groups + i)] = concat[static_cast<size_t>(i * per_group + j)];
    }
  }
  b.define_gathered(y, std::move(shuffled));
  b.elide(c);
  b.elide(r);
  b.elide(t);
  layer.tactic.name = "gathered:channel_shuffle";
  return true;
}

bool part_of_gathered_shuffle(InstanceBuilder& b, LayerDesc& layer) {
  const ir::Node& n = b.node(layer.anchor());
  if (layer.nodes.size() != 1 || n.outputs.empty()) return false;
  const ValueKind kind = b.state(n.outputs[0]).kind;
  if (kind != ValueKind::elided && kind != ValueKind::gathered) return false;
  layer.tactic.name = "gathered:channel_shuffle";
  return true;
}

bool build_gathered_slice(InstanceBuilder& b, ValueId x, ValueId y, const Dims& starts, const Dims& steps) {
  const std::vector<ChannelSource>* from = b.gathered(x);
  if (!from || b.is_graph_output(y)) return false;
  const std::vector<int64_t>& in = b.shape(x);
  const std::vector<int64_t>& out = b.shape(y);
  if (in.size() != 4 || out.size() != 4) return false;
  for (size_t d = 0; d < 4; ++d) {
    if (d != 1 && (starts[d] != 0 || steps[d] != 1 || out[d] != in[d])) return false;
  }
  std::vector<ChannelSource> kept;
  for (int64_t k = 0; k < out[1]; ++k)
    kept.push_back(from->at(static_cast<size_t>(starts[1] + k * steps[1])));
  b.define_gathered(y, std::move(kept));
  return true;
}

}  // namespace kiln::cpu
