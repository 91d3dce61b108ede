// NaN and infinities through the cpu backend: a non-finite value in an
// engine's input must come out where the reference backend's does, never as
// a plausible finite number (oneDNN's relu, clip and max pooling drop NaN).
// Each op runs on inputs holding NaN, +Inf, -Inf and a mix, and once on
// finite inputs (the ordinary path); the reference kernels themselves are
// checked against PyTorch's semantics, since they are the oracle.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "backends/cpu/cpu_backend.hpp"
#include "backends/cpu/non_finite.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "passes/passes.hpp"
#include "reference/executor.hpp"
#include "zoo/model_builder.hpp"

#include "cpu_test_helpers.hpp"

namespace kiln {
namespace {

using zoo::Attr;
using zoo::IoDim;
using zoo::ModelBuilder;

constexpr int32_t k_float = 1;  // onnx::TensorProto::FLOAT
constexpr float k_nan = std::numeric_limits<float>::quiet_NaN();
constexpr float k_inf = std::numeric_limits<float>::infinity();

std::vector<IoDim> dims(const std::vector<int64_t>& sizes) {
  std::vector<IoDim> out;
  for (int64_t s : sizes) out.push_back({s, {}});
  return out;
}

std::vector<IoDim> any_dims(size_t rank) {
  std::vector<IoDim> out;
  for (size_t i = 0; i < rank; ++i) out.push_back({0, "d" + std::to_string(i)});
  return out;
}

ir::Graph import(const ModelBuilder& b) {
  const std::string bytes = b.serialize();
  return frontend::import_onnx_bytes(std::as_bytes(std::span<const char>(bytes)), "nan.onnx").graph;
}

// `got` has NaN exactly where `want` has, the same infinities, and finite
// values within `tolerance` of max|finite want|. Reports the first
// mismatches.
::testing::AssertionResult same_non_finite(const Tensor& got, const Tensor& want, double tolerance = 1e-3) {
  if (got.shape() != want.shape()) {
    return ::testing::AssertionFailure()
           << "shape " << got.shape_string() << ", want " << want.shape_string();
  }
  auto g = got.data<float>();
  auto w = want.data<float>();
  double scale = 1e-6;
  for (float v : w) {
    if (std::isfinite(v)) scale = std::max(scale, static_cast<double>(std::fabs(v)));
  }
  std::ostringstream bad;
  size_t mismatches = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    bool ok = false;
    if (std::isnan(w[i])) {
      ok = std::isnan(g[i]);
    } else if (std::isinf(w[i])) {
      ok = g[i] == w[i];
    } else {
      ok = std::isfinite(g[i]) && std::fabs(static_cast<double>(g[i]) - w[i]) <= tolerance * scale;
    }
    if (!ok && mismatches++ < 5) bad << " [" << i << "] got " << g[i] << ", want " << w[i] << ";";
  }
  if (mismatches == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << mismatches << " of " << w.size() << " values differ:" << bad.str();
}

bool any_non_finite(const Tensor& t) {
  for (float v : t.data<float>()) {
    if (!std::isfinite(v)) return true;
  }
  return false;
}

// sin(0.37 i) + 0.1 over `shape`: signed, no zeros.
Tensor finite_input(const std::vector<int64_t>& shape) {
  std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
  for (size_t i = 0; i < v.size(); ++i)
    v[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)) + 0.1);
  return Tensor::from_values<float>(shape, v);
}

// `finite_input` with `values` written at spread-out positions.
Tensor with_values(const std::vector<int64_t>& shape, const std::vector<float>& values) {
  Tensor t = finite_input(shape);
  auto d = t.mutable_data<float>();
  const size_t stride = d.size() / (values.size() + 1);
  for (size_t i = 0; i < values.size(); ++i) d[(i + 1) * stride + i % 3] = values[i];
  return t;
}

struct Case {
  std::string name;
  Tensor input;
};

std::vector<Case> non_finite_cases(const std::vector<int64_t>& shape) {
  return {{"nan", with_values(shape, {k_nan})},
          {"two_nans", with_values(shape, {k_nan, k_nan})},
          {"+inf", with_values(shape, {k_inf})},
          {"-inf", with_values(shape, {-k_inf})},
          {"mixed nan", with_values(shape, {k_nan, k_inf, -k_inf})}};
}

