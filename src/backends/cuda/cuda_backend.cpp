#include "backends/cuda/cuda_backend.hpp"

#include "backends/cuda/cuda_engine.hpp"
#include "backends/cuda/cuda_layers.hpp"
#include "backends/cuda/cuda_plan_format.hpp"
#include "backends/cuda/device.hpp"

namespace kiln {

namespace {

std::string version_string(size_t v, size_t major_div, size_t minor_div) {
  return std::to_string(v / major_div) + "." + std::to_string(v % major_div / minor_div) + "." +
         std::to_string(v % minor_div);
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(cuda::GpuInfo gpu) : m_gpu(std::move(gpu)) {}

  std::string_view name() const override { return "cuda"; }

  Fingerprint fingerprint() const override {
    Fingerprint f;
    f.backend = "cuda";
    f.plan_version = cuda::k_plan_version;
    // 13000 -> 13.0; cuDNN 91900 -> 9.19.0; cuBLASLt 130100 -> 13.1.0.
    f.library_version = "CUDA " + std::to_string(m_gpu.runtime_version / 1000) + "." +
                        std::to_string(m_gpu.runtime_version % 1000 / 10) + ", cuDNN " +
                        version_string(m_gpu.cudnn_version, 10000, 100) + ", cuBLASLt " +
                        version_string(m_gpu.cublaslt_version, 10000, 100);
    f.isa = m_gpu.sm() + " x" + std::to_string(m_gpu.sm_count);
    return f;
  }

  std::optional<std::string> unsupported_reason(const ir::Graph& graph, ir::NodeId node) const override {
    return cuda::unsupported_reason(graph, node);
  }

  std::unique_ptr<Engine> build(const ir::Graph& lowered, std::span<const InputSpec> specs,
                                const CompileSettings& settings,
                                builder::TimingCache& timing_cache) override {
    return cuda::CudaEngine::build(lowered, specs, settings, timing_cache, fingerprint());
  }

  std::unique_ptr<Engine> deserialize(std::span<const std::byte> plan, int) override {
    cuda::Plan parsed = cuda::parse_plan(plan);
    if (!(parsed.fingerprint == fingerprint())) {
      throw Error(ErrorCode::invalid_model, "cuda plan: built for " + parsed.fingerprint.to_string() +
                                                ", this machine is " + fingerprint().to_string());
    }
    return cuda::CudaEngine::from_plan(std::move(parsed));
  }

 private:
  cuda::GpuInfo m_gpu;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend() {
  const cuda::GpuProbe& probe = cuda::probe_gpu();
  if (!probe.gpu) throw Error(ErrorCode::unsupported, "cuda backend: " + probe.reason);
  return std::make_unique<CudaBackend>(*probe.gpu);
}

}  // namespace kiln
