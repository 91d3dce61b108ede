#include "backends/backend.hpp"

#include <chrono>

namespace kiln {

std::string Fingerprint::to_string() const {
  return backend + " plan v" + std::to_string(plan_version) + ", " + library_version + ", " + isa;
}

std::vector<Tensor> Engine::run_profiled(std::span<const Tensor> inputs, std::vector<LayerTiming>& timings) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<Tensor> outputs = run(inputs);
  LayerTiming t;
  t.name = "engine";
  t.nodes = {"engine"};
  t.op = "Engine";
  t.tactic = "engine";
  t.kind = "onednn";
  t.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  timings.assign(1, std::move(t));
  return outputs;
}

}  // namespace kiln
