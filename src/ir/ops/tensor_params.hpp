// Argument resolution for the tensor ops (Slice, Pad, Shape, Resize ...),
// shared by their shape inference and their reference kernels.
//
// Both callers must agree exactly on, say, where a Slice starts or how a
// Resize scales, so the rules (attribute vs input across opsets, ONNX's
// clamping) live here once. Helpers take the node and the input values it
// knows: at run time every present input, during static inference only the
// constants. They return nullopt when a needed value is unknown and throw
// kiln::Error(invalid_model) for malformed arguments.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "ir/graph.hpp"

namespace kiln::ir {

using InputValues = std::span<const Tensor* const>;

// Input `i`'s value when present and known; else null.
inline const Tensor* value_at(InputValues values, size_t i) {
  return i < values.size() ? values[i] : nullptr;
}

// Slice's arguments, with axes normalized to [0, rank) and every list the
// same length.
struct SliceArgs {
  std::vector<int64_t> starts;
  std::vector<int64_t> ends;
  std::vector<int64_t> axes;
  std::vector<int64_t> steps;
};
std::optional<SliceArgs> slice_args(const Node& node, InputValues values, int64_t rank);

// One axis of a slice after ONNX's clamping: `count` elements from `start`,
// `step` apart.
struct SliceRange {
  int64_t start = 0;
  int64_t step = 1;
  int64_t count = 0;
};
SliceRange clamp_slice(int64_t start, int64_t end, int64_t step, int64_t dim);

// Pad amounts: rank begins followed by rank ends (negative crops).
std::optional<std::vector<int64_t>> pad_amounts(const Node& node, InputValues values, int64_t rank);

// The [start, end) range of dims that Shape returns (opset 15 start/end).
std::pair<int64_t, int64_t> shape_range(const Node& node, int64_t rank);

// Resize / Upsample: per-axis scales (output / input) and output sizes.
// How a Resize or Upsample maps and rounds coordinates. Resize before
// opset 11 and Upsample have no transform attributes: they map
// asymmetrically and round nearest down when upsampling, up when
// downsampling ("simple").
struct ResizeModes {
  std::string mode;       // nearest, linear (bilinear/trilinear read as linear) or cubic
  std::string transform;  // coordinate_transformation_mode
  std::string nearest;    // nearest_mode
};
ResizeModes resize_modes(const Node& node);
// The input coordinate output coordinate `x` maps to on one axis (ONNX's
// reference formulas, with the unrounded output length scale * in_len);
// nullopt outside a tf_crop_and_resize box.
std::optional<double> resize_source_coordinate(const ResizeModes& m, int64_t x, double scale, int64_t in_len,
                                               double roi_start, double roi_end);
// The input index nearest_mode `mode` picks at coordinate `c`, unclamped.
int64_t resize_nearest_index(const std::string& mode, double c, double scale);

struct ResizeArgs {
  std::vector<double> scales;
  std::vector<int64_t> out_shape;
  std::vector<double> roi;  // 2 * rank (starts, then ends); empty when unused
};
// REQUIRES: in_shape is the input's concrete shape.
std::optional<ResizeArgs> resize_args(const Node& node, InputValues values,
                                      std::span<const int64_t> in_shape);
// The output rank is known before the input's dims are; sizes alone (no
// scales) give the output shape even for a symbolic input.
std::optional<std::vector<int64_t>> resize_sizes(const Node& node, InputValues values);

// An Einsum equation with its letters and ellipsis dims numbered as labels
// 0 .. num_labels - 1: the label of every dim of each input and the output.
struct EinsumSpec {
  std::vector<std::vector<int>> inputs;
  std::vector<int> output;
  int num_labels = 0;
};
EinsumSpec parse_einsum(const std::string& equation, std::span<const size_t> input_ranks);

// Whether element `i` of any dtype is nonzero (-0.0 is zero), for NonZero.
bool element_nonzero(const Tensor& t, int64_t i);

}  // namespace kiln::ir
