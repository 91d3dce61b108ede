// Layout-only layers. Reshape, Flatten, Squeeze, Unsqueeze and Identity are
// views of a plain tensor (no copy; a blocked input is reordered to plain
// once). Transpose is a strided view: consumers that read strides (matmul,
// reorders) take it as is, others get one reorder. Slice (positive steps)
// and Gather of one constant index copy a strided window by one reorder, or
// stay a view of it where only convs and concats (which reorder) read them;
// constant Pad fills its destination and reorders the source into the
// interior. Concat is oneDNN concat
// over its inputs' shared layout, or each input reordered into its window of
// an output in that layout (timed against each other), or of a plain output.
#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "backends/cpu/instance_builder.hpp"
#include "backends/cpu/tactics.hpp"

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
  layer.tactic.name = "reorder:slice";
  copy_window(b, x, y, offsets, strides, out);
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
  int64_t axis = n.attrs.get_int("axis", 0);
  if (axis < 0) axis += rank;
  if (axis < 0 || axis >= rank) throw Error(ErrorCode::invalid_model, "Gather axis out of range");
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

// A destination laid out as `dst_md` (plain, or the inputs' shared layout)
// with every input reordered straight into its window (a sub-memory view at
// the input's offset along the axis): one pass per input whatever its layout.
// ShuffleNet's 58-channel inputs, one plain and one in 16-channel blocks, have
// no blocked concat; the plain concat primitive first reordered the blocked
// input to plain and then copied both (measured on one of its units, 1
// thread: 0.185 ms against 0.025 ms for the two reorders into the windows). A
// plain output also leaves the channel shuffle's Reshape after it a view.
void build_window_concat(InstanceBuilder& b, LayerDesc& layer, const std::vector<ValueId>& parts, ValueId y,
                         int64_t axis, const Md& dst_md) {
  const int dst = b.define(y, dst_md);
  Dims offsets(b.shape(y).size(), 0);
  for (ValueId v : parts) {
    const Dims dims = to_dims(b.shape(v));
    b.note_consumer_layout(v, b.md_of(v));  // read as it is: no layout to ask its producer for
    const int src = b.use_current(v);
    b.add_reorder(src, b.view(dst, dst_md.submemory_desc(dims, offsets)));
    offsets[static_cast<size_t>(axis)] += dims[static_cast<size_t>(axis)];
  }
  layer.tactic.name = "concat:reorders";
  if (!is_plain(dst_md)) layer.tactic.name += ":" + layout_family(dst_md);
  if (dst_md.data_type() == Dt::bf16) layer.tactic.name += "/bf16";
}

// The output `like`'s layout over `dims` when every input's window in it is
// whole blocks (offsets and sizes along the axis multiples of the axis's
// block, no padding); nullopt otherwise.
std::optional<Md> window_layout(const Md& like, const Dims& dims, const std::vector<Dims>& parts,
                                int64_t axis) {
  std::optional<Md> out = layout_like(like, dims);
  if (!out) return std::nullopt;
  const auto& blocking = out->data.format_desc.blocking;
  int64_t block = 1;
  for (int k = 0; k < blocking.inner_nblks; ++k) {
    if (blocking.inner_idxs[k] == axis) block *= blocking.inner_blks[k];
  }
  for (const Dims& p : parts) {
    if (p[static_cast<size_t>(axis)] % block != 0) return std::nullopt;
  }
  return out;
}

// A timing closure for a concat candidate: the reorders it needs, then its
// primitive (if any), on zero-filled temporaries made on the first call.
struct TimedConcat {
  struct Move {
    Md from, to;
    int to_buffer = -1;  // the window of buffer `to_buffer` it writes, or a buffer of its own (-1)
  };
  std::vector<Move> moves;
  std::vector<Md> buffers;  // the primitive's sources (where a move does not write them) and destination
  std::optional<dnnl::concat::primitive_desc> pd;
  std::vector<int> pd_sources;  // buffer index per source
  int pd_dst = -1;
};

