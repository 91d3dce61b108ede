// Weight reorders done by kiln itself instead of dnnl::reorder.
//
// On a cache hit every weight is reordered from its plain layout into the
// blocked layout its primitive chose. dnnl::reorder JIT-compiles a kernel for
// each new (source, destination) pair, and a fresh process has none cached:
// for ResNet-18 that compilation, not the copying, was most of a refit
// (~0.7 s). A reorder between two blocked descriptors is only index
// arithmetic, so refit does it here and stays in the tens of milliseconds.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>
#include <span>

namespace kiln::cpu {

// Copies f32 `src` laid out as `src_md` into `dst` laid out as `dst_md`
// (f32, or bf16 rounded to nearest even), zeroing any padding of `dst`.
// Winograd destinations go to transform_winograd_weights
// (winograd_weights.hpp). Returns false, touching nothing, when either
// descriptor is not a layout kiln can address: the caller then falls back
// to dnnl::reorder.
//
// With `slice_factors` (one per slice of the source tensor's buffer: slice i
// holds buffer elements [i * n/k, (i+1) * n/k) of n, for k factors), each
// element is written as float(double(value) * factor), bitwise what a
// bn_fold_scale recipe computes; this needs a dense source (row-major in some
// dim order, e.g. a transposed view of the buffer), else false.
bool reorder_weights(const dnnl::memory::desc& src_md, const float* src, const dnnl::memory::desc& dst_md,
                     void* dst, std::span<const double> slice_factors = {});

}  // namespace kiln::cpu
