#include "backends/cpu/attention_fusion.hpp"

#include <algorithm>

#include "util/log.hpp"

namespace kiln::cpu {

using ir::NodeId;

void fuse_attention_layers(const ir::Graph& g, std::vector<LayerDesc>& layers) {
  std::vector<int> layer_of(g.num_nodes(), -1);
  for (size_t l = 0; l < layers.size(); ++l) {
    for (NodeId n : layers[l].nodes) layer_of[static_cast<size_t>(n)] = static_cast<int>(l);
  }
  const std::vector<int> readers = attention_reader_counts(g);
  std::vector<bool> removed(layers.size(), false);
  for (size_t l = 0; l < layers.size(); ++l) {
    if (removed[l] || layers[l].kind != LayerKind::softmax) continue;
    const NodeId softmax = layers[l].anchor();
    std::string why;
    auto m = match_attention(g, softmax, readers, &why);
    std::vector<int> parts;
    if (m) {
      for (NodeId n : m->nodes) {
        const int p = layer_of[static_cast<size_t>(n)];
        if (p < 0 || removed[static_cast<size_t>(p)] ||
            layers[static_cast<size_t>(p)].kind == LayerKind::shape) {
          why = "a node already taken";
          m.reset();
          break;
        }
        if (std::find(parts.begin(), parts.end(), p) == parts.end()) parts.push_back(p);
      }
    }
    if (m) {
      for (int p : parts) {
        for (NodeId n : layers[static_cast<size_t>(p)].nodes) {
          if (std::find(m->nodes.begin(), m->nodes.end(), n) == m->nodes.end()) {
            why = "a fused layer reaches past the pattern (" + g.node(n).describe() + ")";
            m.reset();
            break;
          }
        }
        if (!m) break;
      }
    }
    if (!m) {
      log::debug("cpu: " + g.node(softmax).describe() + " is not fused as attention: " + why);
      continue;
    }
    const int last = *std::max_element(parts.begin(), parts.end());
    LayerDesc fused;
    fused.kind = LayerKind::attention;
    fused.nodes = m->nodes;
    fused.output = m->output;
    for (int p : parts) removed[static_cast<size_t>(p)] = true;
    removed[static_cast<size_t>(last)] = false;
    layers[static_cast<size_t>(last)] = std::move(fused);
  }
  std::vector<LayerDesc> kept;
  kept.reserve(layers.size());
  for (size_t l = 0; l < layers.size(); ++l) {
    if (!removed[l]) kept.push_back(std::move(layers[l]));
  }
  layers = std::move(kept);
}

}  // namespace kiln::cpu
