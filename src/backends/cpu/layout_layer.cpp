// Layout-only layers. Reshape, Flatten, Squeeze, Unsqueeze and Identity are
// views of a plain tensor (no copy; a blocked input is reordered to plain
// once). Transpose is a strided view: consumers that read strides (matmul,
// reorders) take it as is, others get one reorder. Concat is oneDNN concat
// over its inputs' shared layout, or over plain inputs.
#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "backends/cpu/instance_builder.hpp"

namespace kiln::cpu {

using ir::ValueId;

namespace {

// Slice with unit steps: the window of the input (a descriptor with offsets
// over its storage) copied by one reorder into a plain tensor of its own,
// so readers see an ordinary dense value.
void build_slice(InstanceBuilder& b, LayerDesc& layer) {
  const ir::Node& n = b.node(layer.anchor());
  const ValueId x = n.inputs[0];
  const ValueId y = n.outputs[0];
  const auto& in = b.shape(x);
  const auto& out = b.shape(y);
  const int64_t rank = static_cast<int64_t>(in.size());
  auto values = [&](size_t i) -> std::vector<int64_t> {
    if (i >= n.inputs.size() || n.inputs[i] == ir::k_no_value) return {};
    const Tensor* t = b.known(n.inputs[i]);
    if (!t) throw Error(ErrorCode::invalid_model, "Slice input " + std::to_string(i) + " is not a constant");
    return t->to_int_vector();
  };
  const std::vector<int64_t> starts = values(1);
  std::vector<int64_t> axes = values(3);
  if (axes.empty()) {
    for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  }
  if (axes.size() != starts.size() || out.size() != in.size()) {
    throw Error(ErrorCode::invalid_model, "Slice starts and axes differ in length");
  }
  Dims offsets(in.size(), 0);
  for (size_t i = 0; i < axes.size(); ++i) {
    int64_t axis = axes[i] < 0 ? axes[i] + rank : axes[i];
    if (axis < 0 || axis >= rank) throw Error(ErrorCode::invalid_model, "Slice axis out of range");
    const int64_t dim = in[static_cast<size_t>(axis)];
    int64_t start = starts[i] < 0 ? starts[i] + dim : starts[i];  // then clamped, as ONNX says
    start = std::clamp<int64_t>(start, 0, dim);
    offsets[static_cast<size_t>(axis)] = std::min(start, dim - out[static_cast<size_t>(axis)]);
  }
  layer.tactic.name = "reorder:slice";
  const int dst = b.define(y, plain_md(out, Dt::f32));
  for (int64_t d : out) {
    if (d == 0) return;  // nothing to copy
  }
  const int src = b.use_strided(x, Dt::f32);
  const Md window = b.slot(src).md.submemory_desc(to_dims(out), offsets);
  b.add_reorder(b.view(src, window), dst);
}

}  // namespace

void build_view_layer(InstanceBuilder& b, LayerDesc& layer) {
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
    b.define_view(y, src, Md(out_dims, dt, out_strides));
    return;
  }
  if (n.op_type == "Slice") {
    build_slice(b, layer);
    return;
  }
  const int src = b.use_plain(x, dt);
  layer.tactic.name = "view:" + n.op_type;
  b.define_view(y, src, plain_md(b.shape(y), dt));
}

namespace {

// The stride order and inner blocks of `md`: equal for two tensors in one
// layout whatever their sizes ("abcd", "acdb", "aBcd16b").
std::string layout_family(const Md& md) {
  const auto& blocking = md.data.format_desc.blocking;
  std::vector<int> order(static_cast<size_t>(md.data.ndims));
  for (size_t d = 0; d < order.size(); ++d) order[d] = static_cast<int>(d);
  std::stable_sort(order.begin(), order.end(),
                   [&](int x, int y) { return blocking.strides[x] > blocking.strides[y]; });
  std::string family;
  for (int d : order) family += static_cast<char>('a' + d);
  for (int k = 0; k < blocking.inner_nblks; ++k) {
    family += "|" + std::to_string(blocking.inner_blks[k]) + static_cast<char>('a' + blocking.inner_idxs[k]);
  }
  return family;
}

}  // namespace

void build_concat_layer(InstanceBuilder& b, LayerDesc& layer) {
  const ir::Node& n = b.node(layer.anchor());
  const ValueId y = n.outputs[0];
  const int64_t rank = static_cast<int64_t>(b.shape(y).size());
  int64_t axis = n.attrs.get_int("axis");
  if (axis < 0) axis += rank;
  if (axis < 0 || axis >= rank) throw Error(ErrorCode::invalid_model, "Concat axis out of range");
  std::vector<ValueId> parts;
  for (ValueId v : n.inputs) {
    if (b.shape(v).empty() || b.shape(v)[static_cast<size_t>(axis)] == 0)
      continue;  // empty inputs add nothing
    parts.push_back(v);
  }
  // First in the layout of the inputs that are not plain (DenseNet's convs
  // write 16-channel blocks: a plain concat reordered each of them and left
  // the BatchNorm after it on plain data), the others reordered into it,
  // with oneDNN choosing the output's; then plain. oneDNN's reference concat
  // is never taken while the plain one exists.
  std::optional<Md> like;
  for (ValueId v : parts) {
    const Md md = b.md_of(v);
    if (!like && md.data_type() == Dt::f32 && !is_plain(md)) like = md;
  }
  std::vector<Md> srcs;
  std::optional<dnnl::concat::primitive_desc> pd;
  if (like) {
    for (ValueId v : parts) {
      const Md md = b.md_of(v);
      std::optional<Md> want = md.data_type() == Dt::f32 && layout_family(md) == layout_family(*like)
                                   ? md
                                   : layout_like(*like, md.dims());
      if (!want) break;
      srcs.push_back(*want);
    }
    if (srcs.size() == parts.size()) {
      try {
        pd = dnnl::concat::primitive_desc(Md(to_dims(b.shape(y)), Dt::f32, dnnl::memory::format_tag::any),
                                          static_cast<int>(axis), srcs, b.engine(), b.attr());
        if (std::string(pd->impl_info_str()).rfind("ref", 0) == 0) pd.reset();
      } catch (const dnnl::error&) {
        pd.reset();
      }
    }
  }
  const bool blocked = pd.has_value();
  if (!blocked) {
    srcs.clear();
    for (ValueId v : parts) srcs.push_back(plain_md(b.shape(v), Dt::f32));
    pd = dnnl::concat::primitive_desc(plain_md(b.shape(y), Dt::f32), static_cast<int>(axis), srcs, b.engine(),
                                      b.attr());
  }
  std::vector<std::pair<int, int>> args;
  for (size_t i = 0; i < parts.size(); ++i) {
    args.emplace_back(DNNL_ARG_MULTIPLE_SRC + static_cast<int>(i), b.use(parts[i], srcs[i]));
  }
  layer.tactic.name = blocked ? "concat:" + std::string(pd->impl_info_str()) : "concat";
  args.emplace_back(DNNL_ARG_DST, b.define(y, pd->dst_desc()));
  b.add_primitive(*pd, std::move(args));
}

}  // namespace kiln::cpu
