// Argument resolution shared by tensor-op inference and kernels; see
// tensor_params.hpp.
#include "ir/ops/tensor_params.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <string>

namespace kiln::ir {

namespace {

[[noreturn]] void invalid(const std::string& message) { throw Error(ErrorCode::invalid_model, message); }

int64_t normalize_axis(int64_t axis, int64_t rank) {
  int64_t a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) {
    invalid("axis " + std::to_string(axis) + " is out of range for rank " + std::to_string(rank));
  }
  return a;
}

// The ints of optional input `i`: nullopt when absent, `unknown` set when
// present but not known now.
std::optional<std::vector<int64_t>> optional_ints(const Node& node, InputValues values, size_t i,
                                                  bool& unknown) {
  if (i >= node.inputs.size() || node.inputs[i] == k_no_value) return std::nullopt;
  const Tensor* t = value_at(values, i);
  if (!t) {
    unknown = true;
    return std::nullopt;
  }
  return t->to_int_vector();
}

// An optional float list input; an empty tensor counts as absent (Resize
// passes "" or an empty scales tensor when sizes are given).
std::optional<std::vector<double>> optional_floats(const Node& node, InputValues values, size_t i,
                                                   bool& unknown) {
  if (i >= node.inputs.size() || node.inputs[i] == k_no_value) return std::nullopt;
  const Tensor* t = value_at(values, i);
  if (!t) {
    unknown = true;
    return std::nullopt;
  }
  if (t->numel() == 0) return std::nullopt;
  std::vector<double> out;
  for (int64_t k = 0; k < t->numel(); ++k) out.push_back(t->float_at(k));
  return out;
}

}  // namespace

std::optional<SliceArgs> slice_args(const Node& node, InputValues values, int64_t rank) {
  SliceArgs args;
  std::optional<std::vector<int64_t>> axes;
  std::optional<std::vector<int64_t>> steps;
  if (node.opset < 10) {
    args.starts = node.attrs.get_ints("starts");
    args.ends = node.attrs.get_ints("ends");
    axes = node.attrs.find_ints("axes");
  } else {
    bool unknown = false;
    auto starts = optional_ints(node, values, 1, unknown);
    auto ends = optional_ints(node, values, 2, unknown);
    axes = optional_ints(node, values, 3, unknown);
    steps = optional_ints(node, values, 4, unknown);
    if (unknown) return std::nullopt;
    if (!starts || !ends) invalid("Slice needs starts and ends");
    args.starts = std::move(*starts);
    args.ends = std::move(*ends);
  }
  size_t n = args.starts.size();
  if (args.ends.size() != n) invalid("starts and ends have different lengths");
  if (!axes) {
    axes.emplace();
    for (size_t i = 0; i < n; ++i) axes->push_back(static_cast<int64_t>(i));
  }
  if (!steps) steps = std::vector<int64_t>(n, 1);
  if (axes->size() != n || steps->size() != n) invalid("starts, ends, axes and steps differ in length");
  std::vector<bool> seen(static_cast<size_t>(rank), false);
  for (int64_t& a : *axes) {
    a = normalize_axis(a, rank);
    if (seen[static_cast<size_t>(a)]) invalid("axis " + std::to_string(a) + " is sliced twice");
    seen[static_cast<size_t>(a)] = true;
  }
  for (int64_t s : *steps) {
    if (s == 0) invalid("slice step is 0");
  }
  args.axes = std::move(*axes);
  args.steps = std::move(*steps);
  return args;
}

SliceRange clamp_slice(int64_t start, int64_t end, int64_t step, int64_t dim) {
  if (start < 0) start += dim;
  if (end < 0) end += dim;
  SliceRange r;
  r.step = step;
  if (step > 0) {
    start = std::clamp<int64_t>(start, 0, dim);
    end = std::clamp<int64_t>(end, 0, dim);
    r.count = end > start ? (end - start + step - 1) / step : 0;
  } else {
    start = std::clamp<int64_t>(start, 0, dim - 1);
    end = std::clamp<int64_t>(end, -1, dim - 1);
    r.count = start > end ? (start - end - step - 1) / -step : 0;
  }
  r.start = r.count > 0 ? start : 0;
  return r;
}

