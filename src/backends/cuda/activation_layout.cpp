#include "backends/cuda/activation_layout.hpp"

#include <algorithm>
#include <limits>

#include "backends/cuda/cuda_layers.hpp"
#include "kiln/error.hpp"

namespace kiln::cuda {

using ir::k_no_value;
using ir::ValueId;

namespace {

constexpr size_t k_none = std::numeric_limits<size_t>::max();

bool is_one(const ir::Dim& d) { return d.is_static() && d.value() == 1; }

// Whether a value of rank <= 4, read as 4-D (leading dims of 1, as a
// broadcast pads it), has the same bytes in NCHW and NHWC: static C == 1,
// or static H == W == 1.
bool free_as_4d(const ir::Graph& g, ValueId v) {
  const ir::ValueType& t = g.value(v).type;
  if (!t.shape || t.shape->size() > 4) return false;
  ir::Dims d(4 - t.shape->size(), ir::Dim(1));
  d.insert(d.end(), t.shape->begin(), t.shape->end());
  return is_one(d[1]) || (is_one(d[2]) && is_one(d[3]));
}

bool rank_4(const ir::Graph& g, ValueId v) {
  const ir::ValueType& t = g.value(v).type;
  return t.shape && t.shape->size() == 4;
}

// The value a conv layer adds as its residual, if any.
ValueId residual(const ir::Graph& g, const Layer& layer) {
  if (layer.residual_add == ir::k_no_node) return k_no_value;
  return g.node(layer.residual_add).inputs[static_cast<size_t>(layer.residual_input)];
}

}  // namespace

const char* layout_name(Layout layout) { return layout == Layout::nhwc ? "NHWC" : "NCHW"; }

ActivationLayouts ActivationLayouts::assign(const ir::Graph& g, std::span<const Layer> layers,
                                            ElemType precision) {
  ActivationLayouts out;
  const size_t nv = g.num_values();
  out.m_graph_values = nv;
  out.m_value.assign(nv, Layout::nchw);
  out.m_free.assign(nv, false);
  out.m_four_d.assign(nv, false);
  out.m_layer.assign(layers.size(), Layout::nchw);
  out.m_copy.assign(nv, {k_no_value, k_no_value});
  out.m_before.resize(layers.size());
  out.m_after.resize(layers.size());
  for (size_t v = 0; v < nv; ++v) {
    const auto id = static_cast<ValueId>(v);
    out.m_four_d[v] = !is_constant(g, id) && rank_4(g, id);
    out.m_free[v] = out.m_four_d[v] && free_as_4d(g, id);
  }
  // A value a layer both writes and reads (the conv's output inside its
  // fused chain, a gather's slice) never lives in memory.
  for (const Layer& layer : layers) {
    for (ir::NodeId a : layer.nodes) {
      for (ir::NodeId b : layer.nodes) {
        for (ValueId v : g.node(a).outputs) {
          const auto& ins = g.node(b).inputs;
          if (v == k_no_value) continue;
          if (v != layer.output && std::find(ins.begin(), ins.end(), v) != ins.end())
            out.m_four_d[static_cast<size_t>(v)] = false;
        }
      }
    }
  }
  // fp32 engines keep NCHW: cuDNN's fp32 (non-TF32) kernels gain nothing
  // measured from channels-last.
  if (precision == ElemType::f32) return out;

  auto layout_of = [&](ValueId v) {
    return out.m_four_d[static_cast<size_t>(v)] ? out.m_value[static_cast<size_t>(v)] : Layout::nchw;
  };
  for (size_t i = 0; i < layers.size(); ++i) {
    const Layer& layer = layers[i];
    if (layer.kind == LayerKind::shape || layer.output == k_no_value) continue;  // host values, NCHW
    const ir::Node& n = g.node(layer.anchor());
    Layout mode = Layout::nchw;
    switch (layer.kind) {
      case LayerKind::conv: {
        const ValueId r = residual(g, layer);
        if (r == k_no_value || !is_constant(g, r)) mode = Layout::nhwc;
        break;
      }
      case LayerKind::pool:
      case LayerKind::reduce:
      case LayerKind::unary:
        mode = layout_of(n.inputs[0]);
        break;
      case LayerKind::binary: {
        bool any_nhwc = false, all_fit = true;
        for (ValueId in : n.inputs) {
          if (in == k_no_value) continue;
          if (layout_of(in) == Layout::nhwc) {
            any_nhwc = true;
          } else if (!free_as_4d(g, in)) {
            all_fit = false;
          }
        }
        if (any_nhwc && all_fit) mode = Layout::nhwc;
        break;
      }
      default:
        break;
    }
    // A layer writes NHWC only into a 4-D activation whose layout is recorded.
    if (!out.m_four_d[static_cast<size_t>(layer.output)]) mode = Layout::nchw;
    out.m_layer[i] = mode;
    if (out.m_four_d[static_cast<size_t>(layer.output)])
      out.m_value[static_cast<size_t>(layer.output)] = layer.kind == LayerKind::reduce ? Layout::nchw : mode;
  }

  // Conversions: where a reader's layout differs from a value's.
  std::vector<size_t> producer(nv, k_none);
  size_t first_gpu_layer = k_none;
  for (size_t i = 0; i < layers.size(); ++i) {
    if (layers[i].kind == LayerKind::shape || layers[i].output == k_no_value) continue;
    producer[static_cast<size_t>(layers[i].output)] = i;
    first_gpu_layer = std::min(first_gpu_layer, i);
  }
  auto need = [&](ValueId v, Layout to) {
    const auto sv = static_cast<size_t>(v);
    if (!out.m_four_d[sv] || out.m_free[sv] || out.m_value[sv] == to) return;
    ValueId& copy = out.m_copy[sv][static_cast<size_t>(to)];
    if (copy != k_no_value) return;
    LayoutConversion c;
    c.from = v;
    c.to = to;
    c.copy = static_cast<ValueId>(nv + out.m_conversions.size());
    if (producer[sv] != k_none) {
      c.layer = producer[sv];
    } else if (g.value(v).producer == ir::k_no_node && first_gpu_layer != k_none) {
      c.layer = first_gpu_layer;  // a graph input
      c.before = true;
    } else {
      throw Error(ErrorCode::internal,
                  "cuda engine: no layer writes '" + g.value(v).name + "', which is read in another layout");
    }
    copy = c.copy;
    (c.before ? out.m_before : out.m_after)[c.layer].push_back(out.m_conversions.size());
    out.m_conversions.push_back(c);
  };
  for (size_t i = 0; i < layers.size(); ++i) {
    const Layer& layer = layers[i];
    if (layer.kind == LayerKind::shape) continue;  // reads shapes, not memory
    for (ir::NodeId id : layer.nodes) {
      for (ValueId in : g.node(id).inputs) {
        if (in != k_no_value) need(in, out.m_layer[i]);
      }
    }
  }
  for (ValueId v : g.outputs()) need(v, Layout::nchw);
  return out;
}

Layout ActivationLayouts::of_value(ValueId v) const {
  const auto sv = static_cast<size_t>(v);
  return sv < m_value.size() && m_four_d[sv] ? m_value[sv] : Layout::nchw;
}

Layout ActivationLayouts::of_layer(size_t layer) const {
  return layer < m_layer.size() ? m_layer[layer] : Layout::nchw;
}

bool ActivationLayouts::layout_free(ValueId v) const {
  const auto sv = static_cast<size_t>(v);
  return sv < m_free.size() && m_free[sv];
}

namespace {

ValueId copy_or_self(ValueId v, Layout want, const std::vector<Layout>& value,
                     const std::vector<bool>& four_d, const std::vector<bool>& free,
                     const std::vector<std::array<ValueId, 2>>& copies) {
  const auto sv = static_cast<size_t>(v);
  if (v == k_no_value || sv >= value.size() || !four_d[sv] || free[sv] || value[sv] == want) return v;
  const ValueId copy = copies[sv][static_cast<size_t>(want)];
  if (copy == k_no_value) {
    throw Error(ErrorCode::internal, "cuda engine: value " + std::to_string(v) + " is stored " +
                                         layout_name(value[sv]) + " and has no " + layout_name(want) +
                                         " copy for its reader");
  }
  return copy;
}

}  // namespace

ValueId ActivationLayouts::read(size_t layer, ValueId v) const {
  return copy_or_self(v, of_layer(layer), m_value, m_four_d, m_free, m_copy);
}

ValueId ActivationLayouts::output(ValueId v) const {
  return copy_or_self(v, Layout::nchw, m_value, m_four_d, m_free, m_copy);
}

const std::vector<size_t>& ActivationLayouts::before(size_t layer) const {
  static const std::vector<size_t> none;
  return layer < m_before.size() ? m_before[layer] : none;
}

const std::vector<size_t>& ActivationLayouts::after(size_t layer) const {
  static const std::vector<size_t> none;
  return layer < m_after.size() ? m_after[layer] : none;
}

size_t ActivationLayouts::nhwc_values() const {
  size_t n = 0;
  for (size_t v = 0; v < m_value.size(); ++v) n += m_four_d[v] && m_value[v] == Layout::nhwc;
  return n;
}

std::string ActivationLayouts::summary(const ir::Graph& g) const {
  const size_t four_d = static_cast<size_t>(std::count(m_four_d.begin(), m_four_d.end(), true));
  std::string s = std::to_string(nhwc_values()) + " of " + std::to_string(four_d) +
                  " 4-D activations NHWC; " + std::to_string(m_conversions.size()) + " layout conversion" +
                  (m_conversions.size() == 1 ? "" : "s");
  for (size_t i = 0; i < m_conversions.size(); ++i) {
    s += (i == 0 ? ": '" : ", '") + g.value(m_conversions[i].from).name + "' to " +
         layout_name(m_conversions[i].to);
  }
  return s;
}

}  // namespace kiln::cuda
