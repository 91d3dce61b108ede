#include "backends/cuda/cuda_engine.hpp"

#include <algorithm>
#include <cstdio>
#include <string>

#include <xxhash.h>

#include "backends/cuda/attention_layer.hpp"
#include "backends/cuda/cuda_check.hpp"
#include "backends/cuda/cuda_instance.hpp"
#include "backends/cuda/cuda_layers.hpp"
#include "backends/cuda/cuda_plan_format.hpp"
#include "backends/cuda/device_io.hpp"
#include "backends/cuda/kernels/kernels.hpp"
#include "backends/cuda/layer_launch.hpp"
#include "backends/cuda/layer_parts.hpp"
#include "backends/cuda/log_timing.hpp"
#include "backends/cuda/precision.hpp"
#include "backends/cuda/tactic_signature.hpp"
#include "builder/progress.hpp"
#include "builder/tactic_search.hpp"
#include "passes/passes.hpp"
#include "util/log.hpp"

namespace kiln::cuda {

using ir::k_no_node;
using ir::ValueId;

namespace {

// How many cuDNN engines or cuBLASLt algorithms a layer times, from the top
// of the libraries' heuristics: the default level takes 8; levels 4 and 5
// (CompileSettings::optimization_level, "exhaustive") look further down the
// lists, for a slower build.
size_t max_candidates(const CompileSettings& settings) {
  return settings.optimization_level >= 5 ? 32 : settings.optimization_level == 4 ? 16 : 8;
}

// A layer's tactic as reports show it: a half engine's layers say so, and
// channels-last layers say "nhwc".
std::string reported_tactic(const Layer& layer, ElemType precision, Layout layout) {
  std::string name = layer.tactic.name.empty() ? layer_kind_name(layer.kind) : layer.tactic.name;
  if (precision != ElemType::f32) name += std::string(" ") + precision_name(precision);
  if (layout == Layout::nhwc) name += " nhwc";
  return name;
}

// Times a layer's candidates (or finds them in the timing cache) and
// records the fastest one's name and time in the layer's tactic.
builder::TacticChoice search_layer(Layer& layer, const std::string& platform, const std::string& signature,
                                   const std::vector<builder::TacticCandidate>& candidates,
                                   const CompileSettings& settings, builder::TimingCache& timing_cache) {
  builder::TacticChoice choice = builder::search_tactics(
      builder::layer_key(platform, 1, signature, candidates), candidates, settings, &timing_cache);
  layer.tactic.name = choice.tactic;
  for (const auto& timing : choice.timings) {
    if (timing.tactic == choice.tactic) layer.tactic.time_ms = timing.time_ms;
  }
  return choice;
}

// A cuBLASLt algorithm's name in tactic lists and the timing cache: a hash
// of its 64 opaque bytes, stable across processes and machines.
std::string matmul_algo_name(const LtAlgoBytes& algo) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(XXH3_64bits(algo.data(), algo.size())));
  return "cublasLt:" + std::string(hex);
}

}  // namespace

CudaEngine::CudaEngine(Plan plan) : m_plan(std::move(plan)), m_weights(m_plan, m_layouts, m_device) {
  // From the plan alone: a build and a load of its plan agree.
  m_layouts = ActivationLayouts::assign(m_plan.graph, m_plan.layers, m_plan.precision);
  if (m_plan.precision != ElemType::f32)
    log::info("cuda engine: " + std::string(precision_name(m_plan.precision)) + ": " +
              m_layouts.summary(m_plan.graph));
}

CudaEngine::~CudaEngine() = default;

LayerLauncher CudaEngine::launcher() const { return LayerLauncher(m_plan, m_layouts, m_device, m_weights); }

