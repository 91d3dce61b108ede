#include "backends/cpu/plan_format.hpp"

#include <algorithm>
#include <cstring>
#include <limits>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#include "backends/cpu/cpu_plan_generated.h"
#pragma GCC diagnostic pop
#include "backends/cpu/layer_partition.hpp"

namespace kiln::cpu {

namespace fbs = kiln::cpu::fb;
using flatbuffers::FlatBufferBuilder;
using flatbuffers::Offset;

namespace {

constexpr size_t k_checksum_bytes = 8;

uint64_t fnv1a(const uint8_t* data, size_t size) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < size; ++i) {
    h ^= data[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

[[noreturn]] void corrupt(const std::string& why) {
  throw Error(ErrorCode::invalid_model, "cpu plan: " + why);
}

// ---- writing ----

Offset<fbs::TensorData> write_tensor(FlatBufferBuilder& b, const Tensor& t) {
  auto shape = b.CreateVector(t.shape());
  auto bytes = t.bytes();
  auto data = b.CreateVector(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  return fbs::CreateTensorData(b, static_cast<int32_t>(t.dtype()), shape, data);
}

Offset<fbs::Recipe> write_recipe(FlatBufferBuilder& b, const ir::WeightRecipe& r) {
  std::vector<Offset<fbs::Recipe>> args;
  for (const ir::WeightRecipe& a : r.args) args.push_back(write_recipe(b, a));
  return fbs::CreateRecipeDirect(b, static_cast<uint8_t>(r.op), r.index, &args, &r.ints, &r.floats);
}

Offset<fbs::Attr> write_attr(FlatBufferBuilder& b, const std::string& name, const ir::AttributeValue& value) {
  auto n = b.CreateString(name);
  Offset<flatbuffers::String> s = 0;
  Offset<flatbuffers::Vector<int64_t>> ints = 0;
  Offset<flatbuffers::Vector<float>> floats = 0;
  Offset<flatbuffers::Vector<Offset<flatbuffers::String>>> strings = 0;
  Offset<fbs::TensorData> t = 0;
  int64_t i = 0;
  float f = 0;
  const auto kind = static_cast<fbs::AttrKind>(value.index());
  switch (value.index()) {
    case 0:
      i = std::get<int64_t>(value);
      break;
    case 1:
      f = std::get<float>(value);
      break;
    case 2:
      s = b.CreateString(std::get<std::string>(value));
      break;
    case 3:
      ints = b.CreateVector(std::get<std::vector<int64_t>>(value));
      break;
    case 4:
      floats = b.CreateVector(std::get<std::vector<float>>(value));
      break;
    case 5:
      strings = b.CreateVectorOfStrings(std::get<std::vector<std::string>>(value));
      break;
    case 6:
      t = write_tensor(b, std::get<Tensor>(value));
      break;
    default:
      throw Error(ErrorCode::internal, "cpu plan: unknown attribute kind");
  }
  return fbs::CreateAttr(b, n, kind, i, f, s, ints, floats, strings, t);
}

Offset<fbs::Graph> write_graph(FlatBufferBuilder& b, const ir::Graph& g) {
  std::vector<Offset<fbs::Value>> values;
  for (size_t i = 0; i < g.num_values(); ++i) {
    const ir::Value& v = g.value(static_cast<ir::ValueId>(i));
    std::vector<Offset<fbs::Dim>> dims;
    if (v.type.shape) {
      for (const ir::Dim& d : *v.type.shape) {
        dims.push_back(fbs::CreateDimDirect(b, d.is_static() ? d.value() : -1,
                                            d.is_symbolic() ? d.symbol_name().c_str() : nullptr));
      }
    }
    const bool weight = v.recipe && v.producer == ir::k_no_node;
    Offset<fbs::TensorData> init = (v.initializer && !weight) ? write_tensor(b, *v.initializer) : 0;
    Offset<fbs::TensorData> inferred = v.inferred_value ? write_tensor(b, *v.inferred_value) : 0;
    Offset<fbs::Recipe> recipe = weight ? write_recipe(b, *v.recipe) : 0;
    values.push_back(fbs::CreateValueDirect(b, v.name.c_str(), static_cast<int32_t>(v.type.dtype),
                                            v.type.shape.has_value(), &dims, init, inferred, recipe));
  }
  std::vector<Offset<fbs::Node>> nodes;
  for (const ir::Node& n : g.nodes()) {
    std::vector<Offset<fbs::Attr>> attrs;
    for (const auto& [name, value] : n.attrs.all()) attrs.push_back(write_attr(b, name, value));
    nodes.push_back(fbs::CreateNodeDirect(b, n.name.c_str(), n.op_type.c_str(), n.domain.c_str(), n.opset,
                                          &n.inputs, &n.outputs, &attrs));
  }
  return fbs::CreateGraphDirect(b, g.source.c_str(), &values, &nodes, &g.inputs(), &g.outputs());
}

// ---- reading ----

// Plans store dtypes by their persistent values, which are ONNX's codes.
std::optional<DType> read_dtype(int32_t code) { return dtype_from_onnx(code); }

std::vector<int64_t> read_ints(const flatbuffers::Vector<int64_t>* v) {
  // The verifier checks the alignment of a vector's length, not of its 8-byte
  // elements: a crafted plan can place them off alignment, so copy bytes
  // (little-endian, as FlatBuffers stores them) instead of loading int64s.
  std::vector<int64_t> out(v ? v->size() : 0);
  if (!out.empty()) std::memcpy(out.data(), v->Data(), out.size() * sizeof(int64_t));
  return out;
}

std::string read_string(const flatbuffers::String* s) { return s ? s->str() : std::string(); }

Tensor read_tensor(const fbs::TensorData* t) {
  if (!t) corrupt("missing tensor");
  auto dtype = read_dtype(t->dtype());
  if (!dtype || dtype_size(*dtype) == 0) corrupt("bad tensor dtype");
  std::vector<int64_t> shape = read_ints(t->shape());
  const size_t available = t->data() ? t->data()->size() : 0;
  uint64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0 || (d > 0 && numel > available / static_cast<uint64_t>(d))) corrupt("bad tensor shape");
    numel *= static_cast<uint64_t>(d);
  }
  if (numel * dtype_size(*dtype) != available) corrupt("tensor data does not match its shape");
  Tensor out = Tensor::zeros(*dtype, shape);
  if (available) std::memcpy(out.mutable_bytes().data(), t->data()->data(), available);
  return out;
}

ir::WeightRecipe read_recipe(const fbs::Recipe* r) {
  if (r->op() > static_cast<uint8_t>(ir::WeightRecipe::Op::zeros)) corrupt("bad recipe op");
  ir::WeightRecipe out;
  out.op = static_cast<ir::WeightRecipe::Op>(r->op());
  out.index = r->index();
  if (r->args()) {
    for (const fbs::Recipe* a : *r->args()) out.args.push_back(read_recipe(a));
  }
  out.ints = read_ints(r->ints());
  if (r->floats()) out.floats.assign(r->floats()->begin(), r->floats()->end());
  return out;
}

ir::AttributeValue read_attr(const fbs::Attr* a) {
  switch (a->kind()) {
    case fbs::AttrKind::Int:
      return a->i();
    case fbs::AttrKind::Float:
      return a->f();
    case fbs::AttrKind::String:
      return read_string(a->s());
    case fbs::AttrKind::Ints:
      return read_ints(a->ints());
    case fbs::AttrKind::Floats:
      return a->floats() ? std::vector<float>(a->floats()->begin(), a->floats()->end())
                         : std::vector<float>{};
    case fbs::AttrKind::Strings: {
      std::vector<std::string> out;
      if (a->strings()) {
        for (const flatbuffers::String* s : *a->strings()) out.push_back(read_string(s));
      }
      return out;
    }
    case fbs::AttrKind::Tensor:
      return read_tensor(a->t());
  }
  corrupt("bad attribute kind");
}

ir::Graph read_graph(const fbs::Graph* fg) {
  if (!fg || !fg->values() || !fg->nodes()) corrupt("missing graph");
  ir::Graph g;
  g.source = read_string(fg->source());
  const auto nv = static_cast<int64_t>(fg->values()->size());
  auto check_value = [&](int32_t id, bool allow_none) {
    if ((allow_none && id == ir::k_no_value) || (id >= 0 && id < nv)) return;
    corrupt("value index " + std::to_string(id) + " out of range");
  };
  for (const fbs::Value* fv : *fg->values()) {
    ir::ValueType type;
    auto dtype = fv->dtype() == 0 ? std::optional<DType>(DType::undefined) : read_dtype(fv->dtype());
    if (!dtype) corrupt("bad value dtype");
    type.dtype = *dtype;
    if (fv->has_rank()) {
      ir::Dims dims;
      if (fv->dims()) {
        for (const fbs::Dim* d : *fv->dims()) {
          if (d->value() >= 0) {
            dims.emplace_back(d->value());
          } else if (d->symbol() && d->symbol()->size() > 0) {
            dims.push_back(ir::Dim::symbol(d->symbol()->str()));
          } else {
            dims.emplace_back();
          }
        }
      }
      type.shape = std::move(dims);
    }
    ir::ValueId id = fv->initializer()
                         ? g.add_initializer(read_string(fv->name()), read_tensor(fv->initializer()))
                         : g.add_value(read_string(fv->name()), type);
    ir::Value& v = g.value(id);
    v.type = type;
    if (fv->inferred()) v.inferred_value = read_tensor(fv->inferred());
    if (fv->recipe()) {
      if (fv->initializer()) corrupt("a weight with a value");
      v.recipe = read_recipe(fv->recipe());
    }
  }
  std::vector<bool> produced(static_cast<size_t>(nv), false);
  for (const fbs::Node* fn : *fg->nodes()) {
    ir::Node n;
    n.name = read_string(fn->name());
    n.op_type = read_string(fn->op_type());
    n.domain = read_string(fn->domain());
    n.opset = fn->opset();
    if (fn->inputs()) n.inputs.assign(fn->inputs()->begin(), fn->inputs()->end());
    if (fn->outputs()) n.outputs.assign(fn->outputs()->begin(), fn->outputs()->end());
    for (ir::ValueId v : n.inputs) check_value(v, true);
    for (ir::ValueId v : n.outputs) {
      check_value(v, true);
      if (v == ir::k_no_value) continue;
      const ir::Value& value = g.value(v);
      if (produced[static_cast<size_t>(v)] || value.initializer || value.recipe)
        corrupt("a value produced twice");
      produced[static_cast<size_t>(v)] = true;
    }
    if (fn->attrs()) {
      for (const fbs::Attr* a : *fn->attrs()) n.attrs.set(read_string(a->name()), read_attr(a));
    }
    g.add_node(std::move(n));
  }
  if (fg->inputs()) {
    for (int32_t v : *fg->inputs()) {
      check_value(v, false);
      if (produced[static_cast<size_t>(v)]) corrupt("a graph input is produced by a node");
      g.add_input(v);
    }
  }
  if (fg->outputs()) {
    for (int32_t v : *fg->outputs()) {
      check_value(v, false);
      g.add_output(v);
    }
  }
  (void)g.topological_order();  // throws invalid_model on a cycle
  return g;
}

}  // namespace

std::vector<std::byte> serialize_plan(const EnginePlan& plan) {
  FlatBufferBuilder b(64 * 1024);
  auto graph = write_graph(b, plan.graph);
  std::vector<Offset<fbs::Spec>> specs;
  for (const InputSpec& s : plan.specs) {
    specs.push_back(
        fbs::CreateSpecDirect(b, s.name.c_str(), static_cast<int32_t>(s.dtype), &s.min, &s.opt, &s.max));
  }
  std::vector<Offset<fbs::Layer>> layers;
  for (const LayerDesc& l : plan.layers) {
    Offset<fbs::ConvTactic> dw_tactic = 0;
    if (l.dw_conv != ir::k_no_node && !l.dw_fused) {
      const Tactic& t = l.dw_tactic;
      dw_tactic = fbs::CreateConvTacticDirect(b, static_cast<uint8_t>(t.algo), static_cast<uint8_t>(t.layout),
                                              static_cast<uint8_t>(t.precision), t.name.c_str(), t.time_ms);
    }
    layers.push_back(fbs::CreateLayerDirect(
        b, static_cast<uint8_t>(l.kind), &l.nodes, l.bias_add, l.residual_add, l.residual_input, l.activation,
        l.output, static_cast<uint8_t>(l.tactic.algo), static_cast<uint8_t>(l.tactic.layout),
        static_cast<uint8_t>(l.tactic.precision), l.tactic.name.c_str(), l.tactic.time_ms,
        static_cast<uint8_t>(l.tactic.weights), l.tactic.impl.empty() ? nullptr : l.tactic.impl.c_str(),
        l.dw_conv, l.dw_activation, l.dw_fused, dw_tactic));
  }
  const Fingerprint& f = plan.fingerprint;
  auto root = fbs::CreatePlanDirect(b, f.plan_version, f.backend.c_str(), f.library_version.c_str(),
                                    f.isa.c_str(), graph, &specs, &layers, plan.num_threads,
                                    plan.activation_bytes, plan.weight_bytes, plan.source_weight_count);
  fbs::FinishPlanBuffer(b, root);
  const uint8_t* data = b.GetBufferPointer();
  const size_t size = b.GetSize();
  std::vector<std::byte> out(size + k_checksum_bytes);
  std::memcpy(out.data(), data, size);
  const uint64_t h = fnv1a(data, size);
  for (size_t i = 0; i < k_checksum_bytes; ++i) out[size + i] = static_cast<std::byte>((h >> (8 * i)) & 0xff);
  return out;
}

EnginePlan parse_plan(std::span<const std::byte> bytes) {
  if (bytes.size() < k_checksum_bytes + 8) corrupt("truncated (" + std::to_string(bytes.size()) + " bytes)");
  const size_t size = bytes.size() - k_checksum_bytes;
  // An aligned copy: the verifier checks alignment, and callers' spans need not be aligned.
  std::vector<uint8_t> buffer(size);
  std::memcpy(buffer.data(), bytes.data(), size);
  uint64_t stored = 0;
  for (size_t i = 0; i < k_checksum_bytes; ++i) {
    stored |= static_cast<uint64_t>(std::to_integer<uint8_t>(bytes[size + i])) << (8 * i);
  }
  if (stored != fnv1a(buffer.data(), size)) corrupt("checksum mismatch (truncated or corrupted)");
  if (!fbs::PlanBufferHasIdentifier(buffer.data())) corrupt("not a CPU plan");
  flatbuffers::Verifier verifier(buffer.data(), buffer.size());
  if (!fbs::VerifyPlanBuffer(verifier)) corrupt("fails FlatBuffers verification");
  const fbs::Plan* p = fbs::GetPlan(buffer.data());
  if (p->plan_version() != k_plan_version) {
    corrupt("plan version " + std::to_string(p->plan_version()) + ", this kiln reads " +
            std::to_string(k_plan_version));
  }
  EnginePlan plan;
  plan.fingerprint.backend = read_string(p->backend());
  plan.fingerprint.plan_version = p->plan_version();
  plan.fingerprint.library_version = read_string(p->library_version());
  plan.fingerprint.isa = read_string(p->isa());
  plan.graph = read_graph(p->graph());
  const auto nn = static_cast<int64_t>(plan.graph.num_nodes());
  const auto nv = static_cast<int64_t>(plan.graph.num_values());
  if (!p->specs() || p->specs()->size() != plan.graph.inputs().size())
    corrupt("specs do not match the inputs");
  for (const fbs::Spec* s : *p->specs()) {
    InputSpec spec;
    spec.name = read_string(s->name());
    auto dtype = read_dtype(s->dtype());
    if (!dtype) corrupt("bad spec dtype");
    spec.dtype = *dtype;
    spec.min = read_ints(s->min());
    spec.opt = read_ints(s->opt());
    spec.max = read_ints(s->max());
    if (spec.min.size() != spec.opt.size() || spec.opt.size() != spec.max.size()) corrupt("bad spec ranks");
    for (size_t i = 0; i < spec.min.size(); ++i) {
      if (spec.min[i] < 0 || spec.min[i] > spec.opt[i] || spec.opt[i] > spec.max[i])
        corrupt("bad spec range");
    }
    plan.specs.push_back(std::move(spec));
  }
  if (!p->layers()) corrupt("no layers");
  std::vector<bool> covered(static_cast<size_t>(nn), false);
  auto check_node = [&](int32_t id, bool allow_none) {
    if ((allow_none && id == ir::k_no_node) || (id >= 0 && id < nn)) return;
    corrupt("node index " + std::to_string(id) + " out of range");
  };
  for (const fbs::Layer* fl : *p->layers()) {
    LayerDesc l;
    if (fl->kind() > k_last_layer_kind) corrupt("bad layer kind");
    l.kind = static_cast<LayerKind>(fl->kind());
    if (!fl->nodes() || fl->nodes()->size() == 0) corrupt("a layer without nodes");
    for (int32_t n : *fl->nodes()) {
      check_node(n, false);
      if (covered[static_cast<size_t>(n)]) corrupt("a node in two layers");
      covered[static_cast<size_t>(n)] = true;
      l.nodes.push_back(n);
    }
    check_node(fl->bias_add(), true);
    check_node(fl->residual_add(), true);
    check_node(fl->activation(), true);
    l.bias_add = fl->bias_add();
    l.residual_add = fl->residual_add();
    l.activation = fl->activation();
    l.residual_input = fl->residual_input();
    if (l.residual_input < -1 || l.residual_input > 1 ||
        (l.residual_add != ir::k_no_node &&
         (l.residual_input < 0 || plan.graph.node(l.residual_add).inputs.size() != 2))) {
      corrupt("bad residual input");
    }
    if (fl->output() < -1 || fl->output() >= nv) corrupt("bad layer output");
    l.output = fl->output();
    if (fl->algo() > k_last_conv_algo || fl->layout() > 2 || fl->precision() > 1 ||
        fl->weight_layout() > k_last_weight_layout) {
      corrupt("bad tactic");
    }
    l.tactic.algo = static_cast<ConvAlgo>(fl->algo());
    l.tactic.layout = static_cast<Layout>(fl->layout());
    l.tactic.precision = static_cast<Prec>(fl->precision());
    l.tactic.name = read_string(fl->tactic());
    l.tactic.time_ms = fl->time_ms();
    l.tactic.weights = static_cast<WeightLayout>(fl->weight_layout());
    l.tactic.impl = read_string(fl->impl());
    check_node(fl->dw_conv(), true);
    check_node(fl->dw_activation(), true);
    l.dw_conv = fl->dw_conv();
    l.dw_activation = fl->dw_activation();
    l.dw_fused = fl->dw_fused();
    if (l.dw_conv != ir::k_no_node && !l.dw_fused) {
      const fbs::ConvTactic* t = fl->dw_tactic();
      if (!t || t->algo() > k_last_conv_algo || t->layout() > 2 || t->precision() > 1)
        corrupt("bad depthwise tactic");
      l.dw_tactic = Tactic(static_cast<ConvAlgo>(t->algo()), static_cast<Layout>(t->layout()),
                           static_cast<Prec>(t->precision()), read_string(t->name()), t->time_ms());
    }
    plan.layers.push_back(std::move(l));
  }
  for (bool c : covered) {
    if (!c) corrupt("a node in no layer");
  }
  // The conv and matmul builders trust their layer's kind (a conv layer reads
  // a rank-4 input and a weight): the anchor must be a node this kiln would
  // build as that kind, or the plan is corrupt, not a crash.
  for (const LayerDesc& l : plan.layers) {
    if (l.kind != LayerKind::conv && l.kind != LayerKind::matmul) continue;
    const ir::Node& anchor = plan.graph.node(l.anchor());
    if (anchor.inputs.size() < 2 || anchor.inputs[0] == ir::k_no_value ||
        anchor.inputs[1] == ir::k_no_value || native_kind(plan.graph, l.anchor()) != l.kind) {
      corrupt("a layer whose kind does not fit its node");
    }
    if (l.dw_activation != ir::k_no_node && l.dw_conv == ir::k_no_node)
      corrupt("a depthwise activation alone");
    if (l.dw_conv == ir::k_no_node) continue;
    // The conv builder reads the depthwise node's weights and bias and the
    // 1x1 node's geometry; both must be what the partition would attach.
    const auto in_layer = [&](ir::NodeId n) {
      return std::find(l.nodes.begin(), l.nodes.end(), n) != l.nodes.end();
    };
    if (l.kind != LayerKind::conv || !in_layer(l.dw_conv) || l.residual_add != ir::k_no_node ||
        (l.dw_activation != ir::k_no_node && !in_layer(l.dw_activation)) ||
        !can_attach_depthwise(plan.graph, l.anchor(), l.dw_conv)) {
      corrupt("a depthwise conv that cannot be attached to its layer");
    }
    // The chain the builder assumes: 1x1 conv (-> activation) -> depthwise
    // conv (-> activation) = the layer's output.
    const ir::Node& dw = plan.graph.node(l.dw_conv);
    const ir::NodeId feeds_dw = l.activation != ir::k_no_node ? l.activation : l.anchor();
    const ir::Node& pw_last = plan.graph.node(feeds_dw);
    const ir::ValueId dw_out = dw.outputs.empty() ? ir::k_no_value : dw.outputs[0];
    const ir::ValueId last =
        l.dw_activation != ir::k_no_node && !plan.graph.node(l.dw_activation).outputs.empty()
            ? plan.graph.node(l.dw_activation).outputs[0]
            : dw_out;
    if (pw_last.outputs.empty() || dw.inputs[0] != pw_last.outputs[0] || l.output != last ||
        (l.dw_activation != ir::k_no_node && (plan.graph.node(l.dw_activation).inputs.empty() ||
                                              plan.graph.node(l.dw_activation).inputs[0] != dw_out))) {
      corrupt("a depthwise conv that does not read its layer's 1x1 conv");
    }
  }
  plan.num_threads = p->num_threads();
  plan.activation_bytes = p->activation_bytes();
  plan.weight_bytes = p->weight_bytes();
  plan.source_weight_count = p->source_weight_count();
  if (plan.source_weight_count < 0) corrupt("bad source weight count");
  return plan;
}

}  // namespace kiln::cpu
