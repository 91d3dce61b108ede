// The cuda plan's byte format: a FlatBuffer (schema cuda_plan.fbs) in the
// checksummed frame of every kiln plan. parse_plan checks the checksum, the
// FlatBuffers verifier, every node index and each layer's kind against its
// node, so a truncated, corrupted or foreign plan is a kiln::Error
// (invalid_model), never a crash.
//
// Stateless; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "backends/cuda/cuda_plan.hpp"

namespace kiln::cuda {

// Bump on any change to the schema or to what a field means.
// 2: the plan records its storage precision (fp32, fp16, bf16).
// 3: shape layers (LayerKind::shape), evaluated on the host per instance,
//    and expand layers.
// 4: gather layers (a slice, views and a transpose as one strided copy).
// 5: attention layers (fp16/bf16 engines).
// 6: fp16/bf16 engines keep 4-D activations channels-last
//    (activation_layout.hpp): nothing new is recorded (the layouts follow
//    from the graph and layers), but a conv's recorded cuDNN engine was
//    chosen and timed at its NHWC layout, which a v5 plan's was not.
constexpr uint32_t k_plan_version = 6;

std::vector<std::byte> serialize_plan(const Plan& plan);
Plan parse_plan(std::span<const std::byte> bytes);

}  // namespace kiln::cuda
