// A one-graph ONNX model written field by field, for tests whose expected
// outputs (or types) follow from the ONNX spec by hand.
#pragma once

#include <onnx/onnx_pb.h>

#include <span>
#include <string>
#include <vector>

#include "frontend/onnx/onnx_importer.hpp"

namespace kiln::testing {

// A one-graph ONNX model: inputs, int initializers and nodes.
class ProtoModel {
 public:
  explicit ProtoModel(int64_t opset) {
    m_model.set_ir_version(opset >= 18 ? 10 : 8);
    m_model.set_producer_name("kiln-test");
    m_model.add_opset_import()->set_version(opset);
    m_model.mutable_graph()->set_name("g");
  }
  onnx::GraphProto& graph() { return *m_model.mutable_graph(); }

  void input(const std::string& name, int elem, const std::vector<int64_t>& dims) {
    auto* v = graph().add_input();
    v->set_name(name);
    auto* t = v->mutable_type()->mutable_tensor_type();
    t->set_elem_type(elem);
    auto* shape = t->mutable_shape();
    for (int64_t d : dims) shape->add_dim()->set_dim_value(d);
  }
  // The checker wants a graph output's shape; its rank is enough.
  void output(const std::string& name, int elem, size_t rank) {
    auto* v = graph().add_output();
    v->set_name(name);
    auto* t = v->mutable_type()->mutable_tensor_type();
    t->set_elem_type(elem);
    auto* shape = t->mutable_shape();
    for (size_t i = 0; i < rank; ++i) shape->add_dim();
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
  // A float initializer of shape `dims`.
  void floats(const std::string& name, const std::vector<int64_t>& dims, const std::vector<float>& values) {
    auto* t = graph().add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t d : dims) t->add_dims(d);
    for (float v : values) t->add_float_data(v);
  }
  // A bool scalar initializer.
  void boolean(const std::string& name, bool value) {
    auto* t = graph().add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::BOOL);
    t->add_int32_data(value ? 1 : 0);
  }
  onnx::NodeProto* node(const std::string& op, const std::vector<std::string>& inputs,
                        const std::string& out) {
    auto* n = graph().add_node();
    n->set_op_type(op);
    n->set_name(op + "_" + std::to_string(graph().node_size()));
    for (const auto& i : inputs) n->add_input(i);
    n->add_output(out);
    return n;
  }
  frontend::ImportedModel import(const std::string& source = "test.onnx") const {
    std::string b = m_model.SerializeAsString();
    return frontend::import_onnx_bytes(std::as_bytes(std::span<const char>(b)), source);
  }

 private:
  onnx::ModelProto m_model;
};

inline void set_int(onnx::NodeProto* n, const std::string& name, int64_t v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
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
