#include "zoo/model_builder.hpp"

#include <onnx/onnx_pb.h>
#include <cmath>

#include "kiln/error.hpp"

namespace kiln::zoo {

uint64_t SeededRandom::next_u64() {
  uint64_t z = (m_state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

double SeededRandom::uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

float SeededRandom::normal(float stddev) {
  double u1 = uniform();
  double u2 = uniform();
  if (u1 < 1e-300) u1 = 1e-300;
  return static_cast<float>(stddev * std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
}

namespace {
void set_dims(onnx::ValueInfoProto* info, int32_t dtype, const std::vector<IoDim>& dims) {
  auto* tensor_type = info->mutable_type()->mutable_tensor_type();
  tensor_type->set_elem_type(dtype);
  auto* shape = tensor_type->mutable_shape();
  for (const IoDim& d : dims) {
    auto* dim = shape->add_dim();
    if (d.symbol.empty()) {
      dim->set_dim_value(d.size);
    } else {
      dim->set_dim_param(d.symbol);
    }
  }
}

int64_t numel(const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}
}  // namespace

ModelBuilder::ModelBuilder(std::string graph_name, int64_t opset, uint64_t seed)
    : m_model(std::make_unique<onnx::ModelProto>()), m_random(seed) {
  m_model->set_ir_version(8);
  m_model->set_producer_name("kiln-zoo");
  m_model->set_producer_version("1");
  auto* op = m_model->add_opset_import();
  op->set_domain("");
  op->set_version(opset);
  m_graph = m_model->mutable_graph();
  m_graph->set_name(std::move(graph_name));
}

ModelBuilder::~ModelBuilder() = default;

void ModelBuilder::add_input(const std::string& name, int32_t onnx_dtype, const std::vector<IoDim>& dims) {
  auto* info = m_graph->add_input();
  info->set_name(name);
  set_dims(info, onnx_dtype, dims);
}

void ModelBuilder::add_output(const std::string& name, int32_t onnx_dtype, const std::vector<IoDim>& dims) {
  auto* info = m_graph->add_output();
  info->set_name(name);
  set_dims(info, onnx_dtype, dims);
}

namespace {
// Adds a float initializer whose i-th value is `value(i)`, as raw_data.
template <typename ValueFn>
void add_float_initializer(onnx::GraphProto* graph, const std::string& name, const std::vector<int64_t>& dims,
                           ValueFn&& value) {
  auto* t = graph->add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims) t->add_dims(d);
  int64_t n = numel(dims);
  std::string raw(static_cast<size_t>(n) * sizeof(float), '\0');
  auto* values = reinterpret_cast<float*>(raw.data());
  for (int64_t i = 0; i < n; ++i) values[i] = value();
  t->set_raw_data(std::move(raw));
}
}  // namespace

std::string ModelBuilder::weight(const std::string& name, const std::vector<int64_t>& dims, float stddev,
                                 float fill) {
  add_float_initializer(m_graph, name, dims, [&] { return stddev > 0 ? m_random.normal(stddev) : fill; });
  m_parameters += numel(dims);
  return name;
}

std::string ModelBuilder::uniform_weight(const std::string& name, const std::vector<int64_t>& dims, float lo,
                                         float hi) {
  add_float_initializer(m_graph, name, dims,
                        [&] { return lo + static_cast<float>(m_random.uniform()) * (hi - lo); });
  m_parameters += numel(dims);
  return name;
}

std::string ModelBuilder::int64_constant(const std::string& name, const std::vector<int64_t>& dims,
                                         const std::vector<int64_t>& values) {
  if (numel(dims) != static_cast<int64_t>(values.size())) {
    throw Error(ErrorCode::internal, "zoo: constant '" + name + "' has the wrong number of values");
  }
  auto* t = m_graph->add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::INT64);
  for (int64_t d : dims) t->add_dims(d);
  for (int64_t v : values) t->add_int64_data(v);
  return name;
}

std::string ModelBuilder::float_constant(const std::string& name, const std::vector<int64_t>& dims,
                                         const std::vector<float>& values) {
  if (numel(dims) != static_cast<int64_t>(values.size())) {
    throw Error(ErrorCode::internal, "zoo: constant '" + name + "' has the wrong number of values");
  }
  auto* t = m_graph->add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims) t->add_dims(d);
  for (float v : values) t->add_float_data(v);
  return name;
}

std::string ModelBuilder::node(const std::string& op_type, const std::string& name,
                               const std::vector<std::string>& inputs, const std::vector<Attr>& attrs,
                               std::vector<std::string> outputs) {
  auto* n = m_graph->add_node();
  n->set_op_type(op_type);
  n->set_name(name);
  for (const auto& in : inputs) n->add_input(in);
  if (outputs.empty()) outputs.push_back(name + "_out");
  for (const auto& out : outputs) n->add_output(out);
  for (const Attr& a : attrs) {
    auto* attr = n->add_attribute();
    attr->set_name(a.name);
    switch (a.kind) {
      case Attr::Kind::int_value:
        attr->set_type(onnx::AttributeProto::INT);
        attr->set_i(a.i);
        break;
      case Attr::Kind::float_value:
        attr->set_type(onnx::AttributeProto::FLOAT);
        attr->set_f(a.f);
        break;
      case Attr::Kind::ints_value:
        attr->set_type(onnx::AttributeProto::INTS);
        for (int64_t v : a.ints) attr->add_ints(v);
        break;
      case Attr::Kind::string_value:
        attr->set_type(onnx::AttributeProto::STRING);
        attr->set_s(a.s);
        break;
    }
  }
  return outputs.front();
}

std::string ModelBuilder::serialize() const {
  std::string bytes;
  if (!m_model->SerializeToString(&bytes)) {
    throw Error(ErrorCode::internal, "zoo: cannot serialize model (over 2 GiB?)");
  }
  return bytes;
}

}  // namespace kiln::zoo