// Builds `graph` for the cpu backend at `shape` and compares every case, and
// finite inputs, with the reference backend.
void expect_like_reference(const std::string& op, const ir::Graph& graph, const std::vector<int64_t>& shape) {
  SCOPED_TRACE(op);
  auto backend = make_cpu_backend();
  const std::vector<Tensor> finite = {finite_input(shape)};
  auto engine = testing::build_engine(*backend, graph, finite, 1);
  const ref::Executor reference(graph);
  EXPECT_TRUE(same_non_finite(engine->run(finite)[0], reference.run(finite)[0])) << "finite input";
  for (const Case& c : non_finite_cases(shape)) {
    const std::vector<Tensor> inputs = {c.input};
    const Tensor want = reference.run(inputs)[0];
    // Saturating ops may turn an infinity into a finite value; NaN never.
    if (c.name.find("nan") != std::string::npos) {
      EXPECT_TRUE(any_non_finite(want)) << c.name << ": the reference drops NaN";
    }
    EXPECT_TRUE(same_non_finite(engine->run(inputs)[0], want)) << c.name;
  }
}

const std::vector<int64_t> k_image = {1, 4, 6, 6};
const std::vector<int64_t> k_rows = {2, 16};

// One node `op` over an input of `shape`, with extra inputs and attributes.
ir::Graph unary(const std::string& op, const std::vector<int64_t>& shape, const std::vector<Attr>& attrs = {},
                const std::vector<std::pair<std::string, float>>& scalars = {}) {
  ModelBuilder b("g", 17, 1);
  b.add_input("x", k_float, dims(shape));
  std::vector<std::string> inputs = {"x"};
  for (const auto& [name, value] : scalars) inputs.push_back(b.float_constant(name, {}, {value}));
  const std::string y = b.node(op, "n", inputs, attrs);
  b.add_output(y, k_float, any_dims(shape.size()));
  return import(b);
}

TEST(CpuNan, ActivationsPropagateNonFiniteInputs) {
  expect_like_reference("Relu", unary("Relu", k_image), k_image);
  expect_like_reference("Clip", unary("Clip", k_image, {}, {{"lo", -0.5f}, {"hi", 0.5f}}), k_image);
  expect_like_reference("Clip min only", unary("Clip", k_image, {}, {{"lo", 0.0f}}), k_image);
  expect_like_reference("LeakyRelu", unary("LeakyRelu", k_image, {Attr::of("alpha", 0.1f)}), k_image);
  expect_like_reference("Sigmoid", unary("Sigmoid", k_image), k_image);
  expect_like_reference("Tanh", unary("Tanh", k_image), k_image);
  expect_like_reference("Elu", unary("Elu", k_image), k_image);
  expect_like_reference("HardSigmoid", unary("HardSigmoid", k_image), k_image);
  expect_like_reference("HardSwish", unary("HardSwish", k_image), k_image);
  expect_like_reference("Softmax", unary("Softmax", k_rows, {Attr::of("axis", int64_t{-1})}), k_rows);
}

TEST(CpuNan, PoolingPropagatesNonFiniteInputs) {
  const std::vector<Attr> window = {Attr::of("kernel_shape", std::vector<int64_t>{3, 3}),
                                    Attr::of("strides", std::vector<int64_t>{1, 1}),
                                    Attr::of("pads", std::vector<int64_t>{1, 1, 1, 1})};
  expect_like_reference("MaxPool", unary("MaxPool", k_image, window), k_image);
  expect_like_reference("AveragePool", unary("AveragePool", k_image, window), k_image);
  expect_like_reference("GlobalAveragePool", unary("GlobalAveragePool", k_image), k_image);
  expect_like_reference("GlobalMaxPool", unary("GlobalMaxPool", k_image), k_image);
  expect_like_reference("ReduceMax", unary("ReduceMax", k_rows, {Attr::of("axes", std::vector<int64_t>{1})}),
                        k_rows);
}

