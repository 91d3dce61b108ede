#include "backends/cpu/cpu_backend.hpp"

#include "backends/cpu/cpu_engine.hpp"
#include "backends/cpu/dnnl_util.hpp"
#include "backends/cpu/layer_partition.hpp"
#include "backends/cpu/plan_format.hpp"

namespace kiln {

namespace {

class CpuBackend final : public Backend {
 public:
  std::string_view name() const override { return "cpu"; }

  Fingerprint fingerprint() const override {
    return Fingerprint{"cpu", cpu::k_plan_version, cpu::dnnl_version_string(), cpu::isa_string()};
  }

  std::optional<std::string> unsupported_reason(const ir::Graph& graph, ir::NodeId node) const override {
    return cpu::unsupported_reason(graph, node);
  }

  std::unique_ptr<Engine> build(const ir::Graph& lowered, std::span<const InputSpec> specs,
                                const CompileSettings& settings,
                                builder::TimingCache& timing_cache) override {
    try {
      return cpu::CpuEngine::build(lowered, specs, settings, timing_cache, fingerprint());
    } catch (const dnnl::error& e) {
      throw Error(ErrorCode::internal, lowered.source + ": cpu build: oneDNN: " + e.what());
    }
  }

  using Backend::deserialize;
  std::unique_ptr<Engine> deserialize(std::span<const std::byte> plan_bytes, int num_threads) override {
    cpu::EnginePlan plan = cpu::parse_plan(plan_bytes);
    plan.num_threads = num_threads;  // the loading compile's choice, not the builder's
    const Fingerprint here = fingerprint();
    if (!(plan.fingerprint == here)) {
      throw Error(ErrorCode::invalid_model, "cpu plan was built for " + plan.fingerprint.to_string() +
                                                ", this machine is " + here.to_string());
    }
    // A plan that verified but cannot be instantiated is corrupt (or from a
    // kiln with other semantics): report it as such, never crash.
    try {
      return cpu::CpuEngine::from_plan(std::move(plan));
    } catch (const Error& e) {
      throw Error(ErrorCode::invalid_model, std::string("cpu plan cannot be instantiated: ") + e.what());
    } catch (const dnnl::error& e) {
      throw Error(ErrorCode::invalid_model,
                  std::string("cpu plan cannot be instantiated: oneDNN: ") + e.what());
    } catch (const std::exception& e) {
      throw Error(ErrorCode::invalid_model, std::string("cpu plan cannot be instantiated: ") + e.what());
    }
  }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace kiln
