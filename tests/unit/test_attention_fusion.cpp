// The cpu backend's fused attention (attention_pattern.hpp,
// attention_layer.cpp): the variants exporters write must form exactly one
// attention layer per attention (the engine's layer report says so, so these
// fail when the pattern stops matching) and match the reference executor
// within 1e-4 of the output's range; refit, the plan round trip and a
// corrupted attention layer behave as for any other layer; what the pattern
// does not cover keeps today's separate layers. The fusion is opt-in
// (CompileSettings::cpu_fused_attention), so each build here turns it on.
#include <gtest/gtest.h>

#include <onnx/onnx_pb.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "backends/cpu/cpu_backend.hpp"
#include "backends/cpu/plan_format.hpp"
#include "cpu_test_helpers.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "key/engine_key.hpp"
#include "key/key_hasher.hpp"
#include "onnx_test_model.hpp"
#include "passes/passes.hpp"
#include "reference/executor.hpp"

namespace kiln {
namespace {

using onnx::TensorProto;

constexpr double k_tolerance = 1e-4;

using Model = testing::ProtoModel;
using testing::set_int;
using testing::set_ints;
using testing::wave;

void transpose(Model& m, const std::string& name, const std::string& in, const std::string& out,
               const std::vector<int64_t>& perm) {
  set_ints(m.node("Transpose", name, {in}, out), "perm", perm);
}

void softmax(Model& m, const std::string& in, const std::string& out) {
  set_int(m.node("Softmax", "softmax", {in}, out), "axis", -1);
}

enum class Scale { scores, query, both };
enum class Mask { none, padding, causal };

struct Case {
  int64_t batch, heads, seq, head_dim;
  Scale scale;
  Mask mask;
  bool k_transposed_by_node;  // Kᵀ as a Transpose of K, or given transposed
  bool heads_by_transpose;    // Q, K, V as [B, S, H, D] split into heads by a Transpose view
};

std::string case_name(const Case& c) {
  static const char* scales[] = {"scores", "query", "both"};
  static const char* masks[] = {"nomask", "padding", "causal"};
  return "b" + std::to_string(c.batch) + "h" + std::to_string(c.heads) + "s" + std::to_string(c.seq) + "d" +
         std::to_string(c.head_dim) + "_" + scales[static_cast<int>(c.scale)] + "_" +
         masks[static_cast<int>(c.mask)] + (c.k_transposed_by_node ? "_ktnode" : "_ktgiven") +
         (c.heads_by_transpose ? "_bshd" : "_bhsd");
}

// MatMul(Q, Kᵀ) -> scale -> mask -> Softmax -> MatMul(·, V) as `c` says.
Model attention_model(const Case& c) {
  Model m(17);
  const int64_t b = c.batch, h = c.heads, s = c.seq, d = c.head_dim;
  auto heads_input = [&](const std::string& name, bool as_kt) {
    // The tensor the attention reads: [B, H, S, D] (or [B, H, D, S] for a given Kᵀ).
    if (c.heads_by_transpose) {
      m.input(name + "_in", {b, s, h, d});
      transpose(m, name + "_heads", name + "_in", name,
                as_kt ? std::vector<int64_t>{0, 2, 3, 1} : std::vector<int64_t>{0, 2, 1, 3});
    } else {
      m.input(name, as_kt ? std::vector<int64_t>{b, h, d, s} : std::vector<int64_t>{b, h, s, d});
    }
  };
  heads_input("q", false);
  if (c.k_transposed_by_node) {
    heads_input("k", false);
    transpose(m, "k_t", "k", "kt", {0, 1, 3, 2});
  } else {
    heads_input("kt", true);
  }
  heads_input("v", false);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  std::string q = "q", kt = "kt", scores = "scores";
  if (c.scale == Scale::query) {
    m.scalar("sqrt_d", std::sqrt(static_cast<float>(d)));
    m.node("Div", "q_scale", {"q", "sqrt_d"}, "qs");
    q = "qs";
  } else if (c.scale == Scale::both) {
    m.scalar("root_scale", std::sqrt(scale));
    m.node("Mul", "q_scale", {"q", "root_scale"}, "qs");
    m.node("Mul", "k_scale", {"root_scale", "kt"}, "kts");
    q = "qs";
    kt = "kts";
  }
  m.node("MatMul", "qk", {q, kt}, "scores");
  if (c.scale == Scale::scores) {
    m.scalar("sqrt_d", std::sqrt(static_cast<float>(d)));
    m.node("Div", "scores_scale", {"scores", "sqrt_d"}, "scaled");
    scores = "scaled";
  }
  if (c.mask == Mask::padding) {
    // The last two keys of the last sequence are padding.
    std::vector<float> mask(static_cast<size_t>(b * s), 0.0f);
    for (int64_t k = std::max<int64_t>(s - 2, 1); k < s; ++k)
      mask[static_cast<size_t>((b - 1) * s + k)] = -10000.0f;
    m.input("mask", {b, 1, 1, s}, mask);
    m.node("Add", "mask_add", {"mask", scores}, "masked");
    scores = "masked";
  } else if (c.mask == Mask::causal) {
    std::vector<float> mask(static_cast<size_t>(s * s), 0.0f);
    for (int64_t i = 0; i < s; ++i) {
      for (int64_t j = i + 1; j < s; ++j) mask[static_cast<size_t>(i * s + j)] = -10000.0f;
    }
    m.floats("causal", {1, 1, s, s}, mask);
    m.node("Add", "mask_add", {scores, "causal"}, "masked");
    scores = "masked";
  }
  softmax(m, scores, "p");
  m.node("MatMul", "pv", {"p", "v"}, "y");
  m.output("y", TensorProto::FLOAT, 4);
  return m;
}

// Level 0 (no timing), with the opt-in fused attention on or off.
CompileSettings fusion(bool on) {
  CompileSettings settings;
  settings.optimization_level = 0;
  settings.cpu_fused_attention = on;
  return settings;
}

int attention_layers(const Engine& engine) {
  int n = 0;
  for (const LayerReport& r : engine.info().layers) n += r.tactic.rfind("attention:", 0) == 0;
  return n;
}

bool has_softmax_layer(const Engine& engine) {
  for (const LayerReport& r : engine.info().layers) {
    if (r.op == "Softmax") return true;
  }
  return false;
}

// Builds at level 0 (no timing), runs, compares with the reference.
std::unique_ptr<Engine> build_and_compare(const Model& m, const std::string& what, bool fused = true) {
  const ir::Graph graph = m.import("attention.onnx").graph;
  auto backend = make_cpu_backend();
  auto engine = testing::build_engine(*backend, graph, m.inputs(), fusion(fused));
  const std::vector<Tensor> got = engine->run(m.inputs());
  const std::vector<Tensor> want = ref::Executor(graph).run(m.inputs());
  EXPECT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    EXPECT_LE(testing::relative_error(got[i], want[i]), k_tolerance) << what << " output " << i;
  }
  return engine;
}

class AttentionFusion : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionFusion, FormsOneAttentionLayerAndMatchesTheReference) {
  const Case& c = GetParam();
  auto engine = build_and_compare(attention_model(c), case_name(c));
  EXPECT_EQ(attention_layers(*engine), 1);
  EXPECT_FALSE(has_softmax_layer(*engine));
}

