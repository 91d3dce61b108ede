// Ops the cpu backend runs on oneDNN primitives beyond the 2-D basics:
// 1-D and 3-D conv and pooling with auto_pad, ConvTranspose, Gemm's alpha,
// beta and broadcasting C, LayerNormalization's statistics outputs,
// InstanceNormalization, PRelu, Selu and Celu. Each model has a dynamic
// batch and is compared with the reference executor at several batch sizes.
#include <gtest/gtest.h>

#include <onnx/onnx_pb.h>

#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "frontend/onnx/onnx_importer.hpp"
#include "reference/executor.hpp"
#include "runtime/compiled_model.hpp"
#include "test_helpers.hpp"
#include "zoo/model_builder.hpp"

namespace kiln {
namespace {

using runtime::CompiledModel;
using zoo::Attr;
using zoo::IoDim;

// Compiles `bytes` for batch 1..3 of an input [batch, rest...], checks that
// every layer holding one of `ops` ran on a oneDNN primitive, and compares
// every output with the reference executor at batch 1, 2 and 3.
void expect_onednn_and_reference(const std::string& bytes, const std::vector<int64_t>& rest,
                                 const std::set<std::string>& ops) {
  testing::TempDir dir;
  auto model = frontend::import_onnx_bytes(std::as_bytes(std::span<const char>(bytes)), "coverage.onnx");
  std::vector<int64_t> min{1}, opt{2}, max{3};
  for (int64_t d : rest) min.push_back(d), opt.push_back(d), max.push_back(d);
  std::vector<InputSpec> specs{{"x", DType::float32, min, opt, max}};
  auto compiled = CompiledModel::compile(model.graph, specs, testing::fast_settings(dir.path()));
  ASSERT_EQ(compiled.report().segments.size(), 1u);
  ASSERT_TRUE(compiled.report().segments[0].engine) << compiled.report().segments[0].reason;

  std::vector<int64_t> shape = opt;
  runtime::ModelProfile profile = compiled.profile(std::vector<Tensor>{testing::ramp_tensor(shape)}, 1, 0);
  std::set<std::string> seen;
  for (const auto& layer : profile.layers) {
    if (!ops.count(layer.timing.op)) continue;
    seen.insert(layer.timing.op);
    EXPECT_EQ(layer.timing.kind, "onednn") << layer.timing.name << " (" << layer.timing.op << ")";
  }
  EXPECT_EQ(seen, ops);

  for (int64_t batch : {1, 2, 3}) {
    shape[0] = batch;
    std::vector<Tensor> in{testing::ramp_tensor(shape)};
    auto got = compiled.run(in);
    auto want = ref::Executor(model.graph).run(in);
    ASSERT_EQ(got.size(), want.size());
    for (size_t o = 0; o < want.size(); ++o) {
      ASSERT_EQ(got[o].shape(), want[o].shape()) << "output " << o << " batch " << batch;
      auto g = got[o].data<float>();
      auto w = want[o].data<float>();
      for (size_t i = 0; i < w.size(); ++i)
        ASSERT_NEAR(g[i], w[i], 1e-4 * (1 + std::fabs(w[i]))) << "output " << o << " element " << i;
    }
  }
}

std::vector<IoDim> io_dims(const std::vector<int64_t>& rest) {
  std::vector<IoDim> dims{IoDim{0, "batch"}};
  for (int64_t d : rest) dims.push_back(IoDim{d, {}});
  return dims;
}

TEST(OnednnCoverage, ThreeDConvAndPoolsWithAutoPadMatchTheReference) {
  // A strided 3-D conv with SAME_LOWER (odd total padding: the extra element
  // at the beginning), a 3-D MaxPool with SAME_UPPER and a 3-D AveragePool
  // with VALID and ceil_mode.
  zoo::ModelBuilder b("conv3d", 13, 3);
  b.add_input("x", onnx::TensorProto::FLOAT, io_dims({2, 5, 6, 7}));
  std::string c = b.node(
      "Conv", "conv", {"x", b.weight("w", {4, 2, 3, 2, 3}, 0.3f), b.weight("b", {4}, 0.1f)},
      {Attr::of("auto_pad", std::string("SAME_LOWER")), Attr::of("strides", std::vector<int64_t>{2, 1, 2})});
  std::string p = b.node("MaxPool", "max", {c},
                         {Attr::of("auto_pad", std::string("SAME_UPPER")),
                          Attr::of("kernel_shape", std::vector<int64_t>{2, 2, 2}),
                          Attr::of("strides", std::vector<int64_t>{2, 2, 2})});
  std::string a = b.node("AveragePool", "avg", {c},
                         {Attr::of("auto_pad", std::string("VALID")), Attr::of("ceil_mode", int64_t{1}),
                          Attr::of("kernel_shape", std::vector<int64_t>{2, 2, 2}),
                          Attr::of("strides", std::vector<int64_t>{2, 2, 2})});
  b.add_output(p, onnx::TensorProto::FLOAT, io_dims({4, 2, 3, 2}));
  b.add_output(a, onnx::TensorProto::FLOAT, io_dims({4, 2, 3, 2}));
  expect_onednn_and_reference(b.serialize(), {2, 5, 6, 7}, {"Conv", "MaxPool", "AveragePool"});
}

TEST(OnednnCoverage, OneDConvAndPoolsMatchTheReference) {
  zoo::ModelBuilder b("conv1d", 13, 4);
  b.add_input("x", onnx::TensorProto::FLOAT, io_dims({3, 10}));
  std::string c = b.node("Conv", "conv", {"x", b.weight("w", {6, 1, 3}, 0.3f)},
                         {Attr::of("group", int64_t{3}), Attr::of("pads", std::vector<int64_t>{2, 0}),
                          Attr::of("dilations", std::vector<int64_t>{2})});
  std::string p = b.node(
      "AveragePool", "avg", {c},
      {Attr::of("auto_pad", std::string("SAME_UPPER")), Attr::of("kernel_shape", std::vector<int64_t>{3})});
  std::string g = b.node("GlobalMaxPool", "global", {p});
  b.add_output(g, onnx::TensorProto::FLOAT, io_dims({6, 1}));
  expect_onednn_and_reference(b.serialize(), {3, 10}, {"Conv", "AveragePool", "GlobalMaxPool"});
}

TEST(OnednnCoverage, ConvTransposeWithGroupsAndAutoPadMatchesTheReference) {
  // Two groups (the weights read in place as oneDNN's grouped layout),
  // strides 2 with SAME_UPPER; then a 1-D one with explicit pads, dilation
  // and no bias.
  zoo::ModelBuilder b("deconv", 13, 7);
  b.add_input("x", onnx::TensorProto::FLOAT, io_dims({4, 5, 3}));
  std::string t =
      b.node("ConvTranspose", "up", {"x", b.weight("w", {4, 3, 3, 2}, 0.3f), b.weight("b", {6}, 0.1f)},
             {Attr::of("group", int64_t{2}), Attr::of("auto_pad", std::string("SAME_UPPER")),
              Attr::of("strides", std::vector<int64_t>{2, 2})});
  std::string r = b.node("Reshape", "flat", {t, b.int64_constant("shape", {3}, {0, 6, 60})});
  std::string u =
      b.node("ConvTranspose", "up1d", {r, b.weight("w1", {6, 2, 3}, 0.3f)},
             {Attr::of("pads", std::vector<int64_t>{1, 2}), Attr::of("dilations", std::vector<int64_t>{2})});
  b.add_output(u, onnx::TensorProto::FLOAT, io_dims({2, 61}));
  expect_onednn_and_reference(b.serialize(), {4, 5, 3}, {"ConvTranspose"});
}

TEST(OnednnCoverage, GemmAlphaBetaAndBroadcastingCMatchTheReference) {
  // alpha and beta with a row C, then a C per row (a [M, 1] column cannot
  // be constant with a dynamic M: a scalar instead), the last with a fused
  // HardSigmoid, which stays its own layer after a beta.
  zoo::ModelBuilder b("gemm", 13, 5);
  b.add_input("x", onnx::TensorProto::FLOAT, io_dims({6}));
  std::string g1 =
      b.node("Gemm", "gemm1", {"x", b.weight("w1", {5, 6}, 0.4f), b.weight("c1", {1, 5}, 0.5f)},
             {Attr::of("alpha", 0.25f), Attr::of("beta", 0.35f), Attr::of("transB", int64_t{1})});
  std::string g2 =
      b.node("Gemm", "gemm2", {g1, b.weight("w2", {5, 4}, 0.4f), b.float_constant("c2", {}, {0.7f})},
             {Attr::of("beta", 2.0f)});
  std::string h = b.node("HardSigmoid", "hs", {g2});
  std::string g3 = b.node("Gemm", "gemm3", {h, b.weight("w3", {4, 3}, 0.4f)}, {Attr::of("alpha", -1.5f)});
  b.add_output(g3, onnx::TensorProto::FLOAT, io_dims({3}));
  expect_onednn_and_reference(b.serialize(), {6}, {"Gemm"});
}

TEST(OnednnCoverage, NormalizationsPReluSeluAndCeluMatchTheReference) {
  zoo::ModelBuilder b("norms", 17, 6);
  b.add_input("x", onnx::TensorProto::FLOAT, io_dims({3, 4, 5}));
  std::string in = b.node("InstanceNormalization", "instance",
                          {"x", b.uniform_weight("s", {3}, 0.5f, 1.5f), b.weight("bias", {3}, 0.2f)},
                          {Attr::of("epsilon", 1e-3f)});
  std::string pr = b.node("PRelu", "prelu", {in, b.weight("slope", {4, 1}, 0.3f)});
  std::string se = b.node("Selu", "selu", {pr});
  std::string ce = b.node("Celu", "celu", {se}, {Attr::of("alpha", 0.7f)});
  // Over the last two axes, with the Mean and InvStdDev outputs.
  b.node("LayerNormalization", "layer", {ce, b.uniform_weight("g", {4, 5}, 0.5f, 1.5f)},
         {Attr::of("axis", int64_t{-2})}, {"y", "mean", "inv_std_dev"});
  b.add_output("y", onnx::TensorProto::FLOAT, io_dims({3, 4, 5}));
  b.add_output("mean", onnx::TensorProto::FLOAT, io_dims({3, 1, 1}));
  b.add_output("inv_std_dev", onnx::TensorProto::FLOAT, io_dims({3, 1, 1}));
  expect_onednn_and_reference(b.serialize(), {3, 4, 5},
                              {"InstanceNormalization", "PRelu", "Selu", "Celu", "LayerNormalization"});
}

}  // namespace
}  // namespace kiln
