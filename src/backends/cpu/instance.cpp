#include "backends/cpu/instance.hpp"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "backends/cpu/channel_gather.hpp"
#include "backends/cpu/instance_builder.hpp"
#include "backends/cpu/memory_plan.hpp"
#include "backends/cpu/weight_reorder.hpp"
#include "ir/op_schema.hpp"
#include "reference/kernel.hpp"
#include "util/log.hpp"
#include "util/parallel_for.hpp"

namespace kiln::cpu {

using ir::k_no_value;
using ir::ValueId;

InstanceBuilder::InstanceBuilder(EnginePlan& plan, Instance& inst, const dnnl::engine& engine,
                                 dnnl::stream& stream, TuningContext* tuning)
    : m_plan(plan), m_inst(inst), m_engine(engine), m_stream(stream), m_tuning(tuning) {}

const Tensor* InstanceBuilder::known(ValueId v) const {
  if (v == k_no_value) return nullptr;
  const ValueState& s = m_inst.values[static_cast<size_t>(v)];
  return s.kind == ValueKind::constant ? &s.tensor : nullptr;
}

int InstanceBuilder::new_slot(const Md& md, Slot::Place place) {
  Slot s;
  s.md = md;
  s.place = place;
  s.first = s.last = m_layer;
  m_inst.slots.push_back(std::move(s));
  return static_cast<int>(m_inst.slots.size()) - 1;
}

int InstanceBuilder::root_of(int s) const {
  const Slot& slot = m_inst.slots[static_cast<size_t>(s)];
  return slot.root >= 0 ? slot.root : s;
}

void InstanceBuilder::touch(int s) {
  Slot& root = m_inst.slots[static_cast<size_t>(root_of(s))];
  root.last = std::max(root.last, m_layer);
}

bool InstanceBuilder::read_only_by(ValueId v, LayerKind kind) const { return read_only_by(v, {kind}); }

bool InstanceBuilder::read_only_by(ValueId v, std::initializer_list<LayerKind> kinds) const {
  if (is_graph_output(v)) return false;
  bool read = false;
  for (const LayerDesc& layer : m_plan.layers) {
    for (ir::NodeId n : layer.nodes) {
      const auto& inputs = node(n).inputs;
      if (std::find(inputs.begin(), inputs.end(), v) == inputs.end()) continue;
      if (std::find(kinds.begin(), kinds.end(), layer.kind) == kinds.end()) return false;
      read = true;
    }
  }
  return read;
}

Md InstanceBuilder::md_of(ValueId v) {
  const ValueState& s = state(v);
  if (s.slot >= 0) return slot(s.slot).md;
  return plain_md(shape(v), Dt::f32);
}

int InstanceBuilder::use_current(ValueId v) {
  if (state(v).kind == ValueKind::gathered) return write_gathered(v, plain_md(shape(v), Dt::f32));
  ValueState& s = state(v);
  if (s.slot >= 0) {
    touch(s.slot);
    return s.slot;
  }
  const ir::ValueType& type = m_inst.types[static_cast<size_t>(v)];
  auto dt = to_dnnl(type.dtype);
  if (!dt) {
    throw Error(ErrorCode::internal, "value '" + graph().value(v).name + "' of type " +
                                         std::string(dtype_name(type.dtype)) +
                                         " cannot feed a oneDNN primitive");
  }
  Md md = plain_md(shape(v), *dt);
  switch (s.kind) {
    case ValueKind::input:
      s.slot = new_slot(md, Slot::Place::input);
      m_inst.slots.back().input_index = s.input_index;
      break;
    case ValueKind::constant:
    case ValueKind::aux_tensor:
      s.slot = new_slot(md, Slot::Place::external);
      // Constants are never written: the const_cast only satisfies oneDNN's handle type.
      m_inst.slots.back().external = const_cast<std::byte*>(s.tensor.bytes().data());
      break;
    case ValueKind::weight:
      s.slot = weight_slot(v, md, md);
      break;
    case ValueKind::unset:
    case ValueKind::slot:
    case ValueKind::gathered:
    case ValueKind::elided:
      throw Error(ErrorCode::internal, "value '" + graph().value(v).name + "' is used before it is computed");
  }
  m_inst.slots[static_cast<size_t>(root_of(s.slot))].values.push_back(v);
  touch(s.slot);
  return s.slot;
}

void InstanceBuilder::note_consumer_layout(ValueId v, const Md& md) {
  if (m_tuning && m_tuning->record) m_tuning->record->try_emplace(v, LayoutHandoff{md_of(v), md});
}

std::optional<Md> InstanceBuilder::previous_consumer_layout(ValueId v) const {
  if (!m_tuning || !m_tuning->previous_pass) return std::nullopt;
  auto it = m_tuning->previous_pass->find(v);
  // Where producer and consumer agreed, the layer keeps its first-pass
  // problem (and timing-cache entry): only layout boundaries are re-timed.
  if (it == m_tuning->previous_pass->end() || it->second.produced == it->second.consumed) return std::nullopt;
  return it->second.consumed;
}

int InstanceBuilder::use(ValueId v, const Md& wanted) {
  const Md want = wanted;  // `wanted` may refer into m_inst.slots, which use_current() can grow
  note_consumer_layout(v, want);
  if (state(v).kind == ValueKind::gathered && plane_layout(want)) return write_gathered(v, want);
  int s = use_current(v);
  if (slot(s).md == want) return s;
  ValueState& st = state(v);
  for (auto& [md, c] : st.conversions) {
    if (md == want) {
      touch(c);
      return c;
    }
  }
  int t = new_slot(want, Slot::Place::arena);
  add_reorder(s, t);
  st.conversions.emplace_back(want, t);
  return t;
}

int InstanceBuilder::use_plain(ValueId v, Dt dt) { return use(v, plain_md(shape(v), dt)); }

int InstanceBuilder::use_strided(ValueId v, Dt dt) {
  Md md = md_of(v);
  if (is_strided(md) && md.data_type() == dt && state(v).slot >= 0) return use_current(v);
  return use_plain(v, dt);
}

int InstanceBuilder::define(ValueId v, const Md& md) {
  int s = new_slot(md, Slot::Place::arena);
  m_inst.slots[static_cast<size_t>(s)].values.push_back(v);
  ValueState& st = state(v);
  st.kind = ValueKind::slot;
  st.slot = s;
  return s;
}

int InstanceBuilder::view(int base, const Md& md) { return view_at(base, md, 0); }

int InstanceBuilder::view_at(int base, const Md& md, size_t byte_offset) {
  const int r = root_of(base);
  const size_t start = slot(base).byte_offset + byte_offset;
  int s = new_slot(md, slot(r).place);
  m_inst.slots[static_cast<size_t>(s)].root = r;
  m_inst.slots[static_cast<size_t>(s)].byte_offset = start;
  touch(s);
  return s;
}

std::vector<int> InstanceBuilder::slots_of(ValueId v) const {
  const ValueState& st = m_inst.values[static_cast<size_t>(v)];
  std::vector<int> out;
  if (st.slot >= 0) out.push_back(st.slot);
  for (const auto& [md, c] : st.conversions) out.push_back(c);
  return out;
}

void InstanceBuilder::merge_root(int from, int into, size_t byte_offset) {
  Slot& src = m_inst.slots[static_cast<size_t>(from)];
  Slot& dst = m_inst.slots[static_cast<size_t>(into)];
  if (src.root >= 0 || dst.root >= 0 || from == into || src.place != Slot::Place::arena ||
      dst.place != Slot::Place::arena || byte_offset + src.md.get_size() > dst.md.get_size()) {
    throw Error(ErrorCode::internal,
                "merge_root: slot " + std::to_string(from) + " cannot move into " + std::to_string(into));
  }
  dst.first = std::min(dst.first, src.first);
  dst.last = std::max(dst.last, src.last);
  dst.values.insert(dst.values.end(), src.values.begin(), src.values.end());
  src.values.clear();
  for (Slot& s : m_inst.slots) {
    if (s.root != from) continue;
    s.root = into;
    s.byte_offset += byte_offset;
  }
  src.root = into;
  src.byte_offset = byte_offset;
}

void InstanceBuilder::add_conversion(ValueId v, int s) {
  state(v).conversions.emplace_back(slot(s).md, s);
  hold(v, s);
}

void InstanceBuilder::hold(ValueId v, int s) {
  std::vector<ValueId>& values = m_inst.slots[static_cast<size_t>(root_of(s))].values;
  if (std::find(values.begin(), values.end(), v) == values.end()) values.push_back(v);
}

int InstanceBuilder::define_view(ValueId v, int base, const Md& md) {
  int s = view(base, md);
  m_inst.slots[static_cast<size_t>(root_of(s))].values.push_back(v);
  ValueState& st = state(v);
  st.kind = ValueKind::slot;
  st.slot = s;
  return s;
}

int InstanceBuilder::try_inplace(ValueId in, ValueId out, const Md& md) {
  const ValueState& st = state(in);
  if (st.kind != ValueKind::slot || st.slot < 0) return -1;
  const Slot& root = slot(root_of(st.slot));
  if (root.place != Slot::Place::arena || !(slot(st.slot).md == md)) return -1;
  for (ValueId v : root.values) {
    const int last = m_last_use[static_cast<size_t>(v)];
    if (last > m_layer || (v != in && last == m_layer)) return -1;
  }
  return define_view(out, st.slot, md);
}

void InstanceBuilder::define_gathered(ValueId v, std::vector<ChannelSource> from) {
  // A graph output is written by its own layer: the output reorders run
  // after the last layer, where no step of a layer can be added.
  if (is_graph_output(v)) throw Error(ErrorCode::internal, "a graph output cannot be gathered");
  for (ChannelSource& c : from) {
    if (const std::vector<ChannelSource>* inner = gathered(c.value))
      c = inner->at(static_cast<size_t>(c.channel));
  }
  const int last = m_last_use[static_cast<size_t>(v)];
  for (const ChannelSource& c : from) {
    int& source_last = m_last_use[static_cast<size_t>(c.value)];
    source_last = std::max(source_last, last);
  }
  ValueState& st = state(v);
  st.kind = ValueKind::gathered;
  st.gathered_from = std::move(from);
}

const std::vector<ChannelSource>* InstanceBuilder::gathered(ValueId v) const {
  const ValueState& st = m_inst.values[static_cast<size_t>(v)];
  return st.kind == ValueKind::gathered ? &st.gathered_from : nullptr;
}

std::vector<ir::NodeId> InstanceBuilder::readers(ValueId v) const {
  std::vector<ir::NodeId> out;
  for (size_t n = 0; n < graph().num_nodes(); ++n) {
    for (ValueId in : node(static_cast<ir::NodeId>(n)).inputs) {
      if (in == v) out.push_back(static_cast<ir::NodeId>(n));
    }
  }
  return out;
}

bool InstanceBuilder::is_graph_output(ValueId v) const {
  const auto& outputs = graph().outputs();
  return std::find(outputs.begin(), outputs.end(), v) != outputs.end();
}

LayerKind InstanceBuilder::layer_kind_of(ir::NodeId n) const {
  for (const LayerDesc& layer : m_plan.layers) {
    if (std::find(layer.nodes.begin(), layer.nodes.end(), n) != layer.nodes.end()) return layer.kind;
  }
  throw Error(ErrorCode::internal, "node " + node(n).describe() + " is in no layer");
}

// The gathered value `v` written once, laid out as `md`, by kiln's gather
// pass in the layer that reads it first; from then on an ordinary value.
InstanceBuilder::GatherPlan InstanceBuilder::plan_gather(ValueId v, const Md& md) {
  const std::vector<ChannelSource> from = state(v).gathered_from;
  // Each source once, in a layout the pass reads, of the destination's type.
  const Dt dt = md.data_type();
  std::vector<ValueId> values;
  GatherPlan plan;
  std::vector<std::pair<int, int64_t>> channels;  // per channel: index into the sources, channel
  for (const ChannelSource& c : from) {
    auto it = std::find(values.begin(), values.end(), c.value);
    if (it == values.end()) {
      int s = use_current(c.value);
      if (!plane_layout(slot(s).md) || slot(s).md.data_type() != dt) s = use_plain(c.value, dt);
      values.push_back(c.value);
      plan.source_slots.push_back(s);
      it = values.end() - 1;
    }
    channels.emplace_back(static_cast<int>(it - values.begin()), c.channel);
  }
  std::vector<PlaneLayout> layouts;
  for (int s : plan.source_slots) layouts.push_back(*plane_layout(slot(s).md));
  plan.pass = std::make_shared<const ChannelGather>(md.dims(), std::move(layouts), std::move(channels),
                                                    *plane_layout(md), md.data.padded_dims[1]);
  return plan;
}

int InstanceBuilder::write_gathered(ValueId v, const Md& md) {
  GatherPlan plan = plan_gather(v, md);
  const int dst = new_slot(md, Slot::Place::arena);
  m_inst.slots[static_cast<size_t>(dst)].values.push_back(v);
  ValueState& st = state(v);
  st.kind = ValueKind::slot;
  st.slot = dst;
  st.gathered_from.clear();
  Instance* inst = &m_inst;
  std::vector<const std::byte*> data(plan.source_slots.size());
  add_function(
      [inst, pass = plan.pass, sources = plan.source_slots, data, dst](RunContext&) mutable {
        for (size_t i = 0; i < sources.size(); ++i)
          data[i] = slot_bytes(inst->slots[static_cast<size_t>(sources[i])]);
        pass->run(data, slot_bytes(inst->slots[static_cast<size_t>(dst)]));
      },
      "GatherChannels", "native:channel_gather");
  return dst;
}

int InstanceBuilder::gather_affine(ValueId v, ValueId y, const Md& md, ChannelAffineFill affine, bool relu) {
  if (md.data_type() != Dt::f32) throw Error(ErrorCode::internal, "gather_affine writes f32 only");
  GatherPlan plan = plan_gather(v, md);
  const int dst = define(y, md);
  Instance* inst = &m_inst;
  const auto padded = static_cast<size_t>(md.data.padded_dims[1]);
  std::vector<const std::byte*> data(plan.source_slots.size());
  std::vector<float> scale(padded), shift(padded);
  add_function([inst, pass = plan.pass, sources = plan.source_slots, data, dst, affine = std::move(affine),
                scale, shift, relu](RunContext&) mutable {
    std::fill(scale.begin(), scale.end(), 0.0f);
    std::fill(shift.begin(), shift.end(), 0.0f);
    affine(scale, shift);
    for (size_t i = 0; i < sources.size(); ++i)
      data[i] = slot_bytes(inst->slots[static_cast<size_t>(sources[i])]);
    const ChannelAffine epilogue{scale, shift, relu};
    pass->run(data, slot_bytes(inst->slots[static_cast<size_t>(dst)]), &epilogue);
  });
  return dst;
}

int InstanceBuilder::temp(const Md& md) { return new_slot(md, Slot::Place::arena); }

int InstanceBuilder::weight_slot(ValueId v, const Md& view_md, const Md& want) {
  for (const WeightPrep& p : m_inst.weight_preps) {
    if (p.value == v && p.view == view_md && slot(p.slot).md == want) return p.slot;
  }
  const size_t bytes = want.get_size();
  m_inst.weight_preps.push_back({v, view_md, -1});
  int s = new_slot(want, Slot::Place::owned);
  m_inst.weight_preps.back().slot = s;
  m_inst.weight_bytes += bytes;
  return s;
}

dnnl::primitive_attr InstanceBuilder::attr() const {
  dnnl::primitive_attr a;
  a.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return a;
}

void InstanceBuilder::add_primitive(const dnnl::primitive_desc_base& pd,
                                    std::vector<std::pair<int, int>> args) {
  Md scratch = pd.scratchpad_desc();
  if (scratch.get_size() > 0) args.emplace_back(DNNL_ARG_SCRATCHPAD, temp(scratch));
  for (auto& [arg, s] : args) touch(s);
  Step step;
  step.pd = pd;
  step.arg_slots = std::move(args);
  step.layer = m_layer;
  m_inst.steps.push_back(std::move(step));
}

void InstanceBuilder::add_reorder(int src, int dst) {
  dnnl::reorder::primitive_desc pd;
  try {
    pd = dnnl::reorder::primitive_desc(m_engine, slot(src).md, m_engine, slot(dst).md, attr());
  } catch (const dnnl::error& e) {
    throw Error(ErrorCode::internal, "no oneDNN reorder from " + md_string(slot(src).md) + " to " +
                                         md_string(slot(dst).md) + ": " + e.what());
  }
  add_primitive(pd, {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst}});
}

