// CompiledModel's steps, shared by its run path (compiled_model.cpp) and its
// refit (compiled_model_refit.cpp).
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "backends/backend.hpp"
#include "ir/graph.hpp"
#include "reference/executor.hpp"
#include "runtime/compiled_model.hpp"

namespace kiln::runtime {

// One segment of the model: an engine, or a fallback segment run by the
// reference executor over a graph of its own.
struct CompiledModel::Step {
  std::unique_ptr<Engine> engine;
  std::unique_ptr<ir::Graph> graph;
  std::unique_ptr<ref::Executor> executor;   // reads `graph`'s initializers at every run
  std::vector<ir::ValueId> inputs, outputs;  // lowered-graph values
  // The model's source weights (indices into its canonical order) that this
  // step's recipes read, in the order they index them; unset: all of them.
  std::optional<std::vector<int32_t>> sources;
};

// The source weights a step's recipes index, picked from the model's.
inline std::vector<Tensor> pick_sources(const std::vector<Tensor>& all,
                                        const std::optional<std::vector<int32_t>>& which) {
  if (!which) return all;
  std::vector<Tensor> picked;
  picked.reserve(which->size());
  for (int32_t i : *which) picked.push_back(all.at(static_cast<size_t>(i)));
  return picked;
}

}  // namespace kiln::runtime
