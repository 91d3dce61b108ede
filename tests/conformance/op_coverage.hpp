// Where the conformance cases ran on the cpu backend, per op type: on a
// oneDNN primitive, on a reference kernel inside an engine (an aux layer),
// or on the reference executor in a fallback segment (no engine for it).
//
// A case passing on the cpu backend proves little about oneDNN if its nodes
// ran on reference kernels, so the runner counts, for every op type, how many
// passing cases had that op's nodes on each, prints the table, and compares
// the oneDNN share of the op groups that matter most (convolutions, GEMMs,
// pooling, normalization, activations) with committed floors.
#pragma once

#include <filesystem>
#include <map>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "ir/graph.hpp"
#include "runtime/compiled_model.hpp"

namespace kiln::conformance {

// Ordered from best to worst: a case's op takes the worst placement of its nodes.
enum class Placement {
  onednn,     // a oneDNN primitive (possibly fused with its neighbours)
  absorbed,   // no step of its own: folded away by lowering, or a view that moves no data
  aux,        // a reference kernel inside an engine
  reference,  // the reference executor: a fallback segment, or an engine's non-finite path
};
const char* placement_name(Placement p);

struct NodePlacement {
  std::string node;  // the node's name in the imported graph
  std::string op;
  Placement placement = Placement::absorbed;
  std::string reason;  // aux: why the cpu backend keeps it off oneDNN; reference: why no engine runs it
};

// Where each top-level node of `graph` ran in `model` (compiled from it),
// from `profile`, a profiled run of the model. Lowering and the engine keep
// node names, so a node is found by name among the profile's layers; a node
// that no layer names was removed by lowering. Aux reasons come from the cpu
// backend's own check (cpu::native_kind) on the lowered graph.
std::vector<NodePlacement> place_nodes(const ir::Graph& graph, const runtime::CompiledModel& model,
                                       const runtime::ModelProfile& profile);

struct PlacementCount {
  int cases = 0;
  std::map<Placement, int> by_placement;
  // "aux: <why>" / "reference: <why>", over the non-oneDNN cases: the cases'
  // names, so that a reason can be traced to the case that shows it.
  std::map<std::string, std::vector<std::string>> reasons;
  int onednn() const;
  double onednn_percent() const { return cases ? 100.0 * onednn() / cases : 0.0; }
};

// The op groups the floors guard, each with its op types.
const std::vector<std::pair<std::string, std::vector<std::string>>>& op_groups();

class OpCoverage {
 public:
  // One passing case and where its nodes ran.
  void add(const std::string& case_name, const std::vector<NodePlacement>& nodes);

  const std::map<std::string, PlacementCount>& ops() const { return m_ops; }
  const std::map<std::string, PlacementCount>& groups() const { return m_groups; }
  // Cases by where all their nodes ran: "onednn" (every node on oneDNN or
  // absorbed), "mixed", "aux" (no oneDNN node, some aux), "no engine".
  const std::map<std::string, int>& cases() const { return m_cases; }

  void print(std::ostream& out, const std::string& title) const;
  std::string to_json() const;

 private:
  std::map<std::string, PlacementCount> m_ops;
  std::map<std::string, PlacementCount> m_groups;
  std::map<std::string, int> m_cases;
};

// Reads "<group> <percent>" lines ('#' starts a comment) and returns one
// message per group whose oneDNN share in `coverage` is below its floor, or
// that the file names but no passing case has. Throws kiln::Error for an
// unreadable file or an unknown group.
std::vector<std::string> check_floors(const OpCoverage& coverage, const std::filesystem::path& floors);

}  // namespace kiln::conformance
