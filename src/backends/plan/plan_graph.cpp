#include "backends/plan/plan_graph.hpp"

#include <cstring>
#include <optional>
#include <string>

namespace kiln::plan {

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

Offset<fb::TensorData> write_tensor(FlatBufferBuilder& b, const Tensor& t) {
  auto shape = b.CreateVector(t.shape());
  auto bytes = t.bytes();
  auto data = b.CreateVector(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  return fb::CreateTensorData(b, static_cast<int32_t>(t.dtype()), shape, data);
}

Offset<fb::Recipe> write_recipe(FlatBufferBuilder& b, const ir::WeightRecipe& r) {
  std::vector<Offset<fb::Recipe>> args;
  for (const ir::WeightRecipe& a : r.args) args.push_back(write_recipe(b, a));
  return fb::CreateRecipeDirect(b, static_cast<uint8_t>(r.op), r.index, &args, &r.ints, &r.floats);
}

Offset<fb::Attr> write_attr(FlatBufferBuilder& b, const std::string& name, const ir::AttributeValue& value) {
  auto n = b.CreateString(name);
  Offset<flatbuffers::String> s = 0;
  Offset<flatbuffers::Vector<int64_t>> ints = 0;
  Offset<flatbuffers::Vector<float>> floats = 0;
  Offset<flatbuffers::Vector<Offset<flatbuffers::String>>> strings = 0;
  Offset<fb::TensorData> t = 0;
  int64_t i = 0;
  float f = 0;
  const auto kind = static_cast<fb::AttrKind>(value.index());
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
      throw Error(ErrorCode::internal, "plan: unknown attribute kind");
  }
  return fb::CreateAttr(b, n, kind, i, f, s, ints, floats, strings, t);
}

}  // namespace

Offset<fb::Graph> write_graph(FlatBufferBuilder& b, const ir::Graph& g) {
  std::vector<Offset<fb::Value>> values;
  for (size_t i = 0; i < g.num_values(); ++i) {
    const ir::Value& v = g.value(static_cast<ir::ValueId>(i));
    std::vector<Offset<fb::Dim>> dims;
    if (v.type.shape) {
      for (const ir::Dim& d : *v.type.shape) {
        dims.push_back(fb::CreateDimDirect(b, d.is_static() ? d.value() : -1,
                                           d.is_symbolic() ? d.symbol_name().c_str() : nullptr));
      }
    }
    const bool weight = v.recipe && v.producer == ir::k_no_node;
    Offset<fb::TensorData> init = (v.initializer && !weight) ? write_tensor(b, *v.initializer) : 0;
    Offset<fb::TensorData> inferred = v.inferred_value ? write_tensor(b, *v.inferred_value) : 0;
    Offset<fb::Recipe> recipe = weight ? write_recipe(b, *v.recipe) : 0;
    values.push_back(fb::CreateValueDirect(b, v.name.c_str(), static_cast<int32_t>(v.type.dtype),
                                           v.type.shape.has_value(), &dims, init, inferred, recipe));
  }
  std::vector<Offset<fb::Node>> nodes;
  for (const ir::Node& n : g.nodes()) {
    std::vector<Offset<fb::Attr>> attrs;
    for (const auto& [name, value] : n.attrs.all()) attrs.push_back(write_attr(b, name, value));
    nodes.push_back(fb::CreateNodeDirect(b, n.name.c_str(), n.op_type.c_str(), n.domain.c_str(), n.opset,
                                         &n.inputs, &n.outputs, &attrs));
  }
  return fb::CreateGraphDirect(b, g.source.c_str(), &values, &nodes, &g.inputs(), &g.outputs());
}

Offset<flatbuffers::Vector<Offset<fb::Spec>>> write_specs(FlatBufferBuilder& b,
                                                          std::span<const InputSpec> specs) {
  std::vector<Offset<fb::Spec>> out;
  for (const InputSpec& s : specs) {
    out.push_back(
        fb::CreateSpecDirect(b, s.name.c_str(), static_cast<int32_t>(s.dtype), &s.min, &s.opt, &s.max));
  }
  return b.CreateVector(out);
}

