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
constexpr uint32_t k_plan_version = 4;  // 2: matmul weight layout and implementation, depthwise fusion; 3:
                                        // batch_norm layers; 4: resample layers

std::vector<std::byte> serialize_plan(const EnginePlan& plan);
// Throws kiln::Error(invalid_model) for a plan that fails any check.
EnginePlan parse_plan(std::span<const std::byte> bytes);

}  // namespace kiln::cpu
