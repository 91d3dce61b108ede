// Channels-last activations in the cuda backend's half engines
// (activation_layout.hpp). The layout assignment is host-side and runs
// everywhere; the GPU tests (label gpu) compare half engines whose
// activations are NHWC with the reference executor, and the NHWC pooling
// kernels with the NCHW ones, and skip without a GPU.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <set>

#include "backends/cuda/activation_layout.hpp"
#include "backends/cuda/attention_layer.hpp"
#include "backends/cuda/cuda_layers.hpp"
#include "backends/cuda/cuda_plan_format.hpp"
#include "backends/cuda/precision.hpp"
#include "backends/cuda/tactic_signature.hpp"
#include "backends/registry/backend_registry.hpp"
#include "builder/timing_cache.hpp"
#include "cuda_test_support.hpp"
#include "reference/executor.hpp"
#include "runtime/compiled_model.hpp"
#include "util/half.hpp"
#include "zoo/model_builder.hpp"

namespace kiln {
namespace {

using cuda::ActivationLayouts;
using cuda::ElemType;
using cuda::LayerKind;
using cuda::Layout;
using testing::GpuTest;
using testing::ramp;
using testing::relative_error;

constexpr int32_t k_onnx_float = 1;  // onnx::TensorProto::FLOAT

// NHWC values meeting every kind of reader (ModelBuilder names a node's
// output "<node>_out"): x -> Conv+Relu (r1) -> MaxPool
// (pads, ceil_mode) -> Conv + residual Add -> AveragePool (pads, ceil_mode)
// (a) -> Mul by a [1, C, 1, 1] constant (m); then NCHW readers: Concat(m, a),
// Transpose(m); GlobalAveragePool(a) -> Flatten (layout-free, no
// conversion); and r1 is an output, through a Resize (which the cuda backend
// does not run, so r1 leaves the engine) when `resize`.
std::string mixed_readers_model(bool resize, bool dynamic_batch) {
  zoo::ModelBuilder b("mixed_readers", 13, 7);
  const zoo::IoDim batch = dynamic_batch ? zoo::IoDim{0, "batch"} : zoo::IoDim{2, {}};
  b.add_input("x", k_onnx_float, {batch, {8, {}}, {16, {}}, {16, {}}});
  using zoo::Attr;
  const auto ints = [](std::vector<int64_t> v) { return v; };
  const std::string c1 =
      b.node("Conv", "c1", {"x", b.weight("w1", {16, 8, 3, 3}, 0.2f), b.weight("b1", {16}, 0.1f)},
             {Attr::of("pads", ints({1, 1, 1, 1}))});
  const std::string r1 = b.node("Relu", "r1", {c1});
  const std::string p = b.node("MaxPool", "p", {r1},
                               {Attr::of("kernel_shape", ints({3, 3})), Attr::of("strides", ints({2, 2})),
                                Attr::of("pads", ints({1, 1, 1, 1})), Attr::of("ceil_mode", int64_t{1})});
  const std::string c2 =
      b.node("Conv", "c2", {p, b.weight("w2", {16, 16, 3, 3}, 0.1f)}, {Attr::of("pads", ints({1, 1, 1, 1}))});
  const std::string s = b.node("Add", "s", {c2, p});
  const std::string a = b.node("AveragePool", "a", {s},
                               {Attr::of("kernel_shape", ints({3, 3})), Attr::of("strides", ints({2, 2})),
                                Attr::of("pads", ints({1, 1, 1, 1})), Attr::of("ceil_mode", int64_t{1})});
  const std::string m = b.node("Mul", "m", {a, b.uniform_weight("scale", {1, 16, 1, 1}, 0.5f, 1.5f)});
  const std::string cat = b.node("Concat", "cat", {m, a}, {Attr::of("axis", int64_t{1})});
  const std::string t = b.node("Transpose", "t", {m}, {Attr::of("perm", ints({0, 2, 3, 1}))});
  const std::string g = b.node("GlobalAveragePool", "g", {a});
  const std::string f = b.node("Flatten", "f", {g});
  std::string image = r1;
  if (resize) {
    image = b.node("Resize", "resized", {r1, "", b.float_constant("scales", {4}, {1, 1, 2, 2})},
                   {Attr::of("mode", std::string("nearest"))});
  }
  // 16x16 -> MaxPool(ceil) 9x9 -> AveragePool(ceil) 5x5.
  b.add_output(cat, k_onnx_float, {batch, {32, {}}, {5, {}}, {5, {}}});
  b.add_output(t, k_onnx_float, {batch, {5, {}}, {5, {}}, {16, {}}});
  b.add_output(f, k_onnx_float, {batch, {16, {}}});
  b.add_output(image, k_onnx_float, {batch, {16, {}}, {resize ? 32 : 16, {}}, {resize ? 32 : 16, {}}});
  return b.serialize();
}

frontend::ImportedModel import(const std::string& bytes, const std::string& name) {
  return frontend::import_onnx_bytes(std::as_bytes(std::span<const char>(bytes)), name + ".onnx");
}

testing::LoweredModel lowered(const frontend::ImportedModel& model) {
  testing::LoweredModel out{passes::lower(model.graph), passes::source_weights(model.graph)};
  passes::materialize_weights(out.lowered, out.sources);
  return out;
}

ir::ValueId value_named(const ir::Graph& g, const std::string& name) {
  for (size_t v = 0; v < g.num_values(); ++v) {
    if (g.value(static_cast<ir::ValueId>(v)).name == name) return static_cast<ir::ValueId>(v);
  }
  ADD_FAILURE() << "no value '" << name << "'";
  return ir::k_no_value;
}

// The layer whose anchor is the node of this op type (the first one).
size_t layer_of(const ir::Graph& g, const std::vector<cuda::Layer>& layers, const std::string& op) {
  for (size_t i = 0; i < layers.size(); ++i) {
    if (g.node(layers[i].anchor()).op_type == op) return i;
  }
  ADD_FAILURE() << "no layer of " << op;
  return 0;
}

std::set<std::string> converted(const ir::Graph& g, const ActivationLayouts& l, Layout to) {
  std::set<std::string> names;
  for (const cuda::LayoutConversion& c : l.conversions()) {
    if (c.to == to) names.insert(g.value(c.from).name);
  }
  return names;
}

TEST(CudaNhwcLayouts, AResNetKeepsConvsPoolsAndAddsNhwcAndConvertsOnlyItsInput) {
  const ir::Graph g = passes::lower(testing::zoo_model("resnet_tiny", 1).graph);
  const std::vector<cuda::Layer> layers = cuda::partition_layers(g);
  const ActivationLayouts l = ActivationLayouts::assign(g, layers, ElemType::f16);
  size_t convs = 0, pools = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerKind k = layers[i].kind;
    if (k == LayerKind::conv || k == LayerKind::pool || k == LayerKind::reduce || k == LayerKind::binary ||
        k == LayerKind::unary) {
      EXPECT_EQ(l.of_layer(i), Layout::nhwc) << g.node(layers[i].anchor()).describe();
    }
    if (k == LayerKind::matmul || k == LayerKind::view) {
      EXPECT_EQ(l.of_layer(i), Layout::nchw);
    }
    convs += k == LayerKind::conv;
    pools += k == LayerKind::pool || k == LayerKind::reduce;
    if (k == LayerKind::conv) {
      EXPECT_EQ(l.of_value(layers[i].output), Layout::nhwc);
    }
  }
  EXPECT_GT(convs, 4u);
  EXPECT_GT(pools, 0u);
  // The input is NCHW at the boundary: one conversion, before the first
  // conv, which reads the copy; the classifier's [N, C, 1, 1] pool output is
  // the same bytes in both layouts, so the flatten and Gemm need none.
  const ir::ValueId input = g.inputs()[0];
  EXPECT_EQ(l.of_value(input), Layout::nchw);
  ASSERT_EQ(l.conversions().size(), 1u);
  const cuda::LayoutConversion& c = l.conversions()[0];
  EXPECT_EQ(c.from, input);
  EXPECT_EQ(c.to, Layout::nhwc);
  EXPECT_TRUE(c.before);
  EXPECT_GE(static_cast<size_t>(c.copy), g.num_values());
  EXPECT_EQ(l.num_values(), g.num_values() + 1);
  const size_t first_conv = layer_of(g, layers, "Conv");
  EXPECT_EQ(c.layer, first_conv);
  EXPECT_EQ(l.read(first_conv, input), c.copy);
  for (ir::ValueId out : g.outputs()) EXPECT_EQ(l.output(out), out);
}

TEST(CudaNhwcLayouts, MobileNetsKeepDepthwiseConvsNhwcAndConvertOnlyTheirInput) {
  for (const char* name : {"mobilenet_tiny", "mobilenet_v2"}) {
    const ir::Graph g = passes::lower(testing::zoo_model(name, 1).graph);
    const std::vector<cuda::Layer> layers = cuda::partition_layers(g);
    const ActivationLayouts l = ActivationLayouts::assign(g, layers, ElemType::bf16);
    size_t depthwise = 0;
    for (size_t i = 0; i < layers.size(); ++i) {
      if (layers[i].kind != LayerKind::conv) continue;
      EXPECT_EQ(l.of_layer(i), Layout::nhwc) << name << " " << g.node(layers[i].anchor()).describe();
      depthwise += g.node(layers[i].anchor()).attrs.get_int("group", 1) > 1;
    }
    EXPECT_GT(depthwise, 0u) << name;
    ASSERT_EQ(l.conversions().size(), 1u) << name << ": " << l.summary(g);
    EXPECT_EQ(l.conversions()[0].from, g.inputs()[0]);
  }
}

TEST(CudaNhwcLayouts, NchwReadersAndOutputsReadConversionsMadeOncePerValue) {
  const ir::Graph g = passes::lower(import(mixed_readers_model(false, false), "mixed").graph);
  const std::vector<cuda::Layer> layers = cuda::partition_layers(g);
  for (ir::NodeId id = 0; id < static_cast<ir::NodeId>(g.num_nodes()); ++id)
    ASSERT_EQ(cuda::unsupported_reason(g, id), std::nullopt) << g.node(id).describe();
  const ActivationLayouts l = ActivationLayouts::assign(g, layers, ElemType::bf16);
  for (const char* op : {"Conv", "MaxPool", "AveragePool", "Mul", "GlobalAveragePool"})
    EXPECT_EQ(l.of_layer(layer_of(g, layers, op)), Layout::nhwc) << op;
  for (const char* op : {"Concat", "Transpose", "Flatten"})
    EXPECT_EQ(l.of_layer(layer_of(g, layers, op)), Layout::nchw) << op;
  // x into the first conv; r1 (an output), m (Concat and Transpose: one
  // copy for both) and a (Concat) back to NCHW. The global pool's output
  // is layout-free: Flatten reads it as it is.
  EXPECT_EQ(converted(g, l, Layout::nhwc), std::set<std::string>{"x"});
  EXPECT_EQ(converted(g, l, Layout::nchw), (std::set<std::string>{"r1_out", "m_out", "a_out"}));
  EXPECT_EQ(l.conversions().size(), 4u);
  const ir::ValueId m = value_named(g, "m_out"), a = value_named(g, "a_out"), gap = value_named(g, "g_out");
  const size_t concat = layer_of(g, layers, "Concat"), transpose = layer_of(g, layers, "Transpose");
  EXPECT_NE(l.read(concat, m), m);
  EXPECT_EQ(l.read(concat, m), l.read(transpose, m));
  EXPECT_NE(l.read(concat, a), a);
  EXPECT_TRUE(l.layout_free(gap));
  EXPECT_EQ(l.read(layer_of(g, layers, "Flatten"), gap), gap);
  // The NHWC pool reads m's source a as it is; the copy of a is for Concat.
  EXPECT_EQ(l.read(layer_of(g, layers, "Mul"), a), a);
  // A conversion back to NCHW runs right after its value's producer.
  for (const cuda::LayoutConversion& c : l.conversions()) {
    if (c.to != Layout::nchw) continue;
    EXPECT_FALSE(c.before);
    EXPECT_EQ(layers[c.layer].output, c.from);
    const auto& after = l.after(c.layer);
    EXPECT_NE(std::find(after.begin(), after.end(), static_cast<size_t>(&c - l.conversions().data())),
              after.end());
  }
  // Every graph output is read in NCHW.
  for (ir::ValueId out : g.outputs()) {
    const ir::ValueId mem = l.output(out);
    if (mem != out) {
      EXPECT_EQ(l.conversions()[static_cast<size_t>(mem) - g.num_values()].to, Layout::nchw);
    } else {
      EXPECT_TRUE(l.of_value(out) == Layout::nchw || l.layout_free(out)) << g.value(out).name;
    }
  }
}

TEST(CudaNhwcLayouts, Fp32EnginesKeepEveryValueNchw) {
  for (const std::string& bytes : {mixed_readers_model(false, false),
                                   zoo::build_zoo_model("resnet_tiny", {1, std::nullopt}).onnx_bytes}) {
    const ir::Graph g = passes::lower(import(bytes, "m").graph);
    const std::vector<cuda::Layer> layers = cuda::partition_layers(g);
    const ActivationLayouts l = ActivationLayouts::assign(g, layers, ElemType::f32);
    EXPECT_TRUE(l.conversions().empty());
    EXPECT_EQ(l.num_values(), g.num_values());
    EXPECT_EQ(l.nhwc_values(), 0u);
    for (size_t i = 0; i < layers.size(); ++i) {
      EXPECT_EQ(l.of_layer(i), Layout::nchw);
      for (ir::NodeId id : layers[i].nodes) {
        for (ir::ValueId in : g.node(id).inputs) EXPECT_EQ(l.read(i, in), in);
      }
    }
  }
}

TEST(CudaNhwcLayouts, ATransformerWithoutConvsGetsNoNhwcValueAndNoConversion) {
  // Attention's 4-D [batch, heads, seq, head] values come from transposes
  // and feed MatMuls and Softmax: nothing channels-last produces them.
  // With attention fused into one layer, as a half build makes it, and without.
  const ir::Graph g = passes::lower(testing::zoo_model("bert_tiny", 1).graph);
  const std::vector<cuda::Layer> plain = cuda::partition_layers(g);
  const std::vector<cuda::Layer> fused = cuda::fuse_attention(g, plain);
  EXPECT_LT(fused.size(), plain.size());
  for (const std::vector<cuda::Layer>* layers : {&plain, &fused}) {
    const ActivationLayouts l = ActivationLayouts::assign(g, *layers, ElemType::f16);
    EXPECT_EQ(l.nhwc_values(), 0u);
    EXPECT_TRUE(l.conversions().empty());
    for (size_t i = 0; i < layers->size(); ++i) EXPECT_EQ(l.of_layer(i), Layout::nchw);
  }
}

TEST(CudaNhwcLayouts, APlanReadBackGetsTheSameLayoutsWithoutRecordingThem) {
  ir::Graph g = passes::lower(import(mixed_readers_model(false, true), "mixed").graph);
  cuda::Plan plan;
  plan.layers = cuda::partition_layers(g);
  plan.graph = std::move(g);
  plan.specs = {{"x", DType::float32, {1, 8, 16, 16}, {2, 8, 16, 16}, {4, 8, 16, 16}}};
  plan.fingerprint = {"cuda", cuda::k_plan_version, "CUDA 13.0, cuDNN 9.19.0, cuBLASLt 13.1.0", "sm_90 x132"};
  plan.precision = ElemType::f16;
  for (cuda::Layer& layer : plan.layers) {
    if (layer.kind == LayerKind::conv) layer.tactic.cudnn = {7, {{2, 1}}};
    if (layer.kind == LayerKind::matmul) layer.tactic.lt_algo.assign(64, 0x5a);
  }
  const cuda::Plan back = cuda::parse_plan(cuda::serialize_plan(plan));
  const ActivationLayouts a = ActivationLayouts::assign(plan.graph, plan.layers, plan.precision);
  const ActivationLayouts b = ActivationLayouts::assign(back.graph, back.layers, back.precision);
  ASSERT_EQ(a.num_values(), b.num_values());
  ASSERT_GT(a.nhwc_values(), 0u);
  EXPECT_EQ(a.nhwc_values(), b.nhwc_values());
  for (size_t i = 0; i < plan.layers.size(); ++i) EXPECT_EQ(a.of_layer(i), b.of_layer(i));
  ASSERT_EQ(a.conversions().size(), b.conversions().size());
  for (size_t c = 0; c < a.conversions().size(); ++c) {
    EXPECT_EQ(a.conversions()[c].from, b.conversions()[c].from);
    EXPECT_EQ(a.conversions()[c].to, b.conversions()[c].to);
    EXPECT_EQ(a.conversions()[c].layer, b.conversions()[c].layer);
  }
  EXPECT_EQ(a.summary(plan.graph), b.summary(back.graph));
}

TEST(CudaNhwcLayouts, ConvTimingsAtEachLayoutHaveTheirOwnSignature) {
  cuda::ConvGeometry geo;
  geo.x = {8, 64, 56, 56};
  geo.w = {64, 64, 3, 3};
  geo.y = {8, 64, 56, 56};
  geo.type = ElemType::f16;
  const std::string nchw = cuda::conv_signature(geo, nullptr);
  geo.nhwc = true;
  const std::string nhwc = cuda::conv_signature(geo, nullptr);
  EXPECT_NE(nchw, nhwc);
  EXPECT_EQ(nchw.find("nhwc"), std::string::npos);  // NCHW signatures (and their timings) stay as they were
}

// ---- on a GPU (label gpu) ----

struct HalfCase {
  Precision precision;
  double bound;
  const char* name;
};
// The bounds of docs/cuda.md: max |kiln - ref| / max |ref|.
const HalfCase k_half_cases[] = {{Precision::fp16, 1e-2, "fp16"}, {Precision::bf16, 3e-2, "bf16"}};

class CudaNhwcGpu : public GpuTest {
 protected:
  static CompileSettings half(Precision p) {
    CompileSettings s = settings();
    s.enabled_precisions = {Precision::fp32, p};
    return s;
  }
};

// The activation layouts a built engine runs with, from its own plan.
ActivationLayouts layouts_of(Engine& engine) {
  const cuda::Plan plan = cuda::parse_plan(engine.serialize());
  return ActivationLayouts::assign(plan.graph, plan.layers, plan.precision);
}

TEST_F(CudaNhwcGpu, HalfZooCnnsWithNhwcActivationsMatchTheReference) {
  // resnet18 at batch 1 is CudaGpu.HalfEnginesOfZooCnnsMatchTheReferenceWithinBounds
  // (its half engines are channels-last too); here a batch of 3, and
  // mobilenet_v2: depthwise (grouped) convs, ReLU6 as Clip (kiln's epilogue
  // kernel over a channels-last conv output), residual Adds.
  struct Model {
    const char* name;
    std::vector<int64_t> shape;
  };
  for (const Model& m : {Model{"resnet_tiny", {3, 3, 64, 64}}, Model{"mobilenet_v2", {1, 3, 224, 224}},
                         Model{"mobilenet_tiny", {2, 3, 64, 64}}}) {
    const auto model = testing::zoo_model(m.name, 1);
    const std::vector<Tensor> in{ramp(m.shape)};
    ref::Executor reference(model.graph);
    const auto want = reference.run(in);
    for (const HalfCase& c : k_half_cases) {
      auto compiled = runtime::CompiledModel::compile(
          model.graph, {InputSpec::fixed("input", DType::float32, m.shape)}, half(c.precision));
      const double err = relative_error(compiled.run(in), want);
      std::printf("[ nhwc ] %s %s: max |diff| / max |ref| = %.3g (bound %.0e)\n", m.name, c.name, err,
                  c.bound);
      EXPECT_LT(err, c.bound) << m.name << " " << c.name;
    }
  }
  // And the engine did run channels-last, its depthwise convs included.
  auto [g, sources] = testing::lowered_zoo_model("mobilenet_tiny", 1);
  builder::TimingCache timing;
  const std::vector<InputSpec> specs{InputSpec::fixed("input", DType::float32, {2, 3, 64, 64})};
  auto engine = make_backend("cuda")->build(g, specs, half(Precision::fp16), timing);
  const cuda::Plan plan = cuda::parse_plan(engine->serialize());
  const ActivationLayouts layouts = ActivationLayouts::assign(plan.graph, plan.layers, plan.precision);
  size_t depthwise = 0;
  for (size_t i = 0; i < plan.layers.size(); ++i) {
    if (plan.layers[i].kind != LayerKind::conv) continue;
    EXPECT_EQ(layouts.of_layer(i), Layout::nhwc);
    depthwise += plan.graph.node(plan.layers[i].anchor()).attrs.get_int("group", 1) > 1;
  }
  EXPECT_GT(depthwise, 0u);
  EXPECT_EQ(layouts.conversions().size(), 1u);  // the input only
}

TEST_F(CudaNhwcGpu, NhwcValuesFeedingConcatTransposeResizeAndOutputsMatchTheReference) {
  const auto model = import(mixed_readers_model(true, false), "mixed_readers");
  const std::vector<Tensor> in{ramp({2, 8, 16, 16})};
  ref::Executor reference(model.graph);
  const auto want = reference.run(in);
  for (const HalfCase& c : k_half_cases) {
    auto compiled = runtime::CompiledModel::compile(
        model.graph, {InputSpec::fixed("x", DType::float32, {2, 8, 16, 16})}, half(c.precision));
    const auto got = compiled.run(in);
    ASSERT_EQ(got.size(), want.size());
    // Output by output: a layout mistake in one is not hidden by the scale of another.
    for (size_t o = 0; o < got.size(); ++o) {
      const double err = relative_error(got[o], want[o]);
      EXPECT_LT(err, c.bound) << c.name << " output " << o;
    }
  }
  // fp32 (all NCHW) still matches at fp32's bound.
  auto fp32 = runtime::CompiledModel::compile(
      model.graph, {InputSpec::fixed("x", DType::float32, {2, 8, 16, 16})}, settings());
  EXPECT_LT(relative_error(fp32.run(in), want), 1e-3);
}

TEST_F(CudaNhwcGpu, ADynamicBatchRunsTwoInstancesWithNhwcActivations) {
  const auto model = import(mixed_readers_model(false, true), "mixed_dynamic");
  const std::vector<InputSpec> specs{{"x", DType::float32, {1, 8, 16, 16}, {2, 8, 16, 16}, {4, 8, 16, 16}}};
  ref::Executor reference(model.graph);
  for (const HalfCase& c : k_half_cases) {
    auto compiled = runtime::CompiledModel::compile(model.graph, specs, half(c.precision));
    for (int64_t batch : {3, 1, 3}) {
      const std::vector<Tensor> in{ramp({batch, 8, 16, 16}, static_cast<float>(batch))};
      const auto got = compiled.run(in);
      const auto want = reference.run(in);
      ASSERT_EQ(got.size(), want.size());
      for (size_t o = 0; o < got.size(); ++o)
        EXPECT_LT(relative_error(got[o], want[o]), c.bound)
            << c.name << " batch " << batch << " output " << o;
    }
  }
}

TEST_F(CudaNhwcGpu, APlanRoundTripRunsTheSameNhwcEngineBitwise) {
  auto [g, sources] = lowered(import(mixed_readers_model(false, false), "mixed"));
  auto backend = make_backend("cuda");
  builder::TimingCache timing;
  const std::vector<InputSpec> specs{InputSpec::fixed("x", DType::float32, {2, 8, 16, 16})};
  for (const HalfCase& c : k_half_cases) {
    auto built = backend->build(g, specs, half(c.precision), timing);
    ASSERT_GT(layouts_of(*built).conversions().size(), 0u);
    auto loaded = backend->deserialize(built->serialize());
    loaded->refit(sources);
    const std::vector<Tensor> in{ramp({2, 8, 16, 16})};
    const auto a = built->run(in);
    const auto b = loaded->run(in);
    EXPECT_TRUE(testing::same_bits(a, b)) << c.name;
    // A refit of the built engine (its KRSC weights transposed again) too.
    built->refit(sources);
    EXPECT_TRUE(testing::same_bits(a, built->run(in))) << c.name << " after refit";
  }
}

// ---- the channels-last kernels against the NCHW ones ----

struct DeviceFree {
  void operator()(void* p) const { cudaFree(p); }
};
using DevicePtr = std::unique_ptr<void, DeviceFree>;

DevicePtr device_bytes(size_t bytes) {
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, std::max<size_t>(bytes, 4)), cudaSuccess);
  return DevicePtr(p);
}

