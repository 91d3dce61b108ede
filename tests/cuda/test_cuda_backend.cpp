// The cuda backend. Host-side tests (plan round trips and corruption, the
// partition, the "no GPU" path) run everywhere; the GPU tests (label gpu)
// compare engines with the reference executor and skip without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <set>

#include "backends/cpu/plan_format.hpp"
#include "backends/cuda/cuda_layers.hpp"
#include "backends/cuda/cuda_plan_format.hpp"
#include "backends/cuda/device.hpp"
#include "backends/cuda/precision.hpp"
#include "backends/cuda/tactic_signature.hpp"
#include "backends/registry/backend_registry.hpp"
#include "builder/tactic_search.hpp"
#include "builder/timing_cache.hpp"
#include "cuda_test_support.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "key/engine_key.hpp"
#include "passes/passes.hpp"
#include "reference/executor.hpp"
#include "runtime/compiled_model.hpp"
#include "zoo/zoo.hpp"

namespace kiln {
namespace {

using testing::has_gpu;
using testing::lowered_zoo_model;
using testing::ramp;
using testing::relative_error;
using testing::zoo_model;

cuda::Plan resnet_tiny_plan() {
  ir::Graph lowered = passes::lower(zoo_model("resnet_tiny", 1).graph);
  cuda::Plan plan;
  plan.layers = cuda::partition_layers(lowered);
  plan.graph = std::move(lowered);
  plan.specs = {InputSpec::fixed("input", DType::float32, {1, 3, 64, 64})};
  plan.fingerprint = {"cuda", cuda::k_plan_version, "CUDA 13.0, cuDNN 9.19.0, cuBLASLt 13.1.0", "sm_90 x132"};
  // Tactics as a build would record them.
  for (cuda::Layer& l : plan.layers) {
    if (l.kind == cuda::LayerKind::conv) {
      l.tactic.cudnn = {7, {{2, 1}, {5, 0}}};
      l.tactic.fused = true;
      l.tactic.name = l.tactic.cudnn.name() + " fused";
    } else if (l.kind == cuda::LayerKind::matmul) {
      l.tactic.lt_algo.assign(64, 0x5a);
      l.tactic.name = "cublasLt:5a";
    }
  }
  return plan;
}

TEST(CudaPlan, PartitionFusesConvChainsAndRunsTheClassifierOnCublasLt) {
  const cuda::Plan plan = resnet_tiny_plan();
  size_t convs = 0, fused_relu = 0, residuals = 0, matmuls = 0;
  for (const cuda::Layer& l : plan.layers) {
    convs += l.kind == cuda::LayerKind::conv;
    fused_relu += l.kind == cuda::LayerKind::conv && l.activation != ir::k_no_node;
    residuals += l.residual_add != ir::k_no_node;
    matmuls += l.kind == cuda::LayerKind::matmul;
  }
  EXPECT_GT(convs, 0u);
  EXPECT_GT(fused_relu, 0u);  // BatchNorm folded, ReLU in the conv layer
  EXPECT_GT(residuals, 0u);   // the residual Add read by the conv's epilogue
  EXPECT_EQ(matmuls, 1u);     // the classifier
  for (ir::NodeId id = 0; id < static_cast<ir::NodeId>(plan.graph.num_nodes()); ++id) {
    EXPECT_EQ(cuda::unsupported_reason(plan.graph, id), std::nullopt) << plan.graph.node(id).describe();
  }
}

// A graph of one MatMul of two float32 graph inputs; `id` is its node.
ir::Graph one_matmul(ir::Dims x_dims, ir::Dims w_dims, ir::Dims y_dims, ir::NodeId& id) {
  ir::Graph g;
  const ir::ValueId x = g.add_value("x", {DType::float32, std::move(x_dims)});
  const ir::ValueId w = g.add_value("w", {DType::float32, std::move(w_dims)});
  const ir::ValueId y = g.add_value("y", {DType::float32, std::move(y_dims)});
  g.add_input(x);
  g.add_input(w);
  ir::Node mm;
  mm.op_type = "MatMul";
  mm.opset = 13;
  mm.inputs = {x, w};
  mm.outputs = {y};
  id = g.add_node(std::move(mm));
  g.add_output(y);
  return g;
}

TEST(CudaPlan, AttentionMatmulsOfTwoActivationsAreOneBatchedLayer) {
  // Q·Kᵀ of [batch, heads, seq, d] · [batch, heads, d, seq]: two activations
  // with the same batch dims (static or the same symbol) are one batched
  // cuBLASLt layer.
  const ir::Dim batch = ir::Dim::symbol("batch");
  ir::NodeId id = ir::k_no_node;
  ir::Graph g = one_matmul({batch, 4, 8, 16}, {batch, 4, 16, 8}, {batch, 4, 8, 8}, id);
  const ir::ValueId k = g.node(id).inputs[1];
  EXPECT_EQ(cuda::unsupported_reason(g, id), std::nullopt);
  const std::vector<cuda::Layer> layers = cuda::partition_layers(g);
  ASSERT_EQ(layers.size(), 1u);
  EXPECT_EQ(layers[0].kind, cuda::LayerKind::matmul);
  // A batch dim that differs statically (a symbol against 1 broadcasts):
  // not one strided call.
  g.value(k).type.shape = ir::Dims{1, 4, 16, 8};
  EXPECT_NE(cuda::unsupported_reason(g, id), std::nullopt);
  // One static inference cannot tell (after a Reshape whose target is
  // computed from shapes) is checked when an instance is made.
  g.value(k).type.shape = ir::Dims{ir::Dim(), 4, 16, 8};
  EXPECT_EQ(cuda::unsupported_reason(g, id), std::nullopt);
  std::vector<std::optional<std::vector<int64_t>>> shapes(g.num_values());
  shapes[static_cast<size_t>(g.node(id).inputs[0])] = std::vector<int64_t>{2, 4, 8, 16};
  shapes[static_cast<size_t>(k)] = std::vector<int64_t>{2, 4, 16, 8};
  EXPECT_EQ(cuda::instance_problem(g, layers[0], shapes), std::nullopt);
  shapes[static_cast<size_t>(k)] = std::vector<int64_t>{1, 4, 16, 8};
  const auto problem = cuda::instance_problem(g, layers[0], shapes);
  ASSERT_TRUE(problem.has_value());
  EXPECT_NE(problem->find("batch dims differ"), std::string::npos) << *problem;
}

TEST(CudaPlan, ASplitIsOneSliceLayerPerOutputAndBroadcastBatchesStayOnTheHost) {
  ir::Graph g;
  const ir::ValueId x = g.add_value("x", {DType::float32, ir::Dims{2, 4, 6}});
  g.add_input(x);
  const ir::ValueId split =
      g.add_initializer("split", Tensor::from_values<int64_t>({2}, std::vector<int64_t>{2, 4}));
  const ir::ValueId a = g.add_value("a", {DType::float32, ir::Dims{2, 4, 2}});
  const ir::ValueId b = g.add_value("b", {DType::float32, ir::Dims{2, 4, 4}});
  ir::Node node;
  node.op_type = "Split";
  node.opset = 17;
  node.inputs = {x, split};
  node.outputs = {a, b};
  node.attrs.set("axis", int64_t{2});
  const ir::NodeId id = g.add_node(std::move(node));
  g.add_output(a);
  g.add_output(b);
  EXPECT_EQ(cuda::unsupported_reason(g, id), std::nullopt);
  const std::vector<cuda::Layer> layers = cuda::partition_layers(g);
  ASSERT_EQ(layers.size(), 2u);
  EXPECT_EQ(layers[0].kind, cuda::LayerKind::slice);
  EXPECT_EQ(layers[0].output, a);
  EXPECT_EQ(layers[1].output, b);

  // [2, 1, 3, 4] · [1, 5, 4, 3]: the batch dims broadcast, which one strided
  // cuBLASLt call cannot express.
  ir::NodeId mm_id = ir::k_no_node;
  const ir::Graph h = one_matmul({2, 1, 3, 4}, {1, 5, 4, 3}, {2, 5, 3, 3}, mm_id);
  EXPECT_NE(cuda::unsupported_reason(h, mm_id), std::nullopt);
}

TEST(CudaPlan, RoundTripsLayersTacticsAndSpecsWithoutWeights) {
  const cuda::Plan plan = resnet_tiny_plan();
  const std::vector<std::byte> bytes = cuda::serialize_plan(plan);
  const cuda::Plan back = cuda::parse_plan(bytes);
  EXPECT_EQ(back.fingerprint, plan.fingerprint);
  ASSERT_EQ(back.layers.size(), plan.layers.size());
  for (size_t i = 0; i < plan.layers.size(); ++i) {
    const cuda::Layer& a = plan.layers[i];
    const cuda::Layer& b = back.layers[i];
    EXPECT_EQ(a.kind, b.kind);
    EXPECT_EQ(a.nodes, b.nodes);
    EXPECT_EQ(a.residual_add, b.residual_add);
    EXPECT_EQ(a.activation, b.activation);
    EXPECT_EQ(a.tactic.name, b.tactic.name);
    EXPECT_EQ(a.tactic.fused, b.tactic.fused);
    EXPECT_EQ(a.tactic.cudnn.engine, b.tactic.cudnn.engine);
    EXPECT_EQ(a.tactic.cudnn.knobs, b.tactic.cudnn.knobs);
    EXPECT_EQ(a.tactic.lt_algo, b.tactic.lt_algo);
  }
  EXPECT_EQ(back.specs[0].opt, plan.specs[0].opt);
  EXPECT_EQ(cuda::serialize_plan(back), bytes);  // nothing lost or added
}

TEST(CudaPlan, CorruptTruncatedAndForeignPlansAreInvalidModels) {
  const std::vector<std::byte> bytes = cuda::serialize_plan(resnet_tiny_plan());
  auto expect_invalid = [](std::span<const std::byte> b, const std::string& what) {
    try {
      (void)cuda::parse_plan(b);
      ADD_FAILURE() << what << " parsed";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_model) << what << ": " << e.what();
      EXPECT_NE(std::string(e.what()).find("cuda plan"), std::string::npos) << e.what();
    }
  };
  expect_invalid(std::span(bytes).first(bytes.size() / 2), "a truncated plan");
  for (size_t at : {size_t{16}, bytes.size() / 3, bytes.size() - 20}) {
    std::vector<std::byte> flipped = bytes;
    flipped[at] ^= std::byte{0x40};
    expect_invalid(flipped, "a flipped byte at " + std::to_string(at));
  }
  // A cpu plan is not a cuda plan.
  cpu::EnginePlan cpu_plan;
  cpu_plan.graph = resnet_tiny_plan().graph;
  cpu_plan.specs = resnet_tiny_plan().specs;
  EXPECT_THROW((void)cuda::parse_plan(cpu::serialize_plan(cpu_plan)), Error);
}

TEST(CudaPlan, RoundTripKeepsTheStoragePrecision) {
  for (cuda::ElemType type : {cuda::ElemType::f32, cuda::ElemType::f16, cuda::ElemType::bf16}) {
    cuda::Plan plan = resnet_tiny_plan();
    plan.precision = type;
    const std::vector<std::byte> bytes = cuda::serialize_plan(plan);
    const cuda::Plan back = cuda::parse_plan(bytes);
    EXPECT_EQ(back.precision, type) << cuda::precision_name(type);
    EXPECT_EQ(cuda::serialize_plan(back), bytes) << cuda::precision_name(type);
  }
  // The same plan in two precisions is two different byte strings.
  cuda::Plan half = resnet_tiny_plan();
  half.precision = cuda::ElemType::f16;
  EXPECT_NE(cuda::serialize_plan(half), cuda::serialize_plan(resnet_tiny_plan()));
}

TEST(CudaPlan, StoragePrecisionIsFp16WhenEnabledElseBf16ElseFp32) {
  using P = Precision;
  EXPECT_EQ(cuda::storage_precision({P::fp32}), cuda::ElemType::f32);
  EXPECT_EQ(cuda::storage_precision({P::fp32, P::bf16}), cuda::ElemType::bf16);
  EXPECT_EQ(cuda::storage_precision({P::fp32, P::fp16}), cuda::ElemType::f16);
  EXPECT_EQ(cuda::storage_precision({P::fp16}), cuda::ElemType::f16);
  EXPECT_EQ(cuda::storage_precision({P::fp32, P::fp16, P::bf16}), cuda::ElemType::f16);
}

TEST(CudaPlan, WeightsRoundToNearestEvenInTheStoragePrecision) {
  auto bits = [](const std::vector<std::byte>& b, size_t i) {
    uint16_t v = 0;
    std::memcpy(&v, b.data() + 2 * i, 2);
    return v;
  };
  // 1 + 2^-11 is halfway between fp16's 1 and 1 + 2^-10: even (1) wins;
  // 1 + 3 * 2^-11 is halfway between 1 + 2^-10 and 1 + 2^-9: even (2^-9)
  // wins; 70000 is beyond fp16's range.
  const std::vector<float> values{1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, 70000.0f, -2.5f};
  const auto f16 = cuda::to_storage(values, cuda::ElemType::f16);
  ASSERT_EQ(f16.size(), 8u);
  EXPECT_EQ(bits(f16, 0), 0x3c00);
  EXPECT_EQ(bits(f16, 1), 0x3c02);
  EXPECT_EQ(bits(f16, 2), 0x7c00);
  EXPECT_EQ(bits(f16, 3), 0xc100);
  // bf16: 1 + 2^-8 is halfway between 1 and 1 + 2^-7.
  const auto bf16 =
      cuda::to_storage(std::vector<float>{1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f}, cuda::ElemType::bf16);
  EXPECT_EQ(bits(bf16, 0), 0x3f80);
  EXPECT_EQ(bits(bf16, 1), 0x3f82);
  const auto f32 = cuda::to_storage(values, cuda::ElemType::f32);
  ASSERT_EQ(f32.size(), 16u);
  EXPECT_EQ(std::memcmp(f32.data(), values.data(), 16), 0);
}

TEST(CudaPlan, EngineKeysDifferByPrecision) {
  const ir::Graph lowered = passes::lower(zoo_model("resnet_tiny", 1).graph);
  const std::vector<InputSpec> specs{InputSpec::fixed("input", DType::float32, {1, 3, 64, 64})};
  const Fingerprint fp{"cuda", cuda::k_plan_version, "CUDA 13.0, cuDNN 9.19.0, cuBLASLt 13.1.0",
                       "sm_90 x132"};
  CompileSettings fp32, fp16, bf16;
  fp32.backend = fp16.backend = bf16.backend = "cuda";
  fp16.enabled_precisions = {Precision::fp32, Precision::fp16};
  bf16.enabled_precisions = {Precision::fp32, Precision::bf16};
  const key::EngineKey a = key::compute_engine_key(lowered, specs, fp32, fp);
  const key::EngineKey b = key::compute_engine_key(lowered, specs, fp16, fp);
  const key::EngineKey c = key::compute_engine_key(lowered, specs, bf16, fp);
  EXPECT_NE(a.hex(), b.hex());
  EXPECT_NE(a.hex(), c.hex());
  EXPECT_NE(b.hex(), c.hex());
  EXPECT_EQ(key::differing_parts(a.parts, b.parts), "settings");
}

TEST(CudaPlan, TimingCacheKeysDifferByPrecision) {
  cuda::ConvGeometry geo;
  geo.x = {1, 64, 56, 56};
  geo.w = {64, 64, 3, 3};
  geo.y = {1, 64, 56, 56};
  geo.pad_begin = geo.pad_end = {1, 1};
  cuda::LtShape mm;
  mm.m = 8, mm.k = 512, mm.n = 1000, mm.bias = true;
  const cuda::ConvFusion fusion{true, false, true};
  std::set<std::string> conv_keys, matmul_keys;
  const std::vector<builder::TacticCandidate> candidates{{"cudnn:e0", [] { return 1.0; }}};
  for (cuda::ElemType type : {cuda::ElemType::f32, cuda::ElemType::f16, cuda::ElemType::bf16}) {
    geo.type = mm.type = type;
    const std::string conv = cuda::conv_signature(geo, &fusion);
    EXPECT_NE(conv.find(std::string("dt=") + cuda::precision_name(type)), std::string::npos) << conv;
    conv_keys.insert(builder::layer_key("cuda plan v2", 1, conv, candidates));
    matmul_keys.insert(builder::layer_key("cuda plan v2", 1, cuda::matmul_signature(mm), candidates));
  }
  EXPECT_EQ(conv_keys.size(), 3u);
  EXPECT_EQ(matmul_keys.size(), 3u);
}

TEST(CudaBackend, IsRegisteredInThisBuild) {
  const std::vector<std::string> names = backend_names();
  EXPECT_NE(std::find(names.begin(), names.end(), "cuda"), names.end());
}

TEST(CudaBackend, WithoutAGpuCompilingIsACleanErrorNotACrash) {
  if (has_gpu()) GTEST_SKIP() << "this machine has a GPU";
  try {
    (void)make_backend("cuda");
    ADD_FAILURE() << "made a cuda backend without a GPU";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::unsupported);
    EXPECT_NE(std::string(e.what()).find("cuda backend:"), std::string::npos) << e.what();
  }
  CompileSettings settings;
  settings.backend = "cuda";
  settings.cache_built_engines = settings.reuse_cached_engines = false;
  const auto model = zoo_model("resnet_tiny", 1);
  EXPECT_THROW((void)runtime::CompiledModel::compile(
                   model.graph, {InputSpec::fixed("input", DType::float32, {1, 3, 64, 64})}, settings),
               Error);
}

