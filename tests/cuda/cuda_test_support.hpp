// What the cuda backend's test binaries share: zoo models imported as a
// user's would be, whether this machine has a GPU, and deterministic inputs.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "backends/cuda/device.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "kiln/settings.hpp"
#include "kiln/tensor.hpp"
#include "passes/passes.hpp"
#include "zoo/zoo.hpp"

namespace kiln::testing {

inline frontend::ImportedModel zoo_model(const std::string& name, uint64_t seed) {
  std::string bytes = zoo::build_zoo_model(name, {seed, std::nullopt}).onnx_bytes;
  return frontend::import_onnx_bytes(std::as_bytes(std::span<const char>(bytes)), name + ".onnx");
}

// A zoo model as a backend's build() takes it: lowered, with its weights
// materialized, and the source weights a refit replays.
struct LoweredModel {
  ir::Graph lowered;
  std::vector<Tensor> sources;
};

inline LoweredModel lowered_zoo_model(const std::string& name, uint64_t seed) {
  const frontend::ImportedModel model = zoo_model(name, seed);
  LoweredModel out{passes::lower(model.graph), passes::source_weights(model.graph)};
  passes::materialize_weights(out.lowered, out.sources);
  return out;
}

inline bool has_gpu() { return cuda::probe_gpu().gpu.has_value(); }

// max |got - want| / max |want| over every element of every output; NaN when
// `got` holds a NaN (an output never written), which fails any bound.
inline double relative_error(std::span<const Tensor> got, std::span<const Tensor> want) {
  EXPECT_EQ(got.size(), want.size());
  double err = 0, scale = 0;
  for (size_t o = 0; o < std::min(got.size(), want.size()); ++o) {
    EXPECT_EQ(got[o].shape(), want[o].shape());
    auto g = got[o].data<float>();
    auto w = want[o].data<float>();
    for (size_t i = 0; i < std::min(g.size(), w.size()); ++i) {
      const double e = std::abs(double(g[i]) - double(w[i]));
      err = std::isnan(e) ? e : std::max(err, e);
      if (std::isnan(err)) return err;
      scale = std::max(scale, std::abs(double(w[i])));
    }
  }
  return err / std::max(scale, 1e-30);
}

inline double relative_error(const Tensor& got, const Tensor& want) {
  return relative_error(std::span<const Tensor>(&got, 1), std::span<const Tensor>(&want, 1));
}

// A test fixture for GPU tests: skipped where no GPU is present; settings()
// compile on the cuda backend without the engine or timing caches.
class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!has_gpu()) GTEST_SKIP() << "no GPU: " << cuda::probe_gpu().reason;
  }
  static CompileSettings settings() {
    CompileSettings s;
    s.backend = "cuda";
    s.timing_cache_path = "-";
    s.cache_built_engines = s.reuse_cached_engines = false;
    return s;
  }
};

// sin(0.37 i + phase): every element differs, and the values stay in [-1, 1].
inline Tensor ramp(std::vector<int64_t> shape, float phase = 0) {
  Tensor t = Tensor::zeros(DType::float32, std::move(shape));
  auto v = t.mutable_data<float>();
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(0.37f * static_cast<float>(i) + phase);
  return t;
}

// Whether two runs' outputs are the same bits, output by output; the
// failure names the first output that differs.
inline ::testing::AssertionResult same_bits(std::span<const Tensor> a, std::span<const Tensor> b) {
  if (a.size() != b.size())
    return ::testing::AssertionFailure() << a.size() << " outputs against " << b.size();
  for (size_t o = 0; o < a.size(); ++o) {
    if (a[o].byte_size() != b[o].byte_size() ||
        std::memcmp(a[o].bytes().data(), b[o].bytes().data(), a[o].byte_size()) != 0)
      return ::testing::AssertionFailure() << "output " << o << " differs";
  }
  return ::testing::AssertionSuccess();
}

// Builders for small hand-made graphs.
inline ir::ValueId int64s(ir::Graph& g, const std::string& name, std::vector<int64_t> values) {
  const auto n = static_cast<int64_t>(values.size());
  return g.add_initializer(name, Tensor::from_values<int64_t>({n}, values));
}

inline ir::NodeId add_node(ir::Graph& g, const std::string& op, std::vector<ir::ValueId> inputs,
                           std::vector<ir::ValueId> outputs, ir::Attributes attrs = {}) {
  ir::Node n;
  n.name = op + "_" + std::to_string(g.num_nodes());
  n.op_type = op;
  n.opset = 17;
  n.inputs = std::move(inputs);
  n.outputs = std::move(outputs);
  n.attrs = std::move(attrs);
  return g.add_node(std::move(n));
}

inline ir::Attributes ints(const std::string& name, std::vector<int64_t> values) {
  ir::Attributes a;
  a.set(name, std::move(values));
  return a;
}

}  // namespace kiln::testing
