// The storage precision of a cuda engine: which element type its weights and
// activations have on the GPU, chosen once per engine from the compile
// settings, and the host-side conversion of fp32 weights into it.
//
// An engine is wholly fp32, fp16 or bf16: every layer the backend runs has a
// half path (cuDNN and cuBLASLt take half tensors with fp32 compute; kiln's
// kernels load and store half and compute in fp32), so no layer needs fp32
// islands with casts around them. The engine's boundary stays fp32: inputs
// are cast to the storage type on the GPU first, outputs back last.
//
// Stateless; thread-safe.
#pragma once

#include <cstddef>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "backends/cuda/kernels/kernels.hpp"
#include "kiln/settings.hpp"

namespace kiln::cuda {

// fp16 when enabled, else bf16 when enabled, else fp32. fp16 wins when both
// are: both run on the same tensor cores with fp32 accumulation at the same
// rate, and fp16 keeps 3 more mantissa bits (the smaller error), while the
// activations of the models kiln runs stay far inside fp16's range.
ElemType storage_precision(const std::set<Precision>& enabled);

size_t elem_size(ElemType type);
const char* precision_name(ElemType type);  // "fp32", "fp16", "bf16"

// `values` converted to `type` (round to nearest even; a value beyond fp16's
// range becomes +-inf, as a cast does), as the bytes the GPU holds.
std::vector<std::byte> to_storage(std::span<const float> values, ElemType type);

}  // namespace kiln::cuda
