#include "backends/backend.hpp"

#include <algorithm>
#include <chrono>

#include "kiln/error.hpp"

namespace kiln {

std::string Fingerprint::to_string() const {
  return backend + " plan v" + std::to_string(plan_version) + ", " + library_version + ", " + isa;
}

std::vector<Tensor> Engine::run_profiled(std::span<const Tensor> inputs, std::vector<LayerTiming>& timings) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<Tensor> outputs = run(inputs);
  LayerTiming t;
  t.name = "engine";
  t.nodes = {"engine"};
  t.op = "Engine";
  t.tactic = "engine";
  t.kind = "onednn";
  t.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  timings.assign(1, std::move(t));
  return outputs;
}

namespace {

int32_t max_source_index(const ir::WeightRecipe& r) {
  int32_t m = r.op == ir::WeightRecipe::Op::source ? r.index : -1;
  for (const ir::WeightRecipe& a : r.args) m = std::max(m, max_source_index(a));
  return m;
}

}  // namespace

int32_t source_weight_count(const ir::Graph& graph) {
  int32_t count = 0;
  for (size_t i = 0; i < graph.num_values(); ++i) {
    const ir::Value& v = graph.value(static_cast<ir::ValueId>(i));
    if (v.recipe && v.producer == ir::k_no_node) count = std::max(count, max_source_index(*v.recipe) + 1);
  }
  return count;
}

void check_engine_specs(const ir::Graph& g, std::span<const InputSpec> specs, std::string_view backend) {
  const std::string who(backend);
  if (specs.size() != g.inputs().size()) {
    throw Error(ErrorCode::invalid_argument, who + ": " + std::to_string(specs.size()) + " input specs for " +
                                                 std::to_string(g.inputs().size()) + " graph inputs");
  }
  for (size_t i = 0; i < specs.size(); ++i) {
    const InputSpec& s = specs[i];
    const ir::ValueType& t = g.value(g.inputs()[i]).type;
    auto bad = [&](const std::string& why) {
      throw Error(ErrorCode::invalid_argument, who + ": input spec '" + s.name + "': " + why);
    };
    if (s.min.size() != s.opt.size() || s.opt.size() != s.max.size()) bad("min/opt/max ranks differ");
    if (t.shape && t.shape->size() != s.opt.size()) bad("rank differs from the model's " + t.to_string());
    for (size_t d = 0; d < s.opt.size(); ++d) {
      if (s.min[d] < 0 || s.min[d] > s.opt[d] || s.opt[d] > s.max[d]) bad("needs 0 <= min <= opt <= max");
      if (t.shape && (*t.shape)[d].is_static() &&
          (s.min[d] != (*t.shape)[d].value() || s.max[d] != (*t.shape)[d].value())) {
        bad("dim " + std::to_string(d) + " is fixed at " + std::to_string((*t.shape)[d].value()) +
            " in the model");
      }
    }
    if (t.dtype != DType::undefined && t.dtype != s.dtype) bad("dtype differs from the model's");
  }
}

std::vector<TensorDesc> Engine::output_descs(std::span<const TensorDesc>) {
  throw Error(ErrorCode::unsupported, "this engine runs on the host: it has no device inputs and outputs");
}

void Engine::run_device(std::span<const DeviceTensor>, std::span<const DeviceTensor>, void*) {
  throw Error(ErrorCode::unsupported, "this engine runs on the host: it has no device inputs and outputs");
}

namespace {

// `dtype_at(i)` and `shape_at(i)` read input i, whatever holds it: the
// host path checks its tensors without copying their shapes.
template <typename DTypeAt, typename ShapeAt>
void check_inputs(const ir::Graph& g, std::span<const InputSpec> specs, size_t count, DTypeAt dtype_at,
                  ShapeAt shape_at, std::string_view backend) {
  if (count != specs.size()) {
    throw Error(ErrorCode::invalid_argument, std::string(backend) + " engine takes " +
                                                 std::to_string(specs.size()) + " inputs, got " +
                                                 std::to_string(count));
  }
  for (size_t i = 0; i < count; ++i) {
    const InputSpec& s = specs[i];
    const std::string name = s.name.empty() ? g.value(g.inputs()[i]).name : s.name;
    const DType dtype = dtype_at(i);
    const std::vector<int64_t>& shape = shape_at(i);
    if (dtype != s.dtype) {
      throw Error(ErrorCode::invalid_argument, "input '" + name + "': expected " +
                                                   std::string(dtype_name(s.dtype)) + ", got " +
                                                   std::string(dtype_name(dtype)));
    }
    if (shape.size() != s.opt.size()) {
      throw Error(ErrorCode::invalid_argument, "input '" + name + "': expected rank " +
                                                   std::to_string(s.opt.size()) + ", got shape " +
                                                   shape_to_string(shape));
    }
    for (size_t d = 0; d < s.opt.size(); ++d) {
      if (shape[d] < s.min[d] || shape[d] > s.max[d]) {
        throw Error(ErrorCode::invalid_argument,
                    "input '" + name + "': dim " + std::to_string(d) + " is " + std::to_string(shape[d]) +
                        ", outside the engine's range [" + std::to_string(s.min[d]) + ", " +
                        std::to_string(s.max[d]) + "]");
      }
    }
  }
}

}  // namespace

void check_engine_inputs(const ir::Graph& g, std::span<const InputSpec> specs, std::span<const Tensor> inputs,
                         std::string_view backend) {
  check_inputs(
      g, specs, inputs.size(), [&](size_t i) { return inputs[i].dtype(); },
      [&](size_t i) -> const std::vector<int64_t>& { return inputs[i].shape(); }, backend);
}

void check_engine_inputs(const ir::Graph& g, std::span<const InputSpec> specs,
                         std::span<const TensorDesc> inputs, std::string_view backend) {
  check_inputs(
      g, specs, inputs.size(), [&](size_t i) { return inputs[i].dtype; },
      [&](size_t i) -> const std::vector<int64_t>& { return inputs[i].shape; }, backend);
}

}  // namespace kiln