// ---- on a GPU (label gpu) ----

class CudaGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!has_gpu()) GTEST_SKIP() << "no GPU: " << cuda::probe_gpu().reason;
  }
  CompileSettings settings(bool cache, std::set<Precision> precisions = {Precision::fp32}) const {
    CompileSettings s;
    s.enabled_precisions = std::move(precisions);
    s.backend = "cuda";
    s.engine_cache_dir = m_dir;
    s.timing_cache_path = "-";
    s.cache_built_engines = s.reuse_cached_engines = cache;
    return s;
  }
  std::filesystem::path m_dir =
      std::filesystem::temp_directory_path() / ("kiln-cuda-test-" + std::to_string(::getpid()));
  void TearDown() override { std::filesystem::remove_all(m_dir); }
};

void expect_matches_reference(const std::string& name, std::vector<InputSpec> specs,
                              std::vector<Tensor> inputs, const CompileSettings& settings) {
  const auto model = zoo_model(name, 1);
  auto compiled = runtime::CompiledModel::compile(model.graph, specs, settings);
  ref::Executor reference(model.graph);
  const auto want = reference.run(inputs);
  const auto got = compiled.run(inputs);
  EXPECT_LT(relative_error(got, want), 1e-3) << name;
}

TEST_F(CudaGpu, FingerprintNamesTheGpuAndLibraries) {
  const Fingerprint f = make_backend("cuda")->fingerprint();
  EXPECT_EQ(f.backend, "cuda");
  EXPECT_NE(f.isa.find("sm_"), std::string::npos) << f.isa;
  EXPECT_NE(f.library_version.find("cuDNN"), std::string::npos) << f.library_version;
  EXPECT_NE(f.library_version.find("cuBLASLt"), std::string::npos) << f.library_version;
}

