#include "backends/cpu/cpu_engine.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <thread>

#include "backends/cpu/layer_partition.hpp"
#include "backends/cpu/non_finite.hpp"
#include "backends/cpu/openmp_pool.hpp"
#include "backends/cpu/plan_format.hpp"
#include "builder/progress.hpp"
#include "ir/op_schema.hpp"
#include "passes/passes.hpp"
#include "util/log.hpp"
#include "util/parallel_for.hpp"

namespace kiln::cpu {

using ir::ValueId;

namespace {

// oneDNN runs on OpenMP here. Looked up at run time so this library needs
// neither -fopenmp nor a direct link to the OpenMP runtime (libdnnl loads it).
void set_omp_threads(int n) {
  using Fn = void (*)(int);
  static Fn fn = openmp_symbol<Fn>("omp_set_num_threads");
  // 0 means every core; set it explicitly, so an earlier engine's smaller
  // count does not stick to this one.
  const int threads = n > 0 ? n : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (fn) fn(threads);
}

}  // namespace

CpuEngine::CpuEngine(EnginePlan plan)
    : m_plan(std::move(plan)), m_engine(dnnl::engine::kind::cpu, 0), m_stream(m_engine) {}

std::unique_ptr<CpuEngine> CpuEngine::build(const ir::Graph& lowered, std::span<const InputSpec> specs,
                                            const CompileSettings& settings,
                                            builder::TimingCache& timing_cache,
                                            const Fingerprint& fingerprint) {
  check_engine_specs(lowered, specs, "cpu");
  EnginePlan plan;
  plan.graph = lowered;
  plan.specs.assign(specs.begin(), specs.end());
  // Before stripping: fusion looks at weight values.
  plan.layers = partition_layers(lowered, settings.cpu_fused_attention);
  plan.num_threads = settings.num_threads;
  plan.fingerprint = fingerprint;
  WeightStore weights(plan.graph.num_values());
  for (size_t i = 0; i < plan.graph.num_values(); ++i) {
    ir::Value& v = plan.graph.value(static_cast<ValueId>(i));
    if (!is_weight(plan.graph, static_cast<ValueId>(i))) continue;
    if (!v.initializer) {
      throw Error(ErrorCode::invalid_argument,
                  "cpu: weight '" + v.name + "' of the lowered graph has no value");
    }
    if (v.initializer->dtype() != DType::float32) {
      throw Error(ErrorCode::unsupported,
                  "cpu: weight '" + v.name + "' is " + std::string(dtype_name(v.initializer->dtype())));
    }
    weights[i] = *v.initializer;
    v.type = ir::ValueType::of(*v.initializer);
    v.initializer.reset();
  }

  plan.source_weight_count = source_weight_count(plan.graph);
  std::unique_ptr<CpuEngine> engine(new CpuEngine(std::move(plan)));
  engine->m_weights = std::move(weights);
  engine->m_non_finite_weights = engine->weights_non_finite();
  engine->apply_threads();
  EnginePlan& p = engine->m_plan;
  size_t tuned = 0;
  for (const LayerDesc& l : p.layers) tuned += l.kind == LayerKind::conv || l.kind == LayerKind::matmul;
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::vector<int64_t>> opt, max;
  for (const InputSpec& s : p.specs) {
    opt.push_back(s.opt);
    max.push_back(s.max);
  }
  {
    builder::BuildProgress progress("cpu: timing layers", tuned);
    ConsumerLayouts consumers;
    TuningContext tuning{&settings, &timing_cache, &progress, p.fingerprint.to_string(), nullptr, &consumers};
    auto inst = create_instance(p, opt, engine->m_engine, engine->m_stream, &tuning, true);
    progress.finish();
    inst->prepare_weights(engine->m_weights, engine->m_weight_factors, engine->m_engine, engine->m_stream,
                          p.num_threads);
    // Level 4 and up only: on the zoo models the second pass changed few
    // choices (ResNet-50 at batch 1: 32.08 -> 31.98 ms end to end) for up to
    // twice the timing work.
    if (settings.optimization_level >= 4 && tuned > 0) {
      if (auto refined = engine->refine_layouts(*inst, opt, consumers, settings, timing_cache)) {
        inst = std::move(refined);
      }
    }
    engine->m_generation = 1;
    inst->weight_generation = 1;
    p.weight_bytes = inst->weight_bytes;
    p.activation_bytes = inst->arena_bytes + inst->aux_bytes;
    engine->m_instances.push_front(std::move(inst));
  }
  if (max != opt) {
    auto planned = create_instance(p, max, engine->m_engine, engine->m_stream, nullptr, false);
    p.activation_bytes = planned->arena_bytes + planned->aux_bytes;
  }
  engine->m_ready = true;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (settings.debug) {
    for (const LayerReport& r : engine->info().layers) {
      log::info("cpu: layer '" + r.name + "' (" + r.op + "): " + r.tactic +
                (r.time_ms > 0 ? " " + std::to_string(r.time_ms) + " ms" : ""));
    }
    log::info("cpu: built " + std::to_string(p.layers.size()) + " layers in " + std::to_string(seconds) +
              " s; arena " + std::to_string(p.activation_bytes) + " bytes, weights " +
              std::to_string(p.weight_bytes) + " bytes");
  }
  return engine;
}

namespace {

// Zero-filled inputs at `shapes`, in each spec's dtype.
std::vector<Tensor> zero_inputs(const std::vector<InputSpec>& specs,
                                const std::vector<std::vector<int64_t>>& shapes) {
  std::vector<Tensor> inputs;
  for (size_t i = 0; i < specs.size(); ++i) inputs.push_back(Tensor::zeros(specs[i].dtype, shapes[i]));
  return inputs;
}

}  // namespace

std::unique_ptr<Instance> CpuEngine::refine_layouts(Instance& first,
                                                    const std::vector<std::vector<int64_t>>& shapes,
                                                    const ConsumerLayouts& consumers,
                                                    const CompileSettings& settings,
                                                    builder::TimingCache& timing_cache) {
  // A second tuning pass in which every candidate also pays for reordering
  // its output into what the first pass's consumer read: a layer may then
  // keep its consumer's layout at a small cost instead of handing it a
  // reorder. Per-layer choices are greedy either way, so the two engines are
  // run end to end and the faster one stays.
  EnginePlan second = m_plan;
  size_t tuned = 0;
  for (const LayerDesc& l : second.layers) tuned += l.kind == LayerKind::conv || l.kind == LayerKind::matmul;
  builder::BuildProgress progress("cpu: refining layouts", tuned);
  TuningContext tuning{&settings,  &timing_cache, &progress, m_plan.fingerprint.to_string(),
                       &consumers, nullptr};
  auto candidate = create_instance(second, shapes, m_engine, m_stream, &tuning, true);
  progress.finish();
  bool same = true;
  for (size_t i = 0; i < second.layers.size(); ++i) {
    const LayerDesc& a = m_plan.layers[i];
    const LayerDesc& b = second.layers[i];
    same = same && a.tactic.name == b.tactic.name && a.dw_fused == b.dw_fused &&
           a.dw_tactic.name == b.dw_tactic.name;
  }
  if (same) return nullptr;
  candidate->prepare_weights(m_weights, m_weight_factors, m_engine, m_stream, m_plan.num_threads);
  const std::vector<Tensor> inputs = zero_inputs(m_plan.specs, shapes);
  auto time_run = [&](Instance& inst) {
    const auto start = std::chrono::steady_clock::now();
    inst.run(m_plan.graph, inputs, m_weights, m_engine, m_stream);
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  };
  // Interleaved, best of several: load on the machine only ever adds time.
  double first_ms = time_run(first);
  double second_ms = time_run(*candidate);
  for (int i = 0; i < 4; ++i) {
    first_ms = std::min(first_ms, time_run(first));
    second_ms = std::min(second_ms, time_run(*candidate));
  }
  if (settings.debug) {
    log::info("cpu: layout refinement: first pass " + std::to_string(first_ms) + " ms, second pass " +
              std::to_string(second_ms) + " ms: keeping the " + (second_ms < first_ms ? "second" : "first"));
  }
  if (second_ms >= first_ms) return nullptr;
  m_plan.layers = std::move(second.layers);
  // The candidate was built over the copy's graph; rebuild over the engine's
  // own plan so nothing refers into `second` once it is gone.
  candidate.reset();
  auto kept = create_instance(m_plan, shapes, m_engine, m_stream, nullptr, true);
  kept->prepare_weights(m_weights, m_weight_factors, m_engine, m_stream, m_plan.num_threads);
  return kept;
}

std::unique_ptr<CpuEngine> CpuEngine::from_plan(EnginePlan plan) {
  std::unique_ptr<CpuEngine> engine(new CpuEngine(std::move(plan)));
  engine->m_weights.assign(engine->m_plan.graph.num_values(), Tensor());
  std::vector<std::vector<int64_t>> opt;
  for (const InputSpec& s : engine->m_plan.specs) opt.push_back(s.opt);
  // oneDNN fixes a primitive's thread count when it is created: set ours first.
  engine->apply_threads();
  // Primitives are made now so that refit() only evaluates recipes and reorders.
  // The plan recorded its activation memory at its max shapes: a value, or
  // an arena, far larger at the opt shapes means its shapes or attributes
  // were altered (a corrupt plan resealed with valid checksums). It is
  // refused before oneDNN sees those shapes (creating primitives for absurd
  // shapes alone takes seconds and gigabytes) and before allocating.
  const size_t limit = 2 * engine->m_plan.activation_bytes + (size_t{1} << 20);
  auto too_large = [&](size_t needed) {
    return Error(ErrorCode::invalid_model, "cpu plan: needs " + std::to_string(needed) +
                                               " bytes of activations, but recorded " +
                                               std::to_string(engine->m_plan.activation_bytes));
  };
  {
    ir::Graph g = engine->m_plan.graph;
    for (size_t i = 0; i < g.inputs().size() && i < opt.size(); ++i) {
      g.value(g.inputs()[i]).type = ir::ValueType::of_static(engine->m_plan.specs[i].dtype, opt[i]);
    }
    ir::infer_shapes(g);
    for (size_t v = 0; v < g.num_values(); ++v) {
      const ir::Value& value = g.value(static_cast<ValueId>(v));
      if (value.producer == ir::k_no_node || !value.type.is_static()) continue;
      const auto count = static_cast<size_t>(shape_numel(value.type.static_shape()));
      if (count > limit || count * dtype_size(value.type.dtype) > limit)
        throw too_large(count * dtype_size(value.type.dtype));
    }
  }
  auto inst = create_instance(engine->m_plan, opt, engine->m_engine, engine->m_stream, nullptr, false);
  if (inst->arena_bytes + inst->aux_bytes > limit) throw too_large(inst->arena_bytes + inst->aux_bytes);
  materialize(*inst, engine->m_engine);
  engine->m_instances.push_front(std::move(inst));
  return engine;
}

void CpuEngine::apply_threads() const { set_omp_threads(m_plan.num_threads); }

void CpuEngine::set_num_threads(int threads) { m_plan.num_threads = threads; }

void CpuEngine::check_inputs(std::span<const Tensor> inputs) const {
  check_engine_inputs(m_plan.graph, m_plan.specs, inputs, "cpu");
}

Instance& CpuEngine::instance_for(const std::vector<std::vector<int64_t>>& shapes) {
  for (auto it = m_instances.begin(); it != m_instances.end(); ++it) {
    if ((*it)->input_shapes != shapes) continue;
    if (it != m_instances.begin()) m_instances.splice(m_instances.begin(), m_instances, it);
    return *m_instances.front();
  }
  m_instances.push_front(create_instance(m_plan, shapes, m_engine, m_stream, nullptr, true));
  while (m_instances.size() > k_max_instances) m_instances.pop_back();
  return *m_instances.front();
}

std::vector<Tensor> CpuEngine::run(std::span<const Tensor> inputs) {
  return run_with(inputs, nullptr, nullptr);
}

std::vector<Tensor> CpuEngine::run_profiled(std::span<const Tensor> inputs,
                                            std::vector<LayerTiming>& timings) {
  std::vector<double> step_ms;
  const Instance* used = nullptr;
  const auto start = std::chrono::steady_clock::now();
  std::vector<Tensor> outputs = run_with(inputs, &step_ms, &used);
  if (!used) {
    // Non-finite data ran on the reference kernels: one step.
    LayerTiming t;
    t.name = t.op = "Engine";
    t.nodes = {t.name};
    t.tactic = "reference (non-finite data)";
    t.kind = "reference";
    t.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    timings.assign(1, std::move(t));
    return outputs;
  }
  timings = step_labels(*used);
  for (size_t i = 0; i < timings.size() && i < step_ms.size(); ++i) timings[i].ms = step_ms[i];
  return outputs;
}

std::vector<LayerTiming> CpuEngine::step_labels(const Instance& inst) const {
  const ir::Graph& g = m_plan.graph;
  std::vector<LayerTiming> labels;
  int layer = -1;
  int primitives = 0;  // non-reorder primitives seen so far in `layer`
  for (const Step& step : inst.steps) {
    if (step.layer != layer) {
      layer = step.layer;
      primitives = 0;
    }
    const LayerDesc& l = m_plan.layers.at(static_cast<size_t>(step.layer));
    LayerTiming t;
    const bool reorder = !step.fn && step.pd.get_kind() == dnnl::primitive::kind::reorder;
    size_t first = 0, last = l.nodes.size();
    const size_t dw =
        static_cast<size_t>(std::find(l.nodes.begin(), l.nodes.end(), l.dw_conv) - l.nodes.begin());
    bool second = false;
    if (!reorder && !step.fn && l.dw_conv != ir::k_no_node && !l.dw_fused) {
      // The attached depthwise conv runs as a primitive of its own, after the 1x1's.
      second = primitives > 0;
      if (second) {
        first = dw;
      } else {
        last = dw;
      }
    }
    for (size_t i = first; i < last; ++i) {
      const ir::Node& n = g.node(l.nodes[i]);
      t.nodes.push_back(n.name);
      if (!reorder) t.op += (t.op.empty() ? "" : "+") + n.op_type;
    }
    t.name = t.nodes.empty() ? std::string() : t.nodes.front();
    if (reorder) {
      t.op = "Reorder";
      t.kind = "reorder";
      t.tactic = md_string(step.pd.query_md(dnnl::query::src_md)) + " -> " +
                 md_string(step.pd.query_md(dnnl::query::dst_md));
    } else if (step.fn && !step.op.empty()) {
      // kiln's own pass for part of the layer (a conv's swish) or before it
      // (a gathered input written where the layer reads it).
      t.op = step.op;
      t.kind = "native";
      t.tactic = step.tactic;
    } else if (step.fn) {
      // A reference kernel ("aux:" tactics), or kiln's own loop (a
      // broadcast binary op, a Pad's fill): only the first is "aux".
      const bool reference = l.kind == LayerKind::aux || l.tactic.name.rfind("aux:", 0) == 0;
      t.kind = reference ? "aux" : "native";
      t.tactic = l.tactic.name.empty() ? layer_kind_name(l.kind) : l.tactic.name;
    } else {
      ++primitives;
      t.kind = "onednn";
      const Tactic& tactic = second ? l.dw_tactic : l.tactic;
      t.tactic = tactic.name.empty() ? layer_kind_name(l.kind) : tactic.name;
    }
    labels.push_back(std::move(t));
  }
  LayerTiming out;
  out.name = "outputs";
  out.op = "Reorder";
  out.tactic = "into the returned tensors";
  out.kind = "reorder";
  for (ValueId v : g.outputs()) out.nodes.push_back(g.value(v).name);
  labels.push_back(std::move(out));
  return labels;
}

std::vector<Tensor> CpuEngine::run_with(std::span<const Tensor> inputs, std::vector<double>* step_ms,
                                        const Instance** used) {
  if (!m_ready) {
    throw Error(ErrorCode::invalid_argument, "cpu engine has no weights: refit() has not succeeded");
  }
  check_inputs(inputs);
  // oneDNN's relu, clip, max pooling and softmax (eltwise and post-op alike)
  // compute max(x, 0)-style with instructions that return the non-NaN
  // operand, so a NaN would come out as 0, a bound or a neighbour's value.
  // Data that is not all finite therefore runs on the reference kernels,
  // which propagate NaN as ONNX and PyTorch do. The scan reads each float
  // input once, vectorised: on resnet18 at batch 1 it costs about 0.1% of a
  // run (docs/reliability.md).
  bool non_finite = m_non_finite_weights;
  for (size_t i = 0; i < inputs.size() && !non_finite; ++i) {
    non_finite = has_non_finite(inputs[i], m_plan.num_threads);
  }
  if (non_finite) return run_reference(inputs);
  std::vector<std::vector<int64_t>> shapes;
  for (const Tensor& t : inputs) shapes.push_back(t.shape());
  apply_threads();
  try {
    Instance& inst = instance_for(shapes);
    if (inst.weight_generation != m_generation) {
      inst.prepare_weights(m_weights, m_weight_factors, m_engine, m_stream, m_plan.num_threads);
      inst.weight_generation = m_generation;
    }
    if (used) *used = &inst;
    return inst.run(m_plan.graph, inputs, m_weights, m_engine, m_stream, step_ms);
  } catch (const dnnl::error& e) {
    throw Error(ErrorCode::internal, std::string("cpu engine: oneDNN: ") + e.what());
  }
}

bool CpuEngine::weights_non_finite() const {
  const ir::Graph& g = m_plan.graph;
  for (size_t v = 0; v < g.num_values(); ++v) {
    const ir::Value& value = g.value(static_cast<ValueId>(v));
    if (value.initializer && has_non_finite(*value.initializer, m_plan.num_threads)) return true;
    if (value.inferred_value && has_non_finite(*value.inferred_value, m_plan.num_threads)) return true;
    if (v < m_weights.size() && m_weights[v].defined() && has_non_finite(m_weights[v], m_plan.num_threads)) {
      return true;
    }
    if (v < m_weight_factors.size()) {
      for (double f : m_weight_factors[v]) {
        if (!std::isfinite(f)) return true;
      }
    }
  }
  return false;
}

std::vector<Tensor> CpuEngine::run_reference(std::span<const Tensor> inputs) {
  if (!m_reference || m_reference_generation != m_generation) {
    m_reference.reset();
    auto graph = std::make_unique<ir::Graph>(m_plan.graph);
    for (size_t v = 0; v < m_weights.size(); ++v) {
      if (!m_weights[v].defined()) continue;
      Tensor w = m_weights[v];
      std::span<const double> factors;
      if (v < m_weight_factors.size()) factors = m_weight_factors[v];
      if (!factors.empty()) {
        // What the reorder applies: slice i of k scaled by factors[i], exactly
        // as evaluating the recipe would have (passes::split_axis_scale).
        Tensor scaled = Tensor::zeros(w.dtype(), w.shape());
        auto src = w.data<float>();
        auto dst = scaled.mutable_data<float>();
        const size_t slice = src.size() / factors.size();
        for (size_t j = 0; j < src.size(); ++j) {
          dst[j] = static_cast<float>(static_cast<double>(src[j]) * factors[j / slice]);
        }
        w = std::move(scaled);
      }
      graph->value(static_cast<ValueId>(v)).initializer = std::move(w);
    }
    m_reference = std::make_unique<ref::Executor>(*graph);
    m_reference_graph = std::move(graph);
    m_reference_generation = m_generation;
  }
  return m_reference->run(inputs);
}

namespace {

std::vector<bool> reordered_only_weights(const EnginePlan& plan) {
  const ir::Graph& g = plan.graph;
  std::vector<int> kernel_uses(g.num_values(), 0), other_uses(g.num_values(), 0);
  for (const LayerDesc& l : plan.layers) {
    for (size_t k = 0; k < l.nodes.size(); ++k) {
      const ir::Node& n = g.node(l.nodes[k]);
      for (size_t i = 0; i < n.inputs.size(); ++i) {
        if (n.inputs[i] == ir::k_no_value) continue;
        bool kernel = k == 0 && i == 1 && (l.kind == LayerKind::conv || l.kind == LayerKind::matmul);
        ++(kernel ? kernel_uses : other_uses)[static_cast<size_t>(n.inputs[i])];
      }
    }
  }
  std::vector<bool> result(g.num_values());
  for (size_t v = 0; v < result.size(); ++v) result[v] = kernel_uses[v] > 0 && other_uses[v] == 0;
  return result;
}

}  // namespace

void CpuEngine::refit(std::span<const Tensor> source_weights) {
  m_ready = false;
  const ir::Graph& g = m_plan.graph;
  if (source_weights.size() < static_cast<size_t>(m_plan.source_weight_count)) {
    throw Error(ErrorCode::invalid_argument, "refit: " + std::to_string(source_weights.size()) +
                                                 " source weights, the plan reads " +
                                                 std::to_string(m_plan.source_weight_count));
  }
  if (m_reordered_only.empty()) m_reordered_only = reordered_only_weights(m_plan);
  WeightStore next(g.num_values());
  WeightFactors factors(g.num_values());
  std::vector<ValueId> weights;
  for (size_t i = 0; i < g.num_values(); ++i) {
    if (is_weight(g, static_cast<ValueId>(i))) weights.push_back(static_cast<ValueId>(i));
  }
  // Weights are independent: evaluate their recipes on every thread.
  parallel_for(weights.size(), m_plan.num_threads, [&](size_t w) {
    const ValueId id = weights[w];
    const size_t i = static_cast<size_t>(id);
    const ir::Value& v = g.value(id);
    Tensor t;
    try {
      // A folded BatchNorm scale is applied while reordering: one pass over
      // the kernel instead of writing the folded kernel and reading it again.
      std::optional<passes::AxisScaledWeight> split;
      if (m_reordered_only[i]) split = passes::split_axis_scale(*v.recipe, source_weights);
      if (split) {
        t = std::move(split->weight);
        factors[i] = std::move(split->factors);
      } else {
        t = passes::evaluate_recipe(*v.recipe, source_weights);
      }
    } catch (const Error& e) {
      throw e.with_context("refit: weight '" + v.name + "': ");
    }
    if (t.dtype() != v.type.dtype || !v.type.is_static() || t.shape() != v.type.static_shape()) {
      throw Error(ErrorCode::invalid_argument,
                  "refit: weight '" + v.name + "' is " + std::string(dtype_name(t.dtype())) + "[" +
                      t.shape_string() + "], the plan needs " + v.type.to_string());
    }
    next[i] = std::move(t);
  });
  m_weights = std::move(next);
  m_weight_factors = std::move(factors);
  m_non_finite_weights = weights_non_finite();
  ++m_generation;
  try {
    Instance& current = *m_instances.front();
    current.prepare_weights(m_weights, m_weight_factors, m_engine, m_stream, m_plan.num_threads);
    current.weight_generation = m_generation;
  } catch (const dnnl::error& e) {
    throw Error(ErrorCode::internal, std::string("refit: oneDNN: ") + e.what());
  }
  m_ready = true;
}

std::vector<std::byte> CpuEngine::serialize() const { return serialize_plan(m_plan); }

EngineInfo CpuEngine::info() const {
  EngineInfo info;
  const ir::Graph& g = m_plan.graph;
  for (const LayerDesc& l : m_plan.layers) {
    if (l.kind == LayerKind::shape) continue;
    LayerReport r;
    const ir::Node& anchor = g.node(l.anchor());
    r.name = anchor.name;
    r.op = anchor.op_type;
    for (size_t i = 1; i < l.nodes.size(); ++i) r.op += "+" + g.node(l.nodes[i]).op_type;
    r.tactic = l.tactic.name.empty() ? layer_kind_name(l.kind) : l.tactic.name;
    r.time_ms = l.tactic.time_ms;
    if (l.dw_conv != ir::k_no_node && !l.dw_fused) {
      // The attached depthwise conv runs as a primitive of its own.
      r.tactic += " then " + l.dw_tactic.name;
      r.time_ms += l.dw_tactic.time_ms;
    }
    info.layers.push_back(std::move(r));
  }
  info.activation_bytes = m_plan.activation_bytes;
  info.weight_bytes = m_plan.weight_bytes;
  return info;
}

}  // namespace kiln::cpu
