// The CPU plan's byte format: a FlatBuffer (schema cpu_plan.fbs) followed by
// an 8-byte FNV-1a checksum of it. parse_plan checks the checksum, runs the
// FlatBuffers verifier, then checks every index and size before building
// anything, so a truncated, corrupted or foreign plan is a kiln::Error
// (invalid_model), never a crash. Weight values are never part of a plan;
// each weight keeps its recipe.
//
// Stateless; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "backends/cpu/plan.hpp"

namespace kiln::cpu {

// Bump on any change to the schema or to what a field means.
// 2: matmul weight layout and implementation, depthwise fusion; 3: batch_norm
// layers; 4: eltwise layers may be PRelu, Selu or Celu, layer_norm layers
// InstanceNormalization or with statistics outputs, Gemm matmul layers carry
// alpha, beta and a broadcast C, conv and pool layers 1-D/3-D and auto_pad;
// resample layers; 5: a concat layer's tactic.algo names oneDNN's concat
// (automatic) or one reorder per input into its window (direct), and a Concat
// of bf16 inputs, with the BatchNorm after it, stays bf16; 6: a conv's swish
// may run as kiln's own pass (native_swish); 7: a conv's layout may be
// plain_in.
constexpr uint32_t k_plan_version = 7;

std::vector<std::byte> serialize_plan(const EnginePlan& plan);
// Throws kiln::Error(invalid_model) for a plan that fails any check.
EnginePlan parse_plan(std::span<const std::byte> bytes);

}  // namespace kiln::cpu