TEST_F(CudaGpu, ZooCnnsMatchTheReference) {
  for (const char* name : {"resnet_tiny", "mobilenet_tiny"}) {
    expect_matches_reference(name, {InputSpec::fixed("input", DType::float32, {2, 3, 64, 64})},
                             {ramp({2, 3, 64, 64})}, settings(false));
  }
}

TEST_F(CudaGpu, ResNet18MatchesTheReference) {
  expect_matches_reference("resnet18", {InputSpec::fixed("input", DType::float32, {1, 3, 224, 224})},
                           {ramp({1, 3, 224, 224})}, settings(false));
}

TEST_F(CudaGpu, ADeserializedPlanRefittedEqualsTheBuiltEngineBitwise) {
  auto [lowered, sources] = lowered_zoo_model("resnet_tiny", 1);
  auto backend = make_backend("cuda");
  builder::TimingCache timing;
  const std::vector<InputSpec> specs{InputSpec::fixed("input", DType::float32, {1, 3, 64, 64})};
  auto built = backend->build(lowered, specs, settings(false), timing);
  auto loaded = backend->deserialize(built->serialize());
  EXPECT_THROW((void)loaded->run(std::vector<Tensor>{ramp({1, 3, 64, 64})}), Error);  // no weights yet
  loaded->refit(sources);
  const std::vector<Tensor> in{ramp({1, 3, 64, 64})};
  const auto a = built->run(in);
  const auto b = loaded->run(in);
  EXPECT_TRUE(testing::same_bits(a, b));
}

