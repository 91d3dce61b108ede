// EngineKey: the canonical serialization of each part, and the final digest.
#include "key/engine_key.hpp"

#include <algorithm>
#include <map>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <variant>
#include <vector>

#include "kiln/error.hpp"

namespace kiln::key {

using ir::k_no_node;
using ir::k_no_value;
using ir::NodeId;
using ir::ValueId;

namespace {

void hash_dtype(KeyHasher& h, DType dtype) { h.i64(static_cast<int64_t>(dtype)); }

// dtype, shape and every byte: for structural constants and tensor attributes.
void hash_tensor(KeyHasher& h, const Tensor& t) {
  h.tag(Tag::tensor);
  hash_dtype(h, t.dtype());
  h.ints(t.shape());
  h.bytes(t.bytes());
}

void hash_recipe(KeyHasher& h, const ir::WeightRecipe& r) {
  h.tag(Tag::recipe);
  h.u64(static_cast<uint64_t>(r.op));
  h.i64(r.index);
  h.ints(r.ints);
  h.u64(r.floats.size());
  for (float f : r.floats) h.f32(f);
  h.u64(r.args.size());
  for (const ir::WeightRecipe& a : r.args) hash_recipe(h, a);
}

void hash_attribute(KeyHasher& h, const ir::AttributeValue& value) {
  std::visit(
      [&h](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, int64_t>) {
          h.tag(Tag::value_int);
          h.i64(v);
        } else if constexpr (std::is_same_v<T, float>) {
          h.tag(Tag::value_float);
          h.f32(v);
        } else if constexpr (std::is_same_v<T, std::string>) {
          h.tag(Tag::value_string);
          h.str(v);
        } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
          h.tag(Tag::value_ints);
          h.ints(v);
        } else if constexpr (std::is_same_v<T, std::vector<float>>) {
          h.tag(Tag::value_floats);
          h.u64(v.size());
          for (float f : v) h.f32(f);
        } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          h.tag(Tag::value_strings);
          h.u64(v.size());
          for (const std::string& s : v) h.str(s);
        } else {
          static_assert(std::is_same_v<T, Tensor>);
          h.tag(Tag::value_tensor);
          hash_tensor(h, v);
        }
      },
      value);
}

// Walks the graph once, numbering everything by position, never by name.
class GraphSerializer {
 public:
  GraphSerializer(const ir::Graph& graph, KeyHasher& hasher)
      : m_graph(graph), m_h(hasher), m_order(graph.topological_order()) {
    for (size_t p = 0; p < m_order.size(); ++p) m_position[m_order[p]] = p;
    for (size_t i = 0; i < graph.inputs().size(); ++i) m_input_index.emplace(graph.inputs()[i], i);
  }

  void run() {
    hash_graph_inputs();
    for (size_t p = 0; p < m_order.size(); ++p) hash_node(p, m_graph.node(m_order[p]));
    m_h.tag(Tag::graph_outputs);
    m_h.u64(m_graph.outputs().size());
    for (ValueId v : m_graph.outputs()) hash_operand(v);
  }

 private:
  // Declared dtype and dims. Symbols are numbered by first appearance, so
  // "batch" and "N" agree while two inputs sharing a symbol still differ
  // from two inputs with independent ones.
  void hash_graph_inputs() {
    m_h.tag(Tag::graph_inputs);
    m_h.u64(m_graph.inputs().size());
    for (size_t i = 0; i < m_graph.inputs().size(); ++i) {
      const ir::ValueType& type = m_graph.value(m_graph.inputs()[i]).type;
      m_h.tag(Tag::graph_input);
      m_h.u64(i);
      hash_dtype(m_h, type.dtype);
      hash_dims(type);
    }
  }

  void hash_dims(const ir::ValueType& type) {
    if (!type.shape) {
      m_h.tag(Tag::rank_unknown);
      return;
    }
    m_h.u64(type.shape->size());
    for (const ir::Dim& d : *type.shape) {
      if (d.is_static()) {
        m_h.tag(Tag::dim_static);
        m_h.i64(d.value());
      } else if (d.is_symbolic()) {
        auto [it, inserted] = m_symbols.emplace(d.symbol_name(), m_symbols.size());
        m_h.tag(Tag::dim_symbol);
        m_h.u64(it->second);
      } else {
        m_h.tag(Tag::dim_unknown);
      }
    }
  }