std::vector<std::byte> seal(const FlatBufferBuilder& b) {
  const uint8_t* data = b.GetBufferPointer();
  const size_t size = b.GetSize();
  std::vector<std::byte> out(size + k_checksum_bytes);
  std::memcpy(out.data(), data, size);
  const uint64_t h = fnv1a(data, size);
  for (size_t i = 0; i < k_checksum_bytes; ++i) out[size + i] = static_cast<std::byte>((h >> (8 * i)) & 0xff);
  return out;
}

void corrupt(std::string_view what, std::string_view why) {
  throw Error(ErrorCode::invalid_model, std::string(what) + ": " + std::string(why));
}

std::vector<uint8_t> unseal(std::span<const std::byte> bytes, std::string_view what) {
  if (bytes.size() < k_checksum_bytes + 8)
    corrupt(what, "truncated (" + std::to_string(bytes.size()) + " bytes)");
  const size_t size = bytes.size() - k_checksum_bytes;
  std::vector<uint8_t> buffer(size);
  std::memcpy(buffer.data(), bytes.data(), size);
  uint64_t stored = 0;
  for (size_t i = 0; i < k_checksum_bytes; ++i) {
    stored |= static_cast<uint64_t>(std::to_integer<uint8_t>(bytes[size + i])) << (8 * i);
  }
  if (stored != fnv1a(buffer.data(), size)) corrupt(what, "checksum mismatch (truncated or corrupted)");
  return buffer;
}

std::vector<int64_t> read_ints(const flatbuffers::Vector<int64_t>* v) {
  // The verifier checks the alignment of a vector's length, not of its 8-byte
  // elements: a crafted plan can place them off alignment, so copy bytes
  // (little-endian, as FlatBuffers stores them) instead of loading int64s.
  std::vector<int64_t> out(v ? v->size() : 0);
  if (!out.empty()) std::memcpy(out.data(), v->Data(), out.size() * sizeof(int64_t));
  return out;
}

std::string read_string(const flatbuffers::String* s) { return s ? s->str() : std::string(); }

namespace {

// Plans store dtypes by their persistent values, which are ONNX's codes.
std::optional<DType> read_dtype(int32_t code) { return dtype_from_onnx(code); }

Tensor read_tensor(const fb::TensorData* t, std::string_view what) {
  if (!t) corrupt(what, "missing tensor");
  auto dtype = read_dtype(t->dtype());
  if (!dtype || dtype_size(*dtype) == 0) corrupt(what, "bad tensor dtype");
  std::vector<int64_t> shape = read_ints(t->shape());
  const size_t available = t->data() ? t->data()->size() : 0;
  uint64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0 || (d > 0 && numel > available / static_cast<uint64_t>(d))) corrupt(what, "bad tensor shape");
    numel *= static_cast<uint64_t>(d);
  }
  if (numel * dtype_size(*dtype) != available) corrupt(what, "tensor data does not match its shape");
  Tensor out = Tensor::zeros(*dtype, shape);
  if (available) std::memcpy(out.mutable_bytes().data(), t->data()->data(), available);
  return out;
}

ir::WeightRecipe read_recipe(const fb::Recipe* r, std::string_view what) {
  if (r->op() > static_cast<uint8_t>(ir::WeightRecipe::Op::zeros)) corrupt(what, "bad recipe op");
  ir::WeightRecipe out;
  out.op = static_cast<ir::WeightRecipe::Op>(r->op());
  out.index = r->index();
  if (r->args()) {
    for (const fb::Recipe* a : *r->args()) out.args.push_back(read_recipe(a, what));
  }
  out.ints = read_ints(r->ints());
  if (r->floats()) out.floats.assign(r->floats()->begin(), r->floats()->end());
  return out;
}

