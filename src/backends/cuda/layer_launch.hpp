// Running one layer of a cuda engine at one instance (cuda_instance.hpp):
// the layout conversions scheduled before it, its kernels (cuDNN,
// cuBLASLt or kiln's own, enqueued on the engine's stream with the
// arguments the instance worked out), and the conversions after it.
// Each layer kind's launch is a function of its own in layer_launch.cpp.
//
// Not thread-safe: it enqueues on the engine's one stream.
#pragma once

#include <cstddef>
#include <vector>

#include "backends/cuda/activation_layout.hpp"
#include "backends/cuda/cuda_instance.hpp"
#include "backends/cuda/cuda_plan.hpp"
#include "backends/cuda/device.hpp"
#include "backends/cuda/device_weights.hpp"

namespace kiln::cuda {

// A view of the engine's parts a launch reads; cheap to make per call.
class LayerLauncher {
 public:
  LayerLauncher(const Plan& plan, const ActivationLayouts& layouts, const DeviceContext& device,
                const DeviceWeights& weights)
      : m_plan(plan), m_layouts(layouts), m_device(device), m_weights(weights) {}

  // A layer's work and the layout conversions scheduled around it.
  void run(const Instance& inst, size_t layer, void* workspace) const;
  // One conv or matmul layer with a given plan (the instance's, or a
  // candidate being timed).
  void run_conv(const Instance& inst, size_t layer, const ConvPlan& plan, bool fused, void* workspace) const;
  void run_matmul(const Instance& inst, size_t layer, const LtMatmul& matmul, void* workspace) const;
  // The instance's tensors, as stored (k_no_layer) or as `layer` reads them.
  InstanceTensors tensors(const Instance& inst, size_t layer = k_no_layer) const;

 private:
  void run_kernels(const Instance& inst, size_t layer, void* workspace) const;
  void run_conversions(const Instance& inst, const std::vector<size_t>& conversions) const;
  const void* conv_weight(const Instance& inst, size_t layer) const;

  const Plan& m_plan;
  const ActivationLayouts& m_layouts;
  const DeviceContext& m_device;
  const DeviceWeights& m_weights;
};

}  // namespace kiln::cuda
