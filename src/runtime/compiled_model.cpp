#include "runtime/compiled_model.hpp"

#include <algorithm>
#include <map>

#include "backends/registry/backend_registry.hpp"
#include "cache/open.hpp"
#include "format/envelope.hpp"
#include "partition/partition.hpp"
#include "passes/passes.hpp"
#include "reference/executor.hpp"
#include "runtime/artifact.hpp"
#include "runtime/clock.hpp"
#include "runtime/compiled_model_step.hpp"
#include "runtime/engine_provider.hpp"
#include "util/log.hpp"

namespace kiln::runtime {

namespace {

// Counts into `seg` the values of `inputs` that an earlier segment computes
// (`from_a_segment`), with their bytes at the opt shapes where known.
void count_values_in(SegmentRecord& seg, std::span<const ir::ValueId> inputs,
                     const std::vector<bool>& from_a_segment, std::span<const ir::ValueType> at_opt) {
  for (ir::ValueId v : inputs) {
    if (!from_a_segment[static_cast<size_t>(v)]) continue;
    ++seg.values_in;
    const ir::ValueType& type = at_opt[static_cast<size_t>(v)];
    if (type.is_static()) {
      seg.bytes_in += static_cast<size_t>(shape_numel(type.static_shape())) * dtype_size(type.dtype);
    } else {
      ++seg.values_unsized;
    }
  }
}

}  // namespace

CompiledModel::CompiledModel(CompiledModel&&) noexcept = default;
CompiledModel& CompiledModel::operator=(CompiledModel&&) noexcept = default;
CompiledModel::~CompiledModel() = default;

CompiledModel CompiledModel::compile(const ir::Graph& graph, std::vector<InputSpec> specs,
                                     const CompileSettings& settings) {
  return compile_with(graph, std::move(specs), settings, std::nullopt);
}

CompiledModel CompiledModel::compile_with(const ir::Graph& graph, std::vector<InputSpec> specs,
                                          const CompileSettings& settings,
                                          std::optional<std::shared_ptr<cache::Store>> store) {
  auto compile_start = Clock::now();
  if (specs.size() != graph.inputs().size()) {
    throw Error(ErrorCode::invalid_argument, graph.source + ": " + std::to_string(specs.size()) +
                                                 " input specs for a model with " +
                                                 std::to_string(graph.inputs().size()) + " inputs");
  }

  CompiledModel model;
  model.m_backend = make_backend(settings.backend);
  Backend& backend = *model.m_backend;
  model.m_report.backend = std::string(backend.name());
  model.m_specs = specs;
  model.m_settings = settings;
  model.m_settings.custom_engine_cache.reset();  // not kept alive by the model
  EngineProvider provider(backend, settings, std::move(store));

  auto start = Clock::now();
  passes::LoweringOptions lowering;
  lowering.defer_weight_values = true;  // a cache hit never reads them
  ir::Graph lowered = passes::lower(graph, lowering);
  model.m_report.lower_ms = ms_since(start);
  model.m_inputs = lowered.inputs();
  model.m_outputs = lowered.outputs();

  std::vector<Tensor> sources = passes::source_weights(graph);
  auto segments = partition::plan_segments(lowered, backend, specs, std::max(1, settings.min_block_size));
  if (segments.size() == 1 && segments[0].engine) {
    // The whole graph is one engine: no extraction, the key of the graph itself.
    EngineRecord record;
    Step step;
    step.engine = provider.provide(lowered, specs, sources, record);
    step.inputs = lowered.inputs();
    step.outputs = lowered.outputs();
    model.m_steps.push_back(std::move(step));
    model.m_report.segments.push_back({true, lowered.num_nodes(), 0, ""});
    model.m_report.engines.push_back(std::move(record));
  } else {
    // Fallback segments read weight values, and extraction copies them.
    passes::materialize_weights(lowered, sources);
    auto at_min = partition::types_at(lowered, specs, &InputSpec::min);
    auto at_opt = partition::types_at(lowered, specs, &InputSpec::opt);
    auto at_max = partition::types_at(lowered, specs, &InputSpec::max);
    const std::vector<bool> recompute = partition::recomputable_shape_values(lowered, at_min, at_opt, at_max);
    std::vector<bool> from_a_segment(lowered.num_values(), false);
    for (const auto& segment : segments) {
      partition::Subgraph sub = partition::extract_subgraph(lowered, segment, recompute);
      Step step;
      step.inputs = sub.inputs;
      step.outputs = sub.outputs;
      SegmentRecord seg{segment.engine, segment.nodes.size(), -1, segment.fallback_reason};
      count_values_in(seg, sub.inputs, from_a_segment, at_opt);
      for (ir::ValueId v : sub.outputs) from_a_segment[static_cast<size_t>(v)] = true;
      std::optional<std::vector<InputSpec>> sub_specs;
      if (segment.engine) sub_specs = partition::subgraph_specs(sub, at_min, at_opt, at_max);
      std::optional<std::string> refused;
      if (sub_specs) refused = partition::first_unsupported_node(backend, sub.graph);
      step.sources = sub.sources;
      if (sub_specs && !refused) {
        std::vector<Tensor> sub_sources = pick_sources(sources, step.sources);
        EngineRecord record;
        step.engine = provider.provide(sub.graph, *sub_specs, sub_sources, record);
        seg.engine_index = static_cast<int>(model.m_report.engines.size());
        model.m_report.engines.push_back(std::move(record));
      } else {
        if (segment.engine) {
          seg.engine = false;
          seg.reason = refused ? "extracted, the segment has a node the backend cannot run: " + *refused
                               : "an input's shape is not known over the whole input range";
        }
        step.graph = std::make_unique<ir::Graph>(std::move(sub.graph));
        step.executor = std::make_unique<ref::Executor>(*step.graph);
      }
      model.m_steps.push_back(std::move(step));
      model.m_report.segments.push_back(std::move(seg));
    }
    if (model.m_report.engines.empty()) {
      log::warn(graph.source + ": the " + model.m_report.backend +
                " backend runs no part of this model; it runs on the reference backend");
    }
  }
  provider.finish(model.m_report);

  // Values a step reads that no step computes and the caller does not feed:
  // initializers of the lowered graph.
  model.m_constants.resize(lowered.num_values());
  model.m_last_use.assign(lowered.num_values(), -1);
  for (size_t s = 0; s < model.m_steps.size(); ++s) {
    for (ir::ValueId v : model.m_steps[s].inputs) {
      model.m_last_use[static_cast<size_t>(v)] = static_cast<int>(s);
      const ir::Value& value = lowered.value(v);
      if (value.initializer) model.m_constants[static_cast<size_t>(v)] = *value.initializer;
    }
  }
  for (ir::ValueId v : lowered.outputs()) {
    model.m_last_use[static_cast<size_t>(v)] = static_cast<int>(model.m_steps.size());
    const ir::Value& value = lowered.value(v);
    if (value.initializer) model.m_constants[static_cast<size_t>(v)] = *value.initializer;
  }
  for (size_t v = 0; v < model.m_constants.size(); ++v) {
    const ir::Value& value = lowered.value(static_cast<ir::ValueId>(v));
    if (model.m_constants[v] && value.recipe)
      model.m_constant_recipes.emplace_back(static_cast<ir::ValueId>(v), *value.recipe);
  }
  model.index_weights(graph, std::move(sources));
  model.m_report.compile_ms = ms_since(compile_start);
  return model;
}

std::vector<std::byte> CompiledModel::to_artifact(std::span<const std::byte> onnx,
                                                  const ir::Graph& graph) const {
  if (m_refitted) {
    // The artifact embeds the model's ONNX bytes, whose weights are the
    // compile-time ones: a loaded copy would silently run the old weights.
    throw Error(ErrorCode::invalid_argument,
                graph.source +
                    ": the model was refitted in place; an artifact would embed the "
                    "weights it was compiled with: compile the new weights to save them");
  }
  if (!m_settings.refittable) {
    throw Error(ErrorCode::invalid_argument, graph.source +
                                                 ": an artifact needs refittable engines (a loaded artifact "
                                                 "refits its weights); compile with refittable = true");
  }
  if (graph.initializer_bytes() > onnx.size()) {
    throw Error(ErrorCode::invalid_argument, graph.source +
                                                 ": the model keeps weights in external data files; an "
                                                 "artifact needs them inside the .onnx file");
  }
  Artifact artifact;
  artifact.manifest = ArtifactManifest{k_producer,
                                       m_backend->fingerprint().to_string(),
                                       m_specs,
                                       m_settings.enabled_precisions,
                                       m_settings.optimization_level,
                                       m_settings.min_block_size,
                                       m_settings.cpu_fused_attention};
  artifact.onnx.assign(onnx.begin(), onnx.end());
  size_t engine = 0;
  for (const Step& step : m_steps) {
    if (!step.engine) continue;
    const EngineRecord& record = m_report.engines.at(engine++);
    format::EnvelopeHeader header{*record.engine_key, k_producer, m_backend->fingerprint().to_string(),
                                  unix_ms_now(),
                                  static_cast<uint64_t>(record.build_ms + record.saved_build_ms)};
    artifact.engines.push_back(format::seal(header, step.engine->serialize()));
  }
  return encode_artifact(artifact);
}

CompiledModel CompiledModel::from_artifact(const Artifact& artifact, const ir::Graph& graph,
                                           const CompileSettings& settings) {
  const ArtifactManifest& m = artifact.manifest;
  CompileSettings s = settings;
  s.enabled_precisions = m.enabled_precisions;
  s.optimization_level = m.optimization_level;
  s.min_block_size = m.min_block_size;
  s.cpu_fused_attention = m.cpu_fused_attention;
  s.refittable = true;
  std::string here = make_backend(s.backend)->fingerprint().to_string();
  if (m.fingerprint != here) {
    log::warn(graph.source + ": artifact engines were built for " + m.fingerprint + ", this machine is " +
              here + "; compiling from the artifact's graph through the engine cache");
    return compile(graph, m.specs, s);
  }
  bool caching = settings.cache_built_engines || settings.reuse_cached_engines;
  bool behind = caching && settings.refittable;
  auto store = cache::open_artifact(artifact.engines, s, behind, graph.source);
  s.reuse_cached_engines = true;
  s.cache_built_engines = behind && settings.cache_built_engines;
  CompiledModel model = compile_with(graph, m.specs, s, store);
  for (const EngineRecord& record : model.m_report.engines) {
    if (record.status != "hit") {
      log::warn(graph.source + ": artifact engine " + record.engine_key->hex().substr(0, 16) +
                " was rebuilt: " + record.reason);
    }
  }
  return model;
}

namespace {

// The checks of one input given by dtype and shape, against its spec.
void check_input(const InputSpec& s, DType dtype, const std::vector<int64_t>& shape) {
  if (dtype != s.dtype) {
    throw Error(ErrorCode::invalid_argument, "input '" + s.name + "': dtype " +
                                                 std::string(dtype_name(dtype)) + ", expected " +
                                                 std::string(dtype_name(s.dtype)));
  }
  if (shape.size() != s.opt.size()) {
    throw Error(ErrorCode::invalid_argument, "input '" + s.name + "': rank " + std::to_string(shape.size()) +
                                                 ", expected " + std::to_string(s.opt.size()));
  }
  for (size_t d = 0; d < s.opt.size(); ++d) {
    if (shape[d] < s.min[d] || shape[d] > s.max[d]) {
      throw Error(ErrorCode::invalid_argument,
                  "input '" + s.name + "' dim " + std::to_string(d) + " is " + std::to_string(shape[d]) +
                      ", outside the compiled range [" + std::to_string(s.min[d]) + ", " +
                      std::to_string(s.max[d]) + "]");
    }
  }
}

void check_count(size_t expected, size_t got) {
  if (got != expected) {
    throw Error(ErrorCode::invalid_argument,
                "expected " + std::to_string(expected) + " inputs, got " + std::to_string(got));
  }
}

}  // namespace

void CompiledModel::check_inputs(std::span<const Tensor> inputs) const {
  check_count(m_specs.size(), inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) check_input(m_specs[i], inputs[i].dtype(), inputs[i].shape());
}

void CompiledModel::check_inputs(std::span<const TensorDesc> inputs) const {
  check_count(m_specs.size(), inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) check_input(m_specs[i], inputs[i].dtype, inputs[i].shape);
}

std::optional<std::string> CompiledModel::device_io_unavailable() const {
  const std::string backend = m_report.backend;
  // The backend first: a host backend's model is refused for that, however
  // it is partitioned. With no engine at all, only the name tells.
  bool any_engine = false, device_engines = false;
  for (const Step& step : m_steps) {
    if (!step.engine) continue;
    any_engine = true;
    device_engines = device_engines || step.engine->supports_device_io();
  }
  if (!device_engines && (any_engine || backend != "cuda")) {
    return "the model was compiled for backend '" + backend +
           "', whose engines run on the host (device inputs and outputs need backend 'cuda')";
  }
  if (m_steps.empty()) return std::string("the model has no nodes: no engine runs it");
  if (m_steps.size() == 1 && m_steps[0].engine) return std::nullopt;
  for (size_t s = 0; s < m_steps.size(); ++s) {
    if (m_steps[s].engine) continue;
    const SegmentRecord& seg = m_report.segments.at(s);
    std::string first_op;
    if (m_steps[s].graph && m_steps[s].graph->num_nodes() > 0) {
      first_op = " (first node " + m_steps[s].graph->node(ir::NodeId{0}).describe() + ")";
    }
    return "the model is " + std::to_string(m_steps.size()) + " segments, and segment " + std::to_string(s) +
           " (" + std::to_string(seg.nodes) + " nodes" + first_op +
           ") runs on the host, on the reference backend: " +
           (seg.reason.empty() ? std::string("unsupported by backend '" + backend + "'") : seg.reason) +
           "; device inputs and outputs need the whole model in one engine";
  }
  return "the model is " + std::to_string(m_steps.size()) +
         " engine segments; device inputs and outputs need the whole model in one engine";
}

Engine& CompiledModel::device_engine() {
  if (auto why = device_io_unavailable()) throw Error(ErrorCode::unsupported, "device run: " + *why);
  return *m_steps[0].engine;
}

std::vector<TensorDesc> CompiledModel::output_descs(std::span<const TensorDesc> inputs) {
  Engine& engine = device_engine();
  check_inputs(inputs);
  return engine.output_descs(inputs);
}

void CompiledModel::run_device(std::span<const DeviceTensor> inputs, std::span<const DeviceTensor> outputs,
                               void* stream) {
  Engine& engine = device_engine();
  std::vector<TensorDesc> descs;
  descs.reserve(inputs.size());
  for (const DeviceTensor& t : inputs) descs.push_back({t.dtype, t.shape});
  check_inputs(descs);
  engine.run_device(inputs, outputs, stream);
}

std::vector<Tensor> CompiledModel::run(std::span<const Tensor> inputs) { return run_with(inputs, nullptr); }

std::vector<Tensor> CompiledModel::run_with(std::span<const Tensor> inputs,
                                            std::vector<std::pair<int, LayerTiming>>* timings) {
  check_inputs(inputs);
  std::vector<LayerTiming> step_timings;
  std::vector<std::pair<ir::NodeId, double>> node_ms;
  if (timings) timings->clear();
  auto run_step = [&](size_t s, std::span<const Tensor> step_inputs) {
    Step& step = m_steps[s];
    if (!timings) return step.engine ? step.engine->run(step_inputs) : step.executor->run(step_inputs);
    std::vector<Tensor> outputs;
    if (step.engine) {
      outputs = step.engine->run_profiled(step_inputs, step_timings);
      for (LayerTiming& t : step_timings) timings->emplace_back(static_cast<int>(s), std::move(t));
    } else {
      outputs = step.executor->run(step_inputs, &node_ms);
      for (const auto& [n, ms] : node_ms) {
        const ir::Node& node = step.graph->node(n);
        LayerTiming t;
        t.name = node.name;
        t.nodes = {node.name};
        t.op = node.op_type;
        t.tactic = "reference";
        t.kind = "reference";
        t.ms = ms;
        timings->emplace_back(static_cast<int>(s), std::move(t));
      }
    }
    return outputs;
  };
  if (m_steps.size() == 1 && m_steps[0].engine) return run_step(0, inputs);
  std::vector<std::optional<Tensor>> values = m_constants;
  for (size_t i = 0; i < m_inputs.size(); ++i) values[static_cast<size_t>(m_inputs[i])] = inputs[i];
  std::vector<Tensor> step_inputs;
  for (size_t s = 0; s < m_steps.size(); ++s) {
    Step& step = m_steps[s];
    step_inputs.clear();
    for (ir::ValueId v : step.inputs) step_inputs.push_back(*values[static_cast<size_t>(v)]);
    std::vector<Tensor> outputs = run_step(s, step_inputs);
    for (size_t o = 0; o < step.outputs.size(); ++o)
      values[static_cast<size_t>(step.outputs[o])] = std::move(outputs[o]);
    // Tensors share storage, so dropping a value nobody reads again frees it.
    for (ir::ValueId v : step.inputs) {
      if (m_last_use[static_cast<size_t>(v)] == static_cast<int>(s)) values[static_cast<size_t>(v)].reset();
    }
  }
  std::vector<Tensor> result;
  for (ir::ValueId v : m_outputs) result.push_back(*values[static_cast<size_t>(v)]);
  return result;
}

namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

}  // namespace

