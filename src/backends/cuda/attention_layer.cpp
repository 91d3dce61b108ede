#include "backends/cuda/attention_layer.hpp"

#include <algorithm>
#include <map>

#include "backends/cuda/cuda_layers.hpp"
#include "util/log.hpp"

namespace kiln::cuda {

using ir::k_no_node;
using ir::k_no_value;
using ir::NodeId;
using ir::ValueId;

namespace {

bool is_slice_op(const ir::Node& n) { return n.op_type == "Slice" || n.op_type == "Split"; }

// The static size of a value's last dimension, or -1.
int64_t static_last_dim(const ir::Graph& g, ValueId v) {
  const auto& shape = g.value(v).type.shape;
  if (!shape || shape->empty() || !shape->back().is_static()) return -1;
  return shape->back().value();
}

size_t static_rank(const ir::Graph& g, ValueId v) {
  const auto& shape = g.value(v).type.shape;
  return shape ? shape->size() : 0;
}

// Why the kernel cannot take this attention; nullopt when it can.
std::optional<std::string> kernel_refuses(const ir::Graph& g, const passes::AttentionMatch& m) {
  const size_t rank = static_rank(g, m.q);
  if (rank != 3 && rank != 4) return "Q, K and V are not of rank 3 or 4";
  // A head dimension unknown here (a Reshape target computed from shapes)
  // is checked when an instance is made; heads wider than the kernel's are
  // rare (64 and 128 are the common widths).
  const int64_t d = static_last_dim(g, m.q), dv = static_last_dim(g, m.v);
  if (d > k_attention_max_dim || dv > k_attention_max_dim)
    return "a head dimension above " + std::to_string(k_attention_max_dim);
  if (m.scales.size() > std::tuple_size_v<decltype(AttentionArgs::scales)>) return "more than four scales";
  for (const passes::ScaleFactor& s : m.scales) {
    if (!is_constant(g, s.value)) return "a scale that is not a constant of the plan";
  }
  return std::nullopt;
}

}  // namespace

std::vector<Layer> fuse_attention(const ir::Graph& g, std::vector<Layer> layers) {
  std::vector<int> layer_of(g.num_nodes(), -1);
  std::map<ValueId, size_t> producer;  // layer index by the value it writes
  for (size_t l = 0; l < layers.size(); ++l) {
    for (NodeId n : layers[l].nodes) layer_of[static_cast<size_t>(n)] = static_cast<int>(l);
    producer[layers[l].output] = l;
  }
  const std::vector<int> readers = passes::attention_reader_counts(g);
  std::vector<bool> removed(layers.size(), false);
  for (size_t l = 0; l < layers.size(); ++l) {
    if (removed[l] || layers[l].kind != LayerKind::softmax) continue;
    const NodeId softmax = layers[l].anchor();
    std::string why;
    auto m = passes::match_attention(g, softmax, readers, &why);
    if (m) {
      if (auto refused = kernel_refuses(g, *m)) {
        why = *refused;
        m.reset();
      }
    }
    std::vector<size_t> parts;
    for (size_t k = 0; m && k < m->nodes.size(); ++k) {
      const int p = layer_of[static_cast<size_t>(m->nodes[k])];
      if (p < 0 || removed[static_cast<size_t>(p)] ||
          layers[static_cast<size_t>(p)].kind == LayerKind::shape) {
        why = "a node already taken";
        m.reset();
        break;
      }
      for (NodeId n : layers[static_cast<size_t>(p)].nodes) {
        if (std::find(m->nodes.begin(), m->nodes.end(), n) == m->nodes.end()) {
          why = "a fused layer reaches past the pattern (" + g.node(n).describe() + ")";
          m.reset();
          break;
        }
      }
      if (m && std::find(parts.begin(), parts.end(), static_cast<size_t>(p)) == parts.end())
        parts.push_back(static_cast<size_t>(p));
    }
    if (!m) {
      log::debug("cuda: " + g.node(softmax).describe() + " is not fused as attention: " + why);
      continue;
    }
    Layer fused;
    fused.kind = LayerKind::attention;
    // The operands' chains: Transpose layers, back to a gather layer or
    // to a value read elsewhere, each read only by the next (Kᵀ of a head
    // split is often a gather and a second Transpose).
    for (ValueId operand : {m->q, m->k_t, m->v}) {
      std::vector<size_t> chain;  // layer indices, last first
      ValueId v = operand;
      for (;;) {
        auto p = producer.find(v);
        if (p == producer.end() || removed[p->second] || readers[static_cast<size_t>(v)] != 1) break;
        const Layer& from = layers[p->second];
        if (from.kind != LayerKind::gather && from.kind != LayerKind::transpose) break;
        chain.push_back(p->second);
        if (from.kind == LayerKind::gather) break;
        v = g.node(from.anchor()).inputs[0];
      }
      for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
        fused.nodes.insert(fused.nodes.end(), layers[*it].nodes.begin(), layers[*it].nodes.end());
        removed[*it] = true;
      }
    }
    fused.nodes.insert(fused.nodes.end(), m->nodes.begin(), m->nodes.end());
    fused.output = m->output;
    const size_t last = *std::max_element(parts.begin(), parts.end());
    // The Transpose of the output, when it is a layer of its own and the
    // output's only reader.
    if (readers[static_cast<size_t>(m->output)] == 1) {
      for (size_t t = last + 1; t < layers.size(); ++t) {
        const Layer& after = layers[t];
        if (removed[t] || after.kind != LayerKind::transpose || after.nodes.size() != 1 ||
            g.node(after.anchor()).inputs[0] != m->output)
          continue;
        fused.nodes.push_back(after.anchor());
        fused.output = after.output;
        removed[t] = true;
        break;
      }
    }
    for (size_t p : parts) removed[p] = true;
    removed[last] = false;
    layers[last] = std::move(fused);
  }
  std::vector<Layer> kept;
  kept.reserve(layers.size());
  for (size_t l = 0; l < layers.size(); ++l) {
    if (!removed[l]) kept.push_back(std::move(layers[l]));
  }
  return kept;
}

