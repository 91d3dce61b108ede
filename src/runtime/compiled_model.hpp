// CompiledModel: a model lowered and built into an engine, ready to run.
//
// compile() runs the lowering passes, partitions the lowered graph
// (src/partition): each maximal region the backend supports becomes an
// engine, got through the engine cache (EngineProvider), and the rest runs
// on the reference backend. It reports where the time went.
//
// The graph's weights must outlive the CompiledModel: fallback segments read
// them (until refit() replaces them with copies of its own). Not
// thread-safe: run(), profile() and refit() use the engines' scratch
// buffers and weights, so one of them at a time on one model.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "backends/backend.hpp"
#include "key/engine_key.hpp"
#include "kiln/compile.hpp"
#include "kiln/settings.hpp"

namespace kiln::cache {
class Store;
}  // namespace kiln::cache

namespace kiln::runtime {

// What happened to one engine subgraph during a compile.
struct EngineRecord {
  std::string key;     // hex EngineKey; empty when no cache is involved
  std::string status;  // "hit", "miss" (built and saved), "built_uncached"
  std::string reason;  // for a miss: why the cache could not serve it
  double key_ms = 0;
  double load_ms = 0;  // cache lookup, envelope check and deserialize
  double refit_ms = 0;
  double build_ms = 0;
  double save_ms = 0;
  double saved_build_ms = 0;  // for a hit: how long the entry's build took
  std::optional<key::EngineKey> engine_key;
  EngineInfo info;
};

// One segment of the partitioned graph, in execution order.
struct SegmentRecord {
  bool engine = false;
  size_t nodes = 0;
  int engine_index = -1;  // into CompileReport::engines, for an engine segment
  std::string reason;     // for a fallback segment: why it is not an engine
  // Values this segment reads that an earlier segment computes, at every
  // run: each passes between the two as a host tensor (on the cuda
  // backend, a copy off the device and one back on). Bytes at the opt
  // shapes; a value whose size only a run tells is counted in values_in
  // only (values_unsized).
  size_t values_in = 0;
  size_t bytes_in = 0;
  size_t values_unsized = 0;
};

struct CompileReport {
  std::string backend;
  std::vector<SegmentRecord> segments;
  double lower_ms = 0;
  double compile_ms = 0;  // the whole compile() call
  std::vector<EngineRecord> engines;
  std::filesystem::path timing_cache_path;  // empty when none is used
  size_t timing_cache_entries = 0;
  uint64_t timing_cache_hits = 0;
  uint64_t timing_cache_misses = 0;
};

// One row of a profile: an engine step or a fallback node, its time the
// median over the profiled runs.
struct ProfileLayer {
  LayerTiming timing;  // kind: "onednn", "aux", "native", "reorder" or "reference"
  int segment = 0;     // into CompileReport::segments
  double percent = 0;  // share of ModelProfile::total_ms
};

struct ModelProfile {
  int runs = 0;
  double total_ms = 0;                       // the sum of the layers' medians
  double wall_ms = 0;                        // the median profiled run, end to end
  std::vector<ProfileLayer> layers;          // in execution order
  std::map<std::string, double> by_kind_ms;  // summed medians per kind
  std::vector<Tensor> outputs;               // the last profiled run's, as run() returns them

  // Indices into `layers` of the `n` slowest, slowest first.
  std::vector<size_t> slowest(size_t n) const;
};

struct Artifact;

class CompiledModel {
 public:
  // `specs` has one entry per graph input, in order.
  static CompiledModel compile(const ir::Graph& graph, std::vector<InputSpec> specs,
                               const CompileSettings& settings);

  CompiledModel(CompiledModel&&) noexcept;
  CompiledModel& operator=(CompiledModel&&) noexcept;
  ~CompiledModel();

  std::vector<Tensor> run(std::span<const Tensor> inputs);
  const CompileReport& report() const { return m_report; }

  // Device I/O: inputs read from and outputs written into the caller's
  // device memory, ordered on the caller's CUDA stream, no host
  // synchronisation (Engine::run_device). Possible when the whole model is
  // one engine segment of a backend whose engines run on the device (cuda):
  // a host fallback segment would need the values on the host.
  // nullopt when possible, else why not (the backend, or which segment runs
  // on the host and why).
  std::optional<std::string> device_io_unavailable() const;
  // The dtype and shape of each output for inputs of these dtypes and
  // shapes (within the specs' ranges), without running: what the caller
  // allocates for run_device(). Throws kiln::Error(unsupported) with
  // device_io_unavailable()'s reason, and kiln::Error(invalid_argument)
  // naming the input for a dtype, rank or dim outside its spec.
  std::vector<TensorDesc> output_descs(std::span<const TensorDesc> inputs);
  // Enqueues one run on `stream` (a cudaStream_t; nullptr: the legacy
  // default stream) and returns without waiting; `outputs` must have
  // output_descs()' dtypes and shapes. The same errors as output_descs(),
  // and kiln::Error(invalid_argument) naming a mismatched output, a host
  // pointer or a pointer of another device.
  void run_device(std::span<const DeviceTensor> inputs, std::span<const DeviceTensor> outputs, void* stream);

