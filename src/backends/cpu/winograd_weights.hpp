// Winograd weight transform done by kiln itself instead of dnnl::reorder.
//
// oneDNN 2.6's winograd convolutions (F(2x2,3x3) and F(4x4,3x3) on
// avx512_core) halve the time of a stride-1 3x3 layer, but take their weights
// pre-transformed (U = G g G^T per output/input channel pair) in an opaque
// layout. oneDNN's own reorder into that layout is single-threaded scalar
// code with a scratch copy: 10-15 ms for one 256x256 layer, paid again at
// every refit. A cache hit of a winograd ResNet-18 took 180 ms instead of 35.
//
// This transform computes the same products in the same order as oneDNN's
// reorder (its output is bitwise equal; tests/unit/test_weight_reorder.cpp
// checks it), sixteen output channels at a time, writing each tile's
// contiguous runs straight into the destination layout.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>
#include <span>

namespace kiln::cpu {

// True when `dst_md` is a winograd weight layout this transform writes
// (f32 wino_wei_aaOio and wino_wei_aaOBiOo for F(2x2,3x3),
// wino_wei_OBaaIBOIio for F(4x4,3x3): what avx512_core f32 winograd
// convolutions take).
bool winograd_layout_supported(const dnnl::memory::desc& dst_md);

// Transforms f32 OIHW (3x3, dense row-major) `src` into `dst` laid out as
// the winograd `dst_md`, zeroing the padding. With `slice_factors` (one per
// output channel), each source element is first scaled as
// float(double(value) * factor), as a bn_fold_scale recipe computes it.
// Returns false, touching nothing, for layouts or sources it does not handle.
bool transform_winograd_weights(const dnnl::memory::desc& src_md, const float* src,
                                const dnnl::memory::desc& dst_md, void* dst,
                                std::span<const double> slice_factors = {});

}  // namespace kiln::cpu