TEST_F(CudaGpu, ACacheHitWithOtherWeightsGivesThatModelsOutputs) {
  const std::vector<InputSpec> specs{InputSpec::fixed("input", DType::float32, {1, 3, 64, 64})};
  const std::vector<Tensor> in{ramp({1, 3, 64, 64})};
  const auto first = zoo_model("resnet_tiny", 1);
  (void)runtime::CompiledModel::compile(first.graph, specs, settings(true));
  const auto second = zoo_model("resnet_tiny", 2);
  auto hit = runtime::CompiledModel::compile(second.graph, specs, settings(true));
  ASSERT_FALSE(hit.report().engines.empty());
  EXPECT_EQ(hit.report().engines[0].status, "hit");
  ref::Executor reference(second.graph);
  EXPECT_LT(relative_error(hit.run(in), reference.run(in)), 1e-3);
}

TEST_F(CudaGpu, ADynamicBatchRunsEveryShapeInItsRange) {
  const auto model = zoo_model("resnet_tiny", 1);
  const std::vector<InputSpec> specs{
      {"input", DType::float32, {1, 3, 64, 64}, {4, 3, 64, 64}, {8, 3, 64, 64}}};
  auto compiled = runtime::CompiledModel::compile(model.graph, specs, settings(false));
  ref::Executor reference(model.graph);
  for (int64_t batch : {1, 3, 4, 8}) {
    const std::vector<Tensor> in{ramp({batch, 3, 64, 64}, static_cast<float>(batch))};
    EXPECT_LT(relative_error(compiled.run(in), reference.run(in)), 1e-3) << "batch " << batch;
  }
}

