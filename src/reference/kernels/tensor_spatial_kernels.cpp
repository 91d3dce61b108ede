// Reference kernels for the spatial and index-producing tensor ops: Pad,
// Resize, Upsample, DepthToSpace, SpaceToDepth, OneHot, NonZero, CumSum and
// Trilu.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "ir/ops/tensor_params.hpp"
#include "reference/dispatch.hpp"
#include "reference/kernels/tensor_kernels.hpp"
#include "util/parallel_for.hpp"

namespace kiln::ref {

namespace {

// Advances a row-major multi-index over `shape`.
void next_index(std::vector<int64_t>& index, std::span<const int64_t> shape) {
  for (size_t a = shape.size(); a-- > 0;) {
    if (++index[a] < shape[a]) return;
    index[a] = 0;
  }
}

// ---- Pad ----

// The padding value as raw bytes of the data's type.
std::vector<std::byte> pad_value(const KernelContext& ctx, DType dtype) {
  size_t esize = dtype_size(dtype);
  std::vector<std::byte> bytes(esize, std::byte{0});
  if (ctx.opset() >= 11) {
    if (ctx.has_input(2) && ctx.input(2).numel() > 0) {
      const Tensor& v = ctx.input(2);
      if (v.dtype() != dtype) throw Error(ErrorCode::invalid_model, "constant_value type differs from data");
      std::memcpy(bytes.data(), v.bytes().data(), esize);
    }
    return bytes;
  }
  float value = ctx.attrs().get_float("value", 0.0f);
  if (value == 0.0f) return bytes;
  dispatch<float, double, int8_t, uint8_t, int16_t, uint16_t, int32_t, uint32_t, int64_t, uint64_t>(
      dtype == DType::boolean ? DType::uint8 : dtype, [&](auto tag) {
        using T = decltype(tag);
        T v = dtype == DType::boolean ? T(1) : static_cast<T>(value);
        std::memcpy(bytes.data(), &v, esize);
      });
  return bytes;
}

// Where output coordinate `o` of one axis reads from; -1 for the pad value.
int64_t pad_source(int64_t o, int64_t begin, int64_t dim, const std::string& mode) {
  int64_t i = o - begin;
  if (i >= 0 && i < dim) return i;
  if (mode == "constant") return -1;
  if (mode == "edge") return i < 0 ? 0 : dim - 1;
  if (mode == "wrap") return ((i % dim) + dim) % dim;
  // reflect, repeated as numpy does when the pad exceeds the dim.
  if (dim == 1) return 0;
  int64_t period = 2 * (dim - 1);
  i = ((i % period) + period) % period;
  return i < dim ? i : period - i;
}

void run_pad(KernelContext& ctx) {
  const Tensor& in = ctx.input(0);
  Tensor& out = ctx.output(0);
  std::string mode = ctx.attrs().get_string("mode", "constant");
  auto values = input_values(ctx);
  std::vector<int64_t> pads = *ir::pad_amounts(ctx.node(), values, in.rank());
  auto rank = static_cast<size_t>(in.rank());
  const std::vector<int64_t>& shape = out.shape();
  std::vector<std::vector<int64_t>> source(rank);
  for (size_t a = 0; a < rank; ++a) {
    int64_t dim = in.shape()[a];
    if (dim == 0 && mode != "constant" && shape[a] > 0) {
      throw Error(ErrorCode::invalid_model, "cannot " + mode + "-pad an empty dim");
    }
    for (int64_t o = 0; o < shape[a]; ++o) source[a].push_back(pad_source(o, pads[a], dim, mode));
  }
  std::vector<int64_t> strides = row_strides(in.shape());
  std::vector<std::byte> fill = pad_value(ctx, in.dtype());
  dispatch_by_size(in.dtype(), [&](auto tag) {
    using U = decltype(tag);
    U fill_value;
    std::memcpy(&fill_value, fill.data(), sizeof(U));
    const U* src = raw_data<U>(in);
    U* dst = raw_mutable_data<U>(out);
    std::vector<int64_t> index(rank, 0);
    for (int64_t n = 0; n < out.numel(); ++n) {
      int64_t offset = 0;
      bool outside = false;
      for (size_t a = 0; a < rank && !outside; ++a) {
        int64_t s = source[a][static_cast<size_t>(index[a])];
        outside = s < 0;
        offset += s * strides[a];
      }
      dst[n] = outside ? fill_value : src[offset];
      next_index(index, shape);
    }
  });
}

std::optional<std::string> check_pad(const ir::Node& node, std::span<const DType>) {
  std::string mode = node.attrs.get_string("mode", "constant");
  if (mode != "constant" && mode != "reflect" && mode != "edge" && mode != "wrap")
    return "unknown mode '" + mode + "'";
  return std::nullopt;
}

// ---- Resize / Upsample ----

std::optional<std::string> check_resize(const ir::Node& node, std::span<const DType> dtypes) {
  ir::ResizeModes m = ir::resize_modes(node);
  if (m.mode != "nearest" && m.mode != "linear" && m.mode != "cubic") return "unknown mode '" + m.mode + "'";
  static const char* const k_transforms[] = {
      "half_pixel",           "pytorch_half_pixel", "align_corners",       "asymmetric",
      "tf_half_pixel_for_nn", "tf_crop_and_resize", "half_pixel_symmetric"};
  bool known = false;
  for (const char* t : k_transforms) known = known || m.transform == t;
  if (!known) return "coordinate_transformation_mode '" + m.transform + "' is not supported";
  if (m.nearest != "simple" && m.nearest != "round_prefer_floor" && m.nearest != "round_prefer_ceil" &&
      m.nearest != "floor" && m.nearest != "ceil") {
    return "nearest_mode '" + m.nearest + "' is not supported";
  }
  if (node.attrs.get_int("antialias", 0) != 0) return "antialias is not supported";
  if (m.mode != "nearest" && !dtypes.empty() && dtypes[0] != DType::float32 && dtypes[0] != DType::float64) {
    return m.mode + " resize of " + std::string(dtype_name(dtypes[0])) + " is not supported";
  }
  return std::nullopt;
}

// The input elements one output coordinate of one axis reads, with their
// weights (zero weights dropped); `outside` when it takes the
// extrapolation value instead.
struct AxisTaps {
  std::vector<std::pair<int64_t, double>> taps;
  bool outside = false;
};

// Keys' cubic convolution weights for the four neighbours floor(c) - 1 ..
// floor(c) + 2, as in ONNX's reference.
std::array<double, 4> cubic_weights(double ratio, double a) {
  double r1 = ratio + 1;
  double q = 1 - ratio;
  double q1 = q + 1;
  return {((a * r1 - 5 * a) * r1 + 8 * a) * r1 - 4 * a, ((a + 2) * ratio - (a + 3)) * ratio * ratio + 1,
          ((a + 2) * q - (a + 3)) * q * q + 1, ((a * q1 - 5 * a) * q1 + 8 * a) * q1 - 4 * a};
}

AxisTaps make_taps(const ir::ResizeModes& m, std::optional<double> c, double scale, int64_t in_len,
                   double cubic_a, bool exclude_outside) {
  AxisTaps t;
  if (!c) {
    t.outside = true;
    return t;
  }
  auto clamp_index = [&](int64_t i) { return std::clamp<int64_t>(i, 0, in_len - 1); };
  if (m.mode == "nearest") {
    t.taps.emplace_back(clamp_index(ir::resize_nearest_index(m.nearest, *c, scale)), 1.0);
    return t;
  }
  double f = std::floor(*c);
  double ratio = *c - f;
  auto base = static_cast<int64_t>(f);
  if (m.mode == "linear") {
    t.taps = {{clamp_index(base), 1 - ratio}, {clamp_index(base + 1), ratio}};
  } else {
    std::array<double, 4> w = cubic_weights(ratio, cubic_a);
    double total = 0;
    for (int64_t k = 0; k < 4; ++k) {
      int64_t i = base - 1 + k;
      // exclude_outside drops neighbours beyond the input and renormalizes.
      if (exclude_outside && (i < 0 || i >= in_len)) w[static_cast<size_t>(k)] = 0;
      total += w[static_cast<size_t>(k)];
      t.taps.emplace_back(clamp_index(i), w[static_cast<size_t>(k)]);
    }
    if (exclude_outside && total != 0) {
      for (auto& tap : t.taps) tap.second /= total;
    }
  }
  std::erase_if(t.taps, [](const auto& tap) { return tap.second == 0; });
  return t;
}

// One axis's taps for every output coordinate, flattened so the inner loop
// reads plain arrays: output x reads input offsets (index * stride)
// offset[begin[x] .. begin[x + 1]) with their weights, or the extrapolation
// value where outside[x].
struct AxisPlan {
  std::vector<size_t> begin;
  std::vector<int64_t> offset;
  std::vector<double> weight;
  std::vector<char> outside;
};

AxisPlan plan_axis(const std::vector<AxisTaps>& taps, int64_t stride) {
  AxisPlan p;
  p.begin.reserve(taps.size() + 1);
  for (const AxisTaps& t : taps) {
    p.begin.push_back(p.offset.size());
    p.outside.push_back(t.outside ? 1 : 0);
    for (const auto& [i, w] : t.taps) {
      p.offset.push_back(i * stride);
      p.weight.push_back(w);
    }
  }
  p.begin.push_back(p.offset.size());
  return p;
}

// The input offsets and weights one row of the output (a position on every
// axis but the last) reads, one per combination of a tap on each of those
// axes, in the order the taps are listed (the last of those axes fastest).
struct RowTaps {
  std::vector<int64_t> offset;
  std::vector<double> weight;
  bool outside = false;
};

void row_taps(const std::vector<AxisPlan>& plans, std::span<const int64_t> out_shape, int64_t row,
              RowTaps& r) {
  r.offset.assign(1, 0);
  r.weight.assign(1, 1.0);
  r.outside = false;
  const size_t outer = plans.size() - 1;
  // The row's index on each outer axis, last axis fastest.
  std::array<int64_t, 8> small{};
  std::vector<int64_t> big;
  int64_t* index = small.data();
  if (outer > small.size()) {
    big.resize(outer);
    index = big.data();
  }
  for (size_t a = outer; a-- > 0;) {
    index[a] = row % out_shape[a];
    row /= out_shape[a];
  }
  for (size_t a = 0; a < outer; ++a) {
    const AxisPlan& p = plans[a];
    const auto x = static_cast<size_t>(index[a]);
    if (p.outside[x]) {
      r.outside = true;
      return;
    }
    const size_t b = p.begin[x], e = p.begin[x + 1];
    if (e - b == 1) {  // nearest, or a coordinate on an input sample
      for (size_t c = 0; c < r.offset.size(); ++c) {
        r.offset[c] += p.offset[b];
        r.weight[c] *= p.weight[b];
      }
      continue;
    }
    const size_t n = r.offset.size();
    std::vector<int64_t> offset;
    std::vector<double> weight;
    offset.reserve(n * (e - b));
    weight.reserve(n * (e - b));
    for (size_t c = 0; c < n; ++c) {
      for (size_t k = b; k < e; ++k) {
        offset.push_back(r.offset[c] + p.offset[k]);
        weight.push_back(r.weight[c] * p.weight[k]);
      }
    }
    r.offset = std::move(offset);
    r.weight = std::move(weight);
  }
}

// Runs fn(row, taps) for every output row, split over `threads` threads in
// contiguous blocks; small outputs stay on the calling thread.
template <typename Fn>
void for_each_row(const std::vector<AxisPlan>& plans, std::span<const int64_t> out_shape, int64_t rows,
                  int64_t row_len, int threads, Fn&& fn) {
  constexpr int64_t k_min_elements_per_block = 16384;
  const int64_t most = std::max<int64_t>(1, rows * row_len / k_min_elements_per_block);
  const int64_t blocks = std::min<int64_t>({rows, most, static_cast<int64_t>(std::max(threads, 1)) * 4});
  parallel_for(static_cast<size_t>(std::max<int64_t>(blocks, 1)), blocks > 1 ? threads : 1, [&](size_t blk) {
    const int64_t first = rows * static_cast<int64_t>(blk) / blocks;
    const int64_t last = rows * (static_cast<int64_t>(blk) + 1) / blocks;
    RowTaps taps;
    for (int64_t row = first; row < last; ++row) {
      row_taps(plans, out_shape, row, taps);
      fn(row, taps);
    }
  });
}

void run_resize(KernelContext& ctx) {
  const Tensor& in = ctx.input(0);
  Tensor& out = ctx.output(0);
  ir::ResizeModes m = ir::resize_modes(ctx.node());
  auto values = input_values(ctx);
  ir::ResizeArgs args = *ir::resize_args(ctx.node(), values, in.shape());
  auto rank = static_cast<size_t>(in.rank());
  const std::vector<int64_t>& shape = out.shape();
  if (out.numel() == 0) return;
  double extrapolation = ctx.attrs().get_float("extrapolation_value", 0.0f);
  double cubic_a = ctx.attrs().get_float("cubic_coeff_a", -0.75f);
  bool exclude_outside = ctx.attrs().get_int("exclude_outside", 0) != 0;
  // Each axis's taps are computed once, not once per output element.
  std::vector<int64_t> strides = row_strides(in.shape());
  std::vector<AxisPlan> plans;
  for (size_t a = 0; a < rank; ++a) {
    int64_t in_len = in.shape()[a];
    double roi_start = args.roi.empty() ? 0.0 : args.roi[a];
    double roi_end = args.roi.empty() ? 1.0 : args.roi[a + rank];
    std::vector<AxisTaps> taps;
    for (int64_t x = 0; x < shape[a]; ++x) {
      auto c = ir::resize_source_coordinate(m, x, args.scales[a], in_len, roi_start, roi_end);
      taps.push_back(make_taps(m, c, args.scales[a], in_len, cubic_a, exclude_outside));
    }
    plans.push_back(plan_axis(taps, strides[a]));
  }
  if (rank == 0) {  // a scalar resizes to itself
    std::memcpy(out.mutable_bytes().data(), in.bytes().data(), in.byte_size());
    return;
  }
  const int64_t row_len = shape.back();
  const int64_t rows = out.numel() / row_len;
  const AxisPlan& inner = plans.back();
  if (m.mode == "nearest") {
    std::vector<std::byte> fill(dtype_size(in.dtype()), std::byte{0});
    if (extrapolation != 0.0) {
      dispatch<float, double>(in.dtype(), [&](auto tag) {
        auto v = static_cast<decltype(tag)>(extrapolation);
        std::memcpy(fill.data(), &v, sizeof(v));
      });
    }
    dispatch_by_size(in.dtype(), [&](auto tag) {
      using U = decltype(tag);
      U fill_value;
      std::memcpy(&fill_value, fill.data(), sizeof(U));
      const U* src = raw_data<U>(in);
      U* dst = raw_mutable_data<U>(out);
      for_each_row(plans, shape, rows, row_len, ctx.threads(), [&](int64_t row, const RowTaps& t) {
        U* o = dst + row * row_len;
        if (t.outside) {
          std::fill(o, o + row_len, fill_value);
          return;
        }
        const U* s = src + t.offset[0];
        for (int64_t x = 0; x < row_len; ++x) {
          const auto xi = static_cast<size_t>(x);
          o[x] = inner.outside[xi] ? fill_value : s[inner.offset[inner.begin[xi]]];
        }
      });
    });
    return;
  }
  dispatch<float, double>(in.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* src = in.data<T>().data();
    T* dst = out.mutable_data<T>().data();
    const auto fill_value = static_cast<T>(extrapolation);
    for_each_row(plans, shape, rows, row_len, ctx.threads(), [&](int64_t row, const RowTaps& t) {
      T* o = dst + row * row_len;
      if (t.outside) {
        std::fill(o, o + row_len, fill_value);
        return;
      }
      const size_t combos = t.offset.size();
      for (int64_t x = 0; x < row_len; ++x) {
        const auto xi = static_cast<size_t>(x);
        if (inner.outside[xi]) {
          o[x] = fill_value;
          continue;
        }
        const size_t b = inner.begin[xi], e = inner.begin[xi + 1];
        // Every combination of one tap per axis, weighted by the product of
        // the taps' weights, summed in the axes' order (as ONNX's reference).
        double sum = 0;
        for (size_t c = 0; c < combos; ++c) {
          const T* s = src + t.offset[c];
          const double wc = t.weight[c];
          for (size_t k = b; k < e; ++k)
            sum += wc * inner.weight[k] * static_cast<double>(s[inner.offset[k]]);
        }
        o[x] = static_cast<T>(sum);
      }
    });
  });
}

// ---- DepthToSpace / SpaceToDepth: 6-D transposes ----

void run_depth_to_space(KernelContext& ctx) {
  const Tensor& in = ctx.input(0);
  Tensor& out = ctx.output(0);
  int64_t b = ctx.attrs().get_int("blocksize");
  int64_t n = in.dim(0), c = in.dim(1) / (b * b), h = in.dim(2), w = in.dim(3);
  bool crd = ctx.attrs().get_string("mode", "DCR") == "CRD";
  std::vector<int64_t> view =
      crd ? std::vector<int64_t>{n, c, b, b, h, w} : std::vector<int64_t>{n, b, b, c, h, w};
  std::vector<int64_t> s = row_strides(view);
  // Output [n, c, h, b, w, b] reads DCR's [n, b, b, c, h, w] or CRD's [n, c, b, b, h, w].
  std::vector<int64_t> strides = crd ? std::vector<int64_t>{s[0], s[1], s[4], s[2], s[5], s[3]}
                                     : std::vector<int64_t>{s[0], s[3], s[4], s[1], s[5], s[2]};
  strided_copy(in, strides, 0, std::vector<int64_t>{n, c, h, b, w, b}, out);
}

void run_space_to_depth(KernelContext& ctx) {
  const Tensor& in = ctx.input(0);
  Tensor& out = ctx.output(0);
  int64_t b = ctx.attrs().get_int("blocksize");
  int64_t n = in.dim(0), c = in.dim(1), h = in.dim(2) / b, w = in.dim(3) / b;
  std::vector<int64_t> s = row_strides(std::vector<int64_t>{n, c, h, b, w, b});
  // Output [n, b, b, c, h, w] reads the input viewed as [n, c, h, b, w, b].
  strided_copy(in, std::vector<int64_t>{s[0], s[3], s[5], s[1], s[2], s[4]}, 0,
               std::vector<int64_t>{n, b, b, c, h, w}, out);
}

std::optional<std::string> check_depth_to_space(const ir::Node& node, std::span<const DType>) {
  std::string mode = node.attrs.get_string("mode", "DCR");
  if (mode != "DCR" && mode != "CRD") return "unknown mode '" + mode + "'";
  return std::nullopt;
}

// ---- OneHot, NonZero, CumSum, Trilu ----

void run_one_hot(KernelContext& ctx) {
  const Tensor& indices = ctx.input(0);
  const Tensor& values = ctx.input(2);
  Tensor& out = ctx.output(0);
  auto depth = static_cast<int64_t>(ctx.input(1).float_at(0));
  int64_t axis = ctx.attrs().get_int("axis", -1);
  if (axis < 0) axis += out.rank();
  int64_t outer = shape_numel(std::span(indices.shape()).subspan(0, static_cast<size_t>(axis)));
  int64_t inner = shape_numel(std::span(indices.shape()).subspan(static_cast<size_t>(axis)));
  dispatch_by_size(values.dtype(), [&](auto tag) {
    using U = decltype(tag);
    const U* v = raw_data<U>(values);
    U* dst = raw_mutable_data<U>(out);
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t i = 0; i < inner; ++i) {
        auto index = static_cast<int64_t>(indices.float_at(o * inner + i));
        if (index < 0) index += depth;
        for (int64_t d = 0; d < depth; ++d) dst[(o * depth + d) * inner + i] = v[d == index ? 1 : 0];
      }
    }
  });
}