void InstanceBuilder::add_function(std::function<void(RunContext&)> fn, std::string op, std::string tactic) {
  Step step;
  step.fn = std::move(fn);
  step.layer = m_layer;
  step.op = std::move(op);
  step.tactic = std::move(tactic);
  m_inst.steps.push_back(std::move(step));
}

void InstanceBuilder::set_aux_output(ValueId v, Tensor tensor) {
  ValueState& st = state(v);
  st.kind = ValueKind::aux_tensor;
  st.tensor = std::move(tensor);
  m_inst.aux_bytes += st.tensor.byte_size();
}

void InstanceBuilder::compute_types() {
  const ir::Graph& g = graph();
  const size_t nv = g.num_values();
  m_inst.types.assign(nv, {});
  m_inst.values.assign(nv, {});
  m_shapes.assign(nv, {});
  auto set_type = [&](ValueId v, ir::ValueType type) {
    if (!type.is_static()) {
      throw Error(ErrorCode::unsupported,
                  "value '" + g.value(v).name + "' has a data-dependent shape " + type.to_string());
    }
    m_shapes[static_cast<size_t>(v)] = type.static_shape();
    m_inst.types[static_cast<size_t>(v)] = std::move(type);
  };
  for (size_t i = 0; i < g.inputs().size(); ++i) {
    ValueId v = g.inputs()[i];
    set_type(v, ir::ValueType::of_static(m_plan.specs[i].dtype, m_inst.input_shapes[i]));
    ValueState& s = state(v);
    s.kind = ValueKind::input;
    s.input_index = static_cast<int>(i);
  }
  for (size_t i = 0; i < nv; ++i) {
    const ValueId v = static_cast<ValueId>(i);
    const ir::Value& value = g.value(v);
    if (value.producer != ir::k_no_node) continue;
    if (is_weight(g, v)) {
      set_type(v, value.type);
      state(v).kind = ValueKind::weight;
    } else if (const Tensor* t = value.known_value()) {
      set_type(v, ir::ValueType::of(*t));
      state(v).kind = ValueKind::constant;
      state(v).tensor = *t;
    }
  }
  for (const LayerDesc& layer : m_plan.layers) {
    for (ir::NodeId n : layer.nodes) {
      const ir::Node& node = g.node(n);
      std::vector<ir::ValueType> types;
      std::vector<const Tensor*> values;
      for (ValueId in : node.inputs) {
        types.push_back(in == k_no_value ? ir::ValueType{} : m_inst.types[static_cast<size_t>(in)]);
        values.push_back(known(in));
      }
      ir::InferResult inferred = ir::infer_node(node, types, values);
      for (size_t o = 0; o < node.outputs.size(); ++o) {
        ValueId out = node.outputs[o];
        if (out == k_no_value) continue;
        set_type(out, inferred.types[o]);
        if (layer.kind == LayerKind::shape) {
          try {
            state(out).tensor = ref::evaluate_output(node, values, inferred, o);
          } catch (const Error& e) {
            throw e.with_context(node.describe() + ": ");
          }
          state(out).kind = ValueKind::constant;
        }
      }
    }
  }
}

