// Run-time-shape subgraphs in cuda engines (host_shapes.hpp): Shape → Gather
// → Unsqueeze → Concat → Reshape is evaluated on the host per instance
// instead of splitting the model around it. The partition, the shape layers
// and their values per instance, the plan round trip and the refusals are
// checked on the host; the GPU tests (label gpu) compare engines with the
// reference executor and skip without a GPU.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "backends/cuda/cuda_layers.hpp"
#include "backends/cuda/cuda_plan_format.hpp"
#include "backends/cuda/host_shapes.hpp"
#include "cuda_test_support.hpp"
#include "ir/op_schema.hpp"
#include "partition/partition.hpp"
#include "reference/executor.hpp"
#include "runtime/compiled_model.hpp"

namespace kiln {
namespace {

using testing::has_gpu;
using testing::ramp;
using testing::relative_error;
using testing::zoo_model;

// The cuda backend's support check without a GPU: what plan_segments asks.
class CudaSupportOnly final : public Backend {
 public:
  std::string_view name() const override { return "cuda"; }
  Fingerprint fingerprint() const override { return {"cuda", cuda::k_plan_version, "test", "sm_90 x1"}; }
  std::optional<std::string> unsupported_reason(const ir::Graph& graph, ir::NodeId node) const override {
    return cuda::unsupported_reason(graph, node);
  }
  std::unique_ptr<Engine> build(const ir::Graph&, std::span<const InputSpec>, const CompileSettings&,
                                builder::TimingCache&) override {
    throw Error(ErrorCode::internal, "no builds here");
  }
  std::unique_ptr<Engine> deserialize(std::span<const std::byte>, int) override {
    throw Error(ErrorCode::internal, "no plans here");
  }
};

ir::NodeId add_node(ir::Graph& g, std::string name, std::string op, std::vector<ir::ValueId> inputs,
                    std::vector<ir::ValueId> outputs, ir::Attributes attrs = {}) {
  ir::Node n;
  n.name = std::move(name);
  n.op_type = std::move(op);
  n.opset = 17;
  n.inputs = std::move(inputs);
  n.outputs = std::move(outputs);
  n.attrs = std::move(attrs);
  return g.add_node(std::move(n));
}

ir::ValueId int64s(ir::Graph& g, const std::string& name, std::vector<int64_t> shape,
                   std::vector<int64_t> values) {
  return g.add_initializer(name, Tensor::from_values<int64_t>(std::move(shape), values));
}

// x [batch, 4, 8] → Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [32]))
// → MatMul with a [32, 16] weight: the Reshape target as exporters write it
// for a dynamic batch. Nodes of interest are returned through the out
// parameters.
struct ReshapeModel {
  ir::Graph graph;
  ir::NodeId shape, gather, unsqueeze, concat, reshape, matmul;
  ir::ValueId target;
};

ReshapeModel reshape_model() {
  ReshapeModel m;
  ir::Graph& g = m.graph;
  g.source = "reshape_model";
  const ir::ValueId x = g.add_value("x", {DType::float32, ir::Dims{ir::Dim::symbol("batch"), 4, 8}});
  g.add_input(x);
  const ir::ValueId shape = g.add_value("shape");
  const ir::ValueId batch = g.add_value("batch");
  const ir::ValueId batch_1d = g.add_value("batch_1d");
  m.target = g.add_value("target");
  const ir::ValueId flat = g.add_value("flat");
  const ir::ValueId y = g.add_value("y");
  std::vector<float> w(32 * 16);
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::cos(0.1f * static_cast<float>(i));
  const ir::ValueId weight = g.add_initializer("w", Tensor::from_values<float>({32, 16}, w));
  m.shape = add_node(g, "shape", "Shape", {x}, {shape});
  ir::Attributes axis0;
  axis0.set("axis", int64_t{0});
  m.gather = add_node(g, "gather", "Gather", {shape, g.add_initializer("zero", Tensor::scalar<int64_t>(0))},
                      {batch}, axis0);
  m.unsqueeze = add_node(g, "unsqueeze", "Unsqueeze", {batch, int64s(g, "axes", {1}, {0})}, {batch_1d});
  m.concat = add_node(g, "concat", "Concat", {batch_1d, int64s(g, "features", {1}, {32})}, {m.target}, axis0);
  m.reshape = add_node(g, "reshape", "Reshape", {x, m.target}, {flat});
  m.matmul = add_node(g, "matmul", "MatMul", {flat, weight}, {y});
  g.add_output(y);
  ir::infer_shapes(g);
  return m;
}

std::vector<InputSpec> batch_range(int64_t lo, int64_t opt, int64_t hi) {
  return {{"x", DType::float32, {lo, 4, 8}, {opt, 4, 8}, {hi, 4, 8}}};
}

size_t count_kind(const std::vector<cuda::Layer>& layers, cuda::LayerKind kind) {
  return static_cast<size_t>(
      std::count_if(layers.begin(), layers.end(), [kind](const cuda::Layer& l) { return l.kind == kind; }));
}

// After lowering (as a compile sees the model): one cuda segment, and its
// shape subgraph still shape layers (lowering folds only what is static).
void expect_one_engine_after_lowering(const ir::Graph& graph, const std::vector<InputSpec>& specs,
                                      size_t shape_layers) {
  const ir::Graph lowered = passes::lower(graph);
  CudaSupportOnly backend;
  const auto segments = partition::plan_segments(lowered, backend, specs, 1);
  ASSERT_EQ(segments.size(), 1u) << graph.source;
  EXPECT_TRUE(segments[0].engine) << segments[0].fallback_reason;
  EXPECT_EQ(count_kind(cuda::partition_layers(lowered), cuda::LayerKind::shape), shape_layers)
      << graph.source;
}

TEST(CudaShapes, ARunTimeReshapeTargetIsOneEngineSegmentWithShapeLayers) {
  const ReshapeModel m = reshape_model();
  for (ir::NodeId id = 0; id < static_cast<ir::NodeId>(m.graph.num_nodes()); ++id) {
    EXPECT_EQ(cuda::unsupported_reason(m.graph, id), std::nullopt) << m.graph.node(id).describe();
  }
  CudaSupportOnly backend;
  const auto segments = partition::plan_segments(m.graph, backend, batch_range(1, 4, 8), 1);
  ASSERT_EQ(segments.size(), 1u);
  EXPECT_TRUE(segments[0].engine);
  EXPECT_EQ(segments[0].nodes.size(), m.graph.num_nodes());

  const std::vector<cuda::Layer> layers = cuda::partition_layers(m.graph);
  EXPECT_EQ(count_kind(layers, cuda::LayerKind::shape), 4u);  // Shape, Gather, Unsqueeze, Concat
  EXPECT_EQ(count_kind(layers, cuda::LayerKind::view), 1u);   // the Reshape
  EXPECT_EQ(count_kind(layers, cuda::LayerKind::matmul), 1u);
  for (const cuda::Layer& l : layers) {
    const bool shape_node = l.anchor() == m.shape || l.anchor() == m.gather || l.anchor() == m.unsqueeze ||
                            l.anchor() == m.concat;
    EXPECT_EQ(l.kind == cuda::LayerKind::shape, shape_node) << m.graph.node(l.anchor()).describe();
  }
  expect_one_engine_after_lowering(m.graph, batch_range(1, 4, 8), 4);
}

TEST(CudaShapes, EachInstanceComputesItsReshapeTargetOnTheHost) {
  const ReshapeModel m = reshape_model();
  const std::vector<cuda::Layer> layers = cuda::partition_layers(m.graph);
  const auto specs = batch_range(1, 4, 8);
  for (int64_t batch : {2, 5}) {
    const cuda::InstanceValues at = cuda::instance_values(m.graph, specs, {{batch, 4, 8}}, layers);
    const auto& target = at.host[static_cast<size_t>(m.target)];
    ASSERT_TRUE(target.has_value()) << "batch " << batch;
    ASSERT_EQ(target->numel(), 2);
    EXPECT_EQ(target->int_at(0), batch * 4 * 8 / 32);
    EXPECT_EQ(target->int_at(1), 32);
    const ir::ValueId flat = m.graph.node(m.reshape).outputs[0];
    const ir::ValueId y = m.graph.node(m.matmul).outputs[0];
    ASSERT_TRUE(at.shapes[static_cast<size_t>(flat)].has_value());
    EXPECT_EQ(*at.shapes[static_cast<size_t>(flat)], (std::vector<int64_t>{batch, 32}));
    EXPECT_EQ(*at.shapes[static_cast<size_t>(y)], (std::vector<int64_t>{batch, 16}));
  }
}

TEST(CudaShapes, ShapeLayersRoundTripThroughThePlan) {
  const ReshapeModel m = reshape_model();
  cuda::Plan plan;
  plan.layers = cuda::partition_layers(m.graph);
  plan.graph = m.graph;
  plan.specs = batch_range(1, 4, 8);
  plan.fingerprint = {"cuda", cuda::k_plan_version, "CUDA 13.0, cuDNN 9.19.0, cuBLASLt 13.1.0", "sm_90 x132"};
  for (cuda::Layer& l : plan.layers) {
    if (l.kind == cuda::LayerKind::matmul) l.tactic.lt_algo.assign(64, 0x5a);
  }
  const cuda::Plan back = cuda::parse_plan(cuda::serialize_plan(plan));
  ASSERT_EQ(back.layers.size(), plan.layers.size());
  for (size_t i = 0; i < plan.layers.size(); ++i) {
    EXPECT_EQ(back.layers[i].kind, plan.layers[i].kind) << i;
    EXPECT_EQ(back.layers[i].nodes, plan.layers[i].nodes) << i;
  }
  EXPECT_EQ(count_kind(back.layers, cuda::LayerKind::shape), 4u);

  // A shape layer on a node the GPU runs is a corrupt plan, not a crash.
  cuda::Plan bad = plan;
  for (cuda::Layer& l : bad.layers) {
    if (l.anchor() == m.reshape) l.kind = cuda::LayerKind::shape;
  }
  EXPECT_THROW((void)cuda::parse_plan(cuda::serialize_plan(bad)), Error);
}

TEST(CudaShapes, AShapeValueThatFeedsFloatArithmeticIsRefusedWithItsReason) {
  // The same model, and the batch size also scales x: Gather → Cast(float)
  // → Div(x, batch). The GPU would read the shape value as data, so its
  // nodes stay on the host fallback, and the Reshape whose target they
  // compute with them.
  ReshapeModel m = reshape_model();
  ir::Graph& g = m.graph;
  const ir::ValueId batch = g.node(m.gather).outputs[0];
  const ir::ValueId as_float = g.add_value("batch_float");
  const ir::ValueId scaled = g.add_value("scaled");
  ir::Attributes to_float;
  to_float.set("to", int64_t{1});
  const ir::NodeId cast = add_node(g, "to_float", "Cast", {batch}, {as_float}, to_float);
  const ir::NodeId div = add_node(g, "div", "Div", {g.inputs()[0], as_float}, {scaled});
  g.add_output(scaled);
  ir::infer_shapes(g);

  const auto gather_reason = cuda::unsupported_reason(g, m.gather);
  ASSERT_TRUE(gather_reason.has_value());
  EXPECT_NE(gather_reason->find("read as data by 'to_float' (Cast)"), std::string::npos) << *gather_reason;
  EXPECT_NE(gather_reason->find("float32"), std::string::npos) << *gather_reason;
  EXPECT_NE(cuda::unsupported_reason(g, cast), std::nullopt);
  EXPECT_NE(cuda::unsupported_reason(g, m.shape), std::nullopt);
  EXPECT_NE(cuda::unsupported_reason(g, m.unsqueeze), std::nullopt);
  const auto reshape_reason = cuda::unsupported_reason(g, m.reshape);
  ASSERT_TRUE(reshape_reason.has_value());
  EXPECT_NE(reshape_reason->find("shape input is not known"), std::string::npos) << *reshape_reason;
  // Float arithmetic itself still runs on the GPU.
  EXPECT_EQ(cuda::unsupported_reason(g, div), std::nullopt);
  EXPECT_EQ(cuda::unsupported_reason(g, m.matmul), std::nullopt);
  EXPECT_TRUE(cuda::host_shape_nodes(g) == std::vector<bool>(g.num_nodes(), false));
}

TEST(CudaShapes, AShapeValueThatIsAnEngineOutputIsRefused) {
  ReshapeModel m = reshape_model();
  m.graph.add_output(m.target);
  const auto why = cuda::unsupported_reason(m.graph, m.concat);
  ASSERT_TRUE(why.has_value());
  EXPECT_NE(why->find("output of the engine"), std::string::npos) << *why;
}

// bert_tiny computes its Reshape targets from Shape(hidden state) at run
// time. Its whole encoder (the embeddings' LayerNorm and both layers, with
// their Shape, Slice, Concat, Reshape and MatMul nodes) is one cuda engine;
// the host keeps only the embeddings (Gathers of int64 token ids, and
// position/type ids sliced to the sequence length) and the mask's int64
// Unsqueeze and Cast, for which the cuda backend has no kernels. The mask's
// float Sub and Mul are a second, small engine.
TEST(CudaShapes, BertTinysEncoderRunsInCudaEnginesWithItsShapeSubgraphs) {
  const auto model = zoo_model("bert_tiny", 1);
  const ir::Graph lowered = passes::lower(model.graph);
  std::vector<InputSpec> specs;
  for (ir::ValueId v : lowered.inputs())
    specs.push_back({lowered.value(v).name, DType::int64, {1, 16}, {4, 16}, {8, 16}});
  CudaSupportOnly backend;
  const auto segments = partition::plan_segments(lowered, backend, specs, 1);
  size_t engines = 0, reshapes = 0, shapes = 0, matmuls = 0;
  for (const partition::Segment& s : segments) {
    engines += s.engine;
    for (ir::NodeId id : s.nodes) {
      const ir::Node& n = lowered.node(id);
      if (!s.engine) {
        EXPECT_TRUE(n.name.rfind("embeddings", 0) == 0 || n.name.rfind("extended_mask", 0) == 0)
            << n.describe() << " runs on the host: " << s.fallback_reason;
        continue;
      }
      reshapes += n.op_type == "Reshape";
      shapes += n.op_type == "Shape";
      matmuls += n.op_type == "MatMul";
    }
  }
  EXPECT_EQ(reshapes, 8u);  // 2 layers × (Q, K, V, context)
  EXPECT_EQ(shapes, 2u);    // one per layer, of its hidden state
  EXPECT_EQ(matmuls, 16u);  // 2 layers × (Q, K, V, Q·Kᵀ, P·V, out, FFN × 2)
  EXPECT_EQ(engines, 2u);
  size_t encoder_engines = 0;
  for (const partition::Segment& s : segments) {
    encoder_engines += s.engine && std::any_of(s.nodes.begin(), s.nodes.end(), [&](ir::NodeId id) {
                         return lowered.node(id).name.rfind("encoder.", 0) == 0;
                       });
  }
  EXPECT_EQ(encoder_engines, 1u);
  // In the engines, as the runtime extracts them (a shape value another
  // segment computes is computed again), the shape subgraphs are shape
  // layers and every node is supported.
  const auto at_min = partition::types_at(lowered, specs, &InputSpec::min);
  const auto at_opt = partition::types_at(lowered, specs, &InputSpec::opt);
  const auto at_max = partition::types_at(lowered, specs, &InputSpec::max);
  const std::vector<bool> recompute = partition::recomputable_shape_values(lowered, at_min, at_opt, at_max);
  for (const partition::Segment& s : segments) {
    if (!s.engine) continue;
    const partition::Subgraph sub = partition::extract_subgraph(lowered, s, recompute);
    // Its inputs have shapes known over the range: it is built as an engine.
    EXPECT_TRUE(partition::subgraph_specs(sub, at_min, at_opt, at_max).has_value());
    for (ir::NodeId id = 0; id < static_cast<ir::NodeId>(sub.graph.num_nodes()); ++id) {
      EXPECT_EQ(cuda::unsupported_reason(sub.graph, id), std::nullopt) << sub.graph.node(id).describe();
    }
    const std::vector<cuda::Layer> layers = cuda::partition_layers(sub.graph);
    for (const cuda::Layer& l : layers) {
      const std::string& op = sub.graph.node(l.anchor()).op_type;
      if (op == "Shape" || op == "Concat") {
        EXPECT_EQ(l.kind, cuda::LayerKind::shape) << op;
      }
      if (op == "Reshape") {
        EXPECT_EQ(l.kind, cuda::LayerKind::view);
      }
    }
  }
}

// x [batch, seq, 8] → Slice(x, starts [1], ends [Shape(x)[1] - 1], axes [1])
// → Relu: the end is a shape value of the instance (a dynamic dim, so
// lowering cannot fold it).
ir::Graph slice_model() {
  ir::Graph g;
  g.source = "slice_model";
  const ir::ValueId x =
      g.add_value("x", {DType::float32, ir::Dims{ir::Dim::symbol("batch"), ir::Dim::symbol("seq"), 8}});
  g.add_input(x);
  ir::Attributes axis0;
  axis0.set("axis", int64_t{0});
  const ir::ValueId shape = g.add_value("shape"), dim = g.add_value("dim"), end = g.add_value("end"),
                    y = g.add_value("y"), z = g.add_value("z");
  add_node(g, "shape", "Shape", {x}, {shape});
  add_node(g, "gather", "Gather", {shape, int64s(g, "one_index", {1}, {1})}, {dim}, axis0);
  add_node(g, "sub", "Sub", {dim, int64s(g, "one", {1}, {1})}, {end});
  add_node(g, "slice", "Slice", {x, int64s(g, "starts", {1}, {1}), end, int64s(g, "axes", {1}, {1})}, {y});
  add_node(g, "relu", "Relu", {y}, {z});
  g.add_output(z);
  ir::infer_shapes(g);
  return g;
}

const std::vector<InputSpec> k_slice_range{{"x", DType::float32, {1, 3, 8}, {2, 6, 8}, {4, 8, 8}}};

TEST(CudaShapes, SliceArgumentsFromShapeValuesAreWorkedOutPerInstance) {
  const ir::Graph g = slice_model();
  const std::vector<cuda::Layer> layers = cuda::partition_layers(g);
  EXPECT_EQ(count_kind(layers, cuda::LayerKind::shape), 3u);  // Shape, Gather, Sub
  const auto slice = std::find_if(layers.begin(), layers.end(),
                                  [](const cuda::Layer& l) { return l.kind == cuda::LayerKind::slice; });
  ASSERT_NE(slice, layers.end());
  for (int64_t seq : {3, 6}) {
    const cuda::InstanceValues at = cuda::instance_values(g, k_slice_range, {{2, seq, 8}}, layers);
    EXPECT_EQ(*at.shapes[static_cast<size_t>(slice->output)], (std::vector<int64_t>{2, seq - 2, 8}));
    const cuda::SliceParts p = cuda::slice_parts(g, *slice, at.shapes, at.host);
    EXPECT_EQ(p.starts, (std::vector<int64_t>{0, 1, 0}));
    EXPECT_EQ(p.steps, (std::vector<int64_t>{1, 1, 1}));
  }
  expect_one_engine_after_lowering(g, k_slice_range, 3);
}

// x [batch, 4, 8] → Concat(Expand(cls [1, 1, 8], Concat(Shape(x)[0:1],
// [1, 8])), x) on axis 1: a class token broadcast to the batch, as
// torchvision's ViT exports it.
ir::Graph expand_model() {
  ir::Graph g;
  g.source = "expand_model";
  const ir::ValueId x = g.add_value("x", {DType::float32, ir::Dims{ir::Dim::symbol("batch"), 4, 8}});
  g.add_input(x);
  std::vector<float> token(8);
  for (size_t i = 0; i < token.size(); ++i) token[i] = 0.25f * static_cast<float>(i) - 1.0f;
  const ir::ValueId cls = g.add_initializer("cls", Tensor::from_values<float>({1, 1, 8}, token));
  const ir::ValueId shape = g.add_value("shape"), batch = g.add_value("batch"),
                    target = g.add_value("target"), tokens = g.add_value("tokens"), y = g.add_value("y");
  ir::Attributes axis0, axis1;
  axis0.set("axis", int64_t{0});
  axis1.set("axis", int64_t{1});
  add_node(g, "shape", "Shape", {x}, {shape});
  add_node(g, "batch", "Slice", {shape, int64s(g, "zero", {1}, {0}), int64s(g, "one", {1}, {1})}, {batch});
  add_node(g, "target", "Concat", {batch, int64s(g, "token_dims", {2}, {1, 8})}, {target}, axis0);
  add_node(g, "expand", "Expand", {cls, target}, {tokens});
  add_node(g, "concat", "Concat", {tokens, x}, {y}, axis1);
  g.add_output(y);
  ir::infer_shapes(g);
  return g;
}

const std::vector<InputSpec> k_expand_range{{"x", DType::float32, {1, 4, 8}, {2, 4, 8}, {8, 4, 8}}};

TEST(CudaShapes, AnExpandToAShapeValueIsABroadcastLayerOfTheEngine) {
  const ir::Graph g = expand_model();
  for (ir::NodeId id = 0; id < static_cast<ir::NodeId>(g.num_nodes()); ++id) {
    EXPECT_EQ(cuda::unsupported_reason(g, id), std::nullopt) << g.node(id).describe();
  }
  const std::vector<cuda::Layer> layers = cuda::partition_layers(g);
  EXPECT_EQ(count_kind(layers, cuda::LayerKind::shape), 3u);  // Shape, Slice, Concat of the target
  EXPECT_EQ(count_kind(layers, cuda::LayerKind::expand), 1u);
  EXPECT_EQ(count_kind(layers, cuda::LayerKind::concat), 1u);
  const auto expand = std::find_if(layers.begin(), layers.end(),
                                   [](const cuda::Layer& l) { return l.kind == cuda::LayerKind::expand; });
  ASSERT_NE(expand, layers.end());
  const cuda::InstanceValues at = cuda::instance_values(g, k_expand_range, {{3, 4, 8}}, layers);
  EXPECT_EQ(*at.shapes[static_cast<size_t>(expand->output)], (std::vector<int64_t>{3, 1, 8}));
  EXPECT_EQ(*at.shapes[static_cast<size_t>(g.outputs()[0])], (std::vector<int64_t>{3, 5, 8}));
  expect_one_engine_after_lowering(g, k_expand_range, 3);
}

TEST(CudaShapes, ExpandStridesRepeatSizeOneAndMissingDims) {
  using V = std::vector<int64_t>;
  EXPECT_EQ(cuda::expand_strides(V{1, 1, 8}, V{3, 1, 8}), (V{0, 0, 1}));
  EXPECT_EQ(cuda::expand_strides(V{4, 1}, V{2, 4, 5}), (V{0, 1, 0}));
  EXPECT_EQ(cuda::expand_strides(V{2, 3}, V{2, 3}), (V{3, 1}));
  EXPECT_EQ(cuda::expand_strides(V{}, V{2, 2}), (V{0, 0}));
}

// ---- on a GPU (label gpu) ----

using CudaShapesGpu = testing::GpuTest;

TEST_F(CudaShapesGpu, BertTinyWithADynamicBatchMatchesTheReferenceAtTwoBatchSizes) {
  const auto model = zoo_model("bert_tiny", 1);
  std::vector<InputSpec> specs;
  for (ir::ValueId v : model.graph.inputs())
    specs.push_back({model.graph.value(v).name, DType::int64, {1, 16}, {4, 16}, {8, 16}});
  auto compiled = runtime::CompiledModel::compile(model.graph, specs, settings());
  // Both engine segments are built as engines (their inputs' shapes are
  // known over the range), none downgraded to the reference backend.
  size_t engines = 0;
  for (const auto& s : compiled.report().segments) engines += s.engine && s.engine_index >= 0;
  EXPECT_EQ(engines, 2u);
  ref::Executor reference(model.graph);
  for (int64_t batch : {2, 7}) {
    Tensor ids = Tensor::zeros(DType::int64, {batch, 16});
    Tensor mask = Tensor::zeros(DType::int64, {batch, 16});
    auto id_values = ids.mutable_data<int64_t>();
    auto mask_values = mask.mutable_data<int64_t>();
    for (size_t i = 0; i < id_values.size(); ++i) {
      id_values[i] = static_cast<int64_t>((i * 37 + static_cast<size_t>(batch)) % 100);
      mask_values[i] = i % 16 < 12 ? 1 : 0;  // the last 4 tokens padded
    }
    const std::vector<Tensor> inputs{ids, mask};
    const auto want = reference.run(inputs);
    const auto got = compiled.run(inputs);
    ASSERT_EQ(got.size(), want.size());
    EXPECT_LT(relative_error(got[0], want[0]), 1e-3) << "batch " << batch;
  }
}

TEST_F(CudaShapesGpu, ARunTimeReshapeModelIsOneEngineWithDeviceIo) {
  const ReshapeModel m = reshape_model();
  auto compiled = runtime::CompiledModel::compile(m.graph, batch_range(1, 4, 8), settings());
  ASSERT_EQ(compiled.device_io_unavailable(), std::nullopt) << *compiled.device_io_unavailable();
  ref::Executor reference(m.graph);
  for (int64_t batch : {2, 5}) {
    const Tensor x = ramp({batch, 4, 8}, static_cast<float>(batch));
    const auto want = reference.run(std::vector<Tensor>{x});
    const auto got = compiled.run(std::vector<Tensor>{x});
    EXPECT_LT(relative_error(got[0], want[0]), 1e-3) << "batch " << batch;
    // The same on device memory, on the caller's stream.
    const auto descs = compiled.output_descs(std::vector<TensorDesc>{{DType::float32, x.shape()}});
    ASSERT_EQ(descs[0].shape, want[0].shape());
    void *in = nullptr, *out = nullptr;
    ASSERT_EQ(cudaMalloc(&in, x.byte_size()), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&out, want[0].byte_size()), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(in, x.bytes().data(), x.byte_size(), cudaMemcpyHostToDevice), cudaSuccess);
    compiled.run_device(std::vector<DeviceTensor>{{DType::float32, x.shape(), in, 0}},
                        std::vector<DeviceTensor>{{DType::float32, descs[0].shape, out, 0}}, nullptr);
    Tensor device_out = Tensor::zeros(DType::float32, descs[0].shape);
    ASSERT_EQ(
        cudaMemcpy(device_out.mutable_bytes().data(), out, device_out.byte_size(), cudaMemcpyDeviceToHost),
        cudaSuccess);
    cudaFree(in);
    cudaFree(out);
    EXPECT_LT(relative_error(device_out, want[0]), 1e-3) << "batch " << batch << " on device memory";
  }
}

TEST_F(CudaShapesGpu, ASliceWhoseEndComesFromTheShapeMatchesTheReference) {
  const ir::Graph g = slice_model();
  auto compiled = runtime::CompiledModel::compile(g, k_slice_range, settings());
  EXPECT_EQ(compiled.device_io_unavailable(), std::nullopt);
  ref::Executor reference(g);
  for (int64_t seq : {3, 5, 8}) {
    const std::vector<Tensor> in{ramp({3, seq, 8}, 0.5f)};
    const auto want = reference.run(in);
    const auto got = compiled.run(in);
    EXPECT_EQ(got[0].shape(), (std::vector<int64_t>{3, seq - 2, 8}));
    EXPECT_LT(relative_error(got[0], want[0]), 1e-6) << "seq " << seq;
  }
}

TEST_F(CudaShapesGpu, AnExpandedClassTokenMatchesTheReferenceAtTwoBatchSizes) {
  const ir::Graph g = expand_model();
  auto compiled = runtime::CompiledModel::compile(g, k_expand_range, settings());
  EXPECT_EQ(compiled.device_io_unavailable(), std::nullopt);
  ref::Executor reference(g);
  for (int64_t batch : {2, 7}) {
    const std::vector<Tensor> in{ramp({batch, 4, 8}, 0.25f)};
    const auto want = reference.run(in);
    const auto got = compiled.run(in);
    EXPECT_EQ(got[0].shape(), (std::vector<int64_t>{batch, 5, 8}));
    EXPECT_LT(relative_error(got[0], want[0]), 1e-6) << "batch " << batch;
  }
}

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {

// bert_tiny at fixed shapes of one token: the shapes fold, the partitioner
// splits the encoder, and an extracted segment receives a Shape's value as a
// plain input, so its Slice of that value is int64 data to the cuda backend.
// The runtime's check of each extracted engine segment (the one
// runtime::CompiledModel::compile makes) names that node, so the segment runs
// on the reference backend instead of failing the compile; every segment it
// lets through holds only nodes the backend runs.
TEST(CudaShapes, AnExtractedSegmentWithANodeTheBackendCannotRunIsNamed) {
  const auto model = zoo_model("bert_tiny", 1);
  passes::LoweringOptions lowering;
  lowering.defer_weight_values = true;
  const ir::Graph lowered = passes::lower(model.graph, lowering);
  std::vector<InputSpec> specs;
  for (ir::ValueId v : model.graph.inputs()) {
    const ir::Value& value = model.graph.value(v);
    std::vector<int64_t> shape;
    for (const ir::Dim& d : *value.type.shape) shape.push_back(d.is_static() ? d.value() : 1);
    specs.push_back(InputSpec::fixed(value.name, value.type.dtype, shape));
  }
  CudaSupportOnly backend;
  const auto segments = partition::plan_segments(lowered, backend, specs, 1);
  ASSERT_GT(segments.size(), 1u);
  const auto at_min = partition::types_at(lowered, specs, &InputSpec::min);
  const auto at_opt = partition::types_at(lowered, specs, &InputSpec::opt);
  const auto at_max = partition::types_at(lowered, specs, &InputSpec::max);
  const std::vector<bool> recompute = partition::recomputable_shape_values(lowered, at_min, at_opt, at_max);
  size_t refused = 0, built = 0;
  for (const partition::Segment& s : segments) {
    if (!s.engine) continue;
    const ir::Graph graph = partition::extract_subgraph(lowered, s, recompute).graph;
    const auto why = partition::first_unsupported_node(backend, graph);
    if (!why) {
      ++built;
      continue;
    }
    ++refused;
    EXPECT_NE(why->find("(Slice): input 0 is int64"), std::string::npos) << *why;
    // The node it names is one the backend refuses in that graph.
    bool named = false;
    for (ir::NodeId id = 0; id < static_cast<ir::NodeId>(graph.num_nodes()); ++id) {
      named = named || (cuda::unsupported_reason(graph, id) && why->rfind(graph.node(id).describe(), 0) == 0);
    }
    EXPECT_TRUE(named) << *why;
  }
  EXPECT_GT(refused, 0u);
  EXPECT_GT(built, 0u);
}

}  // namespace
}  // namespace kiln