INSTANTIATE_TEST_SUITE_P(
    Variants, AttentionFusion,
    ::testing::Values(
        // BERT-base: 12 heads of 64, scores divided, padding mask, Kᵀ by a Transpose view.
        Case{1, 12, 128, 64, Scale::scores, Mask::padding, true, true},
        Case{3, 12, 128, 64, Scale::scores, Mask::padding, true, true},
        // ViT-B/16: 197 tokens, query scaled, no mask.
        Case{1, 12, 197, 64, Scale::query, Mask::none, true, true},
        Case{3, 12, 197, 32, Scale::query, Mask::none, false, false},
        // torch's SDPA export: Q and Kᵀ each scaled by sqrt(scale); a causal mask.
        Case{1, 12, 128, 64, Scale::both, Mask::causal, false, true},
        Case{3, 1, 7, 32, Scale::both, Mask::causal, true, false},
        // One head, odd and single-token sequences.
        Case{1, 1, 7, 64, Scale::scores, Mask::none, false, false},
        Case{3, 1, 1, 64, Scale::query, Mask::padding, true, true},
        Case{1, 12, 1, 32, Scale::scores, Mask::causal, false, true},
        Case{3, 12, 7, 64, Scale::both, Mask::padding, true, true},
        Case{1, 1, 197, 32, Scale::scores, Mask::causal, true, false},
        Case{3, 1, 128, 32, Scale::query, Mask::none, false, true}),
    [](const ::testing::TestParamInfo<Case>& param_info) { return case_name(param_info.param); });

