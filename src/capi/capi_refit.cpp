// kiln_model_refit and kiln_model_weights_json: in-place weights through
// runtime::CompiledModel::refit, or, for the reference backend, by replacing
// the initializers its interpreter reads.
#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "capi/capi_internal.hpp"
#include "passes/passes.hpp"

namespace kiln::capi {
namespace {

using nlohmann::json;

std::string type_string(DType dtype, const std::vector<int64_t>& shape) {
  return std::string(dtype_name(dtype)) + "[" + shape_to_string(shape) + "]";
}

std::vector<WeightInfo> weights_of(const kiln_model& model) {
  if (model.compiled) return model.compiled->weights();
  const ir::Graph& graph = model.imported->graph;
  std::vector<WeightInfo> infos;
  for (ir::ValueId id : passes::canonical_weights(graph)) {
    const ir::Value& v = graph.value(id);
    infos.push_back({v.name, v.initializer->dtype(), v.initializer->shape()});
  }
  return infos;
}

// The reference backend's interpreter reads the imported graph's
// initializers at every run: check everything, then swap in copies.
void refit_reference(kiln_model& model, std::span<const WeightUpdate> updates) {
  ir::Graph& graph = model.imported->graph;
  const std::string where = graph.source + ": refit: ";
  std::map<std::string, ir::ValueId, std::less<>> weights;
  for (ir::ValueId id : passes::canonical_weights(graph)) weights.emplace(graph.value(id).name, id);
  std::set<ir::ValueId> given;
  for (const WeightUpdate& u : updates) {
    auto it = weights.find(u.name);
    if (it == weights.end()) {
      throw Error(ErrorCode::invalid_argument,
                  where + "'" + u.name + "' is not a refittable weight of the model");
    }
    if (!given.insert(it->second).second) {
      throw Error(ErrorCode::invalid_argument, where + "weight '" + u.name + "' is given twice");
    }
    const Tensor& old = *graph.value(it->second).initializer;
    if (u.value.dtype() != old.dtype() || u.value.shape() != old.shape()) {
      throw Error(ErrorCode::invalid_argument,
                  where + "weight '" + u.name + "' is " + type_string(old.dtype(), old.shape()) +
                      ", the new value is " + type_string(u.value.dtype(), u.value.shape()));
    }
  }
  std::vector<Tensor> copies;
  for (const WeightUpdate& u : updates) copies.push_back(u.value.clone());
  for (size_t i = 0; i < updates.size(); ++i)
    graph.value(weights.at(updates[i].name)).initializer = copies[i];
}

}  // namespace

}  // namespace kiln::capi

using namespace kiln;
using namespace kiln::capi;

extern "C" {

kiln_status kiln_model_weights_json(const kiln_model* model, char** json_out) {
  return guard([&] {
    require(model, "model");
    require(json_out, "json_out");
    json list = json::array();
    for (const WeightInfo& w : weights_of(*model)) {
      list.push_back({{"name", w.name}, {"dtype", std::string(dtype_name(w.dtype))}, {"shape", w.shape}});
    }
    *json_out = copy_string(list.dump());
  });
}

kiln_status kiln_model_refit(kiln_model* model, const char* const* names, const kiln_tensor* const* values,
                             size_t count) {
  return guard([&] {
    require(model, "model");
    if (count > 0) {
      require(names, "names");
      require(values, "values");
    }
    std::vector<WeightUpdate> updates;
    updates.reserve(count);
    for (size_t i = 0; i < count; ++i) {
      if (names[i] == nullptr)
        throw Error(ErrorCode::invalid_argument, "refit: name " + std::to_string(i) + " is NULL");
      if (values[i] == nullptr) {
        throw Error(ErrorCode::invalid_argument,
                    "refit: the value of weight '" + std::string(names[i]) + "' is NULL");
      }
      require_host(*values[i], "refit: the value of weight '" + std::string(names[i]) + "'");
      // A wrapped tensor borrows the caller's memory for this call only;
      // both paths below copy it before returning.
      updates.push_back({names[i], values[i]->tensor});
    }
    if (model->compiled) {
      model->last_refit = model->compiled->refit(updates);
    } else {
      auto start = std::chrono::steady_clock::now();
      refit_reference(*model, updates);
      RefitStats stats;
      stats.weights = updates.size();
      stats.refit_ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      model->last_refit = stats;
    }
  });
}

}  // extern "C"
