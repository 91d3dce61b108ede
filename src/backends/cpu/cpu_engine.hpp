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
  void refit(std::span<const Tensor> source_weights) override;
  std::vector<std::byte> serialize() const override;
  EngineInfo info() const override;
  void set_num_threads(int threads) override;

  const EnginePlan& plan() const { return m_plan; }

 private:
  explicit CpuEngine(EnginePlan plan);
  void check_inputs(std::span<const Tensor> inputs) const;
  Instance& instance_for(const std::vector<std::vector<int64_t>>& shapes);
  void apply_threads() const;
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
};

}  // namespace kiln::cpu