void InstanceBuilder::compute_last_uses() {
  const ir::Graph& g = graph();
  m_last_use.assign(g.num_values(), -1);
  for (size_t l = 0; l < m_plan.layers.size(); ++l) {
    const LayerDesc& layer = m_plan.layers[l];
    if (layer.kind == LayerKind::shape) continue;
    for (ir::NodeId n : layer.nodes) {
      for (ValueId in : g.node(n).inputs) {
        if (in != k_no_value) m_last_use[static_cast<size_t>(in)] = static_cast<int>(l);
      }
    }
  }
  for (ValueId out : g.outputs()) m_last_use[static_cast<size_t>(out)] = INT_MAX;
}

void InstanceBuilder::build_all(bool materialize_now) {
  compute_types();
  compute_last_uses();
  for (size_t l = 0; l < m_plan.layers.size(); ++l) {
    m_layer = static_cast<int>(l);
    LayerDesc& layer = m_plan.layers[l];
    try {
      switch (layer.kind) {
        case LayerKind::conv:
          build_conv_layer(*this, layer);
          break;
        case LayerKind::matmul:
          build_matmul_layer(*this, layer);
          break;
        case LayerKind::pool:
          build_pool_layer(*this, layer);
          break;
        case LayerKind::eltwise:
          build_eltwise_layer(*this, layer);
          break;
        case LayerKind::binary:
          build_binary_layer(*this, layer);
          break;
        case LayerKind::softmax:
          build_softmax_layer(*this, layer);
          break;
        case LayerKind::layer_norm:
          build_layer_norm_layer(*this, layer);
          break;
        case LayerKind::batch_norm:
          build_batch_norm_layer(*this, layer);
          break;
        case LayerKind::concat:
          build_concat_layer(*this, layer);
          break;
        case LayerKind::view:
          build_view_layer(*this, layer);
          break;
        case LayerKind::aux:
          build_aux_layer(*this, layer);
          break;
        case LayerKind::resample:
          build_resample_layer(*this, layer);
          break;
        case LayerKind::attention:
          build_attention_layer(*this, layer);
          break;
        case LayerKind::shape:
          break;
      }
    } catch (const dnnl::error& e) {
      throw Error(ErrorCode::internal,
                  graph().source + ": " + node(layer.anchor()).describe() + ": oneDNN: " + e.what());
    } catch (const Error& e) {
      const std::string what = e.what();
      const std::string where = node(layer.anchor()).describe();
      throw what.find(where) == std::string::npos ? e.with_context(where + ": ") : e;
    }
    if (m_tuning && m_tuning->progress &&
        (layer.kind == LayerKind::conv || layer.kind == LayerKind::matmul)) {
      m_tuning->progress->advance();
    }
  }
  m_layer = static_cast<int>(m_plan.layers.size());
  for (ValueId out : graph().outputs()) {
    ValueState& st = state(out);
    if (st.slot < 0 && st.kind == ValueKind::input && to_dnnl(m_inst.types[static_cast<size_t>(out)].dtype)) {
      use_current(out);
    }
    if (st.slot < 0) continue;
    m_inst.slots[static_cast<size_t>(root_of(st.slot))].last = INT_MAX;
    const ir::ValueType& type = m_inst.types[static_cast<size_t>(out)];
    Md plain = plain_md(type.static_shape(), *to_dnnl(type.dtype));
    dnnl::reorder::primitive_desc pd(m_engine, slot(st.slot).md, m_engine, plain);
    m_inst.output_reorders.push_back({out, pd, {}, slot(st.slot).md == plain});
  }
  std::vector<MemoryBlock> blocks;
  std::vector<int> block_slot;
  for (size_t s = 0; s < m_inst.slots.size(); ++s) {
    const Slot& sl = m_inst.slots[s];
    if (sl.root >= 0 || sl.place != Slot::Place::arena) continue;
    blocks.push_back({sl.md.get_size(), sl.first, sl.last, 0});
    block_slot.push_back(static_cast<int>(s));
  }
  m_inst.arena_bytes = plan_memory(blocks);
  for (size_t i = 0; i < blocks.size(); ++i) {
    m_inst.slots[static_cast<size_t>(block_slot[i])].offset = blocks[i].offset;
  }
  if (materialize_now) materialize(m_inst, m_engine);
}

