// GlobalAveragePool as kiln's own loop over a channels-last or channel-
// blocked tensor, as its bytes nest: `outer` groups (images, or image x
// channel block) of `rows` spatial positions of `inner` consecutive floats
// (the channels, or one block of them); the mean of each group's rows.
//
// Why not oneDNN's pooling: squeeze-and-excitation reads the same tensor
// twice, its mean and then its per-channel scale. oneDNN's pooling splits
// the work between threads by channel, and kiln's passes (the swish before,
// the scale after) by contiguous runs of memory: after the pooling, each
// thread's half of the tensor sat in the other core's cache and the scale
// read it from memory (0.13 ms against 0.034 ms over [1,112,112,32] at 2
// threads). This loop splits by contiguous runs too.
//
// Stateless; safe to call concurrently on distinct buffers.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

#include "backends/cpu/dnnl_util.hpp"

namespace kiln::cpu {

struct NestedPool {
  int64_t outer = 0, rows = 0, inner = 0;
  int64_t chunk_rows = 0;  // rows per task
  int64_t chunks() const { return (rows + chunk_rows - 1) / chunk_rows; }
  int64_t tasks() const { return outer * chunks(); }
};

// The nesting of a rank-3 to rank-5 [N, C, spatial...] tensor laid out as
// `md` when its spatial dims are consecutive in memory with at least 8
// floats after them (nhwc's channels, nChw16c's block); nullopt otherwise
// (plain NCHW, where each channel's plane is already one run).
std::optional<NestedPool> nested_pool(const Md& md);

// y[o][i] = mean over rows r of x[o][r][i], on oneDNN's OpenMP threads.
// `partial` holds tasks() * inner floats of scratch.
void global_average(const NestedPool& p, const float* x, float* y, std::span<float> partial);

}  // namespace kiln::cpu
