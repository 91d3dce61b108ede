// The device copies of a cuda engine's constants: every refittable weight
// and every structural constant a GPU layer reads, in the plan's storage
// precision (precision.hpp), by value id; and the copies some layers read
// instead, made on the GPU from them once per refit: a Gemm transB weight
// as [K, N] for cuBLASLt, a channels-last conv's weight as KRSC.
//
// Not thread-safe: it belongs to one engine, run by one caller.
#pragma once

#include <optional>
#include <vector>

#include "backends/cuda/activation_layout.hpp"
#include "backends/cuda/cuda_plan.hpp"
#include "backends/cuda/device.hpp"

namespace kiln::cuda {

class DeviceWeights {
 public:
  // `plan`, `layouts` and `device` must outlive it; uploads go on the
  // device's stream.
  DeviceWeights(const Plan& plan, const ActivationLayouts& layouts, const DeviceContext& device);

  // The fp32 value of constant `v`, rounded to the storage precision on the
  // host and enqueued for upload; the caller synchronizes once after a batch
  // of uploads. Returns the bytes it holds on the GPU.
  size_t upload(ir::ValueId v, const Tensor& host);
  // Uploads every structural (non-refittable) constant a GPU layer reads,
  // from its host value, and waits for the uploads.
  void upload_structural();
  // Gemm with transB: W transposed to [K, N], from the uploaded value.
  void prepare_matmul_weights();
  // Channels-last convs read their weight as KRSC: transposed once per
  // refit, on the GPU, from the uploaded KCRS value.
  void prepare_conv_weights();

  const void* constant(ir::ValueId v) const;
  // Layer `layer`'s W as [K, N], or nullptr where it reads its weight as stored.
  const void* matmul_weight(size_t layer) const;
  // The KRSC copy of a channels-last conv's weight `w`.
  const void* krsc_weight(ir::ValueId w) const;

 private:
  const Plan& m_plan;
  const ActivationLayouts& m_layouts;
  const DeviceContext& m_device;
  std::vector<std::optional<DeviceBuffer>> m_constants;       // by value id
  std::vector<std::optional<DeviceBuffer>> m_matmul_weights;  // by layer: W as [K, N]
  std::vector<std::optional<DeviceBuffer>> m_krsc_weights;    // by value: a channels-last conv's W
};

}  // namespace kiln::cuda
