// Which Resize / Upsample nodes oneDNN's resampling primitive computes
// exactly as ONNX defines them, so they can run as a native layer
// (resample_layer.cpp) instead of on the reference kernel.
//
// oneDNN 2.6 knows one coordinate mapping: output index y of an axis of
// length O reads input coordinate s = (y + 0.5) * I / O - 0.5 (float), from
// the true size ratio, never from a scale given by the caller.
//  - linear: taps floor(s) and ceil(s), both clamped into [0, I - 1], with
//    weights |s - left| and 1 - that: ONNX's half_pixel linear, provided the
//    node's scale is exactly O / I (ONNX maps with the given scale), and
//    pytorch_half_pixel when no resized axis has O == 1 (ONNX then reads
//    coordinate -0.5, oneDNN the centre of the input).
//  - nearest: roundf(s), halves away from zero. Rather than reason about
//    every transform and nearest_mode, the index each output reads is
//    computed both ways, oneDNN's formula in float exactly as it does, and
//    the node is native only where the two agree on every axis (this
//    accepts e.g. torch's asymmetric/floor nearest at integer upsampling).
// Everything else (align_corners, asymmetric linear, cubic,
// tf_crop_and_resize, antialias, axes, non-float data, scales that depend on
// input data) stays on the reference kernel. Where the partition cannot
// decide (symbolic dims, or scales/sizes computed from input shapes, as
// torch exports interpolate(size=x.shape[-2:])), the layer checks at each
// shape set and runs the reference kernel there when oneDNN would differ.
#pragma once

#include <optional>
#include <span>
#include <string>

#include "ir/graph.hpp"

namespace kiln::cpu {

// Why `node` (a Resize or Upsample) cannot run on oneDNN's resampling
// primitive for input shape `in_shape` and the values of its scale/size
// inputs (`inputs`, null where unknown); nullopt when it can.
std::optional<std::string> resample_mismatch(const ir::Node& node, std::span<const Tensor* const> inputs,
                                             std::span<const int64_t> in_shape);

// The same for a node of a lowered graph, as far as the graph tells:
// nullopt also where the answer depends on shapes known only per shape set.
std::optional<std::string> resample_mismatch(const ir::Graph& graph, const ir::Node& node);

}  // namespace kiln::cpu
