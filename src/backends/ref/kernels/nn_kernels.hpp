// Internal to the nn reference kernels: the per-file registration functions
// that register_nn_kernels calls, and the window tables that convolution and
// pooling share.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "backends/ref/kernel.hpp"

namespace kiln::ref {

void register_nn_conv_kernels(KernelRegistry& registry);
void register_nn_pool_kernels(KernelRegistry& registry);
void register_nn_norm_kernels(KernelRegistry& registry);

// Markers in a window table for positions that read no input element.
constexpr int64_t k_in_padding = -1;    // inside the declared padding
constexpr int64_t k_past_padding = -2;  // beyond it (ceil_mode's partial windows)

// For a sliding window over spatial axes: entry [kp * num_out + op] is the
// flat spatial input offset that kernel position `kp` reads for output
// position `op`, or one of the markers above. Building it once per node
// keeps the index arithmetic out of the inner loops.
std::vector<int64_t> window_table(std::span<const int64_t> in, std::span<const int64_t> out,
                                  std::span<const int64_t> kernel, std::span<const int64_t> strides,
                                  std::span<const int64_t> dilations, std::span<const int64_t> pad_begin,
                                  std::span<const int64_t> pad_end);

// Advances a row-major multi-index over `shape`; false after the last one.
bool next_index(std::vector<int64_t>& index, std::span<const int64_t> shape);

}  // namespace kiln::ref