void CudaEngine::choose_tactics(Instance& inst, const CompileSettings& settings,
                                builder::TimingCache& timing_cache) {
  size_t tuned = 0;
  for (const Layer& l : m_plan.layers) tuned += l.kind == LayerKind::conv || l.kind == LayerKind::matmul;
  builder::BuildProgress progress("cuda: timing layers", tuned);
  const std::string platform = m_plan.fingerprint.to_string();
  for (size_t i = 0; i < m_plan.layers.size(); ++i) {
    const LayerKind kind = m_plan.layers[i].kind;
    if (kind == LayerKind::conv) {
      choose_conv_tactic(inst, i, platform, settings, timing_cache);
    } else if (kind == LayerKind::matmul) {
      choose_matmul_tactic(inst, i, platform, settings, timing_cache);
    } else {
      continue;
    }
    progress.advance();
  }
  progress.finish();
  inst.workspace = DeviceBuffer(inst.workspace_bytes);
}

void CudaEngine::choose_conv_tactic(Instance& inst, size_t i, const std::string& platform,
                                    const CompileSettings& settings, builder::TimingCache& timing_cache) {
  const ir::Graph& g = m_plan.graph;
  Layer& layer = m_plan.layers[i];
  const std::string where = g.node(layer.anchor()).describe();
  const LayerLauncher launch = launcher();
  std::vector<builder::TacticCandidate> candidates;
  // At the layout the conv runs at (and its weight as it will read it).
  const ConvGeometry geo = conv_geometry(m_plan, layer, inst, m_layouts.of_layer(i));
  const auto fusion = cudnn_fusion(g, layer);
  std::vector<ConvCandidate> offered;
  std::vector<bool> fused;
  if (fusion) {
    for (ConvCandidate& c :
         conv_candidates(m_device.cudnn(), geo, *fusion, max_candidates(settings), false)) {
      offered.push_back(std::move(c));
      fused.push_back(true);
    }
  }
  for (ConvCandidate& c : conv_candidates(m_device.cudnn(), geo, {}, max_candidates(settings), false)) {
    offered.push_back(std::move(c));
    fused.push_back(false);
  }
  if (offered.empty()) throw Error(ErrorCode::unsupported, "cuda: cuDNN has no engine for " + where);
  size_t workspace = 0;
  for (const ConvCandidate& c : offered) workspace = std::max(workspace, c.plan.workspace());
  auto scratch = std::make_shared<DeviceBuffer>(workspace);
  for (size_t c = 0; c < offered.size(); ++c) {
    const std::string name = offered[c].choice.name() + (fused[c] ? " fused" : "");
    candidates.push_back({name, [this, &launch, &inst, &offered, &fused, c, i, scratch] {
                            return time_on_stream(m_device.stream(), [&] {
                              launch.run_conv(inst, i, offered[c].plan, fused[c], scratch->data());
                            });
                          }});
  }
  const builder::TacticChoice choice = search_layer(
      layer, platform, conv_signature(geo, fusion ? &*fusion : nullptr), candidates, settings, timing_cache);
  layer.tactic.cudnn = offered[choice.index].choice;
  layer.tactic.fused = fused[choice.index];
  inst.layers[i].conv.emplace(offered[choice.index].plan);
  inst.workspace_bytes = std::max(inst.workspace_bytes, inst.layers[i].conv->workspace());
}

