// Lowering passes: which initializers are refittable and in what canonical
// order, recipe evaluation, constant / BatchNorm folding and pattern rewrites
// (each checked against the unlowered graph on the reference backend), the
// refit invariant across weight seeds, and fusion groups on the zoo models.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <span>
#include <string>
#include <vector>

#include <onnx/onnx_pb.h>

#include "backends/ref/executor.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "ir/op_schema.hpp"
#include "kiln/error.hpp"
#include "passes/passes.hpp"
#include "zoo/zoo.hpp"

namespace kiln {
namespace {

using ir::WeightRecipe;

ir::Graph import_bytes(const std::string& bytes, const std::string& name) {
  return frontend::import_onnx_bytes(std::as_bytes(std::span<const char>(bytes)), name).graph;
}

ir::Graph zoo_graph(const std::string& name, uint64_t seed, std::optional<int64_t> batch = 2) {
  zoo::ZooOptions options;
  options.seed = seed;
  options.batch = batch;
  return import_bytes(zoo::build_zoo_model(name, options).onnx_bytes, name);
}

std::map<std::string, int> count_ops(const ir::Graph& graph) {
  std::map<std::string, int> counts;
  for (const auto& n : graph.nodes()) ++counts[n.op_type];
  return counts;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.bytes().data(), b.bytes().data(), a.byte_size()) == 0;
}

Tensor image_batch(int64_t batch, int64_t size) {
  std::vector<float> pixels(static_cast<size_t>(batch * 3 * size * size));
  for (size_t i = 0; i < pixels.size(); ++i)
    pixels[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)));
  return Tensor::from_values<float>({batch, 3, size, size}, pixels);
}

std::vector<Tensor> bert_inputs() {
  const int64_t batch = 2, seq = 16;
  std::vector<int64_t> ids, mask;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t s = 0; s < seq; ++s) {
      ids.push_back((b * 389 + s * 61 + 7) % 1000);
      mask.push_back(b == 1 && s >= 11 ? 0 : 1);
    }
  }
  return {Tensor::from_values<int64_t>({batch, seq}, ids), Tensor::from_values<int64_t>({batch, seq}, mask)};
}

// max |a - b| / (max |b| + tiny), over all elements.
double relative_error(const Tensor& a, const Tensor& b) {
  auto x = a.data<float>();
  auto y = b.data<float>();
  double diff = 0, scale = 1e-12;
  for (size_t i = 0; i < x.size(); ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(x[i]) - y[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(y[i])));
  }
  return diff / scale;
}

void expect_same_outputs(const ir::Graph& a, const ir::Graph& b, const std::vector<Tensor>& inputs,
                         double tolerance) {
  auto out_a = ref::Executor(a).run(inputs);
  auto out_b = ref::Executor(b).run(inputs);
  ASSERT_EQ(out_a.size(), out_b.size());
  for (size_t i = 0; i < out_a.size(); ++i) {
    ASSERT_EQ(out_a[i].shape(), out_b[i].shape());
    EXPECT_LE(relative_error(out_a[i], out_b[i]), tolerance) << "output " << i;
  }
}