std::function<double()> concat_timer(InstanceBuilder& b, TimedConcat plan) {
  struct State {
    bool ready = false;
    std::vector<dnnl::memory> buffers;
    std::vector<std::tuple<dnnl::primitive, dnnl::memory, dnnl::memory>> moves;
    dnnl::primitive prim;
    std::unordered_map<int, dnnl::memory> args;
  };
  auto state = std::make_shared<State>();
  const dnnl::engine& engine = b.engine();
  dnnl::stream& stream = b.stream();
  return [state, plan = std::move(plan), &engine, &stream] {
    State& s = *state;
    if (!s.ready) {
      for (const Md& md : plan.buffers) s.buffers.push_back(zeroed(md, engine));
      for (const TimedConcat::Move& m : plan.moves) {
        dnnl::memory from = zeroed(m.from, engine);
        dnnl::memory to =
            m.to_buffer >= 0
                ? dnnl::memory(m.to, engine, s.buffers[static_cast<size_t>(m.to_buffer)].get_data_handle())
                : zeroed(m.to, engine);
        s.moves.emplace_back(dnnl::reorder(from, to), from, to);
      }
      if (plan.pd) {
        s.prim = dnnl::primitive(plan.pd->get());
        for (size_t i = 0; i < plan.pd_sources.size(); ++i) {
          s.args[DNNL_ARG_MULTIPLE_SRC + static_cast<int>(i)] =
              s.buffers[static_cast<size_t>(plan.pd_sources[i])];
        }
        s.args[DNNL_ARG_DST] = s.buffers[static_cast<size_t>(plan.pd_dst)];
        const Md scratch = plan.pd->scratchpad_desc();
        if (scratch.get_size() > 0) s.args[DNNL_ARG_SCRATCHPAD] = zeroed(scratch, engine);
      }
      s.ready = true;
    }
    auto once = [&] {
      for (auto& [prim, from, to] : s.moves) prim.execute(stream, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}});
      if (plan.pd) s.prim.execute(stream, s.args);
      stream.wait();
    };
    const double first = builder::time_call(once);
    return std::min(first, builder::time_call(once));
  };
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
  // In bf16 when bf16 inputs hold most of the elements: they came from bf16
  // kernels, so the build allows bf16, and the kernels after the Concat read
  // bf16. An f32 concat converted every bf16 input to f32 and its bf16
  // consumers converted the whole result back (DenseNet's bf16 build ran
  // slower than its f32 one). At a tie it stays f32: ShuffleNet's split half
  // is an f32 copy (Slice) beside a bf16 branch, and the Slices after its
  // channel shuffle read f32.
  int64_t bf16_elements = 0, f32_elements = 0;
  for (ValueId v : parts) {
    (b.md_of(v).data_type() == Dt::bf16 ? bf16_elements : f32_elements) += shape_numel(b.shape(v));
  }
  const Dt dt = bf16_elements > f32_elements ? Dt::bf16 : Dt::f32;
  // First in the layout of the inputs that are not plain (DenseNet's convs
  // write 16-channel blocks: a plain concat reordered each of them and left
  // the BatchNorm after it on plain data), the others reordered into it,
  // with oneDNN choosing the output's; then plain. oneDNN's reference concat
  // is never taken. An input that is already plain makes the output plain
  // (ShuffleNet concatenates its plain split half with a blocked branch, and
  // the channel shuffle's Reshape after it wants plain): the blocked concat
  // cost a reorder of that input in and one of the output back out.
  std::optional<Md> like;
  bool any_plain = false;
  for (ValueId v : parts) {
    const Md md = b.md_of(v);
    if (is_plain(md)) {
      any_plain = true;
    } else if (!like) {
      like = with_data_type(md, dt);
    }
  }
  if (any_plain) like.reset();
  // A Concat over channels that only a BatchNormalization reads (DenseNet's
  // every dense layer and transition) goes to 16-channel blocks when its
  // inputs are whole blocks, whatever layout they come in: the batch norm
  // runs in the concat's layout, and in blocks oneDNN's concat and batch norm
  // of a dense block's inputs (6 of them, 56x56, batch 8, 1 thread) took 0.80
  // and 0.59 ms against 1.43 and 1.12 ms in nhwc (bf16: 0.36 and 0.37 ms
  // against 1.99 and 0.88 ms; docs/performance.md, "Concat").
  if (like && rank == 4 && axis == 1 && b.read_only_by(y, LayerKind::batch_norm) &&
      std::all_of(parts.begin(), parts.end(), [&](ValueId v) { return b.shape(v)[1] % 16 == 0; })) {
    like = Md(to_dims(b.shape(y)), dt, dnnl::memory::format_tag::nChw16c);
  }
  std::vector<Md> srcs;
  std::optional<dnnl::concat::primitive_desc> pd;
  if (like) {
    for (ValueId v : parts) {
      const Md md = b.md_of(v);
      std::optional<Md> want = md.data_type() == dt && layout_family(md) == layout_family(*like)
                                   ? md
                                   : layout_like(*like, md.dims());
      if (!want) break;
      srcs.push_back(*want);
    }
    if (srcs.size() == parts.size()) {
      try {
        pd = dnnl::concat::primitive_desc(Md(to_dims(b.shape(y)), dt, dnnl::memory::format_tag::any),
                                          static_cast<int>(axis), srcs, b.engine(), b.attr());
        if (std::string(pd->impl_info_str()).rfind("ref", 0) == 0) pd.reset();
      } catch (const dnnl::error&) {
        pd.reset();
      }
    }
  }
  std::vector<Dims> part_dims;
  for (ValueId v : parts) part_dims.push_back(to_dims(b.shape(v)));
  const Dims out_dims = to_dims(b.shape(y));
  // The same layout written by one reorder per input into its window: the
  // inputs' layout conversion and the copy in one pass, and no concat
  // primitive. oneDNN's simple concat of DenseNet's dense blocks at batch 1
  // took 18 times as long as the reorders into the windows in 16-channel
  // blocks, 2.4 times in nhwc (its 6 inputs of 56x56, 1 thread); at batch 8
  // the two are within 10%, except bf16 nhwc (4.6 times) (docs/performance.md,
  // "Concat"). The build times both; tactic.algo keeps the choice (automatic:
  // the primitive, direct: the reorders).
  std::optional<Md> windows = like ? window_layout(*like, out_dims, part_dims, axis) : std::nullopt;
  if (!pd && !windows) {
    build_window_concat(b, layer, parts, y, axis, plain_md(b.shape(y), dt));
    return;
  }
  bool use_windows = !pd;
  if (pd && windows) {
    if (b.tuning()) {
      TimedConcat primitive;
      primitive.pd = pd;
      for (size_t i = 0; i < parts.size(); ++i) {
        primitive.pd_sources.push_back(static_cast<int>(primitive.buffers.size()));
        primitive.buffers.push_back(srcs[i]);
        const Md md = b.md_of(parts[i]);
        bool converted = md == srcs[i];
        for (const auto& [have, slot] : b.state(parts[i]).conversions)
          converted = converted || have == srcs[i];
        // A conversion an earlier layer made is reused, not paid again.
        if (!converted) primitive.moves.push_back({md, srcs[i], primitive.pd_sources.back()});
      }
      primitive.pd_dst = static_cast<int>(primitive.buffers.size());
      primitive.buffers.push_back(pd->dst_desc());
      TimedConcat reorders;
      reorders.buffers.push_back(*windows);
      Dims offsets(out_dims.size(), 0);
      for (size_t i = 0; i < parts.size(); ++i) {
        reorders.moves.push_back({b.md_of(parts[i]), windows->submemory_desc(part_dims[i], offsets), 0});
        offsets[static_cast<size_t>(axis)] += part_dims[i][static_cast<size_t>(axis)];
      }
      std::vector<builder::TacticCandidate> candidates = {
          {"concat:primitive", concat_timer(b, std::move(primitive))},
          {"concat:reorders", concat_timer(b, std::move(reorders))}};
      std::string signature = "concat|y=" + dims_string(out_dims) + "|axis=" + std::to_string(axis);
      for (ValueId v : parts) signature += "|x=" + md_string(b.md_of(v));
      signature += "|to=" + md_string(*windows);  // the layout depends on the readers too
      double ms = 0;
      use_windows = choose_tactic(b, signature, candidates, &ms) == 1;
      layer.tactic.algo = use_windows ? ConvAlgo::direct : ConvAlgo::automatic;
      layer.tactic.time_ms = ms;
    } else {
      use_windows = layer.tactic.algo == ConvAlgo::direct;
    }
  }
  if (use_windows) {
    build_window_concat(b, layer, parts, y, axis, *windows);
    return;
  }
  std::vector<std::pair<int, int>> args;
  for (size_t i = 0; i < parts.size(); ++i) {
    args.emplace_back(DNNL_ARG_MULTIPLE_SRC + static_cast<int>(i), b.use(parts[i], srcs[i]));
  }
  layer.tactic.name = "concat:" + std::string(pd->impl_info_str()) + (dt == Dt::bf16 ? "/bf16" : "");
  args.emplace_back(DNNL_ARG_DST, b.define(y, pd->dst_desc()));
  b.add_primitive(*pd, std::move(args));
}

}  // namespace kiln::cpu
