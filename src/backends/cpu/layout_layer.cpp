// Layout-only layers. Reshape, Flatten, Squeeze, Unsqueeze and Identity are
// views of a plain tensor (no copy; a blocked input is reordered to plain
// once). Transpose is a strided view: consumers that read strides (matmul,
// reorders) take it as is, others get one reorder. Slice (positive steps),
// each part of a Split, and Gather of one constant index copy a strided
// window by one reorder, or
// stay a view of it where only convs and concats (which reorder) read them;
// constant Pad fills its destination and reorders the source into the
// interior. Concat is in concat_layer.cpp.
#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "backends/cpu/channel_shuffle.hpp"
#include "backends/cpu/instance_builder.hpp"

namespace kiln::cpu {

using ir::ValueId;

namespace {

// The int64 values of constant (or shape-only) input `i` of `n`; empty when
// the input is omitted.
std::vector<int64_t> known_ints(InstanceBuilder& b, const ir::Node& n, size_t i) {
  if (i >= n.inputs.size() || n.inputs[i] == ir::k_no_value) return {};
  const Tensor* t = b.known(n.inputs[i]);
  if (!t) {
    throw Error(ErrorCode::invalid_model,
                n.op_type + " input " + std::to_string(i) + " is not known when the engine builds");
  }
  return t->to_int_vector();
}

// The node's "axis" attribute (default 0) counted from the front of a
// rank-`rank` input.
int64_t axis_attribute(const ir::Node& n, int64_t rank) {
  int64_t axis = n.attrs.get_int("axis", 0);
  if (axis < 0) axis += rank;
  if (axis < 0 || axis >= rank) throw Error(ErrorCode::invalid_model, n.op_type + " axis out of range");
  return axis;
}

// The window of `x` starting at `starts` with `out` elements every `steps`
// along each dim (a descriptor with offsets and strides over x's storage),
// copied by one reorder into a plain tensor of its own, so readers see an
// ordinary dense value. Where only convs and concats read it, which reorder
// their inputs into a layout of their own anyway, it stays a view of x and
// they reorder from the window: ShuffleNet's channel split halves were
// copied twice.
void copy_window(InstanceBuilder& b, ir::ValueId x, ir::ValueId y, const Dims& starts, const Dims& steps,
                 const std::vector<int64_t>& out) {
  if (std::find(out.begin(), out.end(), 0) != out.end()) {
    b.define(y, plain_md(out, Dt::f32));  // nothing to copy
    return;
  }
  const int src = b.use_strided(x, Dt::f32);
  const Md base = b.slot(src).md;
  const auto& strides = base.data.format_desc.blocking.strides;
  Dims window_strides;
  int64_t offset = base.data.offset0;
  for (size_t d = 0; d < out.size(); ++d) {
    window_strides.push_back(strides[d] * steps[d]);
    offset += starts[d] * strides[d];
  }
  Md window(to_dims(out), Dt::f32, window_strides);
  window.data.offset0 = offset;
  if (b.read_only_by(y, {LayerKind::conv, LayerKind::concat})) {
    b.define_view(y, src, window);
  } else {
    b.add_reorder(b.view(src, window), b.define(y, plain_md(out, Dt::f32)));
  }
}

// Slice with positive steps: the window of the input.
void build_slice(InstanceBuilder& b, LayerDesc& layer) {
  const ir::Node& n = b.node(layer.anchor());
  const ValueId x = n.inputs[0];
  const ValueId y = n.outputs[0];
  const auto& in = b.shape(x);
  const auto& out = b.shape(y);
  const int64_t rank = static_cast<int64_t>(in.size());
  const std::vector<int64_t> starts = known_ints(b, n, 1);
  std::vector<int64_t> axes = known_ints(b, n, 3);
  const std::vector<int64_t> steps = known_ints(b, n, 4);
  if (axes.empty()) {
    for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  }
  if (axes.size() != starts.size() || out.size() != in.size() ||
      (!steps.empty() && steps.size() != axes.size())) {
    throw Error(ErrorCode::invalid_model, "Slice starts, axes and steps differ in length");
  }
  Dims offsets(in.size(), 0);
  Dims strides(in.size(), 1);
  for (size_t i = 0; i < axes.size(); ++i) {
    int64_t axis = axes[i] < 0 ? axes[i] + rank : axes[i];
    if (axis < 0 || axis >= rank) throw Error(ErrorCode::invalid_model, "Slice axis out of range");
    const auto a = static_cast<size_t>(axis);
    const int64_t step = steps.empty() ? 1 : steps[i];
    if (step < 1) throw Error(ErrorCode::invalid_model, "Slice step below 1");
    const int64_t dim = in[a];
    int64_t start = starts[i] < 0 ? starts[i] + dim : starts[i];  // then clamped, as ONNX says
    start = std::clamp<int64_t>(start, 0, dim);
    if (out[a] > 0 && start + (out[a] - 1) * step >= dim) start = dim - 1 - (out[a] - 1) * step;
    offsets[a] = std::max<int64_t>(start, 0);
    strides[a] = step;
  }
  if (build_gathered_slice(b, x, y, offsets, strides)) {
    layer.tactic.name = "gathered:slice";
    return;
  }
  layer.tactic.name = "reorder:slice";
  copy_window(b, x, y, offsets, strides, out);
}

// The size of each of Split `n`'s outputs along an axis of `dim` elements:
// the sizes input (opset 13 on), the attribute (before), or equal parts (the
// last smaller from opset 18, num_outputs).
std::vector<int64_t> split_sizes(InstanceBuilder& b, const ir::Node& n, int64_t dim) {
  std::vector<int64_t> sizes;
  if (n.opset >= 13 && n.inputs.size() > 1 && n.inputs[1] != ir::k_no_value) {
    sizes = known_ints(b, n, 1);
  } else if (n.opset < 13 && n.attrs.has("split")) {
    sizes = n.attrs.get_ints("split", {});
  } else {
    const auto parts = static_cast<int64_t>(n.outputs.size());
    const int64_t each = n.opset >= 18 ? (dim + parts - 1) / parts : dim / parts;
    for (int64_t i = 0; i < parts; ++i) sizes.push_back(std::clamp<int64_t>(dim - i * each, 0, each));
  }
  int64_t total = 0;
  for (int64_t s : sizes) total += s < 0 ? dim + 1 : s;
  if (sizes.size() != n.outputs.size() || total != dim)
    throw Error(ErrorCode::invalid_model, "Split sizes do not add up to the axis");
  return sizes;
}

// Split: each output the window of its part, as a Slice's.
void build_split(InstanceBuilder& b, LayerDesc& layer) {
  const ir::Node& n = b.node(layer.anchor());
  const ValueId x = n.inputs[0];
  const auto& in = b.shape(x);
  const int64_t axis = axis_attribute(n, static_cast<int64_t>(in.size()));
  const std::vector<int64_t> sizes = split_sizes(b, n, in[static_cast<size_t>(axis)]);
  layer.tactic.name = "reorder:split";
  int64_t start = 0;
  for (size_t i = 0; i < n.outputs.size(); ++i) {
    const ValueId y = n.outputs[i];
    Dims offsets(in.size(), 0);
    offsets[static_cast<size_t>(axis)] = start;
    start += sizes[i];
    if (y == ir::k_no_value) continue;
    const Dims steps(in.size(), 1);
    if (build_gathered_slice(b, x, y, offsets, steps)) {
      layer.tactic.name = "gathered:split";
      continue;
    }
    copy_window(b, x, y, offsets, steps, b.shape(y));
  }
}

// Gather of one constant index: the window at that index (the axis dropped,
// or kept with size 1 for a one-element index vector), copied by one
// reorder. Swin's qkv[0], qkv[1], qkv[2] read a transposed view this way.
void build_gather(InstanceBuilder& b, LayerDesc& layer) {
  const ir::Node& n = b.node(layer.anchor());
  const ValueId x = n.inputs[0];
  const ValueId y = n.outputs[0];
  const auto& in = b.shape(x);
  const int64_t rank = static_cast<int64_t>(in.size());
  const int64_t axis = axis_attribute(n, rank);
  const std::vector<int64_t> index = known_ints(b, n, 1);
  if (index.size() != 1) throw Error(ErrorCode::invalid_model, "Gather index is not one value");
  const int64_t dim = in[static_cast<size_t>(axis)];
  const int64_t at = index[0] < 0 ? index[0] + dim : index[0];
  if (at < 0 || at >= dim) throw Error(ErrorCode::invalid_model, "Gather index out of range");
  // The window over x's dims (size 1 along the axis), then y's dims.
  std::vector<int64_t> window(in.begin(), in.end());
  window[static_cast<size_t>(axis)] = 1;
  Dims starts(in.size(), 0);
  starts[static_cast<size_t>(axis)] = at;
  layer.tactic.name = "reorder:gather";
  const int dst_full = b.define(y, plain_md(b.shape(y), Dt::f32));
  if (shape_numel(window) == 0) return;
  // Copy into y's storage described with x's rank (the same dense bytes).
  const int src = b.use_strided(x, Dt::f32);
  const Md base = b.slot(src).md;
  const auto& strides = base.data.format_desc.blocking.strides;
  Md view(to_dims(window), Dt::f32, Dims(strides, strides + rank));
  view.data.offset0 = base.data.offset0 + at * strides[axis];
  b.add_reorder(b.view(src, view), b.view(dst_full, plain_md(window, Dt::f32)));
}

// Pad in constant mode: the destination filled with the value, then the
// source reordered into its interior; with every amount zero, a view.
void build_pad(InstanceBuilder& b, LayerDesc& layer) {
  const ir::Node& n = b.node(layer.anchor());
  const ValueId x = n.inputs[0];
  const ValueId y = n.outputs[0];
  const auto& in = b.shape(x);
  const auto& out = b.shape(y);
  const std::vector<int64_t> pads = known_ints(b, n, 1);
  if (pads.size() != 2 * in.size() || out.size() != in.size()) {
    throw Error(ErrorCode::invalid_model, "Pad amounts do not match the rank");
  }
  if (std::any_of(pads.begin(), pads.end(), [](int64_t p) { return p < 0; })) {
    build_aux_layer(b, layer);  // cropping: the reference kernel
    return;
  }
  if (std::all_of(pads.begin(), pads.end(), [](int64_t p) { return p == 0; })) {
    const int src = b.use_current(x);
    layer.tactic.name = "view:pad";
    b.define_view(y, src, b.slot(src).md);
    return;
  }
  float value = 0.0f;
  if (n.inputs.size() > 2 && n.inputs[2] != ir::k_no_value) {
    const Tensor* v = b.known(n.inputs[2]);
    if (!v || v->numel() != 1) throw Error(ErrorCode::invalid_model, "Pad value is not one constant");
    value = static_cast<float>(v->float_at(0));
  }
  const Md md = plain_md(out, Dt::f32);
  const int dst = b.define(y, md);
  layer.tactic.name = "reorder:pad";
  if (shape_numel(out) == 0) return;
  Instance* inst = &b.instance();
  const size_t count = static_cast<size_t>(shape_numel(out));
  // The whole destination, then the interior over it: the arena slot is
  // shared with other values between runs, so the border is written each run.
  b.add_function([inst, dst, count, value](RunContext&) {
    auto* data = static_cast<float*>(inst->slots[static_cast<size_t>(dst)].mem.get_data_handle());
    std::fill(data, data + count, value);
  });
  if (shape_numel(in) == 0) return;
  Dims begins(pads.begin(), pads.begin() + static_cast<std::ptrdiff_t>(in.size()));
  const int interior = b.view(dst, md.submemory_desc(to_dims(in), begins));
  b.add_reorder(b.use_strided(x, Dt::f32), interior);
}

}  // namespace

void build_view_layer(InstanceBuilder& b, LayerDesc& layer) {
  if (part_of_gathered_shuffle(b, layer)) return;
  const ir::Node& n = b.node(layer.anchor());
  const ValueId x = n.inputs[0];
  const ValueId y = n.outputs[0];
  const Md current = b.md_of(x);
  const Dt dt = current.data_type() == Dt::bf16 ? Dt::bf16 : Dt::f32;
  if (n.op_type == "Transpose") {
    const auto& in = b.shape(x);
    std::vector<int64_t> perm = n.attrs.get_ints("perm", {});
    if (perm.empty()) {
      for (size_t i = in.size(); i-- > 0;) perm.push_back(static_cast<int64_t>(i));
    }
    const int src = b.use_strided(x, dt);
    const Md md = b.slot(src).md;
    const Dims dims = md.dims();
    Dims out_dims, out_strides;
    for (int64_t p : perm) {
      out_dims.push_back(dims.at(static_cast<size_t>(p)));
      out_strides.push_back(md.data.format_desc.blocking.strides[p]);
    }
    layer.tactic.name = "view:transpose";
    Md transposed(out_dims, dt, out_strides);
    transposed.data.offset0 = md.data.offset0;  // a view of a window stays at its offset
    b.define_view(y, src, transposed);
    return;
  }
  if (n.op_type == "Slice") {
    build_slice(b, layer);
    return;
  }
  if (n.op_type == "Split") {
    build_split(b, layer);
    return;
  }
  if (n.op_type == "Gather") {
    build_gather(b, layer);
    return;
  }
  if (n.op_type == "Pad") {
    build_pad(b, layer);
    return;
  }
  const int src = b.use_plain(x, dt);
  layer.tactic.name = "view:" + n.op_type;
  b.define_view(y, src, plain_md(b.shape(y), dt));
}

}  // namespace kiln::cpu