void run_non_zero(KernelContext& ctx) {
  const Tensor& in = ctx.input(0);
  Tensor& out = ctx.output(0);
  auto dst = out.mutable_data<int64_t>();
  int64_t count = out.dim(1);
  std::vector<int64_t> index(static_cast<size_t>(in.rank()), 0);
  int64_t k = 0;
  for (int64_t n = 0; n < in.numel(); ++n) {
    if (ir::element_nonzero(in, n)) {
      for (size_t a = 0; a < index.size(); ++a)
        dst[a * static_cast<size_t>(count) + static_cast<size_t>(k)] = index[a];
      ++k;
    }
    next_index(index, in.shape());
  }
}

void run_cum_sum(KernelContext& ctx) {
  const Tensor& in = ctx.input(0);
  Tensor& out = ctx.output(0);
  int64_t axis = ctx.input(1).int_at(0);
  if (axis < 0) axis += in.rank();
  if (axis < 0 || axis >= in.rank()) throw Error(ErrorCode::invalid_model, "axis is out of range");
  bool exclusive = ctx.attrs().get_int("exclusive", 0) != 0;
  bool reverse = ctx.attrs().get_int("reverse", 0) != 0;
  int64_t outer = shape_numel(std::span(in.shape()).subspan(0, static_cast<size_t>(axis)));
  int64_t len = in.dim(axis);
  int64_t inner = shape_numel(std::span(in.shape()).subspan(static_cast<size_t>(axis) + 1));
  dispatch<float, double, int32_t, int64_t, uint32_t, uint64_t>(in.dtype(), [&](auto tag) {
    using T = decltype(tag);
    auto src = in.data<T>();
    auto dst = out.mutable_data<T>();
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t i = 0; i < inner; ++i) {
        T sum = 0;
        for (int64_t step = 0; step < len; ++step) {
          int64_t j = reverse ? len - 1 - step : step;
          auto at = static_cast<size_t>((o * len + j) * inner + i);
          if (exclusive) {
            dst[at] = sum;
            sum = static_cast<T>(sum + src[at]);
          } else {
            sum = static_cast<T>(sum + src[at]);
            dst[at] = sum;
          }
        }
      }
    }
  });
}

