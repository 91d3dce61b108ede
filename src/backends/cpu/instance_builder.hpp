// InstanceBuilder: the toolkit the per-op layer builders (conv_layer.cpp,
// matmul_layer.cpp, ...) use to turn one plan layer into instance steps:
// concrete shapes, values in the layout a primitive wants (adding reorders
// only when layouts differ), output slots (in place where the lifetime plan
// allows), weights reordered into a primitive's layout, and tuning support.
//
// Used only during create_instance, from one thread.
#pragma once

#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "backends/cpu/instance.hpp"

namespace kiln::cpu {

class ChannelGather;

class InstanceBuilder {
 public:
  InstanceBuilder(EnginePlan& plan, Instance& inst, const dnnl::engine& engine, dnnl::stream& stream,
                  TuningContext* tuning);

  const ir::Graph& graph() const { return m_plan.graph; }
  const ir::Node& node(ir::NodeId n) const { return m_plan.graph.node(n); }
  const std::vector<int64_t>& shape(ir::ValueId v) const { return m_shapes[static_cast<size_t>(v)]; }
  // A constant or shape-only value, known at these shapes; null otherwise.
  const Tensor* known(ir::ValueId v) const;
  bool is_fixed(ir::ValueId v) const { return is_weight(m_plan.graph, v) || known(v) != nullptr; }
  const dnnl::engine& engine() const { return m_engine; }
  dnnl::stream& stream() { return m_stream; }
  TuningContext* tuning() { return m_tuning; }
  int layer_index() const { return m_layer; }
  int num_threads() const { return m_plan.num_threads; }  // 0: all cores
  Instance& instance() { return m_inst; }

  // Whether every layer that reads `v` is of `kind` (and one does), and `v`
  // is not a graph output.
  bool read_only_by(ir::ValueId v, LayerKind kind) const;
  bool read_only_by(ir::ValueId v, std::initializer_list<LayerKind> kinds) const;
  // The layout `v` is available in now (plain for values not yet in a slot).
  Md md_of(ir::ValueId v);
  // While tuning: notes that a consumer reads `v` laid out as `md`; and what
  // the previous tuning pass's consumer read it as, where that differed from
  // what its producer wrote (nullopt otherwise, and in a first pass).
  void note_consumer_layout(ir::ValueId v, const Md& md);
  std::optional<Md> previous_consumer_layout(ir::ValueId v) const;
  // A slot holding `v` in its current layout.
  int use_current(ir::ValueId v);
  // A slot holding `v` laid out as `want` (same dims); reorders if needed.
  int use(ir::ValueId v, const Md& want);
  int use_plain(ir::ValueId v, Dt dt);
  // Current layout if it is a strided view of dtype `dt`, else plain.
  int use_strided(ir::ValueId v, Dt dt);

  // A new arena slot for layer output `v`.
  int define(ir::ValueId v, const Md& md);
  // `v` as a view of `base`'s storage (no copy).
  int define_view(ir::ValueId v, int base, const Md& md);
  // `out` written over `in`'s storage when `in` dies in this layer and has
  // layout `md`; -1 when not possible.
  int try_inplace(ir::ValueId in, ir::ValueId out, const Md& md);
  // A view of slot `base` with another descriptor (no value).
  int view(int base, const Md& md);
  // A view of `base`'s storage starting `byte_offset` bytes after `base`'s
  // own start, through `md` (no value).
  int view_at(int base, const Md& md, size_t byte_offset);
  // The slots holding `v`: its own, then its copies in other layouts.
  std::vector<int> slots_of(ir::ValueId v) const;
  // Slot `s`'s storage: its root, and the byte where it starts in the root's.
  int root(int s) const { return root_of(s); }
  size_t byte_offset(int s) const { return slot(s).byte_offset; }
  // Moves arena root `from`, with every value and view in it, into root
  // `into` at `byte_offset`: its storage becomes that part of `into`'s,
  // which lives as long as both did. A concat places its inputs this way.
  void merge_root(int from, int into, size_t byte_offset);
  // Records slot `s` (already written, in layout slot(s).md) as a copy of
  // `v`: later readers of `v` in that layout use it, and its storage stays
  // as it is while `v` is read.
  void add_conversion(ir::ValueId v, int s);
  // Slot `s`'s storage holds `v` (or a copy of it): no layer writes over it
  // in place while `v` is still read.
  void hold(ir::ValueId v, int s);
  // `v` (rank 4, f32) as channels of other values, written by kiln's gather
  // pass (channel_gather.hpp) only where a layer reads it, straight into the
  // layout that layer asks for. Gathered sources resolve to their own
  // sources. Every source stays readable, and unwritten in place, as long as
  // `v` is read.
  void define_gathered(ir::ValueId v, std::vector<ChannelSource> from);
  // `v`'s channel sources while it is gathered and not yet written; null
  // otherwise.
  const std::vector<ChannelSource>* gathered(ir::ValueId v) const;
  // Writes gathered `v`'s channels into a new slot for `y` laid out as `md`
  // (f32), each channel c as v[c] * scale[c] + shift[c] (then max(., 0)
  // with `relu`), the scale and shift filled per run by `affine` (one entry
  // per channel of md, padding included; the padding's entries are zero on
  // entry): a BatchNormalization (and its Relu) of a gathered Concat, in the
  // pass that gathers it. `v` itself stays gathered.
  using ChannelAffineFill = std::function<void(std::span<float> scale, std::span<float> shift)>;
  int gather_affine(ir::ValueId v, ir::ValueId y, const Md& md, ChannelAffineFill affine, bool relu);
  // `v` is a step a gathered value made unnecessary: nothing computes it.
  void elide(ir::ValueId v) { state(v).kind = ValueKind::elided; }
  // The nodes that read `v` (one entry per input position), and whether a
  // graph output is `v`.
  std::vector<ir::NodeId> readers(ir::ValueId v) const;
  bool is_graph_output(ir::ValueId v) const;
  // The kind of the layer `n` is in.
  LayerKind layer_kind_of(ir::NodeId n) const;
  // Scratch for this layer only.
  int temp(const Md& md);
  // Weight or float constant `v`, read through `view` (a plain descriptor
  // over its tensor) and reordered into `want`.
  int weight_slot(ir::ValueId v, const Md& view_md, const Md& want);