void CudaEngine::choose_matmul_tactic(Instance& inst, size_t i, const std::string& platform,
                                      const CompileSettings& settings, builder::TimingCache& timing_cache) {
  const ir::Graph& g = m_plan.graph;
  Layer& layer = m_plan.layers[i];
  const std::string where = g.node(layer.anchor()).describe();
  const LayerLauncher launch = launcher();
  std::vector<builder::TacticCandidate> candidates;
  const MatmulParts& parts = inst.layers[i].matmul_parts = matmul_parts(m_plan, layer, inst);
  LtMatmul probe(m_device.cublaslt(), parts.shape);
  const std::vector<LtAlgoBytes> algos = probe.candidates(max_candidates(settings), k_max_matmul_workspace);
  if (algos.empty()) throw Error(ErrorCode::unsupported, "cuda: cuBLASLt has no algorithm for " + where);
  auto scratch = std::make_shared<DeviceBuffer>(k_max_matmul_workspace);
  std::vector<std::shared_ptr<LtMatmul>> matmuls;  // one per candidate, with its algorithm
  std::vector<size_t> algo_of;                     // by candidate: index into algos
  for (size_t c = 0; c < algos.size(); ++c) {
    auto mm = std::make_shared<LtMatmul>(m_device.cublaslt(), parts.shape);
    if (!mm->select(algos[c])) continue;
    candidates.push_back({matmul_algo_name(algos[c]), [this, &launch, &inst, mm, i, scratch] {
                            return time_on_stream(m_device.stream(),
                                                  [&] { launch.run_matmul(inst, i, *mm, scratch->data()); });
                          }});
    matmuls.push_back(std::move(mm));
    algo_of.push_back(c);
  }
  if (candidates.empty())
    throw Error(ErrorCode::unsupported, "cuda: cuBLASLt rejects every algorithm for " + where);
  const builder::TacticChoice choice =
      search_layer(layer, platform, matmul_signature(parts.shape), candidates, settings, timing_cache);
  const size_t algo_index = algo_of[choice.index];
  layer.tactic.lt_algo.assign(algos[algo_index].begin(), algos[algo_index].end());
  auto mm = std::make_unique<LtMatmul>(m_device.cublaslt(), parts.shape);
  mm->select(algos[algo_index]);
  inst.workspace_bytes = std::max(inst.workspace_bytes, mm->workspace());
  inst.layers[i].matmul = std::move(mm);
}

std::unique_ptr<CudaEngine> CudaEngine::build(const ir::Graph& lowered, std::span<const InputSpec> specs,
                                              const CompileSettings& settings,
                                              builder::TimingCache& timing_cache,
                                              const Fingerprint& fingerprint) {
  check_engine_specs(lowered, specs, "cuda");
  // The partitioner checked each node on the whole model; an extracted
  // segment can differ (a shape value another segment computes arrives as
  // an input when it cannot be computed again), and a layer of a node the
  // GPU cannot run would compute garbage.
  for (ir::NodeId id = 0; id < static_cast<ir::NodeId>(lowered.num_nodes()); ++id) {
    if (auto why = unsupported_reason(lowered, id))
      throw Error(ErrorCode::unsupported, "cuda: " + lowered.node(id).describe() + ": " + *why);
  }
  Plan plan;
  plan.graph = lowered;
  plan.specs.assign(specs.begin(), specs.end());
  plan.layers = partition_layers(lowered);
  plan.fingerprint = fingerprint;
  plan.precision = storage_precision(settings.enabled_precisions);
  plan.layers = fuse_attention(lowered, std::move(plan.layers));
  // Weights leave the plan; their values go to the GPU.
  std::vector<std::pair<ValueId, Tensor>> weights;
  for (size_t i = 0; i < plan.graph.num_values(); ++i) {
    ir::Value& v = plan.graph.value(static_cast<ValueId>(i));
    if (!v.recipe || v.producer != k_no_node) continue;
    if (!v.initializer) {
      throw Error(ErrorCode::invalid_argument,
                  "cuda: weight '" + v.name + "' of the lowered graph has no value");
    }
    v.type = ir::ValueType::of(*v.initializer);
    weights.emplace_back(static_cast<ValueId>(i), std::move(*v.initializer));
    v.initializer.reset();
  }
  plan.source_weight_count = source_weight_count(plan.graph);
  std::unique_ptr<CudaEngine> engine(new CudaEngine(std::move(plan)));
  engine->m_weights.upload_structural();
  for (const auto& [v, host] : weights) engine->m_weight_bytes += engine->m_weights.upload(v, host);
  engine->m_device.synchronize();
  engine->m_weights.prepare_matmul_weights();
  engine->m_weights.prepare_conv_weights();
  engine->m_ready = true;
  std::vector<std::vector<int64_t>> opt;
  for (const InputSpec& s : engine->m_plan.specs) opt.push_back(s.opt);
  auto inst = create_instance(engine->m_plan, engine->m_layouts, engine->m_device, opt);
  engine->choose_tactics(*inst, settings, timing_cache);
  engine->m_instances[opt] = std::move(inst);
  if (settings.debug) {
    for (const LayerReport& r : engine->info().layers) {
      log::info("cuda: layer '" + r.name + "' (" + r.op + "): " + r.tactic +
                (r.time_ms > 0 ? " " + std::to_string(r.time_ms) + " ms" : ""));
    }
  }
  return engine;
}