// What the pattern does not cover keeps the separate layers: the scores
// also read by something else (a second output) cannot be left unwritten.
TEST(AttentionFusionBails, ScoresReadElsewhereKeepTheSeparateLayers) {
  Model m = attention_model(Case{1, 2, 7, 32, Scale::scores, Mask::padding, true, true});
  m.output("p", TensorProto::FLOAT, 4);
  auto engine = build_and_compare(m, "probabilities as an output");
  EXPECT_EQ(attention_layers(*engine), 0);
  EXPECT_TRUE(has_softmax_layer(*engine));
}

// Off by default: the separate layers run. The setting alone decides (the
// environment variable is the CLI's, not the library's), and it is part of
// the engine key's settings part, not of the backend's fingerprint.
TEST(AttentionFusionBails, IsOffUnlessTheSettingAsksForIt) {
  EXPECT_FALSE(CompileSettings{}.cpu_fused_attention);
  const Model m = attention_model(Case{1, 2, 7, 32, Scale::scores, Mask::padding, true, true});
  setenv("KILN_CPU_FUSED_ATTENTION", "1", 1);  // what kiln before the setting read: no effect now
  auto engine = build_and_compare(m, "fusion off", false);
  unsetenv("KILN_CPU_FUSED_ATTENTION");
  EXPECT_EQ(attention_layers(*engine), 0);
  EXPECT_TRUE(has_softmax_layer(*engine));
  EXPECT_EQ(attention_layers(*build_and_compare(m, "fusion on", true)), 1);

  const ir::Graph lowered = passes::lower(m.import("attention.onnx").graph);
  const std::vector<InputSpec> specs = testing::fixed_specs(m.import("attention.onnx").graph, m.inputs());
  const Fingerprint fingerprint = make_cpu_backend()->fingerprint();
  const key::EngineKey off = key::compute_engine_key(lowered, specs, fusion(false), fingerprint);
  const key::EngineKey on = key::compute_engine_key(lowered, specs, fusion(true), fingerprint);
  EXPECT_NE(off.hex(), on.hex());
  EXPECT_EQ(key::differing_parts(off.parts, on.parts), "settings");
  // Off adds nothing to the hash: the settings part of a kiln without the
  // setting, so engines cached before it keep their keys.
  key::KeyHasher before;
  before.tag(key::Tag::precisions);
  before.u64(1);
  before.u64(static_cast<uint64_t>(Precision::fp32));
  before.tag(key::Tag::optimization_level);
  before.i64(0);
  before.tag(key::Tag::refittable);
  before.u64(1);
  EXPECT_EQ(off.parts.settings, before.finish());
}

// A Softmax over another axis is not attention.
TEST(AttentionFusionBails, SoftmaxOverAnotherAxisKeepsTheSeparateLayers) {
  Model m(17);
  m.input("q", {1, 2, 7, 32});
  m.input("kt", {1, 2, 32, 7});
  m.input("v", {1, 2, 7, 32});
  m.node("MatMul", "qk", {"q", "kt"}, "scores");
  auto* a = m.node("Softmax", "softmax", {"scores"}, "p")->add_attribute();
  a->set_name("axis");
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(2);
  m.node("MatMul", "pv", {"p", "v"}, "y");
  m.output("y", TensorProto::FLOAT, 4);
  auto engine = build_and_compare(m, "softmax over axis 2");
  EXPECT_EQ(attention_layers(*engine), 0);
}

// Self-attention with Q, K and V projected from one input by weights
// [tokens, E] x [E, E] (rank 3, one head): refit to other projection
// weights gives the other model's result (the attention layer has no weights
// of its own; a one-element scale is a constant of the architecture, part of
// the engine key like any constant); the plan round trip keeps the attention
// layer and its results bit for bit.
Model projected_attention(uint32_t seed) {
  Model m(17);
  const int64_t t = 9, e = 32;
  m.input("x", {2, t, e});
  for (const char* w : {"wq", "wk", "wv"}) {
    m.floats(w, {e, e}, wave(e * e, 0.9 * seed + static_cast<double>(w[1]), 3));
  }
  m.scalar("scale", 0.25f);
  m.node("MatMul", "q_proj", {"x", "wq"}, "q");
  m.node("MatMul", "k_proj", {"x", "wk"}, "k");
  m.node("MatMul", "v_proj", {"x", "wv"}, "v");
  transpose(m, "k_t", "k", "kt", {0, 2, 1});
  m.node("MatMul", "qk", {"q", "kt"}, "scores");
  m.node("Mul", "scores_scale", {"scores", "scale"}, "scaled");
  softmax(m, "scaled", "p");
  m.node("MatMul", "pv", {"p", "v"}, "y");
  m.output("y", TensorProto::FLOAT, 3);
  return m;
}