ir::AttributeValue read_attr(const fb::Attr* a, std::string_view what) {
  switch (a->kind()) {
    case fb::AttrKind::Int:
      return a->i();
    case fb::AttrKind::Float:
      return a->f();
    case fb::AttrKind::String:
      return read_string(a->s());
    case fb::AttrKind::Ints:
      return read_ints(a->ints());
    case fb::AttrKind::Floats:
      return a->floats() ? std::vector<float>(a->floats()->begin(), a->floats()->end())
                         : std::vector<float>{};
    case fb::AttrKind::Strings: {
      std::vector<std::string> out;
      if (a->strings()) {
        for (const flatbuffers::String* s : *a->strings()) out.push_back(read_string(s));
      }
      return out;
    }
    case fb::AttrKind::Tensor:
      return read_tensor(a->t(), what);
  }
  corrupt(what, "bad attribute kind");
}

}  // namespace

ir::Graph read_graph(const fb::Graph* fg, std::string_view what) {
  if (!fg || !fg->values() || !fg->nodes()) corrupt(what, "missing graph");
  ir::Graph g;
  g.source = read_string(fg->source());
  const auto nv = static_cast<int64_t>(fg->values()->size());
  auto check_value = [&](int32_t id, bool allow_none) {
    if ((allow_none && id == ir::k_no_value) || (id >= 0 && id < nv)) return;
    corrupt(what, "value index " + std::to_string(id) + " out of range");
  };
  for (const fb::Value* fv : *fg->values()) {
    ir::ValueType type;
    auto dtype = fv->dtype() == 0 ? std::optional<DType>(DType::undefined) : read_dtype(fv->dtype());
    if (!dtype) corrupt(what, "bad value dtype");
    type.dtype = *dtype;
    if (fv->has_rank()) {
      ir::Dims dims;
      if (fv->dims()) {
        for (const fb::Dim* d : *fv->dims()) {
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
                         ? g.add_initializer(read_string(fv->name()), read_tensor(fv->initializer(), what))
                         : g.add_value(read_string(fv->name()), type);
    ir::Value& v = g.value(id);
    v.type = type;
    if (fv->inferred()) v.inferred_value = read_tensor(fv->inferred(), what);
    if (fv->recipe()) {
      if (fv->initializer()) corrupt(what, "a weight with a value");
      v.recipe = read_recipe(fv->recipe(), what);
    }
  }
  std::vector<bool> produced(static_cast<size_t>(nv), false);
  for (const fb::Node* fn : *fg->nodes()) {
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
        corrupt(what, "a value produced twice");
      produced[static_cast<size_t>(v)] = true;
    }
    if (fn->attrs()) {
      for (const fb::Attr* a : *fn->attrs()) n.attrs.set(read_string(a->name()), read_attr(a, what));
    }
    g.add_node(std::move(n));
  }
  if (fg->inputs()) {
    for (int32_t v : *fg->inputs()) {
      check_value(v, false);
      if (produced[static_cast<size_t>(v)]) corrupt(what, "a graph input is produced by a node");
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

std::vector<InputSpec> read_specs(const flatbuffers::Vector<Offset<fb::Spec>>* specs, size_t graph_inputs,
                                  std::string_view what) {
  if (!specs || specs->size() != graph_inputs) corrupt(what, "specs do not match the inputs");
  std::vector<InputSpec> out;
  for (const fb::Spec* s : *specs) {
    InputSpec spec;
    spec.name = read_string(s->name());
    auto dtype = dtype_from_onnx(s->dtype());
    if (!dtype) corrupt(what, "bad spec dtype");
    spec.dtype = *dtype;
    spec.min = read_ints(s->min());
    spec.opt = read_ints(s->opt());
    spec.max = read_ints(s->max());
    if (spec.min.size() != spec.opt.size() || spec.opt.size() != spec.max.size())
      corrupt(what, "bad spec ranks");
    for (size_t i = 0; i < spec.min.size(); ++i) {
      if (spec.min[i] < 0 || spec.min[i] > spec.opt[i] || spec.opt[i] > spec.max[i])
        corrupt(what, "bad spec range");
    }
    out.push_back(std::move(spec));
  }
  return out;
}

}  // namespace kiln::plan
