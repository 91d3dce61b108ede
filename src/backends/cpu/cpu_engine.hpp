// CpuEngine: a oneDNN engine for one lowered graph over a range of input
// shapes.
//
// It owns the plan (the graph without weight values, tactics, specs), the
// weights in plain layout (shared with the model they came from where a
// recipe is the identity), and up to k_max_instances Instances: one per
// recently seen input-shape set, each with its primitives, arena and weights
// reordered into the primitives' layouts. run() on a new shape set makes an
// instance with the plan's tactics (no timing); refit() replays the recipes
// and reorders the new weights into the current instance (others catch up
// when next used).
//
// NaN and infinities: oneDNN's relu, clip, max pooling and softmax drop NaN
// (also inside a fused conv), so run() scans its float inputs first, and
// refit() its weights and constants once; a run meeting any non-finite value
// runs the same lowered graph on the reference kernels, which propagate it
// as ONNX and PyTorch do (docs/reliability.md, "NaN and infinities").
//
// Not thread-safe: one call at a time.
#pragma once

#include <list>
#include <memory>
#include <span>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "backends/backend.hpp"
#include "backends/cpu/instance.hpp"
#include "backends/cpu/plan.hpp"
#include "reference/executor.hpp"

namespace kiln::cpu {

class CpuEngine final : public Engine {
 public:
  static constexpr size_t k_max_instances = 4;

  // Builds (times tactics at the specs' opt shapes); the engine is ready.
  static std::unique_ptr<CpuEngine> build(const ir::Graph& lowered, std::span<const InputSpec> specs,
                                          const CompileSettings& settings, builder::TimingCache& timing_cache,
                                          const Fingerprint& fingerprint);
  // Recreates from a parsed plan with its tactics; no weights until refit().
  static std::unique_ptr<CpuEngine> from_plan(EnginePlan plan);

  std::vector<Tensor> run(std::span<const Tensor> inputs) override;
  std::vector<Tensor> run_profiled(std::span<const Tensor> inputs,
                                   std::vector<LayerTiming>& timings) override;
  void refit(std::span<const Tensor> source_weights) override;
  std::vector<std::byte> serialize() const override;
  EngineInfo info() const override;
  void set_num_threads(int threads) override;

  const EnginePlan& plan() const { return m_plan; }

 private:
  explicit CpuEngine(EnginePlan plan);
  void check_inputs(std::span<const Tensor> inputs) const;
  // run(); with `step_ms`, the profiling mode of Instance::run, and `used`
  // set to the instance that ran (null when the reference path ran).
  std::vector<Tensor> run_with(std::span<const Tensor> inputs, std::vector<double>* step_ms,
                               const Instance** used);
  // What each of `inst`'s steps implements, then its output reorders.
  std::vector<LayerTiming> step_labels(const Instance& inst) const;
  Instance& instance_for(const std::vector<std::vector<int64_t>>& shapes);
  void apply_threads() const;
  // Whether a weight (with its refit factors) or a constant of the plan holds
  // a NaN or an infinity.
  bool weights_non_finite() const;
  // The lowered graph with this generation's weights on the reference
  // kernels: the path for data oneDNN would not propagate NaN through.
  std::vector<Tensor> run_reference(std::span<const Tensor> inputs);
  // A second tuning pass that prices each layer's output reorder into the
  // layout its consumer read in `first`'s pass; returns the resulting
  // instance (and adopts its tactics) when it runs faster end to end, else
  // null.
  std::unique_ptr<Instance> refine_layouts(Instance& first, const std::vector<std::vector<int64_t>>& shapes,
                                           const ConsumerLayouts& consumers, const CompileSettings& settings,
                                           builder::TimingCache& timing_cache);

  EnginePlan m_plan;
  dnnl::engine m_engine;
  dnnl::stream m_stream;
  WeightStore m_weights;           // by ValueId
  WeightFactors m_weight_factors;  // by ValueId: scales folded into the reorder
  // By ValueId: weights read only as Conv/MatMul/Gemm kernels, which are
  // always reordered (so a scale can be applied then); computed once.
  std::vector<bool> m_reordered_only;
  bool m_ready = false;
  uint64_t m_generation = 0;                         // bumped by every successful refit
  std::list<std::unique_ptr<Instance>> m_instances;  // most recently used first
  bool m_non_finite_weights = false;                 // every run then takes the reference path
  // Made on the first run that needs it, again after a refit.
  std::unique_ptr<ir::Graph> m_reference_graph;
  std::unique_ptr<ref::Executor> m_reference;
  uint64_t m_reference_generation = 0;
};

}  // namespace kiln::cpu
