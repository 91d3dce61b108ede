// CompiledModel::refit: new weight values for a compiled model, in place.
//
// The engines were built (or loaded from the cache) for the model's source
// weights, the refittable initializers of the imported graph in canonical
// order; each engine's recipes index its own slice of them (Step::sources).
// A refit checks every new value first, then recomputes what fallback
// segments read, then refits the engines that read a changed weight, and
// only then commits: a failure before the engines leaves the model as it
// was, and an engine that fails is refitted back with the old weights.
#include <algorithm>

#include "passes/passes.hpp"
#include "runtime/clock.hpp"
#include "runtime/compiled_model.hpp"
#include "runtime/compiled_model_step.hpp"
#include "util/parallel_for.hpp"

namespace kiln::runtime {

namespace {

std::string type_string(DType dtype, const std::vector<int64_t>& shape) {
  return std::string(dtype_name(dtype)) + "[" + shape_to_string(shape) + "]";
}

// Whether `recipe` reads a source marked in `changed`; `local` maps the
// recipe's indices to the model's (unset: the same).
bool reads_changed(const ir::WeightRecipe& recipe, const std::optional<std::vector<int32_t>>& local,
                   const std::vector<bool>& changed) {
  if (recipe.op == ir::WeightRecipe::Op::source) {
    const auto i = static_cast<size_t>(recipe.index);
    const size_t model_index = local ? static_cast<size_t>(local->at(i)) : i;
    return model_index < changed.size() && changed[model_index];
  }
  return std::any_of(recipe.args.begin(), recipe.args.end(),
                     [&](const ir::WeightRecipe& arg) { return reads_changed(arg, local, changed); });
}

bool any_changed(const std::optional<std::vector<int32_t>>& local, const std::vector<bool>& changed) {
  if (!local) return std::find(changed.begin(), changed.end(), true) != changed.end();
  return std::any_of(local->begin(), local->end(),
                     [&](int32_t i) { return changed.at(static_cast<size_t>(i)); });
}

}  // namespace

void CompiledModel::index_weights(const ir::Graph& graph, std::vector<Tensor> sources) {
  m_source = graph.source;
  m_sources = std::move(sources);
  for (ir::ValueId id : passes::canonical_weights(graph)) {
    const ir::Value& value = graph.value(id);
    m_weight_index.emplace(value.name, m_weight_infos.size());
    m_weight_infos.push_back({value.name, value.initializer->dtype(), value.initializer->shape()});
  }
  for (size_t v = 0; v < graph.num_values(); ++v) {
    const ir::Value& value = graph.value(static_cast<ir::ValueId>(v));
    if (!value.initializer || m_weight_index.contains(value.name)) continue;
    std::string why;
    if (!is_floating(value.initializer->dtype()))
      why = "a " + std::string(dtype_name(value.initializer->dtype())) + " constant";
    else if (value.initializer->numel() <= 1)
      why = "a scalar constant";
    else
      why = "read as a structural input (a shape, axes, pads, bounds) or by no node";
    m_not_weights.emplace(value.name,
                          why + ", part of the engine's key by value: compile again to change it");
  }
}

std::vector<Tensor> CompiledModel::checked_sources(std::span<const WeightUpdate> updates,
                                                   RefitStats& stats) const {
  const auto start = Clock::now();
  const std::string where = m_source + ": refit: ";
  if (!m_settings.refittable) {
    throw Error(ErrorCode::invalid_argument,
                where +
                    "the model was compiled with refittable = false (immutable_weights): its engines "
                    "may keep weights in layouts kiln does not refit; compile it with refittable = true");
  }
  std::vector<bool> given(m_sources.size(), false);
  for (const WeightUpdate& u : updates) {
    auto it = m_weight_index.find(u.name);
    if (it == m_weight_index.end()) {
      if (auto other = m_not_weights.find(u.name); other != m_not_weights.end()) {
        throw Error(ErrorCode::invalid_argument,
                    where + "initializer '" + u.name + "' is not a refittable weight: " + other->second);
      }
      throw Error(ErrorCode::invalid_argument, where + "the model has no initializer named '" + u.name + "'");
    }
    const WeightInfo& w = m_weight_infos[it->second];
    if (given[it->second]) {
      throw Error(ErrorCode::invalid_argument, where + "weight '" + u.name + "' is given twice");
    }
    given[it->second] = true;
    if (u.value.dtype() != w.dtype || u.value.shape() != w.shape) {
      throw Error(ErrorCode::invalid_argument,
                  where + "weight '" + u.name + "' is " + type_string(w.dtype, w.shape) +
                      ", the new value is " +
                      (u.value.defined() ? type_string(u.value.dtype(), u.value.shape()) : "undefined"));
    }
  }
  // Engines keep identity-recipe weights as the tensors they are given, and
  // fallback segments read theirs at every run: they get copies, never the
  // caller's memory.
  std::vector<Tensor> next = m_sources;
  parallel_for(updates.size(), m_settings.num_threads, [&](size_t i) {
    next[m_weight_index.find(updates[i].name)->second] = updates[i].value.clone();
  });
  stats.weights = updates.size();
  stats.check_ms = ms_since(start);
  return next;
}

size_t CompiledModel::refit_engines(const std::vector<Tensor>& sources, const std::vector<bool>& changed) {
  std::vector<Step*> touched;
  for (Step& step : m_steps) {
    if (step.engine && any_changed(step.sources, changed)) touched.push_back(&step);
  }
  size_t done = 0;
  try {
    for (; done < touched.size(); ++done)
      touched[done]->engine->refit(pick_sources(sources, touched[done]->sources));
  } catch (const Error& e) {
    // The failed engine is unusable until a refit succeeds, and the ones
    // before it hold the new weights: put the old ones back everywhere.
    std::string restored = "; the previous weights were restored";
    for (size_t i = 0; i <= done && i < touched.size(); ++i) {
      try {
        touched[i]->engine->refit(pick_sources(m_sources, touched[i]->sources));
      } catch (const Error& again) {
        restored = "; restoring the previous weights failed too (" + std::string(again.what()) +
                   "): the model must be refitted or compiled again";
      }
    }
    throw Error(e.code(), m_source + ": refit: an engine refused the new weights: " + e.what() + restored);
  }
  return touched.size();
}

RefitStats CompiledModel::refit(std::span<const WeightUpdate> updates) {
  const auto start = Clock::now();
  RefitStats stats;
  std::vector<Tensor> next = checked_sources(updates, stats);
  std::vector<bool> changed(m_sources.size(), false);
  for (const WeightUpdate& u : updates) changed[m_weight_index.find(u.name)->second] = true;

  // Fallback segments and constants read materialized weights: recompute
  // the ones that read a changed source before anything is replaced.
  std::vector<std::tuple<Step*, ir::ValueId, Tensor>> fallback;
  for (Step& step : m_steps) {
    if (!step.graph) continue;
    std::vector<Tensor> local = pick_sources(next, step.sources);
    for (size_t v = 0; v < step.graph->num_values(); ++v) {
      const ir::Value& value = step.graph->value(static_cast<ir::ValueId>(v));
      if (!value.initializer || !value.recipe || !reads_changed(*value.recipe, step.sources, changed))
        continue;
      try {
        fallback.emplace_back(&step, static_cast<ir::ValueId>(v),
                              passes::evaluate_recipe(*value.recipe, local));
      } catch (const Error& e) {
        throw e.with_context(m_source + ": refit: fallback weight '" + value.name + "': ");
      }
    }
  }
  std::vector<std::pair<ir::ValueId, Tensor>> constants;
  for (const auto& [id, recipe] : m_constant_recipes) {
    if (reads_changed(recipe, std::nullopt, changed))
      constants.emplace_back(id, passes::evaluate_recipe(recipe, next));
  }

  stats.engines = refit_engines(next, changed);

  // Nothing below throws: the model now moves to the new weights as a whole.
  for (auto& [step, id, value] : fallback) step->graph->value(id).initializer = std::move(value);
  for (auto& [id, value] : constants) m_constants[static_cast<size_t>(id)] = std::move(value);
  stats.fallback_weights = fallback.size() + constants.size();
  m_sources = std::move(next);
  m_refitted = true;
  stats.refit_ms = ms_since(start);
  m_last_refit = stats;
  return stats;
}

}  // namespace kiln::runtime