// Conv (4 -> 4 channels, 3x3, pad 1) with bias, then `tail`: "" (the conv
// alone), "relu", or "residual" (+ x, then Relu).
ir::Graph conv(const std::string& tail) {
  ModelBuilder b("g", 17, 7);
  b.add_input("x", k_float, dims(k_image));
  const std::string w = b.weight("w", {4, 4, 3, 3}, 0.2f);
  const std::string bias = b.weight("bias", {4}, 0.1f);
  std::string y = b.node("Conv", "conv", {"x", w, bias},
                         {Attr::of("kernel_shape", std::vector<int64_t>{3, 3}),
                          Attr::of("pads", std::vector<int64_t>{1, 1, 1, 1})});
  if (tail == "residual") y = b.node("Add", "add", {y, "x"});
  if (!tail.empty()) y = b.node("Relu", "relu", {y});
  b.add_output(y, k_float, any_dims(4));
  return import(b);
}

// [2, 16] x [16, 8] as Gemm (with a bias row) or MatMul, then Relu.
ir::Graph dense(const std::string& op, bool relu) {
  ModelBuilder b("g", 17, 9);
  b.add_input("x", k_float, dims(k_rows));
  const std::string w = b.weight("w", {16, 8}, 0.3f);
  std::string y = op == "Gemm" ? b.node("Gemm", "fc", {"x", w, b.weight("c", {8}, 0.1f)})
                               : b.node("MatMul", "fc", {"x", w});
  if (relu) y = b.node("Relu", "relu", {y});
  b.add_output(y, k_float, any_dims(2));
  return import(b);
}

TEST(CpuNan, ConvAndMatmulLayersPropagateNonFiniteInputs) {
  expect_like_reference("Conv", conv(""), k_image);
  expect_like_reference("Conv+Relu", conv("relu"), k_image);
  expect_like_reference("Conv+Add+Relu", conv("residual"), k_image);
  expect_like_reference("Gemm", dense("Gemm", false), k_rows);
  expect_like_reference("Gemm+Relu", dense("Gemm", true), k_rows);
  expect_like_reference("MatMul+Relu", dense("MatMul", true), k_rows);
}

TEST(CpuNan, ResnetTinyWithOneNanPixelGivesNan) {
  auto backend = make_cpu_backend();
  const ir::Graph g = testing::import_zoo("resnet_tiny", 3);
  const std::vector<Tensor> finite = {testing::sine_images(2, 64)};
  auto engine = testing::build_engine(*backend, g, finite, 1);
  const ref::Executor reference(g);
  EXPECT_TRUE(same_non_finite(engine->run(finite)[0], reference.run(finite)[0]));
  for (float bad : {k_nan, k_inf, -k_inf}) {
    SCOPED_TRACE(bad);
    Tensor image = testing::sine_images(2, 64);
    image.mutable_data<float>()[64 * 10 + 10] = bad;  // image 0, channel 0, pixel (10, 10)
    const std::vector<Tensor> inputs = {image};
    const Tensor want = reference.run(inputs)[0];
    if (std::isnan(bad)) {
      ASSERT_TRUE(any_non_finite(want));
    }
    EXPECT_TRUE(same_non_finite(engine->run(inputs)[0], want));
  }
}

// A weight that is not finite (here a BatchNorm scale, folded into the conv
// kernel's reorder at refit) sends every run to the reference path; finite
// weights refitted afterwards bring the oneDNN path back.
TEST(CpuNan, NonFiniteWeightsPropagateAfterRefit) {
  auto backend = make_cpu_backend();
  ir::Graph g = testing::import_zoo("resnet_tiny", 3);
  const std::vector<Tensor> inputs = {testing::sine_images(1, 64)};
  auto engine = testing::build_engine(*backend, g, inputs, 1);
  const Tensor finite = engine->run(inputs)[0];
  for (float bad : {k_nan, k_inf}) {
    SCOPED_TRACE(bad);
    ir::Graph broken = g;
    bool changed = false;
    for (ir::ValueId id : passes::canonical_weights(broken)) {
      ir::Value& v = broken.value(id);
      if (v.name.find("bn") == std::string::npos && v.name.find("scale") == std::string::npos) continue;
      Tensor t = Tensor::zeros(DType::float32, v.initializer->shape());
      std::copy(v.initializer->data<float>().begin(), v.initializer->data<float>().end(),
                t.mutable_data<float>().begin());
      t.mutable_data<float>()[0] = bad;
      v.initializer = t;
      changed = true;
      break;
    }
    ASSERT_TRUE(changed);
    engine->refit(passes::source_weights(broken));
    const Tensor want = ref::Executor(broken).run(inputs)[0];
    ASSERT_TRUE(any_non_finite(want));
    EXPECT_TRUE(same_non_finite(engine->run(inputs)[0], want));
  }
  engine->refit(passes::source_weights(g));
  EXPECT_TRUE(testing::bitwise_equal(engine->run(inputs)[0], finite));
}