std::optional<std::vector<int64_t>> pad_amounts(const Node& node, InputValues values, int64_t rank) {
  std::vector<int64_t> pads;
  std::optional<std::vector<int64_t>> axes;
  if (node.opset < 11) {
    // Pad-1 called the attribute "paddings".
    pads = node.attrs.has("pads") ? node.attrs.get_ints("pads") : node.attrs.get_ints("paddings");
  } else {
    bool unknown = false;
    auto given = optional_ints(node, values, 1, unknown);
    axes = optional_ints(node, values, 3, unknown);
    if (unknown) return std::nullopt;
    if (!given) invalid("Pad needs pads");
    pads = std::move(*given);
  }
  if (!axes) {
    if (static_cast<int64_t>(pads.size()) != 2 * rank) {
      invalid("pads has " + std::to_string(pads.size()) + " values for rank " + std::to_string(rank));
    }
    return pads;
  }
  size_t n = axes->size();
  if (pads.size() != 2 * n)
    invalid("pads has " + std::to_string(pads.size()) + " values for " + std::to_string(n) + " axes");
  std::vector<int64_t> full(static_cast<size_t>(2 * rank), 0);
  for (size_t i = 0; i < n; ++i) {
    auto a = static_cast<size_t>(normalize_axis((*axes)[i], rank));
    full[a] = pads[i];
    full[a + static_cast<size_t>(rank)] = pads[i + n];
  }
  return full;
}

std::pair<int64_t, int64_t> shape_range(const Node& node, int64_t rank) {
  auto clamp_dim = [rank](int64_t d) { return std::clamp<int64_t>(d < 0 ? d + rank : d, 0, rank); };
  int64_t start = clamp_dim(node.attrs.get_int("start", 0));
  int64_t end = node.attrs.has("end") ? clamp_dim(node.attrs.get_int("end")) : rank;
  return {start, std::max(start, end)};
}

ResizeModes resize_modes(const Node& node) {
  const bool legacy = node.op_type == "Upsample" || node.opset < 11;
  ResizeModes m;
  m.mode = node.attrs.get_string("mode", "nearest");
  if (m.mode == "bilinear" || m.mode == "trilinear") m.mode = "linear";
  m.transform = legacy ? "asymmetric" : node.attrs.get_string("coordinate_transformation_mode", "half_pixel");
  m.nearest = legacy ? "simple" : node.attrs.get_string("nearest_mode", "round_prefer_floor");
  return m;
}

// The input coordinate that output coordinate `x` maps to on one axis
// (ONNX's reference formulas, which use the unrounded output length
// scale * in for align_corners); nullopt outside a tf_crop_and_resize box.
std::optional<double> resize_source_coordinate(const ResizeModes& m, int64_t x, double scale, int64_t in_len,
                                               double roi_start, double roi_end) {
  double xo = static_cast<double>(x);
  double out_len = scale * static_cast<double>(in_len);
  double in_last = static_cast<double>(in_len - 1);
  const std::string& t = m.transform;
  if (t == "asymmetric") return xo / scale;
  if (t == "half_pixel") return (xo + 0.5) / scale - 0.5;
  if (t == "half_pixel_symmetric") {
    // Centres the sampled window when the output length was rounded down.
    const double adjustment = std::floor(out_len) / out_len;
    const double offset = static_cast<double>(in_len) / 2 * (1 - adjustment);
    return offset + (xo + 0.5) / scale - 0.5;
  }
  if (t == "pytorch_half_pixel") return out_len > 1 ? (xo + 0.5) / scale - 0.5 : -0.5;
  if (t == "tf_half_pixel_for_nn") return (xo + 0.5) / scale;
  if (t == "align_corners") return out_len == 1 ? 0.0 : xo * in_last / (out_len - 1);
  // tf_crop_and_resize
  double c = out_len == 1 ? (roi_end - roi_start) * in_last / 2
                          : xo * (roi_end - roi_start) * in_last / (out_len - 1);
  c += roi_start * in_last;
  if (c < 0 || c > in_last) return std::nullopt;
  return c;
}