TEST_F(CudaGpu, BertTinyMatchesTheReferenceWithAttentionOnTheGpu) {
  const auto model = zoo_model("bert_tiny", 1);
  std::vector<InputSpec> specs;
  std::vector<Tensor> inputs;
  for (ir::ValueId v : model.graph.inputs()) {
    const ir::Value& value = model.graph.value(v);
    std::vector<int64_t> shape;
    for (const ir::Dim& d : *value.type.shape) shape.push_back(d.is_static() ? d.value() : 1);
    specs.push_back(InputSpec::fixed(value.name, value.type.dtype, shape));
    Tensor t = Tensor::zeros(value.type.dtype, shape);
    if (value.type.dtype == DType::float32) t = ramp(shape);
    inputs.push_back(std::move(t));
  }
  auto compiled = runtime::CompiledModel::compile(model.graph, specs, settings(false));
  ref::Executor reference(model.graph);
  EXPECT_LT(relative_error(compiled.run(inputs), reference.run(inputs)), 1e-3);
}

// ---- fp16 and bf16 engines (label gpu) ----
//
// Bounds, as max |got - ref| / max |ref| over the outputs, against the fp32
// reference: fp16 keeps 11 significant bits (a relative rounding of 2^-11,
// about 5e-4, per stored activation) and bf16 8 (2^-8, about 4e-3); the
// errors of a few dozen layers, each rounding its output once, stay well
// inside 1e-2 and 3e-2 of the largest output for these zoo models.
struct HalfCase {
  Precision precision;
  double bound;
};
const HalfCase k_half_cases[] = {{Precision::fp16, 1e-2}, {Precision::bf16, 3e-2}};

