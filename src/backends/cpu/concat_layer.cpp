// Concat. Where an input's window of the output is itself a dense tensor in
// the output's layout (a whole-block channel window at batch 1), the input's
// storage becomes that window: its producer writes straight into the output
// and the Concat copies nothing. DenseNet's dense layers each concatenate
// every earlier feature map of their block, so each Concat is a prefix of
// the next one's and the whole block lives in one buffer. The other inputs
// are copied: by oneDNN's concat primitive over the inputs' shared layout,
// or by one reorder per input into its window of an output in that layout
// (timed against each other), or of a plain output.
#include <algorithm>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "backends/cpu/channel_gather.hpp"
#include "backends/cpu/channel_shuffle.hpp"
#include "backends/cpu/instance_builder.hpp"
#include "backends/cpu/tactics.hpp"

namespace kiln::cpu {

using ir::ValueId;

namespace {

// The stride order and inner blocks of `md`: equal for two tensors in one
// layout whatever their sizes ("abcd", "acdb", "aBcd16b").
std::string layout_family(const Md& md) {
  const auto& blocking = md.data.format_desc.blocking;
  std::string family;
  for (size_t d : stride_order(md)) family += static_cast<char>('a' + d);
  for (int k = 0; k < blocking.inner_nblks; ++k) {
    family += "|" + std::to_string(blocking.inner_blks[k]) + static_cast<char>('a' + blocking.inner_idxs[k]);
  }
  return family;
}

// Each input's window of the output: where it starts along the axis, and
// the dense tensor it is in the output's storage (nullopt where it is not).
struct Window {
  Dims dims, offsets;
  std::optional<DenseWindow> dense;
};

std::vector<Window> windows_of(InstanceBuilder& b, const std::vector<ValueId>& parts, int64_t axis,
                               const Md& dst_md) {
  std::vector<Window> windows;
  Dims offsets(dst_md.dims().size(), 0);
  for (ValueId v : parts) {
    Window w{to_dims(b.shape(v)), offsets, std::nullopt};
    w.dense = dense_window(dst_md, w.dims, w.offsets);
    offsets[static_cast<size_t>(axis)] += w.dims[static_cast<size_t>(axis)];
    windows.push_back(std::move(w));
  }
  return windows;
}

// A slot holding parts[i] at byte `at` of root `root`, in the layout of its
// window; -1 if none does.
int slot_at(InstanceBuilder& b, ValueId v, const Window& w, int root, size_t at) {
  for (int s : b.slots_of(v)) {
    if (b.root(s) == root && b.byte_offset(s) == at && same_addressing(b.slot(s).md, w.dense->md)) return s;
  }
  return -1;
}

// The arena root that can become the output's storage from input i's window
// on: one that starts with parts[i] and is, byte for byte, inputs i, i+1, ...
// in their windows' layout (a fresh conv output is one input; the previous
// dense layer's Concat is the block's features so far). -1 if none.
int movable_root(InstanceBuilder& b, const std::vector<ValueId>& parts, const std::vector<Window>& windows,
                 size_t i, int dst) {
  for (int s : b.slots_of(parts[i])) {
    const int root = b.root(s);
    if (root == dst || b.slot(root).place != Slot::Place::arena || b.byte_offset(s) != 0) continue;
    const size_t size = b.slot(root).md.get_size();
    const size_t start = windows[i].dense->byte_offset;
    size_t covered = 0;
    for (size_t j = i; j < parts.size() && covered < size; ++j) {
      const Window& w = windows[j];
      if (!w.dense || w.dense->byte_offset != start + covered || slot_at(b, parts[j], w, root, covered) < 0)
        break;
      covered += w.dense->md.get_size();
    }
    if (covered == size) return root;
  }
  return -1;
}

// A destination laid out as `dst_md` (plain, or the inputs' shared layout).
// An input whose window is a dense tensor in it takes the window as its
// storage (or already has it, from the previous Concat of a dense block);
// the others are reordered straight into their windows (a sub-memory view
// at the input's offset along the axis): one pass per input whatever its
// layout. ShuffleNet's 58-channel inputs, one plain and one in 16-channel
// blocks, have no blocked concat; the plain concat primitive first
// reordered the blocked input to plain and then copied both (measured on
// one of its units, 1 thread: 0.185 ms against 0.025 ms for the two
// reorders into the windows). A plain output also leaves the channel
// shuffle's Reshape after it a view.
void build_window_concat(InstanceBuilder& b, LayerDesc& layer, const std::vector<ValueId>& parts, ValueId y,
                         int64_t axis, const Md& dst_md) {
  const int dst = b.define(y, dst_md);
  const std::vector<Window> windows = windows_of(b, parts, axis, dst_md);
  size_t in_place = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const ValueId v = parts[i];
    const Window& w = windows[i];
    b.note_consumer_layout(v, b.md_of(v));  // read as it is: no layout to ask its producer for
    if (w.dense) {
      // Placed by the previous Concat of a dense block, or movable now.
      if (slot_at(b, v, w, dst, w.dense->byte_offset) < 0) {
        if (const int root = movable_root(b, parts, windows, i, dst); root >= 0)
          b.merge_root(root, dst, w.dense->byte_offset);
      }
      // Its storage now holds v: no layer may write over it in place while
      // v is read (a copy a layer made in this layout was held by nothing).
      if (const int s = slot_at(b, v, w, dst, w.dense->byte_offset); s >= 0) {
        b.hold(v, s);
        ++in_place;
        continue;
      }
    }
    const int src = b.use_current(v);
    if (w.dense) {
      // The copy is also `v` in this layout, where the next Concat of a
      // dense block finds it (a block's first input, in another layout,
      // is copied once).
      const int window = b.view_at(dst, w.dense->md, w.dense->byte_offset);
      b.add_reorder(src, window);
      b.add_conversion(v, window);
    } else {
      b.add_reorder(src, b.view(dst, dst_md.submemory_desc(w.dims, w.offsets)));
    }
  }
  layer.tactic.name = in_place == parts.size() ? "concat:in_place" : "concat:reorders";
  if (!is_plain(dst_md)) layer.tactic.name += ":" + layout_family(dst_md);
  if (dst_md.data_type() == Dt::bf16) layer.tactic.name += "/bf16";
  if (in_place > 0 && in_place < parts.size())
    layer.tactic.name +=
        " (" + std::to_string(in_place) + " of " + std::to_string(parts.size()) + " in place)";
}

// Whether build_window_concat would place any input without a copy.
bool any_in_place(InstanceBuilder& b, const std::vector<ValueId>& parts, int64_t axis, const Md& dst_md) {
  const std::vector<Window> windows = windows_of(b, parts, axis, dst_md);
  for (size_t i = 0; i < parts.size(); ++i) {
    // The output has no slot yet: -1 is never a root.
    if (windows[i].dense && movable_root(b, parts, windows, i, -1) >= 0) return true;
  }
  return false;
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
  if (build_gathered_shuffle(b, layer)) return;
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
  const bool in_place = windows && any_in_place(b, parts, axis, *windows);
  // A Concat that would copy its inputs and that only batch norms read
  // (DenseNet's at batch > 1, where no input's window is a dense tensor): a
  // map of its inputs' channels, which each batch norm normalizes as it
  // gathers them (norm_layer.cpp). DenseNet-121 at batch 8 copied every
  // block's features again at each dense layer: 58 Concats, 8% of its time.
  // Inputs in blocks or channels-last only: the pass moves up to 16
  // neighbouring channels per load there, but one float per load from plain
  // NCHW, where the Concat's reorders into its windows are faster.
  if (!in_place && rank == 4 && axis == 1 && dt == Dt::f32 && b.read_only_by(y, LayerKind::batch_norm) &&
      std::all_of(parts.begin(), parts.end(), [&](ValueId v) {
        if (b.gathered(v)) return true;
        const Md md = b.md_of(v);
        return md.data_type() == Dt::f32 && !is_plain(md) && plane_layout(md).has_value();
      })) {
    std::vector<ChannelSource> channels;
    for (ValueId v : parts) {
      for (int64_t c = 0; c < b.shape(v)[1]; ++c) channels.push_back({v, c});
    }
    b.define_gathered(y, std::move(channels));
    layer.tactic.name = "gathered:concat";
    return;
  }
  if (!pd && !windows) {
    build_window_concat(b, layer, parts, y, axis, plain_md(b.shape(y), dt));
    return;
  }
  // Inputs placed in the output copy nothing: no candidate is faster.
  if (in_place) {
    layer.tactic.algo = ConvAlgo::direct;
    build_window_concat(b, layer, parts, y, axis, *windows);
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
