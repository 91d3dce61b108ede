// The interfaces every engine-building backend implements (DESIGN.md, "Core
// interfaces"). A Backend builds an Engine for a lowered graph (one engine
// segment) at a range of input shapes; an Engine runs, serializes its plan
// (without weights) and refits new weights by replaying weight recipes.
//
// Backends never touch a cache: they produce and consume plan bytes only.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ir/graph.hpp"
#include "kiln/device_tensor.hpp"
#include "kiln/settings.hpp"

namespace kiln::builder {
class TimingCache;
}

namespace kiln {

// What a built engine depends on beyond the graph: part of the engine key.
struct Fingerprint {
  std::string backend;          // "cpu"
  uint32_t plan_version = 0;    // the backend's plan schema version
  std::string library_version;  // "oneDNN 2.6.3"
  std::string isa;              // "avx512_core_bf16"

  std::string to_string() const;
  bool operator==(const Fingerprint&) const = default;
};

struct LayerReport {
  std::string name;    // the lowered node it implements
  std::string op;      // "Conv", "MatMul", ...
  std::string tactic;  // the chosen candidate, e.g. "conv:direct/nChw16c/f32+relu"
  double time_ms = 0;  // timed at the opt shape; 0 when not timed
};

// One timed step of a profiled run (Engine::run_profiled): a oneDNN
// primitive ("onednn"), a kiln reference kernel inside an engine ("aux"),
// a kiln kernel of its own that is not a reference one ("native"), a
// layout reorder ("reorder"), or a node of a fallback segment run by the
// reference executor ("reference").
struct LayerTiming {
  std::string name;                // the first lowered node the step implements
  std::vector<std::string> nodes;  // every lowered node it implements, in chain order
  std::string op;                  // "Conv+Add+Relu" for a fused layer, "Reorder"
  std::string tactic;              // as in LayerReport; the layouts for a reorder
  std::string kind;                // "onednn", "aux", "native", "reorder", "reference"
  double ms = 0;
};

struct EngineInfo {
  std::vector<LayerReport> layers;
  size_t activation_bytes = 0;  // planned peak for the max shapes
  size_t weight_bytes = 0;
};

class Engine {
 public:
  virtual ~Engine() = default;

  // Inputs in the order of the graph the engine was built for; any shape
  // within the specs' min/max. Throws kiln::Error(invalid_argument) naming the
  // input, dim and range for a shape outside it.
  // Not thread-safe: one caller at a time (an engine owns scratch buffers).
  virtual std::vector<Tensor> run(std::span<const Tensor> inputs) = 0;

  // run(), timing each step on its own (the steps are synchronised, so the
  // total is a little above a plain run's). Replaces `timings` with one entry
  // per step in execution order. Same outputs as run(). This default times
  // the whole engine as one step.
  virtual std::vector<Tensor> run_profiled(std::span<const Tensor> inputs, std::vector<LayerTiming>& timings);

  // Replaces every weight by replaying the recipes on `source_weights` (in
  // canonical order, passes::canonical_weights). Throws kiln::Error when the
  // weights do not match the plan (count, dtype or shape); the engine is then
  // unusable until a successful refit.
  virtual void refit(std::span<const Tensor> source_weights) = 0;

  // The plan: tactics, layouts, memory plan, weight recipes; no weights.
  virtual std::vector<std::byte> serialize() const = 0;

  virtual EngineInfo info() const = 0;

  // Threads for run(); 0 means every core. A run-time choice, not part of the
  // plan's identity: an engine served from the cache runs with the thread
  // count of the compile that loaded it, not of the one that built it.
  virtual void set_num_threads(int threads) = 0;

  // Device I/O: engines whose activations live in device memory can read
  // their inputs from, and write their outputs into, the caller's device
  // memory, ordered on the caller's stream without a host synchronisation.
  // Engines that run on the host return false, and the two calls below
  // throw kiln::Error(unsupported).
  virtual bool supports_device_io() const { return false; }
  // The dtype and shape of each output for inputs of these dtypes and
  // shapes (checked as run() checks them).
  virtual std::vector<TensorDesc> output_descs(std::span<const TensorDesc> inputs);
  // Enqueues one run: inputs read from `inputs[i].data`, outputs written to
  // `outputs[i].data` (whose dtype and shape must equal output_descs()'),
  // ordered after the work enqueued on `stream` (a cudaStream_t; nullptr is
  // the legacy default stream) before the call, and work enqueued on it
  // after the call is ordered after the run. Returns without waiting for the
  // GPU. Throws kiln::Error(invalid_argument) naming the tensor for a
  // mismatched count, dtype, shape, range or device.
  virtual void run_device(std::span<const DeviceTensor> inputs, std::span<const DeviceTensor> outputs,
                          void* stream);
};

// Checks shared by every backend's engines. `backend` names the backend in
// errors ("cpu: input spec 'x': ...").
// Throws kiln::Error(invalid_argument) when `specs` do not fit the graph's
// inputs (count, rank, dtype, a fixed dim, min <= opt <= max).
void check_engine_specs(const ir::Graph& graph, std::span<const InputSpec> specs, std::string_view backend);
// Throws kiln::Error(invalid_argument) naming the input, dim and range when
// `inputs` do not fit `specs`.
void check_engine_inputs(const ir::Graph& graph, std::span<const InputSpec> specs,
                         std::span<const Tensor> inputs, std::string_view backend);
// The same for inputs given by dtype and shape only (device tensors, or a
// query of output shapes).
void check_engine_inputs(const ir::Graph& graph, std::span<const InputSpec> specs,
                         std::span<const TensorDesc> inputs, std::string_view backend);
// 1 + the highest source weight index any weight recipe of `graph` reads.
int32_t source_weight_count(const ir::Graph& graph);

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string_view name() const = 0;
  virtual Fingerprint fingerprint() const = 0;

  // Why the backend cannot run `node` of `graph` (op, attribute, dtype);
  // nullopt when it can.
  virtual std::optional<std::string> unsupported_reason(const ir::Graph& graph, ir::NodeId node) const = 0;

  // Builds an engine for the whole lowered graph. REQUIRES: every node is
  // supported; `specs` has one entry per graph input, in order.
  virtual std::unique_ptr<Engine> build(const ir::Graph& lowered, std::span<const InputSpec> specs,
                                        const CompileSettings& settings,
                                        builder::TimingCache& timing_cache) = 0;

  // Recreates an engine from its plan. The engine has no weights until
  // refit() succeeds. Throws kiln::Error(invalid_model) for a plan that fails
  // verification or was made by an incompatible version.
  // `num_threads` (0: every core) is applied before any primitive is made:
  // oneDNN fixes a primitive's thread partitioning when it is created.
  virtual std::unique_ptr<Engine> deserialize(std::span<const std::byte> plan, int num_threads) = 0;
  std::unique_ptr<Engine> deserialize(std::span<const std::byte> plan) { return deserialize(plan, 0); }
};

}  // namespace kiln
