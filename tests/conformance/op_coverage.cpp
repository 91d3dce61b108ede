#include "op_coverage.hpp"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

#include "backends/cpu/layer_partition.hpp"
#include "kiln/error.hpp"
#include "passes/passes.hpp"

namespace kiln::conformance {

const char* placement_name(Placement p) {
  switch (p) {
    case Placement::onednn:
      return "onednn";
    case Placement::absorbed:
      return "absorbed";
    case Placement::aux:
      return "aux";
    case Placement::reference:
      return "reference";
  }
  return "?";
}

namespace {

Placement placement_of_kind(const std::string& kind) {
  if (kind == "onednn") return Placement::onednn;
  if (kind == "aux") return Placement::aux;
  return Placement::reference;
}

// Why the cpu backend runs `name` as an aux layer, asked of the backend's own
// check on the lowered graph (the graph its engines are built from).
std::string aux_reason(const ir::Graph* lowered, const std::string& name) {
  if (!lowered) return "unknown";
  for (size_t n = 0; n < lowered->num_nodes(); ++n) {
    if (lowered->node(static_cast<ir::NodeId>(n)).name != name) continue;
    std::string why;
    if (cpu::native_kind(*lowered, static_cast<ir::NodeId>(n), &why)) {
      // The node could be a oneDNN layer on its own, yet runs on a reference
      // kernel: the layer decided so for these shapes (e.g. a broadcast
      // oneDNN cannot do).
      return "oneDNN layer fell back at these shapes";
    }
    return why.empty() ? "no reason given" : why;
  }
  return "not in the lowered graph";
}

}  // namespace

std::vector<NodePlacement> place_nodes(const ir::Graph& graph, const runtime::CompiledModel& model,
                                       const runtime::ModelProfile& profile) {
  struct Seen {
    Placement placement;
    std::string reason;
  };
  std::map<std::string, Seen> by_name;
  std::string engine_fallback;  // an engine that ran its non-finite path as one step
  for (const runtime::ProfileLayer& layer : profile.layers) {
    const LayerTiming& t = layer.timing;
    if (t.kind == "reorder") continue;  // its "nodes" are value names
    if (t.kind == "reference" && t.op == "Engine") {
      engine_fallback = t.tactic;
      continue;
    }
    Placement p = placement_of_kind(t.kind);
    std::string reason;
    if (p == Placement::reference) {
      const auto& segments = model.report().segments;
      const auto s = static_cast<size_t>(layer.segment);
      reason = s < segments.size() && !segments[s].reason.empty() ? segments[s].reason : "fallback segment";
    }
    for (const std::string& name : t.nodes) {
      auto [it, inserted] = by_name.try_emplace(name, Seen{p, reason});
      if (!inserted && p > it->second.placement) it->second = {p, reason};
    }
  }

  std::optional<ir::Graph> lowered;  // only lowered when some node is aux
  std::vector<NodePlacement> out;
  for (const ir::Node& node : graph.nodes()) {
    NodePlacement np{node.name, node.op_type, Placement::absorbed, {}};
    if (auto it = by_name.find(node.name); it != by_name.end()) {
      np.placement = it->second.placement;
      np.reason = it->second.reason;
    } else if (!engine_fallback.empty()) {
      np.placement = Placement::reference;
      np.reason = engine_fallback;
    }
    if (np.placement == Placement::aux) {
      if (!lowered) lowered = passes::lower(graph);
      np.reason = aux_reason(&*lowered, node.name);
    }
    out.push_back(std::move(np));
  }
  return out;
}

int PlacementCount::onednn() const {
  auto it = by_placement.find(Placement::onednn);
  return it == by_placement.end() ? 0 : it->second;
}

const std::vector<std::pair<std::string, std::vector<std::string>>>& op_groups() {
  static const std::vector<std::pair<std::string, std::vector<std::string>>> groups = {
      {"conv", {"Conv"}},
      {"gemm", {"Gemm"}},
      {"matmul", {"MatMul"}},
      {"pooling", {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"}},
      {"normalization", {"BatchNormalization", "LayerNormalization", "InstanceNormalization"}},
      {"activation",
       {"Relu", "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid", "Tanh", "Elu", "Selu", "Celu", "HardSwish",
        "Softplus", "Softsign", "Gelu", "Mish", "Clip", "ThresholdedRelu"}},
  };
  return groups;
}

namespace {

// The placement of a set of nodes: the worst among those that ran
// somewhere; absorbed only when lowering removed all of them.
struct Verdict {
  Placement placement = Placement::absorbed;
  std::string reason;
};

void count(PlacementCount& c, const Verdict& v, const std::string& case_name) {
  ++c.cases;
  ++c.by_placement[v.placement];
  if (v.placement == Placement::aux || v.placement == Placement::reference) {
    c.reasons[std::string(placement_name(v.placement)) + ": " + v.reason].push_back(case_name);
  }
}

Verdict verdict(const std::vector<const NodePlacement*>& nodes) {
  Verdict v;
  bool ran = false;
  for (const NodePlacement* n : nodes) {
    if (n->placement == Placement::absorbed) continue;
    if (!ran || n->placement > v.placement) v = {n->placement, n->reason};
    ran = true;
  }
  return v;
}

}  // namespace

void OpCoverage::add(const std::string& case_name, const std::vector<NodePlacement>& nodes) {
  std::map<std::string, std::vector<const NodePlacement*>> by_op;
  for (const NodePlacement& n : nodes) by_op[n.op].push_back(&n);
  for (const auto& [op, list] : by_op) count(m_ops[op], verdict(list), case_name);
  for (const auto& [group, ops] : op_groups()) {
    std::vector<const NodePlacement*> list;
    for (const NodePlacement& n : nodes) {
      if (std::find(ops.begin(), ops.end(), n.op) != ops.end()) list.push_back(&n);
    }
    if (!list.empty()) count(m_groups[group], verdict(list), case_name);
  }
  std::set<Placement> seen;
  for (const NodePlacement& n : nodes) seen.insert(n.placement);
  const bool onednn = seen.count(Placement::onednn) > 0;
  const bool aux = seen.count(Placement::aux) > 0;
  const bool ref = seen.count(Placement::reference) > 0;
  if (onednn && !aux && !ref) {
    ++m_cases["onednn"];
  } else if (onednn) {
    ++m_cases["mixed"];
  } else if (aux) {
    ++m_cases["aux"];
  } else {
    ++m_cases["no engine"];
  }
}

namespace {

std::string row(const std::string& name, const PlacementCount& c) {
  auto n = [&](Placement p) {
    auto it = c.by_placement.find(p);
    return it == c.by_placement.end() ? 0 : it->second;
  };
  char buf[160];
  std::snprintf(buf, sizeof buf, "  %-26s %6d %7d %9d %6d %10d %7.1f%%", name.c_str(), c.cases,
                n(Placement::onednn), n(Placement::absorbed), n(Placement::aux), n(Placement::reference),
                c.onednn_percent());
  return buf;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (static_cast<unsigned char>(ch) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", ch);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

void json_counts(std::ostringstream& os, const std::map<std::string, PlacementCount>& counts) {
  os << "{";
  bool first = true;
  for (const auto& [name, c] : counts) {
    os << (first ? "" : ",") << "\n    " << json_string(name) << ": {\"cases\": " << c.cases;
    for (Placement p : {Placement::onednn, Placement::absorbed, Placement::aux, Placement::reference}) {
      auto it = c.by_placement.find(p);
      os << ", \"" << placement_name(p) << "\": " << (it == c.by_placement.end() ? 0 : it->second);
    }
    os << ", \"onednn_percent\": " << c.onednn_percent() << ", \"reasons\": {";
    bool first_reason = true;
    for (const auto& [reason, cases] : c.reasons) {
      os << (first_reason ? "" : ", ") << json_string(reason) << ": [";
      for (size_t i = 0; i < cases.size(); ++i) os << (i ? ", " : "") << json_string(cases[i]);
      os << "]";
      first_reason = false;
    }
    os << "}}";
    first = false;
  }
  os << "\n  }";
}

}  // namespace

void OpCoverage::print(std::ostream& out, const std::string& title) const {
  const char* header = "  %-26s %6s %7s %9s %6s %10s %8s\n";
  char buf[160];
  out << title << "\n";
  std::snprintf(buf, sizeof buf, header, "op", "cases", "onednn", "absorbed", "aux", "reference", "onednn%");
  out << buf;
  for (const auto& [op, c] : m_ops) out << row(op, c) << "\n";
  out << " groups:\n";
  for (const auto& [group, ops] : op_groups()) {
    auto it = m_groups.find(group);
    if (it == m_groups.end()) continue;
    out << row(group, it->second) << "\n";
    for (const auto& [reason, cases] : it->second.reasons) {
      out << "      " << cases.size() << "x " << reason << " (" << cases.front();
      for (size_t i = 1; i < cases.size() && i < 3; ++i) out << ", " << cases[i];
      out << (cases.size() > 3 ? ", ...)" : ")") << "\n";
    }
  }
  out << " cases: ";
  for (const char* k : {"onednn", "mixed", "aux", "no engine"}) {
    auto it = m_cases.find(k);
    out << (it == m_cases.end() ? 0 : it->second) << " " << k
        << (std::string(k) == "no engine" ? "\n" : ", ");
  }
}

std::string OpCoverage::to_json() const {
  std::ostringstream os;
  os << "{\n  \"cases\": {";
  bool first = true;
  for (const auto& [k, n] : m_cases) {
    os << (first ? "" : ", ") << json_string(k) << ": " << n;
    first = false;
  }
  os << "},\n  \"groups\": ";
  json_counts(os, m_groups);
  os << ",\n  \"ops\": ";
  json_counts(os, m_ops);
  os << "\n}";
  return os.str();
}

std::vector<std::string> check_floors(const OpCoverage& coverage, const std::filesystem::path& floors) {
  std::ifstream in(floors);
  if (!in) throw Error(ErrorCode::io, floors.string() + ": cannot read the oneDNN share floors");
  std::vector<std::string> failures;
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    line = line.substr(0, line.find('#'));
    std::istringstream fields(line);
    std::string group;
    double floor = 0;
    if (!(fields >> group)) continue;
    if (!(fields >> floor)) {
      throw Error(ErrorCode::invalid_argument,
                  floors.string() + ":" + std::to_string(line_no) + ": expected '<group> <percent>'");
    }
    const auto& groups = op_groups();
    if (std::none_of(groups.begin(), groups.end(), [&](const auto& g) { return g.first == group; })) {
      throw Error(ErrorCode::invalid_argument,
                  floors.string() + ":" + std::to_string(line_no) + ": unknown op group '" + group + "'");
    }
    auto it = coverage.groups().find(group);
    if (it == coverage.groups().end()) {
      failures.push_back(group + ": no passing case, floor " + std::to_string(floor) + "%");
      continue;
    }
    const PlacementCount& c = it->second;
    if (c.onednn_percent() < floor) {
      char buf[200];
      std::snprintf(buf, sizeof buf,
                    "%s: %d of %d passing cases on oneDNN (%.1f%%), below the floor of %.1f%%", group.c_str(),
                    c.onednn(), c.cases, c.onednn_percent(), floor);
      failures.push_back(buf);
    }
  }
  return failures;
}

}  // namespace kiln::conformance
