// Resize / Upsample in the cpu engine: the combinations whose ONNX semantics
// oneDNN's resampling reproduces run as a native resample layer, the others
// on the reference kernel with the reason in the layer report; both must
// agree with the reference backend. Each model is one hand-built node
// (sometimes between a Conv and a Relu, so the primitive sees a oneDNN
// layout and feeds another layer rather than the graph output).
#include <gtest/gtest.h>

#include <onnx/onnx_pb.h>
#include <cmath>

#include "backends/cpu/cpu_backend.hpp"
#include "cpu_test_helpers.hpp"
#include "onnx_test_model.hpp"
#include "reference/executor.hpp"

namespace kiln {
namespace {

using onnx::TensorProto;
using testing::ProtoModel;
using testing::set_string;

struct Case {
  std::vector<int64_t> in;
  std::string mode = "linear";
  std::string transform = "half_pixel";
  std::string nearest_mode;    // empty: the default
  std::vector<float> scales;   // either scales
  std::vector<int64_t> sizes;  // or sizes
  bool conv_before = false;    // a 1x1 Conv produces the input (a oneDNN layout)
  bool relu_after = false;     // the result feeds a Relu instead of the graph output
  int64_t opset = 17;
  std::string op = "Resize";
};

ProtoModel model_of(const Case& c) {
  ProtoModel m(c.opset);
  m.input("x", TensorProto::FLOAT, c.in);
  std::string data = "x";
  if (c.conv_before) {
    const int64_t ch = c.in[1];
    std::vector<float> w(static_cast<size_t>(ch * ch));
    for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(std::cos(0.7 * static_cast<double>(i)));
    m.floats("w", {ch, ch, 1, 1}, w);
    m.node("Conv", {"x", "w"}, "c");
    data = "c";
  }
  const std::string out = c.relu_after ? "r" : "y";
  onnx::NodeProto* n = nullptr;
  if (c.op == "Upsample") {
    m.floats("scales", {static_cast<int64_t>(c.scales.size())}, c.scales);
    n = m.node("Upsample", {data, "scales"}, out);
  } else if (!c.sizes.empty()) {
    m.indices("sizes", {static_cast<int64_t>(c.sizes.size())}, c.sizes);
    n = m.node("Resize", {data, "", "", "sizes"}, out);
  } else {
    m.floats("scales", {static_cast<int64_t>(c.scales.size())}, c.scales);
    n = m.node("Resize", {data, "", "scales"}, out);
  }
  set_string(n, "mode", c.mode);
  if (c.op == "Resize") set_string(n, "coordinate_transformation_mode", c.transform);
  if (!c.nearest_mode.empty()) set_string(n, "nearest_mode", c.nearest_mode);
  if (c.relu_after) m.node("Relu", {"r"}, "y");
  m.output("y", TensorProto::FLOAT, c.in.size());
  return m;
}

// Signed, smooth but not linear (linear data would hide a wrong weight at
// the border), and different in every channel and batch.
Tensor input_of(const std::vector<int64_t>& shape) {
  std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
  for (size_t i = 0; i < v.size(); ++i) {
    const auto x = static_cast<double>(i);
    v[i] = static_cast<float>(std::sin(0.37 * x) + 0.25 * std::cos(1.3 * x));
  }
  return Tensor::from_values<float>(shape, v);
}

// Runs `c` on the cpu engine and the reference backend; returns the
// resize layer's tactic from the engine's report.
std::string check_against_reference(const Case& c) {
  const ir::Graph graph = model_of(c).import().graph;
  std::vector<Tensor> inputs = {input_of(c.in)};
  auto backend = make_cpu_backend();
  auto engine = testing::build_engine(*backend, graph, inputs, 0);
  std::vector<Tensor> got = engine->run(inputs);
  std::vector<Tensor> want = ref::Executor(graph).run(inputs);
  EXPECT_EQ(got[0].shape(), want[0].shape());
  EXPECT_LT(testing::relative_error(got[0], want[0]), 2e-6);
  // A second run reuses the instance (and any output written in place).
  std::vector<Tensor> again = engine->run(inputs);
  EXPECT_TRUE(testing::bitwise_equal(again[0], got[0]));
  for (const LayerReport& r : engine->info().layers) {
    if (r.op == "Resize" || r.op == "Upsample") return r.tactic;
  }
  ADD_FAILURE() << "no Resize layer in the report";
  return {};
}

// oneDNN's resampling, or for a 2-D linear resize into a graph output,
// kiln's own loop (bilinear.hpp).
void expect_native(const Case& c) {
  const std::string tactic = check_against_reference(c);
  const bool kilns_loop = c.mode == "linear" && c.in.size() == 4 && !c.relu_after;
  EXPECT_EQ(tactic, kilns_loop ? std::string("native:bilinear") : "resample:" + c.mode);
}

void expect_reference(const Case& c, const std::string& reason) {
  const std::string tactic = check_against_reference(c);
  EXPECT_EQ(tactic.rfind("aux:" + c.op + " (", 0), 0u) << tactic;
  EXPECT_NE(tactic.find(reason), std::string::npos) << tactic;
}

TEST(ResampleLayer, LinearHalfPixelUpsampleToOddSizesIsNative) {
  Case c;
  c.in = {1, 3, 5, 7};
  c.sizes = {1, 3, 13, 16};
  expect_native(c);
}

TEST(ResampleLayer, LinearHalfPixelDownsampleWithBatchIsNative) {
  Case c;
  c.in = {2, 5, 9, 11};
  c.sizes = {2, 5, 4, 6};
  expect_native(c);
}

TEST(ResampleLayer, LinearPytorchHalfPixelByScalesAfterAConvIsNative) {
  Case c;
  c.in = {2, 21, 7, 9};
  c.transform = "pytorch_half_pixel";
  c.scales = {1, 1, 2, 2};
  c.conv_before = true;
  c.relu_after = true;
  expect_native(c);
}

// A segmentation head's final upsample (DeepLabV3's 14x14 class maps to
// 224x224): input rows of up to 32 columns are picked by permutes.
TEST(ResampleLayer, LinearUpsampleOfClassMapsIntoTheOutputIsKilnsLoop) {
  Case c;
  c.in = {2, 5, 14, 14};
  c.sizes = {2, 5, 224, 224};
  expect_native(c);
  c.in = {1, 3, 28, 28};
  c.sizes.clear();
  c.transform = "pytorch_half_pixel";
  c.scales = {1, 1, 8, 8};
  expect_native(c);
}

// Input rows wider than 32 columns are gathered; output rows not a multiple
// of 16 end in the scalar tail.
TEST(ResampleLayer, LinearResizeOfWideRowsIsKilnsLoop) {
  Case c;
  c.in = {1, 2, 6, 40};
  c.sizes = {1, 2, 11, 90};
  expect_native(c);
}

TEST(ResampleLayer, LinearThreeDimensionalIsNative) {
  Case c;
  c.in = {1, 2, 3, 4, 5};
  c.sizes = {1, 2, 5, 7, 9};
  c.relu_after = true;
  expect_native(c);
}

TEST(ResampleLayer, NearestAsymmetricFloorAtAnIntegerFactorIsNative) {
  // torch's F.interpolate(mode="nearest") export.
  Case c;
  c.in = {2, 3, 5, 6};
  c.mode = "nearest";
  c.transform = "asymmetric";
  c.nearest_mode = "floor";
  c.scales = {1, 1, 2, 3};
  c.relu_after = true;
  expect_native(c);
}

TEST(ResampleLayer, LegacyUpsampleNearestIsNative) {
  Case c;
  c.op = "Upsample";
  c.opset = 9;
  c.in = {1, 4, 3, 5};
  c.mode = "nearest";
  c.scales = {1, 1, 2, 2};
  expect_native(c);
}

TEST(ResampleLayer, NearestHalfPixelDownsampleRoundingUpTiesIsNative) {
  // Halving an even length puts every coordinate on a tie: oneDNN rounds it
  // up, as round_prefer_ceil does.
  Case c;
  c.in = {1, 3, 8, 10};
  c.mode = "nearest";
  c.nearest_mode = "round_prefer_ceil";
  c.sizes = {1, 3, 4, 5};
  expect_native(c);
}

TEST(ResampleLayer, NearestThreeDimensionalUpsampleIsNative) {
  Case c;
  c.in = {1, 2, 3, 4, 3};
  c.mode = "nearest";
  c.sizes = {1, 2, 6, 12, 9};
  expect_native(c);
}

TEST(ResampleLayer, NearestRoundingDownTiesStaysOnTheReferenceKernel) {
  Case c;
  c.in = {1, 3, 8, 10};
  c.mode = "nearest";
  c.nearest_mode = "round_prefer_floor";
  c.sizes = {1, 3, 4, 5};
  expect_reference(c, "oneDNN's rounding");
}

TEST(ResampleLayer, AlignCornersStaysOnTheReferenceKernel) {
  Case c;
  c.in = {1, 3, 5, 7};
  c.transform = "align_corners";
  c.sizes = {1, 3, 10, 14};
  c.relu_after = true;
  expect_reference(c, "align_corners");
}

TEST(ResampleLayer, CubicStaysOnTheReferenceKernel) {
  Case c;
  c.in = {1, 2, 6, 6};
  c.mode = "cubic";
  c.scales = {1, 1, 2, 2};
  expect_reference(c, "mode 'cubic'");
}

TEST(ResampleLayer, AScaleThatIsNotTheSizeRatioStaysOnTheReferenceKernel) {
  // 3 * 1.5 = 4.5 rounds down to 4 outputs: ONNX still maps with 1.5.
  Case c;
  c.in = {1, 2, 3, 3};
  c.scales = {1, 1, 1.5f, 1.5f};
  expect_reference(c, "size ratio");
}

TEST(ResampleLayer, PytorchHalfPixelOntoLengthOneStaysOnTheReferenceKernel) {
  Case c;
  c.in = {1, 2, 4, 6};
  c.transform = "pytorch_half_pixel";
  c.sizes = {1, 2, 1, 3};
  expect_reference(c, "length-1");
}

TEST(ResampleLayer, AReferenceKernelOutputHandedOutIsNotOverwrittenByTheNextRun) {
  // The aux Resize writes the graph output into a fresh tensor each run and
  // returns that one: a result must not change when the engine runs again.
  Case c;
  c.in = {1, 2, 4, 5};
  c.transform = "align_corners";
  c.sizes = {1, 2, 7, 9};
  const ir::Graph graph = model_of(c).import().graph;
  auto backend = make_cpu_backend();
  std::vector<Tensor> first_in = {input_of(c.in)};
  auto engine = testing::build_engine(*backend, graph, first_in, 0);
  const Tensor first = engine->run(first_in)[0];
  const Tensor kept = first.clone();
  std::vector<float> other(static_cast<size_t>(shape_numel(c.in)), 3.0f);
  const std::vector<Tensor> second_in = {Tensor::from_values<float>(c.in, other)};
  const Tensor second = engine->run(second_in)[0];
  EXPECT_TRUE(testing::bitwise_equal(first, kept));
  EXPECT_FLOAT_EQ(second.data<float>()[0], 3.0f);
  EXPECT_LT(testing::relative_error(first, ref::Executor(graph).run(first_in)[0]), 2e-6);
}

}  // namespace
}  // namespace kiln