std::unique_ptr<CudaEngine> CudaEngine::from_plan(Plan plan) {
  const auto start = Clock::now();
  std::unique_ptr<CudaEngine> engine(new CudaEngine(std::move(plan)));
  log::info("cuda engine: device context (CUDA, cuDNN and cuBLASLt handles) in " + ms_text(ms_since(start)));
  engine->m_weights.upload_structural();
  // The instance at the opt shapes is made here, as a build makes it: its
  // cuDNN plans are finalized (some engines compile kernels then) and its
  // arena allocated as part of the load, whose time reports it, so the
  // first run after a cache hit costs what every other run costs.
  std::vector<std::vector<int64_t>> opt;
  for (const InputSpec& s : engine->m_plan.specs) opt.push_back(s.opt);
  engine->m_instances[opt] = create_instance(engine->m_plan, engine->m_layouts, engine->m_device, opt);
  return engine;
}

Instance& CudaEngine::instance_for(const std::vector<std::vector<int64_t>>& shapes) {
  auto it = m_instances.find(shapes);
  if (it != m_instances.end()) return *it->second;
  // Every distinct shape set keeps its arena: bound the count, dropping the
  // oldest-made first (the opt instance is rebuilt on demand like any other).
  constexpr size_t k_max_instances = 4;
  if (m_instances.size() >= k_max_instances) {
    // A device run may still be using the instance's arena and graph.
    m_device.synchronize();
    m_instances.erase(m_instances.begin());
  }
  return *m_instances.emplace(shapes, create_instance(m_plan, m_layouts, m_device, shapes)).first->second;
}

void CudaEngine::check_finished() const {
  check(cudaStreamSynchronize(m_device.stream()), "cuda engine run");
  check(cudaGetLastError(), "cuda engine run");
}