DevicePtr upload(const std::vector<std::byte>& bytes) {
  DevicePtr p = device_bytes(bytes.size());
  EXPECT_EQ(cudaMemcpy(p.get(), bytes.data(), bytes.size(), cudaMemcpyHostToDevice), cudaSuccess);
  return p;
}

std::vector<std::byte> download(const void* p, size_t bytes) {
  std::vector<std::byte> out(bytes);
  EXPECT_EQ(cudaMemcpy(out.data(), p, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  return out;
}

// [N, C, H, W] elements (of `size` bytes) -> [N, H, W, C].
std::vector<std::byte> to_nhwc(const std::vector<std::byte>& x, int64_t n, int64_t c, int64_t h, int64_t w,
                               size_t size) {
  std::vector<std::byte> y(x.size());
  for (int64_t b = 0; b < n; ++b)
    for (int64_t k = 0; k < c; ++k)
      for (int64_t i = 0; i < h * w; ++i)
        std::memcpy(&y[((b * h * w + i) * c + k) * size], &x[((b * c + k) * h * w + i) * size], size);
  return y;
}

std::vector<float> sines(int64_t count) {
  std::vector<float> v(static_cast<size_t>(count));
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(0.37f * static_cast<float>(i)) * 3.0f;
  return v;
}

// Stored fp32 or fp16 elements as floats.
std::vector<float> to_floats(const std::vector<std::byte>& bytes, ElemType type) {
  std::vector<float> out;
  if (type == ElemType::f32) {
    out.resize(bytes.size() / 4);
    std::memcpy(out.data(), bytes.data(), bytes.size());
    return out;
  }
  for (size_t i = 0; i + 1 < bytes.size(); i += 2) {
    uint16_t bits;
    std::memcpy(&bits, &bytes[i], 2);
    out.push_back(half_to_float(bits));
  }
  return out;
}

TEST_F(CudaNhwcGpu, NhwcPoolingEqualsNchwPoolingBitwise) {
  struct Case {
    const char* what;
    cuda::Pool2d p;
  };
  // Output sizes as the engine gets them from shape inference; ceil_mode
  // shows as the last window running past the padded input.
  auto pool = [](int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t s, int64_t pad, int64_t dil,
                 bool ceil, bool include_pad) {
    cuda::Pool2d p{n, c, h, w, 0, 0, k, k, s, s, pad, pad, dil, dil, include_pad};
    auto out = [&](int64_t in) {
      const int64_t span = in + 2 * pad - dil * (k - 1) - 1;
      int64_t o = (ceil ? (span + s - 1) / s : span / s) + 1;
      if (ceil && (o - 1) * s >= in + pad) --o;  // ONNX: the last window starts inside
      return o;
    };
    p.out_h = out(h);
    p.out_w = out(w);
    return p;
  };
  // Channel counts that are multiples of the 16-byte vector (4 fp32, 8
  // half) take the vector kernel, the others the scalar one.
  const std::vector<Case> cases = {
      {"resnet stem 3x3/2 pad 1", pool(2, 64, 17, 17, 3, 2, 1, 1, false, false)},
      {"ceil mode, odd sizes", pool(2, 24, 9, 11, 3, 2, 1, 1, true, false)},
      {"count_include_pad", pool(1, 40, 8, 8, 3, 1, 1, 1, false, true)},
      {"dilation 2, channels not a multiple of 8", pool(3, 5, 12, 10, 2, 2, 0, 2, true, false)},
      {"global-sized window", pool(2, 33, 7, 7, 7, 1, 0, 1, false, false)},
  };
  for (ElemType type : {ElemType::f32, ElemType::f16, ElemType::bf16}) {
    const size_t size = cuda::elem_size(type);
    for (const Case& c : cases) {
      const cuda::Pool2d& p = c.p;
      const std::vector<std::byte> x = cuda::to_storage(sines(p.n * p.c * p.h * p.w), type);
      const DevicePtr x_nchw = upload(x), x_nhwc = upload(to_nhwc(x, p.n, p.c, p.h, p.w, size));
      const size_t y_bytes = static_cast<size_t>(p.n * p.c * p.out_h * p.out_w) * size;
      const DevicePtr y_nchw = device_bytes(y_bytes), y_nhwc = device_bytes(y_bytes);
      for (bool max : {true, false}) {
        if (max) {
          cuda::launch_max_pool2d(type, x_nchw.get(), y_nchw.get(), p, nullptr);
          cuda::launch_max_pool2d_nhwc(type, x_nhwc.get(), y_nhwc.get(), p, nullptr);
        } else {
          cuda::launch_avg_pool2d(type, x_nchw.get(), y_nchw.get(), p, nullptr);
          cuda::launch_avg_pool2d_nhwc(type, x_nhwc.get(), y_nhwc.get(), p, nullptr);
        }
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        const auto want = to_nhwc(download(y_nchw.get(), y_bytes), p.n, p.c, p.out_h, p.out_w, size);
        const auto got = download(y_nhwc.get(), y_bytes);
        EXPECT_EQ(std::memcmp(want.data(), got.data(), y_bytes), 0)
            << c.what << (max ? " max " : " average ") << cuda::precision_name(type);
      }
    }
  }
}

TEST_F(CudaNhwcGpu, NhwcGlobalPoolsMatchTheNchwRowReductions) {
  struct Shape {
    int64_t n, c, hw;
  };
  // Channels below, at and past one 32-channel tile; planes short and long.
  for (const Shape s : {Shape{2, 512, 49}, Shape{3, 5, 1}, Shape{1, 33, 3136}, Shape{4, 64, 9}}) {
    for (ElemType type : {ElemType::f32, ElemType::f16}) {
      const size_t size = cuda::elem_size(type);
      const std::vector<float> values = sines(s.n * s.c * s.hw);
      const std::vector<std::byte> x = cuda::to_storage(values, type);
      const DevicePtr x_nchw = upload(x), x_nhwc = upload(to_nhwc(x, s.n, s.c, s.hw, 1, size));
      const size_t y_bytes = static_cast<size_t>(s.n * s.c) * size;
      const DevicePtr y_nchw = device_bytes(y_bytes), y_nhwc = device_bytes(y_bytes);
      for (bool max : {true, false}) {
        cuda::launch_reduce_rows(type, max, x_nchw.get(), y_nchw.get(), s.n * s.c, s.hw, nullptr);
        cuda::launch_reduce_nhwc(type, max, x_nhwc.get(), y_nhwc.get(), s.n, s.hw, s.c, nullptr);
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        const auto want = download(y_nchw.get(), y_bytes);
        const auto got = download(y_nhwc.get(), y_bytes);
        if (max) {
          // A max does not depend on the order: bit for bit.
          EXPECT_EQ(std::memcmp(want.data(), got.data(), y_bytes), 0) << s.c << "x" << s.hw;
          continue;
        }
        // Sums in another order: both kernels within rounding of the exact
        // mean of the stored inputs (fp32 sums of |x| <= 3, then the output's
        // own rounding to the storage type).
        const double tolerance = type == ElemType::f32 ? 1e-4 : 3.0 * 0x1p-11 + 1e-4;
        const auto stored = to_floats(x, type);
        const auto nchw = to_floats(want, type), nhwc = to_floats(got, type);
        for (int64_t r = 0; r < s.n * s.c; ++r) {
          double mean = 0;
          for (int64_t j = 0; j < s.hw; ++j) mean += stored[static_cast<size_t>(r * s.hw + j)];
          mean /= static_cast<double>(s.hw);
          EXPECT_NEAR(nhwc[static_cast<size_t>(r)], mean, tolerance) << s.c << "x" << s.hw << " row " << r;
          EXPECT_NEAR(nchw[static_cast<size_t>(r)], mean, tolerance) << s.c << "x" << s.hw << " row " << r;
        }
      }
    }
  }
}

}  // namespace
}  // namespace kiln