void materialize(Instance& inst, const dnnl::engine& engine) {
  auto align = [](size_t n) { return (n + k_arena_alignment - 1) / k_arena_alignment * k_arena_alignment; };
  if (inst.arena_bytes > 0) inst.m_arena = HugePageBuffer(align(inst.arena_bytes));
  // Owned roots (weights, mostly) share one buffer, each at an aligned offset.
  std::vector<size_t> owned_offset(inst.slots.size(), 0);
  size_t owned_bytes = 0;
  for (size_t i = 0; i < inst.slots.size(); ++i) {
    const Slot& s = inst.slots[i];
    if (s.root >= 0 || s.place != Slot::Place::owned) continue;
    owned_offset[i] = owned_bytes;
    owned_bytes += align(s.md.get_size());
  }
  if (owned_bytes > 0) inst.m_owned = HugePageBuffer(owned_bytes);
  for (size_t i = 0; i < inst.slots.size(); ++i) {
    Slot& s = inst.slots[i];
    const size_t root_index = s.root >= 0 ? static_cast<size_t>(s.root) : i;
    const Slot& root = inst.slots[root_index];
    std::byte* ptr = nullptr;
    switch (root.place) {
      case Slot::Place::arena:
        ptr = inst.m_arena.data() + root.offset + s.byte_offset;
        break;
      case Slot::Place::input:
        ptr = nullptr;
        break;
      case Slot::Place::external:
        ptr = static_cast<std::byte*>(root.external) + s.byte_offset;
        break;
      case Slot::Place::owned:
        ptr = inst.m_owned.data() + owned_offset[root_index] + s.byte_offset;
        break;
    }
    s.mem = dnnl::memory(s.md, engine, ptr);
  }
  for (Step& step : inst.steps) {
    if (step.fn) continue;
    step.prim = dnnl::primitive(step.pd.get());
    for (auto& [arg, s] : step.arg_slots) step.args[arg] = inst.slots[static_cast<size_t>(s)].mem;
  }
  for (Instance::OutputReorder& r : inst.output_reorders) r.prim = dnnl::primitive(r.pd.get());
  inst.materialized = true;
}

