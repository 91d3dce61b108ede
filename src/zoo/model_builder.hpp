// A small helper for writing ONNX models op by op, the way an exporter
// would, with seeded pseudo-random weights. The zoo uses it to build real
// architectures without downloading anything.
//
// Weights come from a splitmix64 + Box-Muller generator rather than
// <random>'s distributions, whose output is implementation-defined: the same
// seed gives the same bytes on every platform and standard library.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace onnx {
class ModelProto;
class GraphProto;
class NodeProto;
}  // namespace onnx

namespace kiln::zoo {

class SeededRandom {
 public:
  explicit SeededRandom(uint64_t seed) : m_state(seed) {}
  uint64_t next_u64();
  double uniform();  // [0, 1)
  float normal(float stddev);

 private:
  uint64_t m_state;
};

// An attribute for ModelBuilder::node: int, float, ints or string.
struct Attr {
  std::string name;
  enum class Kind { int_value, float_value, ints_value, string_value } kind;
  int64_t i = 0;
  float f = 0;
  std::vector<int64_t> ints;
  std::string s;

  static Attr of(std::string name, int64_t v) { return {std::move(name), Kind::int_value, v, 0, {}, {}}; }
  static Attr of(std::string name, float v) { return {std::move(name), Kind::float_value, 0, v, {}, {}}; }
  static Attr of(std::string name, std::vector<int64_t> v) {
    return {std::move(name), Kind::ints_value, 0, 0, std::move(v), {}};
  }
  static Attr of(std::string name, std::string v) {
    return {std::move(name), Kind::string_value, 0, 0, {}, std::move(v)};
  }
};

// A dimension of a graph input/output: a size, or a symbol when `symbol` is set.
struct IoDim {
  int64_t size = 0;
  std::string symbol;
};

class ModelBuilder {
 public:
  ModelBuilder(std::string graph_name, int64_t opset, uint64_t seed);
  ~ModelBuilder();
  ModelBuilder(const ModelBuilder&) = delete;
  ModelBuilder& operator=(const ModelBuilder&) = delete;

  void add_input(const std::string& name, int32_t onnx_dtype, const std::vector<IoDim>& dims);
  void add_output(const std::string& name, int32_t onnx_dtype, const std::vector<IoDim>& dims);

  // Float weights ~ N(0, stddev²) (stddev 0: all `fill`); returns the name.
  std::string weight(const std::string& name, const std::vector<int64_t>& dims, float stddev, float fill = 0);
  // A positive float weight in [lo, hi) (BatchNorm variances, scales).
  std::string uniform_weight(const std::string& name, const std::vector<int64_t>& dims, float lo, float hi);
  std::string int64_constant(const std::string& name, const std::vector<int64_t>& dims,
                             const std::vector<int64_t>& values);
  std::string float_constant(const std::string& name, const std::vector<int64_t>& dims,
                             const std::vector<float>& values);

  // Appends a node and returns its first output's name. Outputs default to
  // one, named after the node.
  std::string node(const std::string& op_type, const std::string& name,
                   const std::vector<std::string>& inputs, const std::vector<Attr>& attrs = {},
                   std::vector<std::string> outputs = {});

  // Number of float parameters that are not BatchNorm running statistics.
  int64_t parameter_count() const { return m_parameters; }
  void exclude_from_parameters(int64_t count) { m_parameters -= count; }

  std::string serialize() const;
  const onnx::ModelProto& model() const { return *m_model; }

 private:
  std::unique_ptr<onnx::ModelProto> m_model;
  onnx::GraphProto* m_graph;
  SeededRandom m_random;
  int64_t m_parameters = 0;
};

}  // namespace kiln::zoo