TEST_F(CudaGpu, HalfEnginesOfZooCnnsMatchTheReferenceWithinBounds) {
  struct Model {
    const char* name;
    std::vector<int64_t> shape;
  };
  for (const Model& m : {Model{"resnet18", {1, 3, 224, 224}}, Model{"mobilenet_tiny", {2, 3, 64, 64}}}) {
    const auto model = zoo_model(m.name, 1);
    const std::vector<Tensor> in{ramp(m.shape)};
    ref::Executor reference(model.graph);
    const auto want = reference.run(in);
    for (const HalfCase& c : k_half_cases) {
      auto compiled =
          runtime::CompiledModel::compile(model.graph, {InputSpec::fixed("input", DType::float32, m.shape)},
                                          settings(false, {Precision::fp32, c.precision}));
      const auto got = compiled.run(in);
      ASSERT_EQ(got.size(), want.size());
      EXPECT_EQ(got[0].dtype(), DType::float32);  // the boundary keeps the model's dtypes
      const double err = relative_error(got, want);
      std::printf("[ half ] %s %s: max |diff| / max |ref| = %.3g (bound %.0e)\n", m.name,
                  c.precision == Precision::fp16 ? "fp16" : "bf16", err, c.bound);
      EXPECT_LT(err, c.bound) << m.name << " " << static_cast<int>(c.precision);
      EXPECT_GT(err, 0.0) << m.name << ": a half engine that equals fp32 exactly did not run in half";
    }
  }
}

