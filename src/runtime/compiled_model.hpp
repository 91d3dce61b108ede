// CompiledModel: a model lowered and built into an engine, ready to run.
//
// compile() runs the lowering passes, builds one engine for the whole graph
// on the chosen backend (timing tactics through the persistent timing cache)
// and reports where the time went. Until partitioning lands (issue 6), every
// node must be supported by the backend; an unsupported one is a
// kiln::Error(unsupported) naming it.
//
// Not thread-safe: run() uses the engine's scratch buffers.
#pragma once

#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backends/backend.hpp"
#include "kiln/settings.hpp"

namespace kiln::runtime {

// What happened to one engine subgraph during a compile.
struct EngineRecord {
  std::string key;     // hex EngineKey; empty when no cache is involved
  std::string status;  // "hit", "miss" (built and saved), "built_uncached"
  std::string reason;  // for a miss: why the cache could not serve it
  double key_ms = 0;
  double load_ms = 0;   // cache lookup, envelope check and deserialize
  double refit_ms = 0;
  double build_ms = 0;
  double save_ms = 0;
  EngineInfo info;
};

struct CompileReport {
  std::string backend;
  double lower_ms = 0;
  double compile_ms = 0;  // the whole compile() call
  std::vector<EngineRecord> engines;
  std::filesystem::path timing_cache_path;  // empty when none is used
  size_t timing_cache_entries = 0;
  uint64_t timing_cache_hits = 0;
  uint64_t timing_cache_misses = 0;
};

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

 private:
  CompiledModel() = default;

  std::unique_ptr<Backend> m_backend;
  std::unique_ptr<Engine> m_engine;
  CompileReport m_report;
};

// The system temp dir followed by "kiln_engine_cache", as the tutorial's
// default engine_cache_dir.
std::filesystem::path default_engine_cache_dir();

// Where the timing cache lives for `settings`: timing_cache_path if set ("-"
// means none), else a "timing" subfolder of the engine cache dir, so it never
// counts as a cache entry.
std::filesystem::path resolve_timing_cache_path(const CompileSettings& settings);

}  // namespace kiln::runtime
