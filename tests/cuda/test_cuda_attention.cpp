// The cuda backend's fused attention layer (attention_layer.hpp). Host
// tests: which layers it replaces and absorbs, how its nodes divide again,
// the plan's round trip and a plan that does not hold. GPU tests (label
// gpu): fp16 and bf16 engines against the reference backend, with the
// layer's presence checked so a fusion that silently stops shows; a loaded
// and refitted attention engine equal to the built one bitwise.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "backends/cuda/attention_layer.hpp"
#include "backends/cuda/cuda_layers.hpp"
#include "backends/cuda/cuda_plan_format.hpp"
#include "backends/registry/backend_registry.hpp"
#include "builder/timing_cache.hpp"
#include "cuda_test_support.hpp"
#include "ir/op_schema.hpp"
#include "passes/passes.hpp"
#include "reference/executor.hpp"
#include "runtime/compiled_model.hpp"

namespace kiln {
namespace {

using testing::add_node;
using testing::int64s;
using testing::ints;
using testing::lowered_zoo_model;
using testing::ramp;
using testing::relative_error;

struct Shape {
  ir::Dim batch = ir::Dim(2);
  int64_t seq = 5, heads = 3, head_dim = 8;
  bool mask = true;               // an input [batch, 1, 1, seq] added to the scores
  bool merge_heads = true;        // Transpose [0, 2, 1, 3] and Reshape after the attention
  bool q_part_is_output = false;  // Q's Split part is read outside too
  bool projection = false;        // x goes through a QKV MatMul weight first (refit tests)
  bool k_two_transposes = false;  // Kᵀ as torch writes k.transpose(1, 2).transpose(-1, -2)
};

// BERT's self-attention after its fused QKV projection: x [batch, seq,
// 3·heads·d] → Split → Reshape [batch, seq, heads, d] → Transpose (K to
// [0, 2, 3, 1]) → Q·Kᵀ / sqrt(d) (+ mask) → Softmax → ·V → merged heads.
ir::Graph bert_attention(const Shape& s) {
  ir::Graph g;
  g.source = "bert_attention";
  const int64_t width = s.heads * s.head_dim;
  const ir::ValueId x = g.add_value("x", {DType::float32, ir::Dims{s.batch, s.seq, 3 * width}});
  g.add_input(x);
  ir::ValueId mask = ir::k_no_value;
  if (s.mask) {
    mask = g.add_value("mask", {DType::float32, ir::Dims{s.batch, 1, 1, s.seq}});
    g.add_input(mask);
  }
  ir::ValueId qkv = x;
  if (s.projection) {
    Tensor w = ramp({3 * width, 3 * width}, 0.7f);
    for (float& e : w.mutable_data<float>()) e *= 0.2f;
    qkv = g.add_value("qkv");
    add_node(g, "MatMul", {x, g.add_initializer("w_qkv", std::move(w))}, {qkv});
  }
  std::vector<ir::ValueId> parts, heads;
  for (const char* p : {"q", "k", "v"}) parts.push_back(g.add_value(p));
  ir::Attributes axis2;
  axis2.set("axis", int64_t{2});
  add_node(g, "Split", {qkv, int64s(g, "sizes", {width, width, width})}, parts, axis2);
  const ir::ValueId target = int64s(g, "heads_shape", {0, 0, s.heads, s.head_dim});
  for (size_t i = 0; i < 3; ++i) {
    const ir::ValueId r = g.add_value(g.value(parts[i]).name + "_r");
    const ir::ValueId t = g.add_value(g.value(parts[i]).name + "_t");
    add_node(g, "Reshape", {parts[i], target}, {r});
    const bool one_transpose_for_k = i == 1 && !s.k_two_transposes;
    add_node(g, "Transpose", {r}, {t},
             ints("perm",
                  one_transpose_for_k ? std::vector<int64_t>{0, 2, 3, 1} : std::vector<int64_t>{0, 2, 1, 3}));
    if (i == 1 && s.k_two_transposes) {
      const ir::ValueId kt = g.add_value("k_tt");
      add_node(g, "Transpose", {t}, {kt}, ints("perm", {0, 1, 3, 2}));
      heads.push_back(kt);
      continue;
    }
    heads.push_back(t);
  }
  const ir::ValueId scores = g.add_value("scores"), scaled = g.add_value("scaled");
  const ir::ValueId probs = g.add_value("probs"), context = g.add_value("context");
  add_node(g, "MatMul", {heads[0], heads[1]}, {scores});
  const ir::ValueId root_d =
      g.add_initializer("root_d", Tensor::scalar(std::sqrt(static_cast<float>(s.head_dim))));
  add_node(g, "Div", {scores, root_d}, {scaled});
  ir::ValueId logits = scaled;
  if (s.mask) {
    logits = g.add_value("masked");
    add_node(g, "Add", {scaled, mask}, {logits});
  }
  ir::Attributes last;
  last.set("axis", int64_t{-1});
  add_node(g, "Softmax", {logits}, {probs}, last);
  add_node(g, "MatMul", {probs, heads[2]}, {context});
  ir::ValueId y = context;
  if (s.merge_heads) {
    const ir::ValueId merged = g.add_value("merged");
    y = g.add_value("y");
    add_node(g, "Transpose", {context}, {merged}, ints("perm", {0, 2, 1, 3}));
    add_node(g, "Reshape", {merged, int64s(g, "merged_shape", {0, 0, width})}, {y});
  }
  g.add_output(y);
  if (s.q_part_is_output) g.add_output(parts[0]);
  ir::infer_shapes(g);
  return g;
}

size_t count_kind(const std::vector<cuda::Layer>& layers, cuda::LayerKind kind) {
  return static_cast<size_t>(
      std::count_if(layers.begin(), layers.end(), [kind](const cuda::Layer& l) { return l.kind == kind; }));
}

const cuda::Layer& the_attention(const std::vector<cuda::Layer>& layers) {
  auto it = std::find_if(layers.begin(), layers.end(),
                         [](const cuda::Layer& l) { return l.kind == cuda::LayerKind::attention; });
  if (it == layers.end()) throw std::runtime_error("no attention layer");
  return *it;
}

cuda::Plan plan_of(const ir::Graph& g, std::vector<cuda::Layer> layers) {
  cuda::Plan plan;
  plan.graph = g;
  plan.layers = std::move(layers);
  for (ir::ValueId v : g.inputs()) {
    std::vector<int64_t> shape;
    for (const ir::Dim& d : *g.value(v).type.shape) shape.push_back(d.is_static() ? d.value() : 2);
    plan.specs.push_back(InputSpec::fixed(g.value(v).name, DType::float32, shape));
  }
  plan.fingerprint = {"cuda", cuda::k_plan_version, "test", "sm_90 x1"};
  plan.precision = cuda::ElemType::f16;
  for (cuda::Layer& l : plan.layers) {
    if (l.kind == cuda::LayerKind::matmul) l.tactic.lt_algo.assign(64, 0x5a);
  }
  return plan;
}

TEST(CudaAttention, TheWholeAttentionWithItsHeadSplitAndMergeIsOneLayer) {
  const ir::Graph g = bert_attention({});
  const auto layers = cuda::fuse_attention(g, cuda::partition_layers(g));
  // Left: the attention and the merged heads' Reshape (a view).
  ASSERT_EQ(layers.size(), 2u);
  EXPECT_EQ(count_kind(layers, cuda::LayerKind::attention), 1u);
  EXPECT_EQ(count_kind(layers, cuda::LayerKind::view), 1u);
  const cuda::Layer& a = the_attention(layers);
  const auto nodes = cuda::attention_nodes(g, a);
  ASSERT_TRUE(nodes.has_value());
  for (const auto& chain : nodes->chains) {
    ASSERT_EQ(chain.size(), 3u);
    EXPECT_EQ(g.node(chain[0]).op_type, "Split");
    EXPECT_EQ(g.node(chain[2]).op_type, "Transpose");
  }
  ASSERT_NE(nodes->output_transpose, ir::k_no_node);
  EXPECT_EQ(a.output, g.node(nodes->output_transpose).outputs[0]);
  EXPECT_NE(nodes->match.mask, ir::k_no_value);
  ASSERT_EQ(nodes->match.scales.size(), 1u);
  EXPECT_TRUE(nodes->match.scales[0].divide);
}

TEST(CudaAttention, KTransposedTwiceAfterTheHeadSplitIsOneChain) {
  Shape s;
  s.k_two_transposes = true;
  const ir::Graph g = bert_attention(s);
  const auto layers = cuda::fuse_attention(g, cuda::partition_layers(g));
  ASSERT_EQ(layers.size(), 2u);  // the attention and the merged heads' view
  const auto nodes = cuda::attention_nodes(g, the_attention(layers));
  ASSERT_TRUE(nodes.has_value());
  ASSERT_EQ(nodes->chains[1].size(), 4u);
  EXPECT_EQ(g.node(nodes->chains[1][0]).op_type, "Split");
  EXPECT_EQ(g.node(nodes->chains[1][3]).op_type, "Transpose");
}

TEST(CudaAttention, OperandsReadElsewhereAndUnmergedOutputsStayAsTheyAre) {
  Shape s;
  s.q_part_is_output = true;
  s.merge_heads = false;
  s.mask = false;
  const ir::Graph g = bert_attention(s);
  const auto layers = cuda::fuse_attention(g, cuda::partition_layers(g));
  EXPECT_EQ(count_kind(layers, cuda::LayerKind::attention), 1u);
  EXPECT_EQ(count_kind(layers, cuda::LayerKind::slice), 1u);  // Q's part, a graph output
  EXPECT_EQ(count_kind(layers, cuda::LayerKind::view), 1u);   // its Reshape
  const auto nodes = cuda::attention_nodes(g, the_attention(layers));
  ASSERT_TRUE(nodes.has_value());
  EXPECT_EQ(nodes->chains[0].size(), 1u);  // only Q's Transpose is absorbed
  EXPECT_EQ(nodes->chains[1].size(), 3u);
  EXPECT_EQ(nodes->output_transpose, ir::k_no_node);
  EXPECT_EQ(the_attention(layers).output, g.outputs()[0]);
}

TEST(CudaAttention, HeadsWiderThanTheKernelStayUnfused) {
  Shape s;
  s.head_dim = cuda::k_attention_max_dim + 8;
  const ir::Graph g = bert_attention(s);
  const auto layers = cuda::fuse_attention(g, cuda::partition_layers(g));
  EXPECT_EQ(count_kind(layers, cuda::LayerKind::attention), 0u);
  EXPECT_EQ(count_kind(layers, cuda::LayerKind::softmax), 1u);
}

TEST(CudaAttention, APlanRoundTripKeepsTheLayerAndRefusesOneThatDoesNotHold) {
  for (const Shape& s : {Shape{}, Shape{ir::Dim::symbol("batch"), 7, 2, 16, false, false, true}}) {
    const ir::Graph g = bert_attention(s);
    const cuda::Plan plan = plan_of(g, cuda::fuse_attention(g, cuda::partition_layers(g)));
    const cuda::Plan back = cuda::parse_plan(cuda::serialize_plan(plan));
    ASSERT_EQ(back.layers.size(), plan.layers.size());
    for (size_t i = 0; i < plan.layers.size(); ++i) {
      EXPECT_EQ(back.layers[i].kind, plan.layers[i].kind) << i;
      EXPECT_EQ(back.layers[i].nodes, plan.layers[i].nodes) << i;
      EXPECT_EQ(back.layers[i].output, plan.layers[i].output) << i;
    }
    // The attention's nodes out of order: not a layer fuse_attention writes.
    cuda::Plan shuffled = plan;
    for (cuda::Layer& l : shuffled.layers) {
      if (l.kind == cuda::LayerKind::attention) std::reverse(l.nodes.begin(), l.nodes.end());
    }
    try {
      (void)cuda::parse_plan(cuda::serialize_plan(shuffled));
      ADD_FAILURE() << "a shuffled attention layer was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("attention"), std::string::npos) << e.what();
    }
  }
}

TEST(CudaAttention, EveryAttentionOfTheZoosBertFuses) {
  // The encoder as the runtime hands it to the cuda backend: the embedding
  // Gathers over int64 ids run on the host, so the segment starts after them.
  const ir::Graph g = lowered_zoo_model("bert_tiny", 1).lowered;
  size_t softmaxes = 0;
  for (const ir::Node& n : g.nodes()) softmaxes += n.op_type == "Softmax";
  std::vector<cuda::Layer> layers;
  try {
    layers = cuda::fuse_attention(g, cuda::partition_layers(g));
  } catch (const Error& e) {
    GTEST_SKIP() << "the whole graph is no cuda partition: " << e.what();
  }
  ASSERT_GT(softmaxes, 0u);
  EXPECT_EQ(count_kind(layers, cuda::LayerKind::attention), softmaxes);
  EXPECT_EQ(count_kind(layers, cuda::LayerKind::softmax), 0u);
}

// ---- on a GPU (label gpu) ----

using CudaAttentionGpu = testing::GpuTest;

CompileSettings gpu_settings(std::set<Precision> precisions) {
  CompileSettings s;
  s.backend = "cuda";
  s.timing_cache_path = "-";
  s.cache_built_engines = s.reuse_cached_engines = false;
  s.enabled_precisions = std::move(precisions);
  return s;
}

// A lowered graph with its weights, as the runtime hands it to a backend.
testing::LoweredModel lowered(const ir::Graph& g) {
  testing::LoweredModel out{passes::lower(g), passes::source_weights(g)};
  passes::materialize_weights(out.lowered, out.sources);
  return out;
}

// An engine built directly on the backend, so its layers can be read.
std::unique_ptr<Engine> build_engine(const ir::Graph& g, const std::vector<InputSpec>& specs,
                                     std::set<Precision> precisions) {
  builder::TimingCache timing;
  return make_backend("cuda")->build(lowered(g).lowered, specs, gpu_settings(std::move(precisions)), timing);
}

std::vector<Tensor> inputs_for(const ir::Graph& g, const std::vector<InputSpec>& specs) {
  std::vector<Tensor> inputs;
  for (size_t i = 0; i < specs.size(); ++i) {
    Tensor t = ramp(specs[i].opt, 0.3f * static_cast<float>(i));
    if (g.value(g.inputs()[i]).name == "mask") {
      // 0 for kept keys, -10000 for the last two (padding).
      auto v = t.mutable_data<float>();
      const int64_t seq = specs[i].opt.back();
      for (size_t e = 0; e < v.size(); ++e)
        v[e] = static_cast<int64_t>(e % static_cast<size_t>(seq)) >= seq - 2 ? -10000.0f : 0.0f;
    }
    inputs.push_back(std::move(t));
  }
  return inputs;
}

TEST_F(CudaAttentionGpu, FusedAttentionMatchesTheReferenceInHalf) {
  // Tails of the kernel's 64-row and 64-key tiles, a sequence over three
  // key tiles, heads of 64 (BERT's) and of 40 (padded), with and without
  // the mask, the merged heads and an operand read elsewhere.
  const std::vector<Shape> shapes = {
      Shape{ir::Dim(2), 77, 4, 64, true, true, false}, Shape{ir::Dim(1), 130, 2, 40, false, true, false},
      Shape{ir::Dim(3), 5, 3, 16, true, false, true},
      Shape{ir::Dim(2), 128, 12, 64, false, true, false, false, true},  // the bench's BERT layer
  };
  for (const Shape& s : shapes) {
    const ir::Graph g = bert_attention(s);
    std::vector<InputSpec> specs;
    for (ir::ValueId v : g.inputs())
      specs.push_back(InputSpec::fixed(g.value(v).name, DType::float32, g.value(v).type.static_shape()));
    const std::vector<Tensor> inputs = inputs_for(g, specs);
    ref::Executor reference(g);
    const auto want = reference.run(inputs);
    for (auto [precision, bound] : {std::pair{Precision::fp16, 1e-2}, std::pair{Precision::bf16, 3e-2}}) {
      auto engine = build_engine(g, specs, {Precision::fp32, precision});
      size_t fused = 0;
      for (const LayerReport& r : engine->info().layers) fused += r.op == "Attention";
      EXPECT_EQ(fused, 1u) << "seq " << s.seq << ": the attention was not fused";
      const auto got = engine->run(inputs);
      ASSERT_EQ(got.size(), want.size());
      for (size_t o = 0; o < got.size(); ++o) {
        const double err = relative_error(got[o], want[o]);
        std::printf("[ attention ] seq %lld d %lld %s output %zu: max |diff| / max |ref| = %.3g\n",
                    static_cast<long long>(s.seq), static_cast<long long>(s.head_dim),
                    precision == Precision::fp16 ? "fp16" : "bf16", o, err);
        EXPECT_LT(err, bound) << "seq " << s.seq << " output " << o;
      }
    }
  }
}

TEST_F(CudaAttentionGpu, AnFp32EngineFusesItInExactFp32) {
  for (const Shape& s : {Shape{}, Shape{ir::Dim(2), 77, 4, 64, true, true, false}}) {
    const ir::Graph g = bert_attention(s);
    std::vector<InputSpec> specs;
    for (ir::ValueId v : g.inputs())
      specs.push_back(InputSpec::fixed(g.value(v).name, DType::float32, g.value(v).type.static_shape()));
    auto engine = build_engine(g, specs, {Precision::fp32});
    size_t fused = 0;
    for (const LayerReport& r : engine->info().layers) fused += r.op == "Attention";
    EXPECT_EQ(fused, 1u);
    const std::vector<Tensor> inputs = inputs_for(g, specs);
    ref::Executor reference(g);
    EXPECT_LT(relative_error(engine->run(inputs), reference.run(inputs)), 1e-5) << "seq " << s.seq;
  }
}

TEST_F(CudaAttentionGpu, ADynamicBatchAndALoadedRefittedEngineGiveTheSameOutputs) {
  Shape shape;
  shape.batch = ir::Dim::symbol("batch");
  shape.seq = 24;
  shape.head_dim = 32;
  shape.projection = true;
  const ir::Graph g = bert_attention(shape);
  auto [graph, sources] = lowered(g);
  std::vector<InputSpec> specs;
  for (ir::ValueId v : graph.inputs()) {
    const std::string& name = graph.value(v).name;
    const int64_t last = name == "mask" ? 24 : 3 * shape.heads * shape.head_dim;
    const std::vector<int64_t> middle =
        name == "mask" ? std::vector<int64_t>{1, 1} : std::vector<int64_t>{24};
    auto at = [&](int64_t batch) {
      std::vector<int64_t> dims{batch};
      dims.insert(dims.end(), middle.begin(), middle.end());
      dims.push_back(last);
      return dims;
    };
    specs.push_back({name, DType::float32, at(1), at(4), at(8)});
  }
  auto backend = make_backend("cuda");
  builder::TimingCache timing;
  auto built = backend->build(graph, specs, gpu_settings({Precision::fp32, Precision::fp16}), timing);
  auto loaded = backend->deserialize(built->serialize());
  loaded->refit(sources);
  ref::Executor reference(g);
  for (int64_t batch : {int64_t{2}, int64_t{7}}) {
    std::vector<InputSpec> at_batch;
    for (const InputSpec& spec : specs) {
      std::vector<int64_t> dims = spec.opt;
      dims[0] = batch;
      at_batch.push_back(InputSpec::fixed(spec.name, spec.dtype, dims));
    }
    const std::vector<Tensor> in = inputs_for(g, at_batch);
    const auto a = built->run(in);
    const auto b = loaded->run(in);
    EXPECT_TRUE(testing::same_bits(a, b)) << "batch " << batch;
    EXPECT_LT(relative_error(a, reference.run(in)), 1e-2) << "batch " << batch;
  }
}

}  // namespace
}  // namespace kiln