std::vector<Tensor> CudaEngine::execute(std::span<const Tensor> inputs, std::vector<LayerTiming>* timings) {
  if (!m_ready)
    throw Error(ErrorCode::invalid_argument, "cuda engine has no weights: refit() has not succeeded");
  check_engine_inputs(m_plan.graph, m_plan.specs, inputs, "cuda");
  std::vector<std::vector<int64_t>> shapes;
  for (const Tensor& t : inputs) shapes.push_back(t.shape());
  const Instance& inst = instance_for(shapes);
  const ir::Graph& g = m_plan.graph;
  const InstanceTensors t = launcher().tensors(inst);
  const cudaStream_t stream = m_device.stream();
  // fp32 in, the storage precision inside: a half engine's first step casts
  // each input on the GPU, its last casts each output back.
  const ElemType type = m_plan.precision;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const ValueId v = g.inputs()[i];
    if (inst.offset[static_cast<size_t>(inst.root[static_cast<size_t>(v)])] < 0)
      continue;  // read by no layer
    void* landing = type == ElemType::f32 ? t.ptr(v) : inst.boundary.data();
    check(cudaMemcpyAsync(landing, inputs[i].bytes().data(), inputs[i].byte_size(), cudaMemcpyHostToDevice,
                          stream),
          "cudaMemcpyAsync(input)");
    if (type != ElemType::f32)
      launch_cast(ElemType::f32, type, landing, t.ptr(v), static_cast<int64_t>(inputs[i].numel()), stream);
  }
  const LayerLauncher launch = launcher();
  for (size_t i = 0; i < m_plan.layers.size(); ++i) {
    if (!timings) {
      launch.run(inst, i, inst.workspace.data());
      continue;
    }
    const Layer& layer = m_plan.layers[i];
    if (layer.kind == LayerKind::shape) continue;  // no GPU work to time
    LayerTiming timing;
    timing.name = g.node(layer.anchor()).name;
    for (ir::NodeId id : layer.nodes) {
      timing.nodes.push_back(g.node(id).name);
      timing.op += (timing.op.empty() ? "" : "+") + g.node(id).op_type;
    }
    timing.tactic = reported_tactic(layer, m_plan.precision, m_layouts.of_layer(i));
    timing.kind = "cuda";
    timing.ms = time_on_stream(stream, [&] { launch.run(inst, i, inst.workspace.data()); });
    timings->push_back(std::move(timing));
  }
  std::vector<Tensor> outputs;
  for (ValueId v : g.outputs()) {
    Tensor out = Tensor::zeros(DType::float32, inst.shape(v));
    const void* from = t.ptr(m_layouts.output(v));  // NCHW at the boundary
    if (type != ElemType::f32) {
      launch_cast(type, ElemType::f32, from, inst.boundary.data(), static_cast<int64_t>(out.numel()), stream);
      from = inst.boundary.data();
    }
    check(cudaMemcpyAsync(out.mutable_bytes().data(), from, out.byte_size(), cudaMemcpyDeviceToHost, stream),
          "cudaMemcpyAsync(output)");
    outputs.push_back(std::move(out));
  }
  check_finished();
  return outputs;
}

std::vector<Tensor> CudaEngine::run(std::span<const Tensor> inputs) { return execute(inputs, nullptr); }

std::vector<Tensor> CudaEngine::run_profiled(std::span<const Tensor> inputs,
                                             std::vector<LayerTiming>& timings) {
  timings.clear();
  return execute(inputs, &timings);
}

std::vector<TensorDesc> CudaEngine::output_descs(std::span<const TensorDesc> inputs) {
  const ir::Graph& g = m_plan.graph;
  check_engine_inputs(g, m_plan.specs, inputs, "cuda");
  std::vector<std::vector<int64_t>> shapes;
  for (const TensorDesc& d : inputs) shapes.push_back(d.shape);
  const Instance& inst = instance_for(shapes);
  std::vector<TensorDesc> out;
  for (ValueId v : g.outputs()) out.push_back({g.value(v).type.dtype, inst.shape(v)});
  return out;
}

size_t CudaEngine::captured_graphs() const {
  size_t n = 0;
  for (const auto& [shapes, inst] : m_instances) n += inst->graph.captured();
  return n;
}

void CudaEngine::enqueue_layers(Instance& inst, bool use_graph) {
  auto eager = [this, &inst] {
    const LayerLauncher launch = launcher();
    for (size_t i = 0; i < m_plan.layers.size(); ++i) launch.run(inst, i, inst.workspace.data());
  };
  const cudaStream_t stream = m_device.stream();
  if (!use_graph || !cuda_graphs_enabled() || inst.graph_failed || inst.device_runs++ == 0) {
    eager();
    return;
  }
  if (!inst.graph.captured()) {
    std::string why;
    if (!inst.graph.capture(
            stream, [](void* f) { (*static_cast<decltype(eager)*>(f))(); }, &eager, why)) {
      inst.graph_failed = true;
      log::warn("cuda engine: no CUDA graph for input shapes " + shape_to_string(inst.input_shapes.front()) +
                (inst.input_shapes.size() > 1 ? ",..." : "") + ": " + why + "; launching layer by layer");
      eager();
      return;
    }
  }
  inst.graph.launch(stream);
}