// The input index nearest mode `mode` picks for coordinate `c` (unclamped).
int64_t resize_nearest_index(const std::string& mode, double c, double scale) {
  double f = std::floor(c);
  double ratio = c - f;
  if (mode == "simple") return static_cast<int64_t>(scale < 1 ? std::ceil(c) : f);
  if (mode == "floor" || ratio == 0) return static_cast<int64_t>(f);
  if (mode == "ceil") return static_cast<int64_t>(f) + 1;
  if (mode == "round_prefer_ceil") return static_cast<int64_t>(ratio < 0.5 ? f : f + 1);
  return static_cast<int64_t>(ratio <= 0.5 ? f : f + 1);  // round_prefer_floor
}

std::optional<std::vector<int64_t>> resize_sizes(const Node& node, InputValues values) {
  if (node.op_type != "Resize" || node.opset < 11) return std::nullopt;
  // With axes or an aspect-ratio policy, sizes alone do not give every dim.
  if (node.attrs.has("axes") || node.attrs.get_string("keep_aspect_ratio_policy", "stretch") != "stretch")
    return std::nullopt;
  bool unknown = false;
  auto sizes = optional_ints(node, values, 3, unknown);
  if (!sizes || sizes->empty()) return std::nullopt;
  return sizes;
}

std::optional<ResizeArgs> resize_args(const Node& node, InputValues values,
                                      std::span<const int64_t> in_shape) {
  auto rank = static_cast<int64_t>(in_shape.size());
  bool unknown = false;
  std::optional<std::vector<double>> scales;
  std::optional<std::vector<int64_t>> sizes;
  std::optional<std::vector<double>> roi;
  if (node.op_type == "Upsample" && node.opset < 9) {
    std::vector<float> f = node.attrs.get_floats("scales");
    scales.emplace(f.begin(), f.end());
  } else if (node.op_type == "Upsample" || node.opset < 11) {
    scales = optional_floats(node, values, 1, unknown);
  } else {
    roi = optional_floats(node, values, 1, unknown);
    scales = optional_floats(node, values, 2, unknown);
    sizes = optional_ints(node, values, 3, unknown);
    if (sizes && sizes->empty()) sizes.reset();
  }
  if (unknown) return std::nullopt;
  // From opset 18, scales, sizes and roi may name only the `axes` they
  // resize; the others keep their size.
  std::vector<int64_t> axes;
  if (node.op_type == "Resize" && node.opset >= 18 && node.attrs.has("axes")) {
    for (int64_t a : node.attrs.get_ints("axes")) {
      const int64_t axis = normalize_axis(a, rank);
      if (std::find(axes.begin(), axes.end(), axis) != axes.end()) invalid("axes repeats an axis");
      axes.push_back(axis);
    }
  } else {
    for (int64_t i = 0; i < rank; ++i) axes.push_back(i);
  }
  const auto n_axes = static_cast<int64_t>(axes.size());
  const auto in_dim = [&](int64_t axis) { return in_shape[static_cast<size_t>(axis)]; };
  ResizeArgs args;
  args.out_shape.assign(in_shape.begin(), in_shape.end());
  args.scales.assign(static_cast<size_t>(rank), 1.0);
  if (sizes) {
    if (static_cast<int64_t>(sizes->size()) != n_axes) {
      invalid(axes.size() == static_cast<size_t>(rank) ? "sizes does not match the input rank"
                                                       : "sizes does not match the number of axes");
    }
    const std::string policy = node.attrs.get_string("keep_aspect_ratio_policy", "stretch");
    if (policy != "stretch" && policy != "not_larger" && policy != "not_smaller") {
      invalid("keep_aspect_ratio_policy '" + policy + "' is not one of stretch, not_larger, not_smaller");
    }
    std::optional<double> kept;  // one scale for every axis, keeping the aspect ratio
    if (policy != "stretch") {
      for (int64_t i = 0; i < n_axes; ++i) {
        const double s = static_cast<double>((*sizes)[static_cast<size_t>(i)]) /
                         static_cast<double>(std::max<int64_t>(1, in_dim(axes[static_cast<size_t>(i)])));
        kept = !kept ? s : policy == "not_larger" ? std::min(*kept, s) : std::max(*kept, s);
      }
    }
    for (int64_t i = 0; i < n_axes; ++i) {
      const int64_t axis = axes[static_cast<size_t>(i)];
      const int64_t in = in_dim(axis);
      int64_t out = (*sizes)[static_cast<size_t>(i)];
      if (kept) out = static_cast<int64_t>(std::round(*kept * static_cast<double>(in)));
      args.out_shape[static_cast<size_t>(axis)] = out;
      args.scales[static_cast<size_t>(axis)] = kept     ? *kept
                                               : in > 0 ? static_cast<double>(out) / static_cast<double>(in)
                                                        : 1.0;
    }
  } else if (scales) {
    if (static_cast<int64_t>(scales->size()) != n_axes) {
      invalid(axes.size() == static_cast<size_t>(rank) ? "scales does not match the input rank"
                                                       : "scales does not match the number of axes");
    }
    for (int64_t i = 0; i < n_axes; ++i) {
      const int64_t axis = axes[static_cast<size_t>(i)];
      const double s = (*scales)[static_cast<size_t>(i)];
      if (!(s > 0)) invalid("scales must be positive");
      args.scales[static_cast<size_t>(axis)] = s;
      args.out_shape[static_cast<size_t>(axis)] =
          static_cast<int64_t>(std::floor(s * static_cast<double>(in_dim(axis))));
    }
  } else {
    invalid("Resize needs scales or sizes");
  }
  // Only tf_crop_and_resize reads roi; exporters fill it loosely otherwise.
  if (roi && node.attrs.get_string("coordinate_transformation_mode", "") == "tf_crop_and_resize") {
    if (static_cast<int64_t>(roi->size()) != 2 * n_axes) invalid("roi must have 2 values per resized axis");
    args.roi.assign(static_cast<size_t>(2 * rank), 0.0);
    for (int64_t i = 0; i < rank; ++i) args.roi[static_cast<size_t>(rank + i)] = 1.0;
    for (int64_t i = 0; i < n_axes; ++i) {
      const auto axis = static_cast<size_t>(axes[static_cast<size_t>(i)]);
      args.roi[axis] = (*roi)[static_cast<size_t>(i)];
      args.roi[static_cast<size_t>(rank) + axis] = (*roi)[static_cast<size_t>(n_axes + i)];
    }
  }
  return args;
}