ModelProfile CompiledModel::profile(std::span<const Tensor> inputs, int runs, int warmup) {
  runs = std::max(1, runs);
  for (int i = 0; i < warmup; ++i) run(inputs);
  std::vector<std::pair<int, LayerTiming>> timings;
  std::vector<std::vector<double>> step_ms;  // per row, one entry per run
  std::vector<double> wall;
  ModelProfile profile;
  profile.runs = runs;
  for (int r = 0; r < runs; ++r) {
    const auto start = Clock::now();
    profile.outputs = run_with(inputs, &timings);
    wall.push_back(ms_since(start));
    if (r == 0) {
      for (auto& [segment, t] : timings) profile.layers.push_back({t, segment, 0});
      step_ms.resize(timings.size());
    } else if (timings.size() != profile.layers.size()) {
      throw Error(ErrorCode::internal, "profile: run " + std::to_string(r) + " had " +
                                           std::to_string(timings.size()) + " steps, the first " +
                                           std::to_string(profile.layers.size()));
    }
    for (size_t i = 0; i < timings.size(); ++i) step_ms[i].push_back(timings[i].second.ms);
  }
  for (size_t i = 0; i < profile.layers.size(); ++i) {
    LayerTiming& t = profile.layers[i].timing;
    t.ms = median(step_ms[i]);
    profile.total_ms += t.ms;
    profile.by_kind_ms[t.kind] += t.ms;
  }
  for (ProfileLayer& l : profile.layers) {
    l.percent = profile.total_ms > 0 ? 100.0 * l.timing.ms / profile.total_ms : 0;
  }
  profile.wall_ms = median(wall);
  return profile;
}

std::vector<size_t> ModelProfile::slowest(size_t n) const {
  std::vector<size_t> order(layers.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return layers[a].timing.ms > layers[b].timing.ms; });
  order.resize(std::min(n, order.size()));
  return order;
}

}  // namespace kiln::runtime