void CudaEngine::run_device(std::span<const DeviceTensor> inputs, std::span<const DeviceTensor> outputs,
                            void* stream) {
  if (!m_ready)
    throw Error(ErrorCode::invalid_argument, "cuda engine has no weights: refit() has not succeeded");
  const ir::Graph& g = m_plan.graph;
  std::vector<TensorDesc> descs;
  std::vector<std::vector<int64_t>> shapes;
  for (const DeviceTensor& t : inputs) {
    descs.push_back({t.dtype, t.shape});
    shapes.push_back(t.shape);
  }
  check_engine_inputs(g, m_plan.specs, descs, "cuda");
  if (outputs.size() != g.outputs().size()) {
    throw Error(ErrorCode::invalid_argument, "cuda engine has " + std::to_string(g.outputs().size()) +
                                                 " outputs, the caller gave " +
                                                 std::to_string(outputs.size()));
  }
  const int gpu = probe_gpu().gpu->device;
  ScopedDevice on_gpu(gpu);
  Instance& inst = instance_for(shapes);
  for (size_t i = 0; i < inputs.size(); ++i) {
    const std::string what = "input '" + g.value(g.inputs()[i]).name + "'";
    if (inputs[i].device != gpu) {
      throw Error(ErrorCode::invalid_argument, what + " is on CUDA device " +
                                                   std::to_string(inputs[i].device) +
                                                   ", the engine runs on device " + std::to_string(gpu));
    }
    check_device_pointer(inputs[i].data, inputs[i].byte_size(), gpu, what);
  }
  for (size_t o = 0; o < outputs.size(); ++o) {
    const ValueId v = g.outputs()[o];
    const std::string what = "output '" + g.value(v).name + "'";
    const DType dtype = g.value(v).type.dtype;
    if (outputs[o].dtype != dtype || outputs[o].shape != inst.shape(v)) {
      throw Error(ErrorCode::invalid_argument,
                  what + " is " + std::string(dtype_name(dtype)) + "[" + shape_to_string(inst.shape(v)) +
                      "], the caller's tensor is " + std::string(dtype_name(outputs[o].dtype)) + "[" +
                      shape_to_string(outputs[o].shape) + "]");
    }
    if (outputs[o].device != gpu) {
      throw Error(ErrorCode::invalid_argument, what + " is on CUDA device " +
                                                   std::to_string(outputs[o].device) +
                                                   ", the engine runs on device " + std::to_string(gpu));
    }
    check_device_pointer(outputs[o].data, outputs[o].byte_size(), gpu, what);
  }
  if (!m_caller_ready) {
    m_caller_ready = std::make_unique<Event>();
    m_done = std::make_unique<Event>();
  }
  const cudaStream_t caller = static_cast<cudaStream_t>(stream);
  const cudaStream_t own = m_device.stream();
  const InstanceTensors t = launcher().tensors(inst);
  // The engine's stream starts after what the caller enqueued before this
  // call (the producer of the inputs, the last reader of the outputs).
  stream_wait(own, caller, *m_caller_ready);
  // Inputs into the arena and outputs out of it, device to device, at the
  // engine's fp32 boundary. An engine that stores activations in another
  // precision casts instead (from the caller's memory into the arena, and
  // back into the caller's), as its host path does.
  const ElemType type = m_plan.precision;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const ValueId v = g.inputs()[i];
    if (inst.offset[static_cast<size_t>(inst.root[static_cast<size_t>(v)])] < 0)
      continue;  // read by no layer
    if (type != ElemType::f32) {
      launch_cast(ElemType::f32, type, inputs[i].data, t.ptr(v),
                  static_cast<int64_t>(inputs[i].byte_size() / sizeof(float)), own);
      continue;
    }
    check(cudaMemcpyAsync(t.ptr(v), inputs[i].data, inputs[i].byte_size(), cudaMemcpyDeviceToDevice, own),
          "cudaMemcpyAsync(input)");
  }
  enqueue_layers(inst, true);
  for (size_t o = 0; o < outputs.size(); ++o) {
    const void* from = t.ptr(m_layouts.output(g.outputs()[o]));  // NCHW at the boundary
    if (type != ElemType::f32) {
      launch_cast(type, ElemType::f32, from, outputs[o].data,
                  static_cast<int64_t>(outputs[o].byte_size() / sizeof(float)), own);
      continue;
    }
    check(cudaMemcpyAsync(outputs[o].data, from, outputs[o].byte_size(), cudaMemcpyDeviceToDevice, own),
          "cudaMemcpyAsync(output)");
  }
  // What the caller enqueues after this call starts after the run.
  stream_wait(caller, own, *m_done);
  // A bad launch configuration shows here; faults inside kernels show at
  // the caller's next synchronisation, as for any asynchronous CUDA work.
  check(cudaGetLastError(), "cuda engine run");
}

