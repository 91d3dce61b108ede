// kiln's compile API: an ONNX model in, a runnable compiled model out, through
// the engine cache.
//
//   kiln::CompileSettings settings;                 // the tutorial's settings
//   auto model = kiln::compile("resnet18.onnx",
//       {{"input", kiln::DType::float32, {1, 3, 224, 224}, {100, 3, 224, 224}, {200, 3, 224, 224}}},
//       settings);
//   std::vector<kiln::Tensor> out = model.run(inputs);
//
// A first compile of an architecture builds its engine and saves it; a later
// compile of the same architecture (in this process or another, with the
// same or other weights) loads the engine and refits this model's weights.
// engines() says, per engine, whether it was a hit and why a miss missed.
//
// Errors: kiln::Error for a bad model, bad specs or an unsupported op. Cache
// trouble is never an error: it is a miss with a warning.
// Thread-safety: compile() may run on several threads at once; one
// CompiledModel must not run() on two threads at once, nor refit() while it
// runs.
//
// In-place refit: model.refit({{"conv1.weight", w}, ...}) gives a compiled
// model new weight values without a compile (no import, lowering or cache
// lookup): each engine replays its weight recipes into the layouts its
// tactics chose.
#pragma once

#include <cstddef>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kiln/device_tensor.hpp"
#include "kiln/settings.hpp"
#include "kiln/tensor.hpp"

namespace kiln {

struct EngineStatus {
  std::string key;     // hex SHA-256; empty when caching is off
  std::string status;  // "hit", "miss" (built and saved), "built_uncached"
  std::string reason;  // why a miss missed
  double build_ms = 0;
  double load_ms = 0;
  double refit_ms = 0;
};

// A refittable weight of a model: a float initializer with more than one
// element that the model reads as data (a Conv/Gemm/MatMul weight or bias,
// a normalization parameter, an embedding, an elementwise operand), named
// as in the model file. Other initializers are structural constants (part
// of the engine key by value) and cannot be refitted.
struct WeightInfo {
  std::string name;
  DType dtype = DType::undefined;
  std::vector<int64_t> shape;
};

// A new value for one weight, by its initializer name.
struct WeightUpdate {
  std::string name;
  Tensor value;
};

// What one refit did.
struct RefitStats {
  size_t weights = 0;           // weights given new values
  size_t engines = 0;           // engines refitted (those reading a changed weight)
  size_t fallback_weights = 0;  // initializers of fallback segments recomputed
  double check_ms = 0;          // validating and copying the new values
  double refit_ms = 0;          // the whole call
};

class CompiledModel {
 public:
  CompiledModel(CompiledModel&&) noexcept;
  CompiledModel& operator=(CompiledModel&&) noexcept;
  ~CompiledModel();

  // Inputs in the model's input order, each within its spec's min/max.
  std::vector<Tensor> run(std::span<const Tensor> inputs);

  // Runs on device memory (backend "cuda", the whole model one engine):
  // inputs read from and outputs written into the caller's device memory,
  // enqueued on `cuda_stream` (a cudaStream_t; nullptr: the legacy default
  // stream) after the work enqueued on it before the call, and before the
  // work enqueued on it after; returns without waiting (kiln.h, "Run on
  // device memory", states the semantics). The memory must stay valid until
  // the run has finished on that stream. kiln::Error(unsupported) says why a
  // model cannot (device_io_unavailable()); kiln::Error(invalid_argument)
  // names a mismatched input or output, a host pointer or another device's.
  void run_device(std::span<const DeviceTensor> inputs, std::span<const DeviceTensor> outputs,
                  void* cuda_stream);
  // The dtype and shape of each output for inputs of these dtypes and
  // shapes: what to allocate for run_device(). Same errors.
  std::vector<TensorDesc> output_descs(std::span<const TensorDesc> inputs);
  // Empty when run_device() works on this model; otherwise why not.
  std::string device_io_unavailable() const;

  // Writes one AOT artifact (.kiln): the model, its engines and input specs,
  // atomically. Another process loads it with kiln::load (or `kiln run`)
  // without building. Throws kiln::Error(invalid_argument) when the model
  // keeps weights in external data files or was compiled with refittable
  // off, and kiln::Error(io) when the file cannot be written.
  void save(const std::filesystem::path& artifact) const;

  // Replaces the values of the named weights in place: every engine
  // replays its weight recipes (BatchNorm folding, transposes, reorders into
  // its tactics' layouts, for every input-shape instance it holds) and every
  // fallback segment recomputes the initializers it reads. Unnamed weights
  // keep their values; the new values are copied. All or nothing: a name
  // that is not a weight of this model (weights() lists them), given twice,
  // or a value of another dtype or shape is kiln::Error(invalid_argument)
  // naming the initializer, and the model is unchanged. A model compiled
  // with refittable = false (immutable_weights) refuses. After a refit,
  // save() refuses: the artifact would embed the compile-time weights.
  // Not thread-safe: never while run() runs on this model.
  RefitStats refit(std::span<const WeightUpdate> weights);
  RefitStats refit(const std::map<std::string, Tensor>& weights);
  // The refittable weights, in canonical order.
  const std::vector<WeightInfo>& weights() const;

  const std::vector<EngineStatus>& engines() const;
  double compile_ms() const;
  std::vector<std::string> input_names() const;
  std::vector<std::string> output_names() const;

  struct Impl;
  explicit CompiledModel(std::unique_ptr<Impl> impl);

 private:
  std::unique_ptr<Impl> m_impl;
};

// `specs` has one entry per model input, in order.
CompiledModel compile(const std::filesystem::path& onnx_model, std::vector<InputSpec> specs,
                      const CompileSettings& settings = {});
// The bytes are copied; external-data weights are not available this way.
CompiledModel compile(std::span<const std::byte> onnx_model, std::vector<InputSpec> specs,
                      const CompileSettings& settings = {});

// Loads an AOT artifact. Its engines serve without a build when they were
// built for this machine (plan version, oneDNN version, ISA); otherwise, or
// for an engine that does not verify, the model it embeds is compiled
// through the engine cache of `settings`, with a warning. Input specs and
// the engine-shaping settings come from the artifact. Throws
// kiln::Error(invalid_model) for a file that is not an artifact or whose
// model section is corrupt.
CompiledModel load(const std::filesystem::path& artifact, const CompileSettings& settings = {});

}  // namespace kiln