  void hash_node(size_t position, const ir::Node& node) {
    m_h.tag(Tag::node);
    m_h.u64(position);
    m_h.tag(Tag::op_type);
    m_h.str(node.op_type);
    m_h.tag(Tag::domain);
    // "ai.onnx" and "" name the same operator set.
    m_h.str(node.domain == "ai.onnx" ? std::string_view() : std::string_view(node.domain));
    m_h.tag(Tag::opset);
    m_h.i64(node.opset);
    m_h.u64(node.attrs.all().size());
    for (const auto& [name, value] : node.attrs.all()) {  // std::map: sorted by name
      m_h.tag(Tag::attribute);
      m_h.str(name);
      hash_attribute(m_h, value);
    }
    m_h.tag(Tag::node_inputs);
    m_h.u64(node.inputs.size());
    for (ValueId v : node.inputs) hash_operand(v);
    // Which optional outputs exist can change what a node computes.
    m_h.tag(Tag::node_outputs);
    m_h.u64(node.outputs.size());
    for (ValueId v : node.outputs) m_h.u64(v == k_no_value ? 0 : 1);
  }

  // An operand is identified by where it comes from; the first reference to
  // a weight or constant (or a result static inference already knows) also
  // carries its description, later ones only the identity.
  void hash_operand(ValueId id) {
    if (id == k_no_value) {
      m_h.tag(Tag::operand_none);
      return;
    }
    if (auto it = m_input_index.find(id); it != m_input_index.end()) {
      m_h.tag(Tag::operand_input);
      m_h.u64(it->second);
      return;
    }
    const ir::Value& v = m_graph.value(id);
    bool first = m_seen.insert(id).second;
    if (v.producer != k_no_node) {
      auto pos = m_position.find(v.producer);
      if (pos == m_position.end()) {
        throw Error(ErrorCode::internal, "engine key: value produced by a node missing from the graph");
      }
      m_h.tag(Tag::operand_result);
      m_h.u64(pos->second);
      m_h.u64(static_cast<uint64_t>(v.producer_output));
      if (first && v.inferred_value) {
        // Static inference knew it; a builder may treat it as a constant.
        m_h.tag(Tag::known_value);
        hash_tensor(m_h, *v.inferred_value);
      }
      return;
    }
    if (v.recipe) {
      m_h.tag(Tag::operand_weight);
      m_h.u64(ordinal(m_weights, id));
      if (first) {
        m_h.tag(Tag::first_use);
        if (v.initializer) {
          hash_dtype(m_h, v.initializer->dtype());
          m_h.u64(v.initializer->shape().size());
          for (int64_t d : v.initializer->shape()) {
            m_h.tag(Tag::dim_static);
            m_h.i64(d);
          }
        } else {
          hash_dtype(m_h, v.type.dtype);
          hash_dims(v.type);
        }
        hash_recipe(m_h, *v.recipe);
      }
      return;
    }
    if (const Tensor* t = v.known_value()) {
      m_h.tag(Tag::operand_constant);
      m_h.u64(ordinal(m_constants, id));
      if (first) {
        m_h.tag(Tag::first_use);
        hash_tensor(m_h, *t);
      }
      return;
    }
    // Neither an input nor produced nor known: should not occur in a valid
    // graph, but it still gets a name-free identity.
    m_h.tag(Tag::operand_unbound);
    m_h.u64(ordinal(m_unbound, id));
  }

  static uint64_t ordinal(std::unordered_map<ValueId, uint64_t>& map, ValueId id) {
    return map.emplace(id, map.size()).first->second;
  }

  const ir::Graph& m_graph;
  KeyHasher& m_h;
  std::vector<NodeId> m_order;
  // Lookups only: no iteration over these unordered containers reaches the hash.
  std::unordered_map<NodeId, size_t> m_position;
  std::unordered_map<ValueId, size_t> m_input_index;
  std::unordered_map<ValueId, uint64_t> m_weights;
  std::unordered_map<ValueId, uint64_t> m_constants;
  std::unordered_map<ValueId, uint64_t> m_unbound;
  std::unordered_set<ValueId> m_seen;
  std::map<std::string, uint64_t> m_symbols;
};

