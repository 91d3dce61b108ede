// Sliding-window geometry shared by Conv, ConvTranspose and the pooling ops.
//
// Shape inference and the reference kernels both need the same output sizes
// and padding (auto_pad SAME_* derives the pads from the input size), so the
// arithmetic lives here once rather than in two places that could disagree.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "ir/attributes.hpp"
#include "kiln/error.hpp"

namespace kiln::ir::nn {

enum class AutoPad { notset, same_upper, same_lower, valid };

inline AutoPad parse_auto_pad(const Attributes& attrs) {
  std::string s = attrs.get_string("auto_pad", "NOTSET");
  if (s == "NOTSET" || s.empty()) return AutoPad::notset;
  if (s == "SAME_UPPER") return AutoPad::same_upper;
  if (s == "SAME_LOWER") return AutoPad::same_lower;
  if (s == "VALID") return AutoPad::valid;
  throw Error(ErrorCode::invalid_model, "unknown auto_pad '" + s + "'");
}

struct Window {
  std::vector<int64_t> kernel;
  std::vector<int64_t> strides;
  std::vector<int64_t> dilations;
  std::vector<int64_t> pads;  // begin for every axis, then end for every axis
  AutoPad auto_pad = AutoPad::notset;
  bool ceil_mode = false;

  size_t rank() const { return kernel.size(); }
  int64_t effective_kernel(size_t i) const { return (kernel[i] - 1) * dilations[i] + 1; }
};

// Reads the window attributes for `spatial` axes. `kernel` is kernel_shape
// when present, else `default_kernel` (Conv infers it from the weights);
// an empty kernel means it is not known yet.
inline Window read_window(const Attributes& attrs, size_t spatial,
                          const std::vector<int64_t>& default_kernel) {
  // An absent or empty list means the default for every axis.
  auto list = [&](const char* name, size_t count, int64_t fill) {
    std::vector<int64_t> v = attrs.get_ints(name, {});
    if (v.empty()) v.assign(count, fill);
    return v;
  };
  Window w;
  w.kernel = attrs.get_ints("kernel_shape", default_kernel);
  w.strides = list("strides", spatial, 1);
  w.dilations = list("dilations", spatial, 1);
  w.pads = list("pads", 2 * spatial, 0);
  w.auto_pad = parse_auto_pad(attrs);
  w.ceil_mode = attrs.get_int("ceil_mode", 0) != 0;
  auto check = [&](const std::vector<int64_t>& v, size_t n, const char* name, int64_t min) {
    if (v.size() != n) {
      throw Error(ErrorCode::invalid_model, std::string(name) + " has " + std::to_string(v.size()) +
                                                " values, expected " + std::to_string(n));
    }
    // The upper bound keeps the window arithmetic below (kernel * dilation,
    // input + pads) inside int64 for any hostile value.
    constexpr int64_t k_max = int64_t{1} << 31;
    for (int64_t x : v) {
      if (x < min || x > k_max)
        throw Error(ErrorCode::invalid_model, std::string(name) + " has an invalid value");
    }
  };
  if (!w.kernel.empty()) check(w.kernel, spatial, "kernel_shape", 1);
  check(w.strides, spatial, "strides", 1);
  check(w.dilations, spatial, "dilations", 1);
  check(w.pads, 2 * spatial, "pads", 0);
  return w;
}

struct WindowDim {
  int64_t out = 0;
  int64_t pad_begin = 0;
  int64_t pad_end = 0;
};

// Output size and padding of spatial axis `i` for input size `in`.
// REQUIRES: the kernel is known.
inline WindowDim window_dim(const Window& w, size_t i, int64_t in) {
  const int64_t s = w.strides[i];
  const int64_t k = w.effective_kernel(i);
  WindowDim d;
  switch (w.auto_pad) {
    case AutoPad::same_upper:
    case AutoPad::same_lower: {
      d.out = (in + s - 1) / s;
      int64_t total = std::max<int64_t>(0, (d.out - 1) * s + k - in);
      // SAME_UPPER puts the odd extra pad at the end, SAME_LOWER at the start.
      d.pad_begin = w.auto_pad == AutoPad::same_upper ? total / 2 : total - total / 2;
      d.pad_end = total - d.pad_begin;
      return d;
    }
    case AutoPad::valid:
      break;
    case AutoPad::notset:
      d.pad_begin = w.pads[i];
      d.pad_end = w.pads[i + w.rank()];
      break;
  }
  int64_t span = in + d.pad_begin + d.pad_end - k;
  if (span < 0) {
    throw Error(ErrorCode::invalid_model, "the window (" + std::to_string(k) +
                                              ") is larger than the padded input (" +
                                              std::to_string(in + d.pad_begin + d.pad_end) + ")");
  }
  d.out = (w.ceil_mode ? (span + s - 1) / s : span / s) + 1;
  // As in PyTorch and the ONNX reference: a last window that would start in
  // the end padding is dropped.
  if (w.ceil_mode && (d.out - 1) * s >= in + d.pad_begin) --d.out;
  return d;
}

// ConvTranspose: output size of spatial axis `i` when no output_shape is
// given, and the begin pad that places the output for a given output size.
struct TransposeAttrs {
  Window window;
  std::vector<int64_t> output_padding;
  std::vector<int64_t> output_shape;  // spatial sizes; empty when not given
};

inline TransposeAttrs read_transpose_attrs(const Attributes& attrs, size_t spatial,
                                           const std::vector<int64_t>& default_kernel) {
  TransposeAttrs t;
  t.window = read_window(attrs, spatial, default_kernel);
  t.output_padding = attrs.get_ints("output_padding", {});
  if (t.output_padding.empty()) t.output_padding.assign(spatial, 0);
  if (t.output_padding.size() != spatial) {
    throw Error(ErrorCode::invalid_model, "output_padding has the wrong number of values");
  }
  t.output_shape = attrs.get_ints("output_shape", {});
  // Some exporters give the full N, C, spatial... shape.
  if (t.output_shape.size() == spatial + 2)
    t.output_shape.erase(t.output_shape.begin(), t.output_shape.begin() + 2);
  if (!t.output_shape.empty() && t.output_shape.size() != spatial) {
    throw Error(ErrorCode::invalid_model, "output_shape has the wrong number of values");
  }
  return t;
}

inline int64_t transpose_out_dim(const TransposeAttrs& t, size_t i, int64_t in) {
  const Window& w = t.window;
  if (!t.output_shape.empty()) return t.output_shape[i];
  if (w.auto_pad == AutoPad::same_upper || w.auto_pad == AutoPad::same_lower) return in * w.strides[i];
  int64_t pads = w.auto_pad == AutoPad::valid ? 0 : w.pads[i] + w.pads[i + w.rank()];
  return w.strides[i] * (in - 1) + t.output_padding[i] + w.effective_kernel(i) - pads;
}

inline int64_t transpose_pad_begin(const TransposeAttrs& t, size_t i, int64_t in, int64_t out) {
  const Window& w = t.window;
  bool derived =
      !t.output_shape.empty() || w.auto_pad == AutoPad::same_upper || w.auto_pad == AutoPad::same_lower;
  if (!derived) return w.auto_pad == AutoPad::valid ? 0 : w.pads[i];
  // A negative total means output_shape asks for more than the natural size:
  // as in onnxruntime, that extra is left at the end, like output_padding.
  int64_t total =
      std::max<int64_t>(0, w.strides[i] * (in - 1) + t.output_padding[i] + w.effective_kernel(i) - out);
  return w.auto_pad == AutoPad::same_lower ? total - total / 2 : total / 2;
}

}  // namespace kiln::ir::nn
