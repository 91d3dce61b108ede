// The explicit begin and end padding of a convolution or pooling window
// along each spatial dim, as oneDNN takes it: ONNX's auto_pad (SAME_UPPER,
// SAME_LOWER, VALID) and a pooling's ceil_mode are resolved at build time
// from the instance's input and output sizes. Shared by the conv, conv
// transpose and pool layers; any number of spatial dims (1-D, 2-D, 3-D).
#pragma once

#include <algorithm>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "backends/cpu/dnnl_util.hpp"
#include "ir/attributes.hpp"
#include "ir/ops/nn_geometry.hpp"
#include "kiln/error.hpp"

namespace kiln::cpu {

struct SpatialPads {
  Dims begin, end;
};

// `in` and `out` are the spatial sizes, `window` the dilated kernel extent
// ((k - 1) * d + 1) and `strides` the strides, one per spatial dim. The end
// padding grows to what the output size needs (ceil_mode); SAME_UPPER puts
// an odd total's extra element at the end, SAME_LOWER at the beginning.
inline SpatialPads explicit_pads(const ir::Attributes& a, std::span<const int64_t> in,
                                 std::span<const int64_t> out, std::span<const int64_t> window,
                                 std::span<const int64_t> strides) {
  const size_t nd = in.size();
  const std::string mode = a.get_string("auto_pad", "NOTSET");
  std::vector<int64_t> pads = a.get_ints("pads", std::vector<int64_t>(2 * nd, 0));
  if (mode != "NOTSET") pads.assign(2 * nd, 0);
  if (pads.size() != 2 * nd || out.size() != nd || window.size() != nd || strides.size() != nd) {
    throw Error(ErrorCode::unsupported, "pads/kernel/strides of the wrong length");
  }
  SpatialPads p{Dims(nd), Dims(nd)};
  for (size_t i = 0; i < nd; ++i) {
    const int64_t needed = std::max<int64_t>(0, (out[i] - 1) * strides[i] + window[i] - in[i]);
    if (mode == "SAME_UPPER" || mode == "SAME_LOWER") {
      const int64_t small = needed / 2;
      p.begin[i] = mode == "SAME_UPPER" ? small : needed - small;
      p.end[i] = needed - p.begin[i];
    } else {
      p.begin[i] = pads[i];
      p.end[i] = std::max<int64_t>(pads[nd + i], needed - pads[i]);
    }
  }
  return p;
}

// ConvTranspose's pads as oneDNN's deconvolution takes them, for the given
// spatial input and output sizes and kernel extents: the begin pad that
// places the output (ir/ops/nn_geometry.hpp, as the reference kernel does)
// and the end pad that yields the output size (output_padding and
// output_shape folded in). Nullopt when one would be negative, which
// oneDNN does not take.
inline std::optional<SpatialPads> conv_transpose_pads(const ir::Attributes& a, std::span<const int64_t> in,
                                                      std::span<const int64_t> out,
                                                      std::span<const int64_t> kernel) {
  const size_t nd = in.size();
  const ir::nn::TransposeAttrs t =
      ir::nn::read_transpose_attrs(a, nd, std::vector<int64_t>(kernel.begin(), kernel.end()));
  SpatialPads p{Dims(nd), Dims(nd)};
  for (size_t i = 0; i < nd; ++i) {
    p.begin[i] = ir::nn::transpose_pad_begin(t, i, in[i], out[i]);
    p.end[i] = (in[i] - 1) * t.window.strides[i] + t.window.effective_kernel(i) - out[i] - p.begin[i];
    if (p.begin[i] < 0 || p.end[i] < 0) return std::nullopt;
  }
  return p;
}

}  // namespace kiln::cpu