// Every weight with a recipe replays, on the input graph's sources, to its bits.
void expect_recipes_replay(const ir::Graph& input, const ir::Graph& lowered) {
  auto sources = passes::source_weights(input);
  int checked = 0;
  for (size_t v = 0; v < lowered.num_values(); ++v) {
    const ir::Value& value = lowered.value(static_cast<ir::ValueId>(v));
    if (!value.recipe) continue;
    ASSERT_TRUE(value.initializer) << value.name;
    EXPECT_TRUE(same_bytes(passes::evaluate_recipe(*value.recipe, sources), *value.initializer))
        << value.name;
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

// Every refittable-looking weight a node reads in the lowered graph has a recipe.
void expect_weights_have_recipes(const ir::Graph& input, const ir::Graph& lowered) {
  for (const ir::Node& node : lowered.nodes()) {
    for (ir::ValueId in : node.inputs) {
      if (in == ir::k_no_value) continue;
      const ir::Value& v = lowered.value(in);
      if (!v.initializer || v.recipe) continue;
      // A constant without a recipe must be structural in the input graph too.
      auto id = input.find_value(v.name);
      if (id) {
        EXPECT_FALSE(passes::is_refittable(input, *id)) << v.name << " read by " << node.describe();
      }
    }
  }
}

// A small graph written node by node, for the rewrite variants the zoo does not emit.
class TinyGraph {
 public:
  explicit TinyGraph(std::vector<int64_t> input_shape) {
    m_input = g.add_value("x", ir::ValueType::of_static(DType::float32, input_shape));
    g.add_input(m_input);
    g.source = "tiny";
  }
  ir::ValueId input() const { return m_input; }
  ir::ValueId scalar(float v) {
    return g.add_initializer("c" + std::to_string(m_count++), Tensor::scalar<float>(v));
  }
  ir::ValueId weight(std::vector<int64_t> shape, float base) {
    std::vector<float> values(static_cast<size_t>(shape_numel(shape)));
    for (size_t i = 0; i < values.size(); ++i)
      values[i] = base + 0.1f * static_cast<float>(std::sin(3.0 * i + base));
    return g.add_initializer("w" + std::to_string(m_count++),
                             Tensor::from_values<float>(std::move(shape), values));
  }
  ir::ValueId node(const std::string& op, std::vector<ir::ValueId> inputs, ir::Attributes attrs = {}) {
    ir::Node n;
    n.name = op + std::to_string(m_count++);
    n.op_type = op;
    n.opset = 17;
    n.inputs = std::move(inputs);
    n.attrs = std::move(attrs);
    n.outputs = {g.add_value(n.name + "_out")};
    g.add_node(n);
    return n.outputs[0];
  }
  ir::Graph finish(ir::ValueId output) {
    g.add_output(output);
    ir::infer_shapes(g);
    return g;
  }
  ir::Graph g;

 private:
  ir::ValueId m_input;
  int m_count = 0;
};

Tensor ramp(std::vector<int64_t> shape) {
  std::vector<float> values(static_cast<size_t>(shape_numel(shape)));
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(std::cos(0.7 * i) * 2.0);
  return Tensor::from_values<float>(std::move(shape), values);
}

// ---- Refittable weights and canonical order ------------------------------------

TEST(PassesWeights, StructuralConstantsAreNotRefittable) {
  ir::Graph g;
  ir::ValueId x =
      g.add_value("x", ir::ValueType::of_static(DType::float32, std::vector<int64_t>{1, 2, 4, 4}));
  g.add_input(x);
  std::vector<float> w(2 * 2 * 1 * 1, 0.5f);
  ir::ValueId weight = g.add_initializer("w", Tensor::from_values<float>({2, 2, 1, 1}, w));
  ir::ValueId lo = g.add_initializer("lo", Tensor::scalar<float>(0.0f));
  ir::ValueId hi = g.add_initializer("hi", Tensor::scalar<float>(6.0f));
  std::vector<int64_t> shape_values = {1, 32};
  ir::ValueId shape = g.add_initializer("shape", Tensor::from_values<int64_t>({2}, shape_values));
  std::vector<float> pads_f = {0, 0, 0, 0};
  ir::ValueId float_axes = g.add_initializer("float_in_structural", Tensor::from_values<float>({4}, pads_f));
  auto node = [&](const char* op, std::vector<ir::ValueId> in) {
    ir::Node n;
    n.name = op;
    n.op_type = op;
    n.opset = 17;
    n.inputs = std::move(in);
    n.outputs = {g.add_value(std::string(op) + "_out")};
    g.add_node(n);
    return n.outputs[0];
  };
  ir::ValueId y = node("Conv", {x, weight});
  y = node("Clip", {y, lo, hi});
  y = node("Reshape", {y, shape});
  y = node("Resize", {y, ir::k_no_value, float_axes});
  g.add_output(y);
  EXPECT_TRUE(passes::is_refittable(g, weight));
  EXPECT_FALSE(passes::is_refittable(g, lo));
  EXPECT_FALSE(passes::is_refittable(g, hi));
  EXPECT_FALSE(passes::is_refittable(g, shape));
  EXPECT_FALSE(passes::is_refittable(g, float_axes));
  EXPECT_FALSE(passes::is_refittable(g, x));
  EXPECT_EQ(passes::canonical_weights(g), std::vector<ir::ValueId>{weight});
}

// The same resnet_tiny with every initializer renamed and their order reversed.
std::string renamed_and_reordered(const std::string& bytes) {
  onnx::ModelProto model;
  EXPECT_TRUE(model.ParseFromString(bytes));
  onnx::GraphProto* graph = model.mutable_graph();
  std::map<std::string, std::string> renames;
  for (int i = 0; i < graph->initializer_size(); ++i) {
    const std::string& old = graph->initializer(i).name();
    renames[old] = "w" + std::to_string((i * 7919) % 1009) + "_" + std::to_string(i);
  }
  for (auto& init : *graph->mutable_initializer()) init.set_name(renames.at(init.name()));
  for (auto& node : *graph->mutable_node()) {
    for (auto& in : *node.mutable_input()) {
      if (auto it = renames.find(in); it != renames.end()) in = it->second;
    }
  }
  std::reverse(graph->mutable_initializer()->begin(), graph->mutable_initializer()->end());
  return model.SerializeAsString();
}

TEST(PassesWeights, CanonicalOrderIgnoresNamesAndInitializerOrder) {
  for (const std::string name : {"resnet_tiny", "bert_tiny"}) {
    SCOPED_TRACE(name);
    const std::string bytes = zoo::build_zoo_model(name, {3, 2}).onnx_bytes;
    ir::Graph a = import_bytes(bytes, name);
    ir::Graph b = import_bytes(renamed_and_reordered(bytes), name);
    auto wa = passes::source_weights(a);
    auto wb = passes::source_weights(b);
    ASSERT_EQ(wa.size(), wb.size());
    ASSERT_GT(wa.size(), 10u);
    for (size_t i = 0; i < wa.size(); ++i) EXPECT_TRUE(same_bytes(wa[i], wb[i])) << "weight " << i;
    EXPECT_NE(a.value(passes::canonical_weights(a)[0]).name, b.value(passes::canonical_weights(b)[0]).name);
  }
}

TEST(PassesWeights, ResnetTinyWeightsAreItsParameters) {
  // Conv weights, BN gamma/beta/mean/var and the classifier: 12 convs, 12 BNs, fc weight + bias.
  ir::Graph g = zoo_graph("resnet_tiny", 1);
  EXPECT_EQ(passes::canonical_weights(g).size(), 12u + 12u * 4u + 2u);
}

// ---- Recipes ------------------------------------------------------------------

TEST(PassesRecipes, EvaluatesEachOp) {
  std::vector<float> w = {1, 2, 3, 4, 5, 6};
  std::vector<float> gamma = {2, 3}, beta = {0.5f, -1}, mean = {1, 2}, var = {3, 8}, bias = {10, 20};
  std::vector<Tensor> sources = {
      Tensor::from_values<float>({2, 3}, w), Tensor::from_values<float>({2}, gamma),
      Tensor::from_values<float>({2}, beta), Tensor::from_values<float>({2}, mean),
      Tensor::from_values<float>({2}, var),  Tensor::from_values<float>({2}, bias)};
  const float eps = 1.0f;
  WeightRecipe scale{
      WeightRecipe::Op::bn_fold_scale,
      -1,
      {WeightRecipe::from_source(0), WeightRecipe::from_source(1), WeightRecipe::from_source(4)},
      {},
      {eps}};
  Tensor s = passes::evaluate_recipe(scale, sources);
  ASSERT_EQ(s.shape(), (std::vector<int64_t>{2, 3}));
  EXPECT_FLOAT_EQ(s.data<float>()[0], 1 * 2 / 2.0f);
  EXPECT_FLOAT_EQ(s.data<float>()[5], 6 * 3 / 3.0f);

  WeightRecipe fold_bias{
      WeightRecipe::Op::bn_fold_bias,
      -1,
      {WeightRecipe::from_source(1), WeightRecipe::from_source(2), WeightRecipe::from_source(3),
       WeightRecipe::from_source(4), WeightRecipe::from_source(5)},
      {},
      {eps}};
  Tensor b = passes::evaluate_recipe(fold_bias, sources);
  EXPECT_FLOAT_EQ(b.data<float>()[0], (10 - 1) * 2 / 2.0f + 0.5f);
  EXPECT_FLOAT_EQ(b.data<float>()[1], (20 - 2) * 3 / 3.0f - 1);

  WeightRecipe t{WeightRecipe::Op::transpose, -1, {WeightRecipe::from_source(0)}, {1, 0}, {}};
  Tensor tt = passes::evaluate_recipe(t, sources);
  EXPECT_EQ(tt.shape(), (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(std::vector<float>(tt.data<float>().begin(), tt.data<float>().end()),
            (std::vector<float>{1, 4, 2, 5, 3, 6}));

  WeightRecipe r{WeightRecipe::Op::reshape, -1, {t}, {6}, {}};
  EXPECT_EQ(passes::evaluate_recipe(r, sources).shape(), (std::vector<int64_t>{6}));

  WeightRecipe z{WeightRecipe::Op::zeros, -1, {}, {4}, {}};
  Tensor zt = passes::evaluate_recipe(z, sources);
  EXPECT_EQ(zt.numel(), 4);
  EXPECT_EQ(zt.data<float>()[3], 0.0f);
}

TEST(PassesRecipes, RejectsBadIndexShapeAndDtype) {
  std::vector<float> w = {1, 2, 3, 4, 5, 6};
  std::vector<int64_t> ints = {1, 2};
  std::vector<Tensor> sources = {Tensor::from_values<float>({2, 3}, w),
                                 Tensor::from_values<int64_t>({2}, ints),
                                 Tensor::from_values<float>({3}, std::vector<float>{1, 1, 1})};
  auto expect_invalid = [&](const WeightRecipe& r, const std::string& needle) {
    try {
      passes::evaluate_recipe(r, sources);
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_invalid(WeightRecipe::from_source(7), "out of range");
  expect_invalid(WeightRecipe{WeightRecipe::Op::reshape, -1, {WeightRecipe::from_source(0)}, {4}, {}},
                 "reshape");
  expect_invalid(WeightRecipe{WeightRecipe::Op::transpose, -1, {WeightRecipe::from_source(0)}, {0, 0}, {}},
                 "permutation");
  expect_invalid(
      WeightRecipe{WeightRecipe::Op::bn_fold_scale,
                   -1,
                   {WeightRecipe::from_source(0), WeightRecipe::from_source(1), WeightRecipe::from_source(1)},
                   {},
                   {1e-5f}},
      "dtype");
  // gamma has 3 elements for W's 2 output channels.
  expect_invalid(
      WeightRecipe{WeightRecipe::Op::bn_fold_scale,
                   -1,
                   {WeightRecipe::from_source(0), WeightRecipe::from_source(2), WeightRecipe::from_source(2)},
                   {},
                   {1e-5f}},
      "gamma");
}

// ---- lower() ---------------------------------------------------------------------

TEST(PassesLower, ResnetTinyFoldsEveryBatchNorm) {
  ir::Graph g = zoo_graph("resnet_tiny", 1);
  const std::string before = g.to_string();
  ir::Graph lowered = passes::lower(g);
  EXPECT_EQ(g.to_string(), before) << "lower() modified its input";
  auto ops = count_ops(lowered);
  EXPECT_EQ(ops.count("BatchNormalization"), 0u);
  EXPECT_EQ(ops["Conv"], 12);
  expect_same_outputs(g, lowered, {image_batch(2, 64)}, 1e-4);
  expect_recipes_replay(g, lowered);
  expect_weights_have_recipes(g, lowered);
}

// Deferred lowering leaves placeholders of the right type for the folded
// kernels and, once materialized, equals eager lowering bitwise.
TEST(PassesLower, DeferredWeightsMaterializeToTheEagerValues) {
  ir::Graph g = zoo_graph("resnet_tiny", 1);
  ir::Graph eager = passes::lower(g);
  passes::LoweringOptions options;
  options.defer_weight_values = true;
  ir::Graph deferred = passes::lower(g, options);
  ASSERT_EQ(eager.num_values(), deferred.num_values());
  EXPECT_TRUE(passes::has_placeholder_weights(deferred));
  EXPECT_FALSE(passes::has_placeholder_weights(eager));
  int placeholders = 0;
  for (size_t v = 0; v < deferred.num_values(); ++v) {
    const ir::Value& d = deferred.value(static_cast<ir::ValueId>(v));
    const ir::Value& e = eager.value(static_cast<ir::ValueId>(v));
    placeholders += d.placeholder;
    EXPECT_EQ(d.type.to_string(), e.type.to_string()) << d.name;
    if (d.initializer) {
      EXPECT_EQ(d.initializer->shape(), e.initializer->shape()) << d.name;
    }
  }
  EXPECT_EQ(placeholders, 12);  // one folded kernel per Conv
  passes::materialize_weights(deferred, passes::source_weights(g));
  EXPECT_FALSE(passes::has_placeholder_weights(deferred));
  EXPECT_EQ(deferred.to_string(), eager.to_string());
  for (size_t v = 0; v < deferred.num_values(); ++v) {
    const ir::Value& d = deferred.value(static_cast<ir::ValueId>(v));
    if (!d.initializer) continue;
    const Tensor& e = *eager.value(static_cast<ir::ValueId>(v)).initializer;
    ASSERT_EQ(d.initializer->byte_size(), e.byte_size());
    EXPECT_EQ(std::memcmp(d.initializer->bytes().data(), e.bytes().data(), e.byte_size()), 0) << d.name;
  }
}

TEST(PassesLower, RefitWithAnotherSeedGivesThatSeedsLoweredWeights) {
  for (const std::string name : {"resnet_tiny", "mobilenet_tiny", "bert_tiny_decomposed"}) {
    SCOPED_TRACE(name);
    ir::Graph g1 = zoo_graph(name, 1);
    ir::Graph g2 = zoo_graph(name, 2);
    ir::Graph l1 = passes::lower(g1);
    ir::Graph l2 = passes::lower(g2);
    ASSERT_EQ(l1.num_values(), l2.num_values());
    auto sources2 = passes::source_weights(g2);
    int compared = 0;
    for (size_t v = 0; v < l1.num_values(); ++v) {
      const ir::Value& a = l1.value(static_cast<ir::ValueId>(v));
      const ir::Value& b = l2.value(static_cast<ir::ValueId>(v));
      ASSERT_EQ(a.recipe.has_value(), b.recipe.has_value()) << a.name;
      if (!a.recipe) continue;
      EXPECT_EQ(*a.recipe, *b.recipe) << a.name;
      Tensor refitted = passes::evaluate_recipe(*a.recipe, sources2);
      EXPECT_TRUE(same_bytes(refitted, *b.initializer)) << a.name;
      EXPECT_FALSE(same_bytes(refitted, *a.initializer)) << a.name;
      ++compared;
    }
    EXPECT_GT(compared, 10);
  }
}

TEST(PassesLower, BertDecomposedBecomesLayerNormAndGelu) {
  ir::Graph g = zoo_graph("bert_tiny_decomposed", 4, std::nullopt);
  ir::Graph lowered = passes::lower(g);
  auto ops = count_ops(lowered);
  EXPECT_EQ(ops["LayerNormalization"], 5);  // embeddings + 2 per layer
  EXPECT_EQ(ops["Gelu"], 2);
  EXPECT_EQ(ops.count("Erf"), 0u);
  EXPECT_EQ(ops.count("ReduceMean"), 0u);
  EXPECT_EQ(ops.count("Pow"), 0u);
  expect_same_outputs(g, lowered, bert_inputs(), 1e-4);
  expect_recipes_replay(g, lowered);
  expect_weights_have_recipes(g, lowered);

  // bert_tiny (LayerNormalization already) lowers to the same op counts.
  auto fused_ops = count_ops(passes::lower(zoo_graph("bert_tiny", 4, std::nullopt)));
  EXPECT_EQ(fused_ops["LayerNormalization"], 5);
  EXPECT_EQ(fused_ops["Gelu"], 2);
}

TEST(PassesLower, FoldsStaticShapeChains) {
  // With a static batch, what static inference knows is folded; no node is
  // left that reads only constants.
  ir::Graph g = zoo_graph("bert_tiny", 4, 2);
  ir::Graph lowered = passes::lower(g);
  // The sequence dim stays symbolic, so some shape ops remain; none reads only constants.
  for (const ir::Node& node : lowered.nodes()) {
    bool all_constant = !node.inputs.empty();
    for (ir::ValueId in : node.inputs) {
      if (in == ir::k_no_value) continue;
      const ir::Value& v = lowered.value(in);
      all_constant = all_constant && v.initializer && !v.recipe;
    }
    EXPECT_FALSE(all_constant) << node.describe() << " reads only constants";
  }
  EXPECT_LT(lowered.num_nodes(), g.num_nodes());
  expect_same_outputs(g, lowered, bert_inputs(), 1e-5);
}

TEST(PassesLower, FoldsStaticDimsOfAPartlySymbolicShape) {
  TinyGraph t({2, 8});
  ir::Graph& g = t.g;
  ir::ValueId x = g.add_value("y", ir::ValueType{DType::float32, ir::Dims{2, ir::Dim::symbol("seq"), 8}});
  g.add_input(x);
  auto i64 = [&](std::vector<int64_t> shape, std::vector<int64_t> values) {
    return g.add_initializer("i" + std::to_string(g.num_values()),
                             Tensor::from_values<int64_t>(shape, values));
  };
  ir::ValueId shape = t.node("Shape", {x});
  ir::Attributes axis0;
  axis0.set("axis", int64_t{0});
  ir::ValueId batch = t.node("Unsqueeze", {t.node("Gather", {shape, i64({}, {0})}, axis0), i64({1}, {0})});
  ir::ValueId last = t.node("Slice", {shape, i64({1}, {-1}), i64({1}, {3})});
  ir::ValueId target = t.node("Concat", {batch, i64({1}, {-1}), last}, axis0);
  ir::ValueId y = t.node("Relu", {t.node("Reshape", {x, target})});
  ir::Graph graph = t.finish(y);
  ir::Graph lowered = passes::lower(graph);
  auto ops = count_ops(lowered);
  EXPECT_EQ(ops.count("Shape"), 0u);
  EXPECT_EQ(ops.count("Concat"), 0u);
  EXPECT_EQ(ops["Reshape"], 1);
  expect_same_outputs(graph, lowered, {ramp({2, 8}), ramp({2, 5, 8})}, 0);
}

TEST(PassesLower, OptionsTurnPassesOff) {
  ir::Graph g = zoo_graph("resnet_tiny", 1);
  passes::LoweringOptions options;
  options.fold_batchnorm = false;
  ir::Graph lowered = passes::lower(g, options);
  EXPECT_EQ(count_ops(lowered)["BatchNormalization"], 12);
  // Untouched weights keep source recipes with their canonical index.
  auto canonical = passes::canonical_weights(g);
  for (size_t i = 0; i < canonical.size(); ++i) {
    auto id = lowered.find_value(g.value(canonical[i]).name);
    ASSERT_TRUE(id);
    ASSERT_TRUE(lowered.value(*id).recipe);
    EXPECT_EQ(*lowered.value(*id).recipe, WeightRecipe::from_source(static_cast<int32_t>(i)));
  }
}

TEST(PassesLower, GeluInOtherOperandOrders) {
  for (int variant = 0; variant < 3; ++variant) {
    SCOPED_TRACE(variant);
    TinyGraph t({2, 8});
    ir::ValueId x = t.input();
    ir::ValueId y;
    if (variant == 0) {  // (x * 0.5) * (1 + erf(x * 1/sqrt 2))
      ir::ValueId e = t.node("Erf", {t.node("Mul", {x, t.scalar(0.70710678f)})});
      y = t.node("Mul", {t.node("Mul", {x, t.scalar(0.5f)}), t.node("Add", {t.scalar(1.0f), e})});
    } else if (variant == 1) {  // ((erf(x / sqrt 2) + 1) * 0.5) * x
      ir::ValueId e = t.node("Erf", {t.node("Div", {x, t.scalar(1.41421356f)})});
      y = t.node("Mul", {t.node("Mul", {t.node("Add", {e, t.scalar(1.0f)}), t.scalar(0.5f)}), x});
    } else {  // not a Gelu: divides by 2
      ir::ValueId e = t.node("Erf", {t.node("Div", {x, t.scalar(2.0f)})});
      y = t.node("Mul", {t.node("Mul", {x, t.node("Add", {e, t.scalar(1.0f)})}), t.scalar(0.5f)});
    }
    ir::Graph g = t.finish(t.node("Relu", {y}));
    ir::Graph lowered = passes::lower(g);
    auto ops = count_ops(lowered);
    EXPECT_EQ(ops["Gelu"], variant < 2 ? 1 : 0);
    EXPECT_EQ(ops["Erf"], variant < 2 ? 0 : 1);
    expect_same_outputs(g, lowered, {ramp({2, 8})}, 1e-6);
  }
}

TEST(PassesLower, GemmBatchNormFoldsForBothWeightLayouts) {
  for (int64_t trans_b : {0, 1}) {
    SCOPED_TRACE(trans_b);
    TinyGraph t({4, 6});
    ir::Attributes gemm_attrs;
    gemm_attrs.set("transB", trans_b);
    ir::ValueId w = t.weight(trans_b ? std::vector<int64_t>{5, 6} : std::vector<int64_t>{6, 5}, 0.3f);
    ir::ValueId y = t.node("Gemm", {t.input(), w, t.weight({5}, 0.1f)}, gemm_attrs);
    ir::Attributes bn_attrs;
    bn_attrs.set("epsilon", 1e-3f);
    y = t.node("BatchNormalization",
               {y, t.weight({5}, 1.0f), t.weight({5}, 0.2f), t.weight({5}, -0.1f), t.weight({5}, 0.8f)},
               bn_attrs);
    ir::Graph g = t.finish(y);
    ir::Graph lowered = passes::lower(g);
    EXPECT_EQ(count_ops(lowered).count("BatchNormalization"), 0u);
    for (const ir::Node& node : lowered.nodes()) {
      if (node.op_type == "Gemm") {
        EXPECT_EQ(node.attrs.get_int("transB", 0), 1);
      }
    }
    expect_same_outputs(g, lowered, {ramp({4, 6})}, 1e-5);
    expect_recipes_replay(g, lowered);
  }
}

TEST(PassesLower, BatchNormWithAnotherReaderOfTheConvIsKept) {
  TinyGraph t({1, 2, 4, 4});
  ir::ValueId conv = t.node("Conv", {t.input(), t.weight({3, 2, 1, 1}, 0.5f)});
  ir::ValueId bn = t.node("BatchNormalization", {conv, t.weight({3}, 1.0f), t.weight({3}, 0.2f),
                                                 t.weight({3}, -0.1f), t.weight({3}, 0.8f)});
  ir::Graph g = t.finish(t.node("Add", {bn, conv}));
  ir::Graph lowered = passes::lower(g);
  EXPECT_EQ(count_ops(lowered)["BatchNormalization"], 1);
  expect_same_outputs(g, lowered, {ramp({1, 2, 4, 4})}, 1e-6);
}

TEST(PassesLower, MobilenetTinyMatchesAndFusesClip) {
  ir::Graph g = zoo_graph("mobilenet_tiny", 1);
  ir::Graph lowered = passes::lower(g);
  EXPECT_EQ(count_ops(lowered).count("BatchNormalization"), 0u);
  expect_same_outputs(g, lowered, {image_batch(2, 64)}, 1e-4);
  expect_recipes_replay(g, lowered);
  int clip = 0, residual = 0;
  for (const auto& group : passes::find_fusions(lowered)) {
    if (group.activation != ir::k_no_node && lowered.node(group.activation).op_type == "Clip") ++clip;
    if (group.residual_add != ir::k_no_node) ++residual;
  }
  EXPECT_GT(clip, 0);
  EXPECT_GT(residual, 0);
}

// ---- Fusion groups ---------------------------------------------------------------

TEST(PassesFusion, ResnetTinyConvReluAndResidualGroups) {
  ir::Graph lowered = passes::lower(zoo_graph("resnet_tiny", 1));
  auto groups = passes::find_fusions(lowered);
  int conv = 0, relu = 0, residual = 0;
  for (const auto& group : groups) {
    const ir::Node& anchor = lowered.node(group.anchor);
    ASSERT_EQ(group.nodes.front(), group.anchor);
    if (anchor.op_type != "Conv") continue;
    ++conv;
    if (group.activation != ir::k_no_node) {
      EXPECT_EQ(lowered.node(group.activation).op_type, "Relu");
      EXPECT_EQ(group.output, lowered.node(group.activation).outputs[0]);
      ++relu;
    }
    if (group.residual_add != ir::k_no_node) {
      ++residual;
      const ir::Node& add = lowered.node(group.residual_add);
      ASSERT_TRUE(group.residual_input == 0 || group.residual_input == 1);
      EXPECT_NE(add.inputs[static_cast<size_t>(group.residual_input)], anchor.outputs[0]);
    }
  }
  EXPECT_EQ(conv, 12);
  EXPECT_EQ(relu, 9);
  EXPECT_EQ(residual, 4);
  // Deterministic: the same groups every time.
  auto again = passes::find_fusions(lowered);
  ASSERT_EQ(again.size(), groups.size());
  for (size_t i = 0; i < groups.size(); ++i) EXPECT_EQ(again[i].nodes, groups[i].nodes);
}

TEST(PassesFusion, BertMatMulBiasGeluAndResidualGroups) {
  ir::Graph lowered = passes::lower(zoo_graph("bert_tiny_decomposed", 1, std::nullopt));
  int bias = 0, gelu = 0, bias_residual = 0;
  for (const auto& group : passes::find_fusions(lowered)) {
    if (lowered.node(group.anchor).op_type != "MatMul" || group.bias_add == ir::k_no_node) continue;
    ++bias;
    if (group.activation != ir::k_no_node) {
      EXPECT_EQ(lowered.node(group.activation).op_type, "Gelu");
      ++gelu;
    }
    if (group.residual_add != ir::k_no_node) ++bias_residual;
  }
  EXPECT_EQ(bias, 12);  // 6 linears per layer
  EXPECT_EQ(gelu, 2);
  // The residual Adds are not grouped: static inference cannot tell that the
  // hidden state's sequence dim (unknown after the position-id Slice) equals
  // the dense output's, and a residual must not broadcast.
  EXPECT_EQ(bias_residual, 0);
}

}  // namespace
}  // namespace kiln