  // Runs `warmup` untimed runs and then `runs` (at least 1) profiled ones
  // (Engine::run_profiled; fallback segments per node) on `inputs`, and
  // reports each step's median time. Outputs equal run()'s.
  ModelProfile profile(std::span<const Tensor> inputs, int runs, int warmup = 1);

  // The model's refittable weights in canonical order: what refit() takes.
  const std::vector<WeightInfo>& weights() const { return m_weight_infos; }

  // Gives the model new values for some of its weights, in place: every
  // engine replays its weight recipes (BatchNorm folding, transposes,
  // reorders into its tactics' layouts, for every shape instance) and every
  // fallback segment recomputes the initializers it reads. Weights not named
  // keep their values. The values are copied; the caller may free them.
  // All or nothing: every name must be a refittable weight of this model,
  // named once, with its dtype and shape, else kiln::Error(invalid_argument)
  // naming the initializer, before any engine is touched. Throws
  // kiln::Error(invalid_argument) for a model compiled with refittable off.
  // Not thread-safe: never concurrently with run() or profile().
  RefitStats refit(std::span<const WeightUpdate> updates);
  // The last successful refit(); nullopt before one.
  const std::optional<RefitStats>& last_refit() const { return m_last_refit; }

  // The model as one AOT artifact (runtime/artifact.hpp): `onnx` is the
  // model's ONNX bytes, weights inline, the bytes `graph` was imported from.
  // Throws kiln::Error(invalid_argument) if the engines are not refittable
  // (a loaded artifact refits its weights) or the weights are not inline.
  std::vector<std::byte> to_artifact(std::span<const std::byte> onnx, const ir::Graph& graph) const;

  // Compiles `graph`, imported from artifact.onnx, with the artifact's
  // engines as the first cache tier (no build when they fit this machine),
  // else through the engine cache of `settings`, with a warning.
  static CompiledModel from_artifact(const Artifact& artifact, const ir::Graph& graph,
                                     const CompileSettings& settings);

 private:
  CompiledModel() = default;
  // compile() through `store` (cache::open(settings) when unset).
  static CompiledModel compile_with(const ir::Graph& graph, std::vector<InputSpec> specs,
                                    const CompileSettings& settings,
                                    std::optional<std::shared_ptr<cache::Store>> store);
  // Records the model's refittable weights (canonical order) and which
  // other initializers exist, for refit()'s checks and errors.
  void index_weights(const ir::Graph& graph, std::vector<Tensor> sources);
  // Checks `updates` against the model's weights; the new source list.
  std::vector<Tensor> checked_sources(std::span<const WeightUpdate> updates, RefitStats& stats) const;
  // Refits every engine whose recipes read a source marked in `changed`
  // from `sources`; on a failure, refits those engines back to m_sources
  // and rethrows. Returns how many it refitted.
  size_t refit_engines(const std::vector<Tensor>& sources, const std::vector<bool>& changed);
  // A clear error naming the input, the dim and the range.
  void check_inputs(std::span<const Tensor> inputs) const;
  void check_inputs(std::span<const TensorDesc> inputs) const;
  // The one engine device I/O runs on; kiln::Error(unsupported) otherwise.
  Engine& device_engine();
  // run(); with `timings`, profiled: replaced by one entry per engine step
  // or fallback node, with its segment.
  std::vector<Tensor> run_with(std::span<const Tensor> inputs,
                               std::vector<std::pair<int, LayerTiming>>* timings);

  struct Step;
  std::unique_ptr<Backend> m_backend;
  std::vector<InputSpec> m_specs;
  CompileSettings m_settings;
  std::vector<Step> m_steps;
  // Per lowered value: the values the run starts with (initializers the
  // steps read) and after which step a value can be dropped.
  std::vector<std::optional<Tensor>> m_constants;
  std::vector<int> m_last_use;
  std::vector<ir::ValueId> m_inputs, m_outputs;
  CompileReport m_report;
  // Refit: the source weights the engines hold now (canonical order) and
  // their names; recipes of constants (m_constants) that are weights.
  std::vector<Tensor> m_sources;
  std::vector<WeightInfo> m_weight_infos;
  std::map<std::string, size_t, std::less<>> m_weight_index;
  std::map<std::string, std::string, std::less<>> m_not_weights;  // other initializers: why not
  std::vector<std::pair<ir::ValueId, ir::WeightRecipe>> m_constant_recipes;
  std::optional<RefitStats> m_last_refit;
  std::string m_source;  // the model's file, for errors
  bool m_refitted = false;
};

}  // namespace kiln::runtime
