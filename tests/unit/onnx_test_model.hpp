// A one-graph ONNX model written field by field, for tests whose expected
// outputs (or types) follow from the ONNX spec by hand, and for small models
// of the layers a backend must run (with the float inputs to run them on).
// The one builder of the unit tests: add what a test needs here rather than
// writing another.
#pragma once

#include <onnx/onnx_pb.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

#include "frontend/onnx/onnx_importer.hpp"
#include "kiln/tensor.hpp"

namespace kiln::testing {

// Deterministic values 0.1 * scale * sin(0.7 i + phase): smooth and signed.
inline std::vector<float> wave(int64_t n, double phase, double scale = 1.0) {
  std::vector<float> v(static_cast<size_t>(n));
  for (size_t i = 0; i < v.size(); ++i) {
    v[i] = static_cast<float>(0.1 * scale * std::sin(0.7 * static_cast<double>(i) + phase));
  }
  return v;
}

inline int64_t numel(const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

// Node output names: one ("y") or several ({"y", "mean"}).
struct Names {
  Names(const char* name) : names{name} {}                          // NOLINT: implicit by design
  Names(std::string name) : names{std::move(name)} {}               // NOLINT
  Names(std::initializer_list<std::string> list) : names(list) {}   // NOLINT
  Names(std::vector<std::string> list) : names(std::move(list)) {}  // NOLINT
  std::vector<std::string> names;
};

// A one-graph ONNX model: inputs, initializers and nodes.
class ProtoModel {
 public:
  // IR version 8 below opset 18, else 10 (what exporters write).
  explicit ProtoModel(int64_t opset) : ProtoModel(opset >= 18 ? 10 : 8, opset) {}
  ProtoModel(int64_t ir_version, int64_t opset) {
    m_model.set_ir_version(ir_version);
    m_model.set_producer_name("kiln-test");
    m_model.add_opset_import()->set_version(opset);
    m_model.mutable_graph()->set_name("g");
  }
  onnx::ModelProto& proto() { return m_model; }
  onnx::GraphProto& graph() { return *m_model.mutable_graph(); }

  void input(const std::string& name, int elem, const std::vector<int64_t>& dims) {
    auto* v = graph().add_input();
    v->set_name(name);
    auto* t = v->mutable_type()->mutable_tensor_type();
    t->set_elem_type(elem);
    auto* shape = t->mutable_shape();
    for (int64_t d : dims) shape->add_dim()->set_dim_value(d);
  }
  // A float32 input with the values a run feeds it (inputs() in order):
  // `values`, or a wave with a phase of its own.
  void input(const std::string& name, const std::vector<int64_t>& dims, std::vector<float> values = {}) {
    input(name, onnx::TensorProto::FLOAT, dims);
    if (values.empty()) values = wave(numel(dims), 0.3 * (1 + static_cast<double>(m_inputs.size())), 10);
    m_inputs.push_back(Tensor::from_values<float>(dims, values));
  }
  // The values of the inputs declared with data, in order.
  const std::vector<Tensor>& inputs() const { return m_inputs; }

  // The checker wants a graph output's shape; its rank is enough.
  void output(const std::string& name, int elem, size_t rank) {
    auto* v = graph().add_output();
    v->set_name(name);
    auto* t = v->mutable_type()->mutable_tensor_type();
    t->set_elem_type(elem);
    auto* shape = t->mutable_shape();
    for (size_t i = 0; i < rank; ++i) shape->add_dim();
  }
  // An output of static `dims`.
  void output_shaped(const std::string& name, int elem, const std::vector<int64_t>& dims) {
    auto* v = graph().add_output();
    v->set_name(name);
    auto* t = v->mutable_type()->mutable_tensor_type();
    t->set_elem_type(elem);
    auto* shape = t->mutable_shape();
    for (int64_t d : dims) shape->add_dim()->set_dim_value(d);
  }
  // An output without a shape.
  void output(const std::string& name, int elem) {
    auto* v = graph().add_output();
    v->set_name(name);
    v->mutable_type()->mutable_tensor_type()->set_elem_type(elem);
  }
  // An int64 (or int32) initializer of shape `dims`.
  void indices(const std::string& name, const std::vector<int64_t>& dims, const std::vector<int64_t>& values,
               int elem = onnx::TensorProto::INT64) {
    auto* t = graph().add_initializer();
    t->set_name(name);
    t->set_data_type(elem);
    for (int64_t d : dims) t->add_dims(d);
    for (int64_t v : values) {
      if (elem == onnx::TensorProto::INT32)
        t->add_int32_data(static_cast<int32_t>(v));
      else
        t->add_int64_data(v);
    }
  }
  // A 1-D int64 initializer.
  void ints(const std::string& name, const std::vector<int64_t>& values) {
    indices(name, {static_cast<int64_t>(values.size())}, values);
  }
  // A float initializer of shape `dims`.
  void floats(const std::string& name, const std::vector<int64_t>& dims, const std::vector<float>& values) {
    auto* t = graph().add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t d : dims) t->add_dims(d);
    for (float v : values) t->add_float_data(v);
  }
  // A float scalar (rank-0) initializer.
  void scalar(const std::string& name, float value) { floats(name, {}, {value}); }
  // A float weight of `dims`: scale * wave, phased by its position among the
  // initializers (1 for the first), plus `offset`.
  void weight(const std::string& name, const std::vector<int64_t>& dims, double scale = 1.0,
              double offset = 0.0) {
    std::vector<float> values = wave(numel(dims), 1.1 * (graph().initializer_size() + 1), scale);
    for (float& x : values) x += static_cast<float>(offset);
    floats(name, dims, values);
  }
  // A bool scalar initializer.
  void boolean(const std::string& name, bool value) {
    auto* t = graph().add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::BOOL);
    t->add_int32_data(value ? 1 : 0);
  }
  // A node named after its op and position ("Relu_3").
  onnx::NodeProto* node(const std::string& op, const std::vector<std::string>& inputs, const Names& outputs) {
    return node(op, op + "_" + std::to_string(graph().node_size() + 1), inputs, outputs);
  }
  onnx::NodeProto* node(const std::string& op, const std::string& name,
                        const std::vector<std::string>& inputs, const Names& outputs) {
    auto* n = graph().add_node();
    n->set_op_type(op);
    n->set_name(name);
    for (const auto& i : inputs) n->add_input(i);
    for (const auto& o : outputs.names) n->add_output(o);
    return n;
  }
  std::string bytes() const { return m_model.SerializeAsString(); }
  frontend::ImportedModel import(const std::string& source = "test.onnx") const {
    std::string b = bytes();
    return frontend::import_onnx_bytes(std::as_bytes(std::span<const char>(b)), source);
  }

 private:
  onnx::ModelProto m_model;
  std::vector<Tensor> m_inputs;
};

inline void set_int(onnx::NodeProto* n, const std::string& name, int64_t v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}
inline void set_float(onnx::NodeProto* n, const std::string& name, float v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(v);
}
inline void set_ints(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t x : v) a->add_ints(x);
}
inline void set_string(onnx::NodeProto* n, const std::string& name, const std::string& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s(v);
}
// A one-element tensor attribute of ONNX type `elem` (ConstantOfShape's value).
inline void set_scalar_tensor(onnx::NodeProto* n, const std::string& name, int elem, double v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::TENSOR);
  auto* t = a->mutable_t();
  t->set_data_type(elem);
  t->add_dims(1);
  if (elem == onnx::TensorProto::FLOAT)
    t->add_float_data(static_cast<float>(v));
  else if (elem == onnx::TensorProto::INT64)
    t->add_int64_data(static_cast<int64_t>(v));
  else
    t->add_int32_data(static_cast<int32_t>(v));  // int32, bool and the smaller integers
}

}  // namespace kiln::testing
