// JitModule: just-in-time compilation that recompiles through the engine
// cache, the C++ counterpart of the torch.compile workflow in Torch-TensorRT's
// engine-caching tutorial ("Engine Caching for JIT Compilation"), with
// PyTorch's automatic dynamic shapes.
//
//   kiln::JitModule model("resnet18.onnx", settings);
//   auto out = model(inputs);        // first call: compiles for these exact shapes
//   auto out2 = model(other_batch);  // a new shape: compiles again, cache first
//
// - The first call compiles an engine for the exact shapes it sees (exact
//   shapes let tactics be timed at the real size).
// - A call whose shapes no live engine serves compiles again. kiln::compile
//   looks up the engine cache first, so a shape compiled before, in this
//   process or another, is a load + refit rather than a build.
// - Once one dim of one input has shown more than `dynamic_after` distinct
//   values, the next new value compiles one range engine (min/opt/max) for
//   that dim, which then serves every value in its range: no more exact
//   engines for it. Exact engines already built keep serving their shapes.
// - reset() drops every in-process engine and everything learned about
//   shapes, as a new process would (torch._dynamo.reset()). The engine cache
//   is untouched, so the next compiles are hits.
// - update_model() gives the module a new model, as a torch.compile'd module
//   whose weights changed: with the same architecture (the graph up to the
//   values of its refittable weights) every live engine is refitted in place
//   through CompiledModel::refit, and no call compiles again; any other
//   change drops the live engines and what was learned about shapes, and the
//   next call compiles (through the engine cache, as always).
//
// Thread-safety: every method may be called from several threads at once.
// Calls served by different engines run in parallel; calls served by the same
// engine take turns (an engine's scratch memory is not shareable). Threads
// that miss on the same shapes at once wait for one compile. A compile that
// fails fails every call waiting on it; the next call tries again.
//
// Errors: kiln::Error(invalid_argument) for inputs the model cannot take (the
// wrong count, dtype or rank, a static dim of another size, a value outside a
// declared dim range), naming the input and the dim; compile errors as
// kiln::compile raises them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kiln/compile.hpp"
#include "kiln/settings.hpp"
#include "kiln/tensor.hpp"

namespace kiln {

// Bounds of a dynamic dim, as torch.export.Dim("batch", min=1, max=200).
struct DimRange {
  int64_t min = 1;
  int64_t max = 0;  // 0: no upper bound (the JIT chooses one, see JitOptions)
};

struct JitOptions {
  // How many distinct values one dim may show before the JIT stops building
  // exact engines for it: the first `dynamic_after` values each get an exact
  // engine, the next new value compiles a range engine. 1 is PyTorch's
  // automatic dynamic shapes (static first, dynamic on the first change).
  // Must be at least 1; a very large value never switches (dynamic=False).
  int dynamic_after = 1;

  // Range bounds by the model's symbolic dim name ("batch", "sequence"). A
  // call with a value outside its dim's range is an error. A dynamic dim
  // without an entry (or with max 0) gets min 1 and, as max, the next power of
  // two at or above range_headroom x the largest value seen so far; a later
  // value above that max compiles a wider range engine. Powers of two keep
  // the max (and so the engine key) the same over many call patterns, and the
  // headroom means growth recompiles O(log n) times, not once per value.
  std::map<std::string, DimRange> dim_ranges;
  int64_t range_headroom = 2;
};

// One compile the JIT started: what it compiled, why, and how the cache
// served it.
struct JitCompileRecord {
  std::vector<InputSpec> specs;  // one per model input; min == max unless a range engine
  std::string signature;         // e.g. "input=[1..256, opt 101]x3x224x224"
  std::string trigger;           // why this compile happened
  bool range = false;            // some dim has min < max
  bool finished = false;         // false while the compile is still running
  bool failed = false;           // it threw (see error)
  std::string error;
  std::vector<EngineStatus> engines;  // CompiledModel::engines(): hit / miss / built_uncached
  double compile_ms = 0;              // kiln::compile wall time
};

// What one call did.
struct JitCallInfo {
  size_t engine = 0;      // index into compile_log() of the compile whose engine served the call
  bool compiled = false;  // this call ran the compile (it was the first to miss)
  bool waited = false;    // this call waited for a compile another thread started
  bool range = false;     // served by a range engine
  double compile_ms = 0;  // time this call spent compiling or waiting for a compile
  double run_ms = 0;
};

// What one update_model() did.
struct JitUpdate {
  bool refit = false;            // same architecture: the live engines kept, with the new weights
  size_t engines_refit = 0;      // live compiled models refitted in place
  size_t engines_dropped = 0;    // live compiled models dropped (a structural change, or a refit refused)
  std::string recompile_reason;  // why the update was not a refit; empty when it was
  RefitStats stats;              // summed over the refitted models
};

class JitModule {
 public:
  // The model is read when the module is made (to learn its inputs) and
  // again by each compile; the file must stay in place.
  explicit JitModule(std::filesystem::path onnx_model, CompileSettings settings = {},
                     JitOptions options = {});
  // The bytes are copied.
  explicit JitModule(std::span<const std::byte> onnx_model, CompileSettings settings = {},
                     JitOptions options = {});
  JitModule(JitModule&&) noexcept;
  JitModule& operator=(JitModule&&) noexcept;
  ~JitModule();

  // Inputs in the model's input order.
  std::vector<Tensor> operator()(std::span<const Tensor> inputs) { return run(inputs); }
  std::vector<Tensor> run(std::span<const Tensor> inputs, JitCallInfo* info = nullptr);

  // Drops every in-process engine and the shapes seen so far.
  void reset();

  // Replaces the model (the path's file is read now and by later compiles;
  // the bytes are copied). Same architecture as the current model: every
  // live engine is refitted with the new model's weights, matched by their
  // canonical order (names may differ), so calls keep their engines and
  // compile nothing. An engine that refuses the refit (compiled with
  // refittable = false) is dropped and its shapes compile again. Otherwise
  // (other nodes, attributes, structural constants, inputs or weight
  // shapes) as reset(), and the next call compiles the new model. Waits for
  // compiles in flight (they read the old model) and for calls running on
  // an engine before refitting it. A model that fails to import throws, and
  // the module keeps the old one.
  JitUpdate update_model(const std::filesystem::path& onnx_model);
  JitUpdate update_model(std::span<const std::byte> onnx_model);
  // update_model() calls that refitted in place.
  size_t refits() const;

  // Compiles started since construction (reset() does not zero it).
  size_t compiles() const;
  // Every compile since construction, in the order they started.
  std::vector<JitCompileRecord> compile_log() const;
  // engines() of the most recently finished compile; empty before the first.
  std::vector<EngineStatus> last_engines() const;
  // Engines held now (compiling or ready).
  size_t live_engines() const;
  // The compile_log() index of the live engine that would serve inputs of
  // these shapes, without compiling anything; nullopt if a call would compile.
  std::optional<size_t> engine_for(std::span<const std::vector<int64_t>> shapes) const;

  std::vector<std::string> input_names() const;
  const CompileSettings& settings() const;
  const JitOptions& options() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> m_impl;
};

// "input=1x3x224x224" for fixed specs, "input=[1..256, opt 101]x3x224x224"
// with ranges; inputs separated by ", ".
std::string describe_specs(std::span<const InputSpec> specs);

}  // namespace kiln