std::optional<AttentionNodes> attention_nodes(const ir::Graph& g, const Layer& layer, std::string* why) {
  auto no = [&](const std::string& reason) -> std::optional<AttentionNodes> {
    if (why) *why = reason;
    return std::nullopt;
  };
  const std::vector<NodeId>& nodes = layer.nodes;
  auto softmax = std::find_if(nodes.begin(), nodes.end(), [&](NodeId n) {
    return n >= 0 && static_cast<size_t>(n) < g.num_nodes() && g.node(n).op_type == "Softmax";
  });
  if (softmax == nodes.end()) return no("no Softmax");
  AttentionNodes out;
  std::string reason;
  auto m = passes::match_attention(g, *softmax, passes::attention_reader_counts(g), &reason);
  if (!m) return no(reason);
  if (auto refused = kernel_refuses(g, *m)) return no(*refused);
  // nodes = chains ++ match ++ [output Transpose]
  auto start = std::search(nodes.begin(), nodes.end(), m->nodes.begin(), m->nodes.end());
  if (start == nodes.end()) return no("the matched attention's nodes are not in order in the layer");
  const std::vector<NodeId> prefix(nodes.begin(), start);
  const std::vector<NodeId> suffix(start + static_cast<std::ptrdiff_t>(m->nodes.size()), nodes.end());
  if (suffix.size() > 1) return no("more than one node after the attention");
  if (suffix.size() == 1) {
    const ir::Node& t = g.node(suffix[0]);
    if (t.op_type != "Transpose" || t.inputs.empty() || t.inputs[0] != m->output)
      return no("a node after the attention that is not a Transpose of its output");
    out.output_transpose = suffix[0];
  }
  if (layer.output != (suffix.empty() ? m->output : g.node(suffix[0]).outputs[0]))
    return no("the layer's output is not the attention's");
  auto in_prefix = [&](NodeId n) { return std::find(prefix.begin(), prefix.end(), n) != prefix.end(); };
  std::vector<NodeId> rebuilt;
  const std::array<ValueId, 3> operands{m->q, m->k_t, m->v};
  for (size_t i = 0; i < operands.size(); ++i) {
    std::vector<NodeId>& chain = out.chains[i];
    NodeId p = g.value(operands[i]).producer;
    if (p == k_no_node || !in_prefix(p)) continue;
    if (g.node(p).op_type != "Transpose") return no("an operand chain that does not end in a Transpose");
    // Back through views to the Slice or Split, within the prefix.
    for (;;) {
      chain.insert(chain.begin(), p);
      if (is_slice_op(g.node(p))) break;
      const NodeId before = g.value(g.node(p).inputs[0]).producer;
      if (before == k_no_node || !in_prefix(before)) break;
      p = before;
    }
    // [Slice or Split, views...] (a gather's head) or nothing, then Transposes.
    const auto first_transpose =
        std::find_if(chain.begin(), chain.end(), [&](NodeId n) { return g.node(n).op_type == "Transpose"; });
    const bool transposes_after =
        std::all_of(first_transpose, chain.end(), [&](NodeId n) { return g.node(n).op_type == "Transpose"; });
    bool head_fits = first_transpose == chain.begin() || is_slice_op(g.node(chain.front()));
    for (auto it = chain.begin() + 1; it < first_transpose && head_fits; ++it)
      head_fits = !is_slice_op(g.node(*it));
    if (!transposes_after || !head_fits)
      return no("an operand chain that is not [Slice or Split, views..., Transpose, Transpose...]");
    rebuilt.insert(rebuilt.end(), chain.begin(), chain.end());
  }
  if (rebuilt != prefix) return no("nodes before the attention that are not its operands' chains");
  out.match = std::move(*m);
  return out;
}

}  // namespace kiln::cuda