Digest graph_digest(const ir::Graph& graph, KeyHasher& h) {
  GraphSerializer(graph, h).run();
  return h.finish();
}

Digest inputs_digest(std::span<const InputSpec> specs) {
  KeyHasher h;
  h.u64(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    const InputSpec& s = specs[i];  // s.name is a name: not hashed
    h.tag(Tag::spec);
    h.u64(i);
    hash_dtype(h, s.dtype);
    h.ints(s.min);
    h.ints(s.opt);
    h.ints(s.max);
  }
  return h.finish();
}

Digest settings_digest(const CompileSettings& s) {
  KeyHasher h;
  h.tag(Tag::precisions);
  h.u64(s.enabled_precisions.size());
  for (Precision p : s.enabled_precisions) h.u64(static_cast<uint64_t>(p));  // std::set: sorted
  h.tag(Tag::optimization_level);
  h.i64(s.optimization_level);
  h.tag(Tag::refittable);
  h.u64(s.refittable ? 1 : 0);
  // Hashed only when on, so that engines built with it off keep the keys they
  // had before the setting existed.
  if (s.cpu_fused_attention) {
    h.tag(Tag::cpu_fused_attention);
    h.u64(1);
  }
  // min_block_size is not here: it decides which subgraphs become engines,
  // and each subgraph is keyed by itself, so an engine serves every model
  // and setting that produces its subgraph.
  return h.finish();
}

Digest fingerprint_digest(const Fingerprint& f) {
  KeyHasher h;
  h.tag(Tag::backend);
  h.str(f.backend);
  h.tag(Tag::plan_version);
  h.u64(f.plan_version);
  h.tag(Tag::library_version);
  h.str(f.library_version);
  h.tag(Tag::isa);
  h.str(f.isa);
  return h.finish();
}

}  // namespace

std::string to_hex(const Digest& digest) { return hex_string(digest); }

EngineKey compute_engine_key(const ir::Graph& graph, std::span<const InputSpec> specs,
                             const CompileSettings& settings, const Fingerprint& fingerprint) {
  if (specs.size() != graph.inputs().size()) {
    throw Error(ErrorCode::invalid_argument, graph.source + ": engine key: " + std::to_string(specs.size()) +
                                                 " input specs for a graph with " +
                                                 std::to_string(graph.inputs().size()) + " inputs");
  }
  EngineKey key;
  KeyHasher graph_hasher;
  key.parts.graph = graph_digest(graph, graph_hasher);
  key.parts.inputs = inputs_digest(specs);
  key.parts.settings = settings_digest(settings);
  key.parts.fingerprint = fingerprint_digest(fingerprint);

  KeyHasher h;
  h.tag(Tag::scheme);
  h.u64(k_key_scheme_version);
  h.tag(Tag::part_graph);
  h.bytes(std::as_bytes(std::span(key.parts.graph)));
  h.tag(Tag::part_inputs);
  h.bytes(std::as_bytes(std::span(key.parts.inputs)));
  h.tag(Tag::part_settings);
  h.bytes(std::as_bytes(std::span(key.parts.settings)));
  h.tag(Tag::part_fingerprint);
  h.bytes(std::as_bytes(std::span(key.parts.fingerprint)));
  key.digest = h.finish();
  return key;
}

std::string differing_parts(const KeyParts& a, const KeyParts& b) {
  std::string out;
  auto add = [&out](bool differs, const char* name) {
    if (!differs) return;
    if (!out.empty()) out += ',';
    out += name;
  };
  add(a.graph != b.graph, "graph");
  add(a.inputs != b.inputs, "inputs");
  add(a.settings != b.settings, "settings");
  add(a.fingerprint != b.fingerprint, "fingerprint");
  return out;
}

std::string canonical_graph_text(const ir::Graph& graph) {
  KeyHasher h(/*keep_text=*/true);
  graph_digest(graph, h);
  return h.text() + "\n";
}

}  // namespace kiln::key