std::optional<std::string> check_cum_sum(const ir::Node&, std::span<const DType> dtypes) {
  if (dtypes.empty()) return std::nullopt;
  return require_dtypes(dtypes.subspan(0, 1), {DType::float32, DType::float64, DType::int32, DType::int64,
                                               DType::uint32, DType::uint64});
}

void run_trilu(KernelContext& ctx) {
  const Tensor& in = ctx.input(0);
  Tensor& out = ctx.output(0);
  if (in.rank() < 2) throw Error(ErrorCode::invalid_model, "Trilu needs rank >= 2");
  int64_t k = ctx.has_input(1) ? ctx.input(1).int_at(0) : 0;
  bool upper = ctx.attrs().get_int("upper", 1) != 0;
  int64_t rows = in.dim(-2), cols = in.dim(-1);
  int64_t batches = rows * cols == 0 ? 0 : in.numel() / (rows * cols);
  dispatch_by_size(in.dtype(), [&](auto tag) {
    using U = decltype(tag);
    const U* src = raw_data<U>(in);
    U* dst = raw_mutable_data<U>(out);
    for (int64_t bt = 0; bt < batches; ++bt) {
      for (int64_t i = 0; i < rows; ++i) {
        for (int64_t j = 0; j < cols; ++j) {
          int64_t at = (bt * rows + i) * cols + j;
          bool keep = upper ? j - i >= k : j - i <= k;
          if (keep) dst[at] = src[at];
        }
      }
    }
  });
}

}  // namespace

void register_tensor_spatial_kernels(KernelRegistry& r) {
  r.add("Pad", run_pad, check_pad);
  r.add("Resize", run_resize, check_resize);
  r.add("Upsample", run_resize, check_resize);
  r.add("DepthToSpace", run_depth_to_space, check_depth_to_space);
  r.add("SpaceToDepth", run_space_to_depth);
  r.add("OneHot", run_one_hot);
  r.add("NonZero", run_non_zero);
  r.add("CumSum", run_cum_sum, check_cum_sum);
  r.add("Trilu", run_trilu);
}

}  // namespace kiln::ref
