// A cuda engine: a Plan run on one GPU.
//
// Weights (and every other constant a layer reads) live in device memory,
// uploaded by refit() after their recipes are replayed on the host.
// Activations live in one device arena per input-shape set, planned by
// lifetime at those shapes (an "instance"): views share their input's bytes,
// and each conv and matmul layer keeps its cuDNN plan or cuBLASLt algorithm
// for those shapes, rebuilt from the plan's recorded choice, never from
// heuristics or timing, except where that choice does not fit the shapes.
//
// Weights and activations have the plan's storage precision (fp32, fp16 or
// bf16; precision.hpp); the engine's boundary is fp32 whatever it is.
// run() takes and returns host tensors: inputs are copied into the arena (a
// half engine casts them there on the GPU), outputs out of it (cast back
// first), on the engine's own stream, and it waits for them.
// run_device() takes the caller's device memory and stream: inputs are
// copied (or cast) device to device into the arena and outputs out of it, on
// the engine's stream joined to the caller's with events (device_io.hpp says
// why), and it returns without waiting. From an instance's second device
// run on, its layer launches replay as one CUDA graph, captured once
// (KILN_CUDA_GRAPHS=0 turns that off): a ResNet's hundred-odd launches
// cost one. Graphs are dropped on refit (weights may move) and belong to
// their instance (a new input-shape set captures its own).
//
// Where the parts live: an instance and its arena in cuda_instance.hpp
// (each layer's shapes and walks at it in layer_parts.hpp), running a layer
// in layer_launch.hpp, the device copies of the weights in
// device_weights.hpp; this file builds, loads, refits and runs.
//
// Not thread-safe: one caller at a time, as every Engine.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "backends/backend.hpp"
#include "backends/cuda/activation_layout.hpp"
#include "backends/cuda/cuda_plan.hpp"
#include "backends/cuda/device.hpp"
#include "backends/cuda/device_io.hpp"
#include "backends/cuda/device_weights.hpp"

namespace kiln::builder {
class TimingCache;
}

namespace kiln::cuda {

struct Instance;
class LayerLauncher;

class CudaEngine final : public Engine {
 public:
  // Partitions, uploads the lowered graph's weights and times tactics at the
  // specs' opt shapes. REQUIRES: the backend supports every node.
  static std::unique_ptr<CudaEngine> build(const ir::Graph& lowered, std::span<const InputSpec> specs,
                                           const CompileSettings& settings,
                                           builder::TimingCache& timing_cache,
                                           const Fingerprint& fingerprint);
  // From a parsed plan; no weights until refit().
  static std::unique_ptr<CudaEngine> from_plan(Plan plan);

  ~CudaEngine() override;

  std::vector<Tensor> run(std::span<const Tensor> inputs) override;
  std::vector<Tensor> run_profiled(std::span<const Tensor> inputs,
                                   std::vector<LayerTiming>& timings) override;
  void refit(std::span<const Tensor> source_weights) override;
  std::vector<std::byte> serialize() const override;
  EngineInfo info() const override;
  void set_num_threads(int) override {}  // the GPU's parallelism is not a thread count
  bool supports_device_io() const override { return true; }
  std::vector<TensorDesc> output_descs(std::span<const TensorDesc> inputs) override;
  void run_device(std::span<const DeviceTensor> inputs, std::span<const DeviceTensor> outputs,
                  void* stream) override;
  // How many instances hold a captured CUDA graph now (tests, diagnostics).
  size_t captured_graphs() const;

 private:
  explicit CudaEngine(Plan plan);

  // Runs layers of an instance on the engine's stream, with its weights.
  LayerLauncher launcher() const;
  void check_finished() const;
  Instance& instance_for(const std::vector<std::vector<int64_t>>& shapes);
  void choose_tactics(Instance& inst, const CompileSettings& settings, builder::TimingCache& timing_cache);
  // Times the candidates of layer i at `inst`'s shapes (or takes the timing
  // cache's choice), records the winner in the plan and gives it to `inst`.
  void choose_conv_tactic(Instance& inst, size_t i, const std::string& platform,
                          const CompileSettings& settings, builder::TimingCache& timing_cache);
  void choose_matmul_tactic(Instance& inst, size_t i, const std::string& platform,
                            const CompileSettings& settings, builder::TimingCache& timing_cache);
  std::vector<Tensor> execute(std::span<const Tensor> inputs, std::vector<LayerTiming>* timings);
  // Every layer of `inst` on the engine's stream: eagerly, or as the
  // instance's CUDA graph (captured on its second device run).
  void enqueue_layers(Instance& inst, bool use_graph);

  Plan m_plan;
  DeviceContext m_device;
  ActivationLayouts m_layouts;  // from the plan, at construction
  DeviceWeights m_weights;      // reads the three above
  size_t m_weight_bytes = 0;
  bool m_ready = false;
  std::map<std::vector<std::vector<int64_t>>, std::unique_ptr<Instance>> m_instances;
  // run_device()'s joins: the caller's stream to the engine's, and back.
  std::unique_ptr<Event> m_caller_ready, m_done;
};

}  // namespace kiln::cuda