TEST(AttentionFusionPlan, RefitsAndSurvivesThePlanRoundTrip) {
  const Model a = projected_attention(1);
  const Model b = projected_attention(2);
  const ir::Graph ga = a.import("attention.onnx").graph, gb = b.import("attention.onnx").graph;
  auto backend = make_cpu_backend();
  auto engine = testing::build_engine(*backend, ga, a.inputs(), fusion(true));
  ASSERT_EQ(attention_layers(*engine), 1);
  engine->refit(passes::source_weights(gb));
  const Tensor got_b = engine->run(a.inputs())[0];
  EXPECT_LE(testing::relative_error(got_b, ref::Executor(gb).run(a.inputs())[0]), k_tolerance);

  auto restored = backend->deserialize(engine->serialize());
  EXPECT_EQ(attention_layers(*restored), 1);
  restored->refit(passes::source_weights(ga));
  const Tensor got_a = restored->run(a.inputs())[0];
  EXPECT_LE(testing::relative_error(got_a, ref::Executor(ga).run(a.inputs())[0]), k_tolerance);
  restored->refit(passes::source_weights(gb));
  EXPECT_TRUE(testing::bitwise_equal(restored->run(a.inputs())[0], got_b));
}

TEST(AttentionFusionPlan, APlanWhoseAttentionLayerLostANodeIsRefused) {
  const Model a = projected_attention(1);
  auto backend = make_cpu_backend();
  auto engine = testing::build_engine(*backend, a.import("attention.onnx").graph, a.inputs(), fusion(true));
  cpu::EnginePlan plan = cpu::parse_plan(engine->serialize());
  bool changed = false;
  for (size_t i = 0; i < plan.layers.size() && !changed; ++i) {
    cpu::LayerDesc& l = plan.layers[i];
    if (l.kind != cpu::LayerKind::attention) continue;
    // The scale Mul moves to a layer of its own: every node is still covered
    // once, but the attention layer is no longer one whole attention.
    for (size_t n = 0; n < l.nodes.size(); ++n) {
      if (plan.graph.node(l.nodes[n]).op_type != "Mul") continue;
      cpu::LayerDesc alone;
      alone.kind = cpu::LayerKind::binary;
      alone.nodes = {l.nodes[n]};
      alone.output = plan.graph.node(l.nodes[n]).outputs[0];
      l.nodes.erase(l.nodes.begin() + static_cast<std::ptrdiff_t>(n));
      plan.layers.insert(plan.layers.begin() + static_cast<std::ptrdiff_t>(i), alone);
      changed = true;
      break;
    }
  }
  ASSERT_TRUE(changed);
  try {
    backend->deserialize(cpu::serialize_plan(plan));
    FAIL() << "a broken attention layer was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("attention"), std::string::npos) << e.what();
  }
}

// The zoo's BERT-base (12 layers of 12 heads, the scores divided by a
// weight, the padding mask broadcast over heads and rows) forms one
// attention layer per encoder layer and matches the reference.
TEST(AttentionFusionZoo, BertBaseFormsTwelveAttentionLayersAndMatchesTheReference) {
  const ir::Graph g = testing::import_zoo("bert_base", 3);
  const std::vector<Tensor> inputs = testing::bert_inputs(2, 16);
  auto backend = make_cpu_backend();
  auto engine = testing::build_engine(*backend, g, inputs, fusion(true));
  EXPECT_EQ(attention_layers(*engine), 12);
  EXPECT_FALSE(has_softmax_layer(*engine));
  const std::vector<Tensor> got = engine->run(inputs);
  const std::vector<Tensor> want = ref::Executor(g).run(inputs);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_LE(testing::relative_error(got[i], want[i]), k_tolerance) << i;
}

}  // namespace
}  // namespace kiln
