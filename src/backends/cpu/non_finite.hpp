// A fast test for NaN and infinities in float tensors. CpuEngine scans its
// inputs before every run and its weights once per refit: oneDNN's relu,
// clip, max pooling and softmax drop NaN (their max/min instructions return
// the non-NaN operand), so a run whose data is not all finite goes to the
// reference kernels instead (see CpuEngine::run).
//
// Stateless; thread-safe.
#pragma once

#include <span>

#include "kiln/tensor.hpp"

namespace kiln::cpu {

// True when `values` holds a NaN or an infinity. Splits large spans over up
// to `threads` threads (0: every core).
bool has_non_finite(std::span<const float> values, int threads);

// The same for a tensor: float32 and float64 are scanned, other types hold no
// NaN.
bool has_non_finite(const Tensor& t, int threads);

}  // namespace kiln::cpu
