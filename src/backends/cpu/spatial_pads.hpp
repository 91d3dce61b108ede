// The explicit begin and end padding of a convolution or pooling window
// along each spatial dim, as oneDNN takes it: ONNX's auto_pad (SAME_UPPER,
// SAME_LOWER, VALID) and a pooling's ceil_mode are resolved at build time
// from the instance's input and output sizes. Shared by the conv and pool
// layers; any number of spatial dims (1-D, 2-D, 3-D).
#pragma once

#include <algorithm>
#include <span>
#include <string>
#include <vector>

#include "backends/cpu/dnnl_util.hpp"
#include "ir/attributes.hpp"
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

}  // namespace kiln::cpu