void Instance::prepare_weights(const WeightStore& weights, const WeightFactors& factors,
                               const dnnl::engine& engine, dnnl::stream& stream, int num_threads) {
  auto factors_of = [&](const WeightPrep& p) -> std::span<const double> {
    auto v = static_cast<size_t>(p.value);
    return v < factors.size() ? std::span<const double>(factors[v]) : std::span<const double>();
  };
  // kiln's own reorders run on every thread, one weight each; the few a
  // oneDNN reorder must do (layouts reorder_weights does not address) follow
  // on the stream.
  std::vector<char> done(weight_preps.size(), 0);
  // Largest destinations first: threads take items in order, and a big
  // weight (a winograd 512x512 layer is 17-38 MB) taken last would leave the
  // other threads idle while it finishes.
  std::vector<size_t> order(weight_preps.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return slots[static_cast<size_t>(weight_preps[a].slot)].md.get_size() >
           slots[static_cast<size_t>(weight_preps[b].slot)].md.get_size();
  });
  parallel_for(order.size(), num_threads, [&](size_t i) {
    const size_t w = order[i];
    const WeightPrep& p = weight_preps[w];
    const Tensor* t = weight_tensor(weights, p);
    dnnl::memory& dst = slots[static_cast<size_t>(p.slot)].mem;
    const auto* plain = reinterpret_cast<const float*>(t->bytes().data());
    done[w] = reorder_weights(p.view, plain, dst.get_desc(), dst.get_data_handle(), factors_of(p)) ? 1 : 0;
  });
  for (size_t w = 0; w < weight_preps.size(); ++w) {
    if (done[w]) continue;
    const WeightPrep& p = weight_preps[w];
    const Tensor* t = weight_tensor(weights, p);
    Tensor scaled;
    if (auto f = factors_of(p); !f.empty()) {
      // oneDNN's reorder cannot scale: write the scaled weight first.
      scaled = Tensor::zeros(DType::float32, t->shape());
      auto in = t->data<float>();
      auto out = scaled.mutable_data<float>();
      const size_t slice = in.size() / f.size();
      for (size_t i = 0; i < in.size(); ++i)
        out[i] = static_cast<float>(static_cast<double>(in[i]) * f[i / slice]);
      t = &scaled;
    }
    dnnl::memory& dst = slots[static_cast<size_t>(p.slot)].mem;
    dnnl::memory src(p.view, engine, const_cast<std::byte*>(t->bytes().data()));
    dnnl::reorder(src, dst).execute(stream, {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst}});
  }
  stream.wait();
}

