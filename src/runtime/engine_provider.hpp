// EngineProvider: gets the engine for one lowered subgraph, from the engine
// cache (refitted with the subgraph's own weights) or by building it.
//
//   key → [store] get → envelope → fingerprint → deserialize → refit
//   miss: [store] lease → get again → build → seal → put
//
// Every cache failure is a miss with a reason, never an error. One provider
// serves one compile: it opens the engine cache and the timing cache once and
// shares them between the compile's engines, so identical subgraphs of one
// model are built once (the second finds the first's entry).
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "backends/backend.hpp"
#include "builder/timing_cache.hpp"
#include "cache/store.hpp"
#include "kiln/settings.hpp"
#include "runtime/compiled_model.hpp"

namespace kiln::runtime {

class EngineProvider {
 public:
  // Throws kiln::Error(invalid_argument) for caching without refittable.
  // `store` is the store tree to use; unset, it is cache::open(settings)
  // when caching is on.
  EngineProvider(Backend& backend, const CompileSettings& settings,
                 std::optional<std::shared_ptr<cache::Store>> store = std::nullopt);

  // `lowered` is a lowered graph whose weight recipes index `sources`; it may
  // hold placeholder weights (passes::LoweringOptions::defer_weight_values),
  // which are materialized only if the engine has to be built.
  std::unique_ptr<Engine> provide(ir::Graph& lowered, std::span<const InputSpec> specs,
                                  std::span<const Tensor> sources, EngineRecord& record);

  // Saves the timing cache if a build used it and fills the report's
  // timing-cache fields.
  void finish(CompileReport& report);

 private:
  builder::TimingCache& timing_cache();

  Backend& m_backend;
  const CompileSettings& m_settings;
  bool m_caching = false;
  std::shared_ptr<cache::Store> m_cache;  // null when caching is off
  std::filesystem::path m_timing_path;
  std::optional<builder::TimingCache> m_timing;  // opened by the first build
};

}  // namespace kiln::runtime