// The scan finds one NaN or infinity at any position (vector body, tail,
// threaded chunks) and nothing in the largest, smallest and subnormal
// finite floats.
TEST(CpuNan, ScanFindsEveryNonFiniteValue) {
  for (size_t n : {size_t{1}, size_t{15}, size_t{16}, size_t{17}, size_t{1000}, (size_t{1} << 20) * 3 + 5}) {
    std::vector<float> v(n, 1.0f);
    for (size_t i = 0; i < n; i += 7)
      v[i] = (i % 3 == 0)   ? std::numeric_limits<float>::max()
             : (i % 3 == 1) ? -std::numeric_limits<float>::denorm_min()
                            : -std::numeric_limits<float>::max();
    EXPECT_FALSE(cpu::has_non_finite(v, 2)) << n;
    for (size_t at : {size_t{0}, n / 2, n - 1}) {
      for (float bad : {k_nan, -k_nan, k_inf, -k_inf}) {
        const float kept = v[at];
        v[at] = bad;
        EXPECT_TRUE(cpu::has_non_finite(v, 2)) << n << " at " << at << ": " << bad;
        v[at] = kept;
      }
    }
  }
}

// The reference kernels are the oracle: NaN propagates as in PyTorch
// (torch.relu, clamp, max_pool2d, amax, hardsigmoid, elu all return NaN for
// a NaN input, wherever it sits in a window).
TEST(CpuNan, ReferenceKernelsPropagateNanAsPyTorchDoes) {
  const std::vector<int64_t> row = {1, 1, 1, 4};
  auto run = [&](const ir::Graph& g, const std::vector<float>& x) {
    const std::vector<Tensor> inputs = {Tensor::from_values<float>(row, x)};
    const Tensor y = ref::Executor(g).run(inputs)[0];
    auto d = y.data<float>();
    return std::vector<float>(d.begin(), d.end());
  };
  auto expect_nan_at = [](const std::vector<float>& got, const std::vector<bool>& nan,
                          const std::string& what) {
    ASSERT_EQ(got.size(), nan.size()) << what;
    for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(std::isnan(got[i]), nan[i]) << what << " [" << i << "]";
  };
  const std::vector<Attr> pair = {Attr::of("kernel_shape", std::vector<int64_t>{1, 2})};
  for (const std::vector<float>& x :
       {std::vector<float>{k_nan, 1, 2, 3}, std::vector<float>{1, k_nan, 2, 3}}) {
    const bool first = std::isnan(x[0]);
    const std::string at = first ? "NaN first" : "NaN second";
    expect_nan_at(run(unary("Relu", row), x), {first, !first, false, false}, "Relu, " + at);
    expect_nan_at(run(unary("Clip", row, {}, {{"lo", 0.f}, {"hi", 2.f}}), x), {first, !first, false, false},
                  "Clip, " + at);
    expect_nan_at(run(unary("HardSigmoid", row), x), {first, !first, false, false}, "HardSigmoid, " + at);
    expect_nan_at(run(unary("Elu", row), x), {first, !first, false, false}, "Elu, " + at);
    expect_nan_at(run(unary("MaxPool", row, pair), x), {true, !first, false}, "MaxPool, " + at);
    expect_nan_at(run(unary("GlobalMaxPool", row), x), {true}, "GlobalMaxPool, " + at);
    expect_nan_at(run(unary("ReduceMax", row, {Attr::of("axes", std::vector<int64_t>{3})}), x), {true},
                  "ReduceMax, " + at);
    expect_nan_at(run(unary("ReduceMin", row, {Attr::of("axes", std::vector<int64_t>{3})}), x), {true},
                  "ReduceMin, " + at);
  }
}

}  // namespace
}  // namespace kiln
