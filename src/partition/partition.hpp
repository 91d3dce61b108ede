// Partitioning: splits a lowered graph into engine segments, which a backend
// builds, and fallback segments, which run on the reference backend.
//
// A node goes to an engine when the backend supports it and every input that
// a fallback node computes has a shape known for the whole input range (an
// engine input needs a min/opt/max spec; a tensor whose shape depends on
// data, such as NonZero's output, can only be read by fallback nodes).
// Inside an engine, shapes static inference cannot tell are fine: the engine
// infers them at run time. Segments are grown greedily along a
// topological order: the next node taken is a ready engine node whenever one
// exists, so fallback nodes are deferred and engine segments are as large as
// the graph allows. Each segment is convex (a contiguous run of one
// topological order), so segments run one after another without cycles.
// Engine segments smaller than min_block_size nodes become fallback, and
// neighbouring fallback segments merge.
#pragma once

#include <span>
#include <vector>

#include "backends/backend.hpp"
#include "ir/graph.hpp"
#include "kiln/settings.hpp"

namespace kiln::partition {

struct Segment {
  bool engine = false;            // false: runs on the reference backend
  std::vector<ir::NodeId> nodes;  // of the lowered graph, in execution order
  std::string fallback_reason;    // for a fallback segment: why (first node's reason)
};

// Segments in execution order; together they hold every node once.
std::vector<Segment> plan_segments(const ir::Graph& lowered, const Backend& backend,
                                   std::span<const InputSpec> specs, int min_block_size);

// Concrete value types of every value of `lowered` when its inputs have the
// given shapes (one per graph input), from static inference. Values whose
// shape depends on data keep unknown dims.
std::vector<ir::ValueType> types_at(const ir::Graph& lowered, std::span<const InputSpec> specs,
                                    const std::vector<int64_t> InputSpec::*which);

// A segment as a graph of its own.
struct Subgraph {
  ir::Graph graph;
  std::vector<ir::ValueId> inputs;   // the parent value of each graph input
  std::vector<ir::ValueId> outputs;  // the parent value of each graph output
  // Weight recipes in `graph` index its own source weights, numbered by first
  // use, so identical segments (repeated blocks, other models) get identical
  // graphs and keys. sources[i] is the parent's source index of local i.
  std::vector<int32_t> sources;
};

// Per value of `lowered`: whether it is a small integer tensor computed from
// shapes only (a Shape or Size, and nodes whose inputs are all such values
// or constants), every Shape or Size on the way reading a value whose shape
// is known over the whole input range. A segment that reads such a value
// from another segment computes it again from those values instead of
// receiving it: as a plain input its value is unknown when an engine is
// instantiated, so a Reshape, Expand, Slice ... it decides would lose its
// static output shape.
std::vector<bool> recomputable_shape_values(const ir::Graph& lowered, std::span<const ir::ValueType> at_min,
                                            std::span<const ir::ValueType> at_opt,
                                            std::span<const ir::ValueType> at_max);

// Extracts `segment`: inputs are the values it reads that the parent
// computes elsewhere (or the parent's inputs); outputs are the values it
// computes that the rest of the graph or the graph outputs read.
// Initializers and statically known values are copied (sharing storage).
// A value marked in `recompute` (from recomputable_shape_values; empty:
// none) that another segment computes is computed here again by copies of
// its nodes, and is then no output of the segment that computes it.
Subgraph extract_subgraph(const ir::Graph& lowered, const Segment& segment,
                          const std::vector<bool>& recompute = {});

// The first node of an extracted engine segment that `backend` cannot run,
// as "node '...' (Op): reason"; nullopt when it runs them all. The segment
// was planned on the whole graph, where a value computed by shape nodes of
// another segment could be read; extracted, such a value may arrive as a
// plain input instead, and a node the backend took for its shape logic is
// then data it has no kernel for. Such a segment runs on the reference
// backend rather than failing the compile.
std::optional<std::string> first_unsupported_node(const Backend& backend, const ir::Graph& graph);

// Input specs of a subgraph, from the parent's value types at min, opt and
// max. Nullopt when some input's shape is not known over the whole range.
std::optional<std::vector<InputSpec>> subgraph_specs(const Subgraph& sub,
                                                     std::span<const ir::ValueType> at_min,
                                                     std::span<const ir::ValueType> at_opt,
                                                     std::span<const ir::ValueType> at_max);

}  // namespace kiln::partition