  dnnl::primitive_attr attr() const;  // user scratchpad
  void add_primitive(const dnnl::primitive_desc_base& pd, std::vector<std::pair<int, int>> args);
  void add_reorder(int src, int dst);
  // A step of kiln's own; `op` and `tactic` name it in the profile where it
  // is not what its layer computes (a gather before a conv).
  void add_function(std::function<void(RunContext&)> fn, std::string op = {}, std::string tactic = {});

  // Registers the result of an aux layer: an owned tensor.
  void set_aux_output(ir::ValueId v, Tensor tensor);
  ValueState& state(ir::ValueId v) { return m_inst.values[static_cast<size_t>(v)]; }
  const Slot& slot(int s) const { return m_inst.slots[static_cast<size_t>(s)]; }

  // Drives the layers; called by create_instance.
  void build_all(bool materialize);

 private:
  int new_slot(const Md& md, Slot::Place place);
  int root_of(int s) const;
  void touch(int s);  // extends the root's lifetime to the current layer
  int write_gathered(ir::ValueId v, const Md& md);
  // The pass writing gathered `v` in `md`, and the slots it reads (with any
  // conversion of a source added as a step).
  struct GatherPlan {
    std::shared_ptr<const ChannelGather> pass;
    std::vector<int> source_slots;
  };
  GatherPlan plan_gather(ir::ValueId v, const Md& md);
  void compute_types();
  void compute_last_uses();

  EnginePlan& m_plan;
  Instance& m_inst;
  const dnnl::engine& m_engine;
  dnnl::stream& m_stream;
  TuningContext* m_tuning;
  int m_layer = 0;
  std::vector<std::vector<int64_t>> m_shapes;
  std::vector<int> m_last_use;  // per value: last layer reading it (INT_MAX for outputs)
};

// Per layer kind (one file each).
void build_conv_layer(InstanceBuilder& b, LayerDesc& layer);
void build_matmul_layer(InstanceBuilder& b, LayerDesc& layer);
void build_pool_layer(InstanceBuilder& b, LayerDesc& layer);
void build_eltwise_layer(InstanceBuilder& b, LayerDesc& layer);
void build_prelu_layer(InstanceBuilder& b, LayerDesc& layer);
void build_binary_layer(InstanceBuilder& b, LayerDesc& layer);
void build_softmax_layer(InstanceBuilder& b, LayerDesc& layer);
void build_layer_norm_layer(InstanceBuilder& b, LayerDesc& layer);
void build_batch_norm_layer(InstanceBuilder& b, LayerDesc& layer);
void build_concat_layer(InstanceBuilder& b, LayerDesc& layer);
void build_view_layer(InstanceBuilder& b, LayerDesc& layer);
void build_aux_layer(InstanceBuilder& b, LayerDesc& layer);
void build_resample_layer(InstanceBuilder& b, LayerDesc& layer);
void build_attention_layer(InstanceBuilder& b, LayerDesc& layer);

// Post-ops for a fused conv/matmul layer: residual sum, then the activation
// (a swish only `with_swish`: without, the caller runs it as kiln's pass).
dnnl::post_ops fused_post_ops(const InstanceBuilder& b, const LayerDesc& layer, std::string* name,
                              bool with_swish = true);

}  // namespace kiln::cpu