TEST_F(CudaGpu, BertBaseInHalfMatchesTheReferenceWithinBounds) {
  // The embedding Gathers run on the fallback in fp32; every Linear,
  // attention's batched MatMuls, Softmax, LayerNorm, GELU and residual Add
  // run in the half engines.
  const auto model = zoo_model("bert_base", 1);
  const std::vector<int64_t> shape{1, 16};
  std::vector<InputSpec> specs;
  std::vector<Tensor> inputs;
  for (ir::ValueId v : model.graph.inputs()) {
    const ir::Value& value = model.graph.value(v);
    specs.push_back(InputSpec::fixed(value.name, value.type.dtype, shape));
    Tensor t = Tensor::zeros(value.type.dtype, shape);
    auto ids = t.mutable_data<int64_t>();
    for (size_t i = 0; i < ids.size(); ++i)
      ids[i] = value.name == "attention_mask" ? 1 : static_cast<int64_t>((i * 7919) % 30522);
    inputs.push_back(std::move(t));
  }
  ref::Executor reference(model.graph);
  const auto want = reference.run(inputs);
  for (const HalfCase& c : k_half_cases) {
    auto compiled =
        runtime::CompiledModel::compile(model.graph, specs, settings(false, {Precision::fp32, c.precision}));
    const double err = relative_error(compiled.run(inputs), want);
    std::printf("[ half ] bert_base %s: max |diff| / max |ref| = %.3g (bound %.0e)\n",
                c.precision == Precision::fp16 ? "fp16" : "bf16", err, c.bound);
    EXPECT_LT(err, c.bound) << static_cast<int>(c.precision);
  }
}

TEST_F(CudaGpu, AHalfRefitEqualsAFreshHalfBuildBitwise) {
  auto [lowered, sources] = lowered_zoo_model("resnet_tiny", 1);
  auto backend = make_backend("cuda");
  builder::TimingCache timing;
  const std::vector<InputSpec> specs{InputSpec::fixed("input", DType::float32, {1, 3, 64, 64})};
  auto built = backend->build(lowered, specs, settings(false, {Precision::fp32, Precision::fp16}), timing);
  const cuda::Plan plan = cuda::parse_plan(built->serialize());
  EXPECT_EQ(plan.precision, cuda::ElemType::f16);
  auto loaded = backend->deserialize(built->serialize());
  loaded->refit(sources);
  const std::vector<Tensor> in{ramp({1, 3, 64, 64})};
  const auto a = built->run(in);
  const auto b = loaded->run(in);
  EXPECT_TRUE(testing::same_bits(a, b));
  // Refit with another model's weights, then back: the first outputs again,
  // bit for bit (nothing of the other weights stays behind).
  const auto other = zoo_model("resnet_tiny", 2);
  built->refit(passes::source_weights(other.graph));
  ref::Executor other_reference(other.graph);
  EXPECT_LT(relative_error(built->run(in), other_reference.run(in)), 1e-2);
  built->refit(sources);
  EXPECT_TRUE(testing::same_bits(a, built->run(in)));
}

TEST_F(CudaGpu, AnFp32CacheEntryIsNeverAHitForAnFp16Compile) {
  const std::vector<InputSpec> specs{InputSpec::fixed("input", DType::float32, {1, 3, 64, 64})};
  const std::vector<Tensor> in{ramp({1, 3, 64, 64})};
  const auto model = zoo_model("resnet_tiny", 1);
  auto fp32 = runtime::CompiledModel::compile(model.graph, specs, settings(true));
  ASSERT_FALSE(fp32.report().engines.empty());
  auto fp16 =
      runtime::CompiledModel::compile(model.graph, specs, settings(true, {Precision::fp32, Precision::fp16}));
  ASSERT_FALSE(fp16.report().engines.empty());
  EXPECT_NE(fp16.report().engines[0].status, "hit");
  // The fp16 entry is a hit for the next fp16 compile, and the loaded and
  // refitted engine computes what the built one did.
  auto again =
      runtime::CompiledModel::compile(model.graph, specs, settings(true, {Precision::fp32, Precision::fp16}));
  EXPECT_EQ(again.report().engines[0].status, "hit");
  const auto a = fp16.run(in);
  const auto b = again.run(in);
  EXPECT_TRUE(testing::same_bits(a, b));
  // And the fp32 engine differs from the fp16 one: they are not one entry.
  EXPECT_GT(relative_error(fp32.run(in), a), 0.0);
}

}  // namespace
}  // namespace kiln