const Tensor* Instance::weight_tensor(const WeightStore& weights, const WeightPrep& p) const {
  const Tensor* t = nullptr;
  if (static_cast<size_t>(p.value) < weights.size() && weights[static_cast<size_t>(p.value)].defined()) {
    t = &weights[static_cast<size_t>(p.value)];
  } else if (values[static_cast<size_t>(p.value)].kind == ValueKind::constant) {
    t = &values[static_cast<size_t>(p.value)].tensor;
  }
  if (!t) throw Error(ErrorCode::internal, "weight " + std::to_string(p.value) + " has no data");
  if (t->dtype() != DType::float32 || t->byte_size() != p.view.get_size()) {
    throw Error(ErrorCode::invalid_argument, "weight " + std::to_string(p.value) + " has " +
                                                 std::to_string(t->byte_size()) + " bytes, the layer reads " +
                                                 std::to_string(p.view.get_size()));
  }
  return t;
}

std::vector<Tensor> Instance::run(const ir::Graph& graph, std::span<const Tensor> inputs,
                                  const WeightStore& weights, const dnnl::engine& engine,
                                  dnnl::stream& stream, std::vector<double>* step_ms) {
  for (Slot& s : slots) {
    const Slot& root = s.root >= 0 ? slots[static_cast<size_t>(s.root)] : s;
    if (root.place == Slot::Place::input) {
      s.mem.set_data_handle(
          const_cast<std::byte*>(inputs[static_cast<size_t>(root.input_index)].bytes().data()) +
          s.byte_offset);
    }
  }
  RunContext ctx{inputs, &weights, &stream};
  using ProfileClock = std::chrono::steady_clock;
  ProfileClock::time_point step_start;
  if (step_ms) {
    step_ms->assign(steps.size() + 1, 0.0);
    stream.wait();
    step_start = ProfileClock::now();
  }
  auto elapsed_ms = [&] {
    stream.wait();
    const auto now = ProfileClock::now();
    const double ms = std::chrono::duration<double, std::milli>(now - step_start).count();
    step_start = now;
    return ms;
  };
  for (size_t i = 0; i < steps.size(); ++i) {
    Step& step = steps[i];
    if (step.fn) {
      stream.wait();
      step.fn(ctx);
    } else {
      step.prim.execute(stream, step.args);
    }
    if (step_ms) (*step_ms)[i] = elapsed_ms();
  }
  std::vector<Tensor> outputs;
  for (ValueId out : graph.outputs()) {
    const ValueState& st = values[static_cast<size_t>(out)];
    const ir::ValueType& type = types[static_cast<size_t>(out)];
    if (st.slot >= 0) {
      const auto reorder = std::find_if(output_reorders.begin(), output_reorders.end(),
                                        [&](const OutputReorder& r) { return r.value == out; });
      // The reorder writes every element: no need to zero them first.
      Tensor t = reorder != output_reorders.end() ? Tensor::uninitialized(type.dtype, type.static_shape())
                                                  : Tensor::zeros(type.dtype, type.static_shape());
      if (reorder != output_reorders.end()) {
        dnnl::memory& src = slots[static_cast<size_t>(st.slot)].mem;
        if (reorder->copy) {
          std::memcpy(t.mutable_bytes().data(), src.get_data_handle(), t.byte_size());
        } else {
          dnnl::memory dst(plain_md(type.static_shape(), *to_dnnl(type.dtype)), engine,
                           t.mutable_bytes().data());
          reorder->prim.execute(stream, {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst}});
        }
      }
      outputs.push_back(std::move(t));
    } else if (st.kind == ValueKind::input) {
      outputs.push_back(inputs[static_cast<size_t>(st.input_index)].clone());
    } else if (st.kind == ValueKind::weight) {
      outputs.push_back(weights[static_cast<size_t>(out)].clone());
    } else if (st.handed_out) {
      outputs.push_back(std::move(values[static_cast<size_t>(out)].tensor));
    } else {
      outputs.push_back(st.tensor.clone());
    }
  }
  stream.wait();
  if (step_ms) step_ms->back() = elapsed_ms();
  return outputs;
}

std::unique_ptr<Instance> create_instance(EnginePlan& plan,
                                          const std::vector<std::vector<int64_t>>& input_shapes,
                                          const dnnl::engine& engine, dnnl::stream& stream,
                                          TuningContext* tuning, bool materialize_now) {
  auto inst = std::make_unique<Instance>();
  inst->input_shapes = input_shapes;
  InstanceBuilder builder(plan, *inst, engine, stream, tuning);
  builder.build_all(materialize_now);
  return inst;
}

}  // namespace kiln::cpu