bool element_nonzero(const Tensor& t, int64_t i) {
  const std::byte* p = t.bytes().data();
  switch (t.dtype()) {
    case DType::float32:
    case DType::float64:
      return t.float_at(i) != 0;
    case DType::float16:
    case DType::bfloat16: {
      // The sign bit alone is -0, which is zero.
      uint16_t bits = 0;
      std::memcpy(&bits, p + i * 2, 2);
      return (bits & 0x7fff) != 0;
    }
    default: {
      size_t size = dtype_size(t.dtype());
      for (size_t b = 0; b < size; ++b) {
        if (p[static_cast<size_t>(i) * size + b] != std::byte{0}) return true;
      }
      return false;
    }
  }
}

}  // namespace kiln::ir

namespace kiln::ir {

namespace {

// Labels: 'A'-'Z' and 'a'-'z' map to 0..51; ellipsis dim k (of the widest
// ellipsis, counted from the left) maps to 52 + k. Renumbered densely after.
constexpr int k_ellipsis_base = 52;

int letter_label(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return 26 + (c - 'a');
  invalid(std::string("invalid Einsum label '") + c + "'");
}

// The labels of one term; `ellipsis_rank` is the number of dims "..." stands for.
std::vector<int> term_labels(const std::string& term, size_t ellipsis_rank, size_t widest) {
  std::vector<int> labels;
  for (size_t i = 0; i < term.size(); ++i) {
    if (term.compare(i, 3, "...") == 0) {
      for (size_t k = widest - ellipsis_rank; k < widest; ++k)
        labels.push_back(k_ellipsis_base + static_cast<int>(k));
      i += 2;
    } else if (term[i] != ' ') {
      labels.push_back(letter_label(term[i]));
    }
  }
  return labels;
}

size_t letters_in(const std::string& term) {
  size_t n = 0;
  for (char c : term) n += std::isalpha(static_cast<unsigned char>(c)) ? 1 : 0;
  return n;
}

}  // namespace

EinsumSpec parse_einsum(const std::string& equation, std::span<const size_t> input_ranks) {
  std::string lhs = equation;
  std::optional<std::string> rhs;
  if (auto arrow = equation.find("->"); arrow != std::string::npos) {
    lhs = equation.substr(0, arrow);
    rhs = equation.substr(arrow + 2);
  }
  std::vector<std::string> terms;
  for (size_t start = 0;;) {
    size_t comma = lhs.find(',', start);
    terms.push_back(lhs.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (terms.size() != input_ranks.size())
    invalid("Einsum equation has " + std::to_string(terms.size()) + " terms for " +
            std::to_string(input_ranks.size()) + " inputs");
  std::vector<size_t> ellipsis(terms.size(), 0);
  size_t widest = 0;
  for (size_t i = 0; i < terms.size(); ++i) {
    size_t letters = letters_in(terms[i]);
    bool has_ellipsis = terms[i].find("...") != std::string::npos;
    if (letters > input_ranks[i] || (!has_ellipsis && letters != input_ranks[i])) {
      invalid("Einsum term '" + terms[i] + "' does not match rank " + std::to_string(input_ranks[i]));
    }
    ellipsis[i] = input_ranks[i] - letters;
    widest = std::max(widest, ellipsis[i]);
  }
  std::vector<std::vector<int>> raw;
  std::vector<int> count(static_cast<size_t>(k_ellipsis_base) + widest, 0);
  for (size_t i = 0; i < terms.size(); ++i) {
    raw.push_back(term_labels(terms[i], ellipsis[i], widest));
    for (int l : raw.back()) ++count[static_cast<size_t>(l)];
  }
  std::vector<int> out;
  if (rhs) {
    out = term_labels(*rhs, widest, widest);
  } else {
    // Implicit output: the ellipsis dims, then letters used once, sorted.
    for (size_t k = 0; k < widest; ++k) out.push_back(k_ellipsis_base + static_cast<int>(k));
    for (int l = 0; l < k_ellipsis_base; ++l) {
      if (count[static_cast<size_t>(l)] == 1) out.push_back(l);
    }
  }
  for (int l : out) {
    if (count[static_cast<size_t>(l)] == 0) invalid("Einsum output label is not in any input");
  }
  // Dense renumbering keeps the kernel's per-label arrays small.
  std::vector<int> dense(count.size(), -1);
  EinsumSpec spec;
  auto renumber = [&](std::vector<int>& labels) {
    for (int& l : labels) {
      int& d = dense[static_cast<size_t>(l)];
      if (d < 0) d = spec.num_labels++;
      l = d;
    }
  };
  renumber(out);
  for (auto& r : raw) renumber(r);
  spec.inputs = std::move(raw);
  spec.output = std::move(out);
  return spec;
}

}  // namespace kiln::ir