void CudaEngine::refit(std::span<const Tensor> source_weights) {
  m_ready = false;
  // Captured graphs hold the weights' addresses, which an upload may move.
  for (auto& [shapes, inst] : m_instances) {
    inst->graph.reset();
    inst->graph_failed = false;
    inst->device_runs = 0;
  }
  if (source_weights.size() < static_cast<size_t>(m_plan.source_weight_count)) {
    throw Error(ErrorCode::invalid_argument, "refit: " + std::to_string(source_weights.size()) +
                                                 " source weights, the plan reads " +
                                                 std::to_string(m_plan.source_weight_count));
  }
  const ir::Graph& g = m_plan.graph;
  size_t bytes = 0;
  for (size_t i = 0; i < g.num_values(); ++i) {
    const ir::Value& v = g.value(static_cast<ValueId>(i));
    if (!v.recipe || v.producer != k_no_node) continue;
    Tensor t;
    try {
      t = passes::evaluate_recipe(*v.recipe, source_weights);
    } catch (const Error& e) {
      throw e.with_context("refit: weight '" + v.name + "': ");
    }
    if (!v.type.is_static() || t.dtype() != v.type.dtype || t.shape() != v.type.static_shape()) {
      throw Error(ErrorCode::invalid_argument,
                  "refit: weight '" + v.name + "' is " + std::string(dtype_name(t.dtype())) + "[" +
                      t.shape_string() + "], the plan has " + v.type.to_string());
    }
    bytes += m_weights.upload(static_cast<ValueId>(i), t);
  }
  m_device.synchronize();
  m_weights.prepare_matmul_weights();
  m_weights.prepare_conv_weights();
  m_weight_bytes = bytes;
  m_ready = true;
}

std::vector<std::byte> CudaEngine::serialize() const { return serialize_plan(m_plan); }

EngineInfo CudaEngine::info() const {
  EngineInfo out;
  const ir::Graph& g = m_plan.graph;
  for (size_t i = 0; i < m_plan.layers.size(); ++i) {
    const Layer& layer = m_plan.layers[i];
    LayerReport r;
    r.name = g.node(layer.anchor()).name;
    if (layer.kind == LayerKind::attention) {
      r.name = g.node(attention_nodes(g, layer)->match.softmax).name;
      r.op = "Attention";
    } else {
      for (ir::NodeId id : layer.nodes) r.op += (r.op.empty() ? "" : "+") + g.node(id).op_type;
    }
    r.tactic = reported_tactic(layer, m_plan.precision, m_layouts.of_layer(i));
    r.time_ms = layer.tactic.time_ms;
    out.layers.push_back(std::move(r));
  }
  for (const auto& [shapes, inst] : m_instances)
    out.activation_bytes = std::max(out.activation_bytes, inst->arena_bytes);
  out.weight_bytes = m_weight_bytes;
  return out;
}

}  // namespace kiln::cuda
