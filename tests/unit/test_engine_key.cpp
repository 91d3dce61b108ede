// The engine key, both ways (DESIGN.md, "The key"): two exports of one
// architecture with other names, other weights, another initializer order
// and other metadata share a key; anything that changes the computed function
// or the built engine gives a different key, and differing_parts names the
// part. Also: settings that must stay out, determinism across runs and
// processes, and the KeyHasher's delimiting. Keys are always computed the way
// the compile computes them: over lower(import(model)).
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <span>
#include <string>
#include <vector>

#include <onnx/onnx_pb.h>

#include "frontend/onnx/onnx_importer.hpp"
#include "key/engine_key.hpp"
#include "key/key_hasher.hpp"
#include "kiln/error.hpp"
#include "passes/passes.hpp"
#include "zoo/model_builder.hpp"
#include "zoo/zoo.hpp"

namespace kiln {
namespace {

using key::compute_engine_key;
using key::differing_parts;
using key::EngineKey;
using zoo::Attr;
using zoo::IoDim;
using zoo::ModelBuilder;

constexpr int32_t k_float = onnx::TensorProto::FLOAT;

ir::Graph lowered(const std::string& onnx_bytes) {
  auto model = frontend::import_onnx_bytes(std::as_bytes(std::span<const char>(onnx_bytes)), "test.onnx");
  return passes::lower(model.graph);
}

// Specs from the declared input types: static dims fixed, symbolic dims 1/2/4.
std::vector<InputSpec> specs_for(const ir::Graph& graph, int64_t max_dynamic = 4) {
  std::vector<InputSpec> specs;
  for (ir::ValueId id : graph.inputs()) {
    const ir::Value& v = graph.value(id);
    InputSpec s;
    s.name = v.name;
    s.dtype = v.type.dtype;
    for (const ir::Dim& d : v.type.shape.value()) {
      s.min.push_back(d.is_static() ? d.value() : 1);
      s.opt.push_back(d.is_static() ? d.value() : 2);
      s.max.push_back(d.is_static() ? d.value() : max_dynamic);
    }
    specs.push_back(std::move(s));
  }
  return specs;
}

Fingerprint cpu_fingerprint() { return {"cpu", 1, "oneDNN 2.6.3", "avx512_core_bf16"}; }

EngineKey key_of(const ir::Graph& graph, const CompileSettings& settings = {},
                 const Fingerprint& fingerprint = cpu_fingerprint()) {
  return compute_engine_key(graph, specs_for(graph), settings, fingerprint);
}

std::vector<IoDim> dims(std::initializer_list<int64_t> sizes) {
  std::vector<IoDim> out;
  for (int64_t s : sizes) out.push_back({s, {}});
  return out;
}
// An output of `rank` whose dims the importer infers.
std::vector<IoDim> any_dims(int rank) {
  std::vector<IoDim> out;
  for (int i = 0; i < rank; ++i) out.push_back({0, "out" + std::to_string(i)});
  return out;
}

// A small model written by `body`, which names everything after `p`.
using Body = std::function<void(ModelBuilder&, const std::string& p)>;
ir::Graph small(const Body& body, const std::string& prefix = "", uint64_t seed = 0) {
  ModelBuilder b(prefix + "graph", 17, seed);
  body(b, prefix);
  return lowered(b.serialize());
}

// Expects different keys that differ in exactly `part`.
void expect_differs_in(const ir::Graph& a, const ir::Graph& b, const std::string& part) {
  EngineKey ka = key_of(a), kb = key_of(b);
  EXPECT_NE(ka.hex(), kb.hex());
  EXPECT_EQ(differing_parts(ka.parts, kb.parts), part);
}

Body binary(const std::string& op, bool swapped) {
  return [op, swapped](ModelBuilder& b, const std::string& p) {
    b.add_input(p + "a", k_float, dims({4, 4}));
    b.add_input(p + "b", k_float, dims({4, 4}));
    std::string y =
        swapped ? b.node(op, p + "n", {p + "b", p + "a"}) : b.node(op, p + "n", {p + "a", p + "b"});
    b.add_output(y, k_float, dims({4, 4}));
  };
}

Body conv(std::vector<int64_t> strides, std::vector<int64_t> pads, int64_t out_channels = 4) {
  return [=](ModelBuilder& b, const std::string& p) {
    b.add_input(p + "x", k_float, dims({1, 3, 8, 8}));
    std::string w = b.weight(p + "w", {out_channels, 3, 3, 3}, 0.1f);
    std::string bias = b.weight(p + "bias", {out_channels}, 0.1f);
    std::string y = b.node("Conv", p + "conv", {p + "x", w, bias},
                           {Attr::of("kernel_shape", std::vector<int64_t>{3, 3}),
                            Attr::of("strides", strides), Attr::of("pads", pads)});
    std::string r = b.node("Relu", p + "relu", {y});
    b.add_output(r, k_float, any_dims(4));
  };
}

// A few nodes touching every operand kind: inputs, weights (one shared),
// an int64 shape constant, float scalar constants, node results.
Body mixed(float clip_max = 6.0f, std::vector<int64_t> target = {2, 16}) {
  return [=](ModelBuilder& b, const std::string& p) {
    b.add_input(p + "x", k_float, {{0, "batch"}, {8, {}}});
    std::string w = b.weight(p + "fc.weight", {8, 16}, 0.1f);
    std::string bias = b.weight(p + "fc.bias", {16}, 0.1f);
    std::string mm = b.node("MatMul", p + "mm", {p + "x", w});
    std::string add = b.node("Add", p + "add", {mm, bias});
    std::string lo = b.float_constant(p + "lo", {}, {0.0f});
    std::string hi = b.float_constant(p + "hi", {}, {clip_max});
    std::string clip = b.node("Clip", p + "clip", {add, lo, hi});
    std::string shape = b.int64_constant(p + "shape", {2}, target);
    std::string r = b.node("Reshape", p + "reshape", {clip, shape});
    std::string add2 = b.node("Add", p + "add2", {r, r});
    std::string sm = b.node("Softmax", p + "softmax", {add2}, {Attr::of("axis", int64_t{-1})});
    b.add_output(sm, k_float, any_dims(2));
  };
}

// ---- same key -------------------------------------------------------------------

TEST(EngineKey, RenamedSmallExportWithOtherWeightsHasTheSameKey) {
  ir::Graph a = small(mixed(), "", 1);
  ir::Graph b = small(mixed(), "exported_again/", 2);
  EngineKey ka = key_of(a), kb = key_of(b);
  EXPECT_EQ(ka.hex(), kb.hex());
  EXPECT_EQ(ka, kb);
  EXPECT_EQ(key::canonical_graph_text(a), key::canonical_graph_text(b));
  EXPECT_EQ(key::canonical_graph_text(b).find("exported_again"), std::string::npos);

  // The weights really differ: the key is weight-agnostic, not blind.
  auto wa = passes::source_weights(a), wb = passes::source_weights(b);
  ASSERT_EQ(wa.size(), 2u);
  EXPECT_NE(wa[0].data<float>()[0], wb[0].data<float>()[0]);
}

// Renames every node, value and initializer of `model`, reverses the
// initializer list and replaces the metadata, as another exporter might.
std::string renamed_export(const std::string& bytes, const std::string& prefix) {
  onnx::ModelProto model;
  EXPECT_TRUE(model.ParseFromString(bytes));
  auto rename = [&prefix](std::string* name) {
    if (!name->empty()) *name = prefix + *name;  // "" is an omitted optional input
  };
  onnx::GraphProto* g = model.mutable_graph();
  g->set_name(prefix + g->name());
  g->set_doc_string("exported by another tool");
  for (auto& n : *g->mutable_node()) {
    rename(n.mutable_name());
    n.set_doc_string("node " + n.name());
    for (auto& in : *n.mutable_input()) rename(&in);
    for (auto& out : *n.mutable_output()) rename(&out);
  }
  for (auto& v : *g->mutable_input()) rename(v.mutable_name());
  for (auto& v : *g->mutable_output()) rename(v.mutable_name());
  for (auto& v : *g->mutable_value_info()) rename(v.mutable_name());
  for (auto& t : *g->mutable_initializer()) rename(t.mutable_name());
  std::reverse(g->mutable_initializer()->begin(), g->mutable_initializer()->end());
  model.set_producer_name("pytorch");
  model.set_producer_version("2.4.0");
  model.set_doc_string("a differently documented export");
  std::string out;
  EXPECT_TRUE(model.SerializeToString(&out));
  return out;
}

void expect_zoo_model_key_survives_renaming(const std::string& name) {
  zoo::ZooOptions first{.seed = 1, .batch = std::nullopt};
  zoo::ZooOptions second{.seed = 7, .batch = std::nullopt};
  std::string original = zoo::build_zoo_model(name, first).onnx_bytes;
  std::string other = renamed_export(zoo::build_zoo_model(name, second).onnx_bytes, "other_");
  ASSERT_NE(original, other);

  ir::Graph a = lowered(original);
  ir::Graph b = lowered(other);
  // The rename reached the lowered graph, and the weights differ.
  ASSERT_FALSE(b.inputs().empty());
  EXPECT_EQ(b.value(b.inputs()[0]).name.rfind("other_", 0), 0u);
  auto wa = passes::source_weights(a), wb = passes::source_weights(b);
  ASSERT_EQ(wa.size(), wb.size());
  ASSERT_FALSE(wa.empty());
  EXPECT_NE(std::memcmp(wa[0].bytes().data(), wb[0].bytes().data(), wa[0].byte_size()), 0);

  EngineKey ka = key_of(a), kb = key_of(b);
  EXPECT_EQ(ka.hex(), kb.hex()) << differing_parts(ka.parts, kb.parts);
  std::string text = key::canonical_graph_text(b);
  EXPECT_EQ(key::canonical_graph_text(a), text);
  EXPECT_EQ(text.find("other_"), std::string::npos);
}

TEST(EngineKey, RenamedResNetTinyExportHasTheSameKey) {
  expect_zoo_model_key_survives_renaming("resnet_tiny");
}

TEST(EngineKey, RenamedBertTinyExportHasTheSameKey) { expect_zoo_model_key_survives_renaming("bert_tiny"); }

TEST(EngineKey, OnlyMetadataDiffersGivesTheSameKey) {
  ModelBuilder b("g", 17, 0);
  mixed()(b, "");
  onnx::ModelProto model = b.model();
  std::string plain;
  ASSERT_TRUE(model.SerializeToString(&plain));
  model.set_producer_name("someone else");
  model.set_doc_string("docs");
  model.mutable_graph()->set_doc_string("graph docs");
  std::string documented;
  ASSERT_TRUE(model.SerializeToString(&documented));
  EXPECT_EQ(key_of(lowered(plain)).hex(), key_of(lowered(documented)).hex());
}

TEST(EngineKey, SettingsThatDoNotChangeTheEngineStayOut) {
  ir::Graph g = small(mixed());
  CompileSettings base;
  std::string expected = key_of(g, base).hex();
  auto expect_same = [&](const std::function<void(CompileSettings&)>& change, const char* what) {
    CompileSettings s = base;
    change(s);
    EXPECT_EQ(key_of(g, s).hex(), expected) << what;
  };
  expect_same([](CompileSettings& s) { s.engine_cache_dir = "/somewhere/else"; }, "engine_cache_dir");
  expect_same([](CompileSettings& s) { s.engine_cache_size = 123; }, "engine_cache_size");
  expect_same([](CompileSettings& s) { s.debug = true; }, "debug");
  expect_same([](CompileSettings& s) { s.timing_cache_path = "/tmp/other.timing"; }, "timing_cache_path");
  expect_same([](CompileSettings& s) { s.num_threads = 7; }, "num_threads");
  expect_same([](CompileSettings& s) { s.cache_built_engines = false; }, "cache_built_engines");
  expect_same([](CompileSettings& s) { s.reuse_cached_engines = false; }, "reuse_cached_engines");
}

TEST(EngineKey, InputSpecNamesStayOut) {
  ir::Graph g = small(mixed());
  auto specs = specs_for(g);
  EngineKey a = compute_engine_key(g, specs, {}, cpu_fingerprint());
  specs[0].name = "renamed";
  EXPECT_EQ(compute_engine_key(g, specs, {}, cpu_fingerprint()), a);
}

// ---- different key --------------------------------------------------------------

TEST(EngineKey, SubArgumentOrderChangesTheGraphPart) {
  expect_differs_in(small(binary("Sub", false)), small(binary("Sub", true)), "graph");
}

TEST(EngineKey, MatMulArgumentOrderChangesTheGraphPart) {
  expect_differs_in(small(binary("MatMul", false)), small(binary("MatMul", true)), "graph");
}

TEST(EngineKey, SoftmaxAxisChangesTheGraphPart) {
  auto softmax = [](int64_t axis) {
    return [axis](ModelBuilder& b, const std::string& p) {
      b.add_input(p + "x", k_float, dims({4, 4}));
      std::string y = b.node("Softmax", p + "sm", {p + "x"}, {Attr::of("axis", axis)});
      b.add_output(y, k_float, dims({4, 4}));
    };
  };
  expect_differs_in(small(softmax(0)), small(softmax(1)), "graph");
}

TEST(EngineKey, ConvStrideChangesTheGraphPart) {
  expect_differs_in(small(conv({1, 1}, {1, 1, 1, 1})), small(conv({2, 2}, {1, 1, 1, 1})), "graph");
}

TEST(EngineKey, ConvPadChangesTheGraphPart) {
  expect_differs_in(small(conv({1, 1}, {0, 0, 0, 0})), small(conv({1, 1}, {1, 1, 1, 1})), "graph");
}

TEST(EngineKey, ReshapeTargetChangesTheGraphPart) {
  expect_differs_in(small(mixed(6.0f, {2, 16})), small(mixed(6.0f, {4, 8})), "graph");
}

TEST(EngineKey, TransposePermChangesTheGraphPart) {
  auto transpose = [](std::vector<int64_t> perm) {
    return [perm](ModelBuilder& b, const std::string& p) {
      b.add_input(p + "x", k_float, dims({3, 3, 3}));
      std::string y = b.node("Transpose", p + "t", {p + "x"}, {Attr::of("perm", perm)});
      b.add_output(y, k_float, dims({3, 3, 3}));
    };
  };
  expect_differs_in(small(transpose({0, 2, 1})), small(transpose({2, 1, 0})), "graph");
}

TEST(EngineKey, ClipBoundChangesTheGraphPart) {
  expect_differs_in(small(mixed(6.0f)), small(mixed(4.0f)), "graph");
}

TEST(EngineKey, WeightShapeChangesTheGraphPart) {
  expect_differs_in(small(conv({1, 1}, {1, 1, 1, 1}, 4)), small(conv({1, 1}, {1, 1, 1, 1}, 8)), "graph");
}

TEST(EngineKey, SharingAWeightDiffersFromTwoWeights) {
  // Refit must feed one tensor to both uses or two tensors: not the same engine.
  auto two_matmuls = [](bool shared) {
    return [shared](ModelBuilder& b, const std::string& p) {
      b.add_input(p + "x", k_float, dims({4, 4}));
      std::string w1 = b.weight(p + "w1", {4, 4}, 0.1f);
      std::string w2 = shared ? w1 : b.weight(p + "w2", {4, 4}, 0.1f);
      std::string y = b.node("MatMul", p + "m1", {p + "x", w1});
      std::string z = b.node("MatMul", p + "m2", {y, w2});
      b.add_output(z, k_float, dims({4, 4}));
    };
  };
  expect_differs_in(small(two_matmuls(true)), small(two_matmuls(false)), "graph");
}

TEST(EngineKey, FoldedBatchNormEpsilonChangesTheGraphPart) {
  // After folding, epsilon lives only in the weights' recipes.
  auto conv_bn = [](float epsilon) {
    return [epsilon](ModelBuilder& b, const std::string& p) {
      b.add_input(p + "x", k_float, dims({1, 3, 8, 8}));
      std::string w = b.weight(p + "w", {4, 3, 3, 3}, 0.1f);
      std::string y =
          b.node("Conv", p + "conv", {p + "x", w}, {Attr::of("kernel_shape", std::vector<int64_t>{3, 3})});
      std::string z =
          b.node("BatchNormalization", p + "bn",
                 {y, b.uniform_weight(p + "gamma", {4}, 0.5f, 1.5f), b.weight(p + "beta", {4}, 0.1f),
                  b.weight(p + "mean", {4}, 0.1f), b.uniform_weight(p + "var", {4}, 0.5f, 1.5f)},
                 {Attr::of("epsilon", epsilon)});
      b.add_output(z, k_float, any_dims(4));
    };
  };
  ir::Graph a = small(conv_bn(1e-5f)), b = small(conv_bn(1e-3f));
  for (const ir::Node& n : a.nodes())
    EXPECT_NE(n.op_type, "BatchNormalization") << "expected BatchNorm folded";
  expect_differs_in(a, b, "graph");
}

TEST(EngineKey, FloatTensorFromAConstantNodeIsHashedByValue) {
  // Not a model weight (no recipe): the plan bakes it in, so its values are
  // part of the key even though it is a multi-element float used as data.
  auto with_constant = [](float value) {
    ModelBuilder b("g", 17, 0);
    b.add_input("x", k_float, dims({4}));
    b.add_output("y", k_float, dims({4}));
    onnx::ModelProto model = b.model();
    onnx::GraphProto* g = model.mutable_graph();
    onnx::NodeProto* c = g->add_node();
    c->set_op_type("Constant");
    c->add_output("c");
    onnx::AttributeProto* attr = c->add_attribute();
    attr->set_name("value");
    attr->set_type(onnx::AttributeProto::TENSOR);
    onnx::TensorProto* t = attr->mutable_t();
    t->set_data_type(onnx::TensorProto::FLOAT);
    t->add_dims(4);
    for (int i = 0; i < 4; ++i) t->add_float_data(value + static_cast<float>(i));
    onnx::NodeProto* add = g->add_node();
    add->set_op_type("Add");
    add->add_input("x");
    add->add_input("c");
    add->add_output("y");
    std::string bytes;
    EXPECT_TRUE(model.SerializeToString(&bytes));
    return lowered(bytes);
  };
  expect_differs_in(with_constant(1.0f), with_constant(2.0f), "graph");
}

TEST(EngineKey, InputRangeChangesTheInputsPart) {
  ir::Graph g = small(mixed());
  EngineKey a = compute_engine_key(g, specs_for(g, 8), {}, cpu_fingerprint());
  EngineKey b = compute_engine_key(g, specs_for(g, 16), {}, cpu_fingerprint());
  EXPECT_NE(a.hex(), b.hex());
  EXPECT_EQ(differing_parts(a.parts, b.parts), "inputs");
}

TEST(EngineKey, PrecisionChangesTheSettingsPart) {
  ir::Graph g = small(mixed());
  CompileSettings bf16;
  bf16.enabled_precisions = {Precision::fp32, Precision::bf16};
  EngineKey a = key_of(g), b = key_of(g, bf16);
  EXPECT_NE(a.hex(), b.hex());
  EXPECT_EQ(differing_parts(a.parts, b.parts), "settings");
}

TEST(EngineKey, Fp16Bf16AndFp32AreThreeDifferentKeys) {
  // The cuda backend builds a half engine from fp16 or bf16: an fp32 entry
  // must never be a hit for it, nor one half type's for the other's.
  ir::Graph g = small(mixed());
  CompileSettings fp16, bf16;
  fp16.enabled_precisions = {Precision::fp32, Precision::fp16};
  bf16.enabled_precisions = {Precision::fp32, Precision::bf16};
  EngineKey a = key_of(g), b = key_of(g, fp16), c = key_of(g, bf16);
  EXPECT_NE(a.hex(), b.hex());
  EXPECT_NE(b.hex(), c.hex());
  EXPECT_EQ(differing_parts(a.parts, b.parts), "settings");
  EXPECT_EQ(differing_parts(b.parts, c.parts), "settings");
}

TEST(EngineKey, OptimizationLevelChangesTheSettingsPart) {
  ir::Graph g = small(mixed());
  CompileSettings level5;
  level5.optimization_level = 5;
  EngineKey a = key_of(g), b = key_of(g, level5);
  EXPECT_NE(a.hex(), b.hex());
  EXPECT_EQ(differing_parts(a.parts, b.parts), "settings");
}

TEST(EngineKey, LibraryVersionChangesTheFingerprintPart) {
  ir::Graph g = small(mixed());
  Fingerprint newer = cpu_fingerprint();
  newer.library_version = "oneDNN 3.4.1";
  EngineKey a = key_of(g), b = key_of(g, {}, newer);
  EXPECT_NE(a.hex(), b.hex());
  EXPECT_EQ(differing_parts(a.parts, b.parts), "fingerprint");
}

TEST(EngineKey, IsaChangesTheFingerprintPart) {
  ir::Graph g = small(mixed());
  Fingerprint avx2 = cpu_fingerprint();
  avx2.isa = "avx2";
  EngineKey a = key_of(g), b = key_of(g, {}, avx2);
  EXPECT_NE(a.hex(), b.hex());
  EXPECT_EQ(differing_parts(a.parts, b.parts), "fingerprint");
}

TEST(EngineKey, DifferingPartsListsEveryDifferingPart) {
  ir::Graph g = small(mixed());
  ir::Graph h = small(mixed(3.0f));
  CompileSettings level1;
  level1.optimization_level = 1;
  Fingerprint other = cpu_fingerprint();
  other.plan_version += 1;
  EngineKey a = key_of(g), b = key_of(h, level1, other);
  EXPECT_EQ(differing_parts(a.parts, b.parts), "graph,settings,fingerprint");
  EXPECT_EQ(differing_parts(a.parts, a.parts), "");
}

TEST(EngineKey, SpecCountMustMatchTheGraphInputs) {
  ir::Graph g = small(binary("Sub", false));
  auto specs = specs_for(g);
  specs.pop_back();
  try {
    compute_engine_key(g, specs, {}, cpu_fingerprint());
    FAIL() << "expected a kiln::Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("1 input specs for a graph with 2 inputs"), std::string::npos)
        << e.what();
  }
}

// ---- determinism ----------------------------------------------------------------

TEST(EngineKey, IsDeterministicAcrossCallsCopiesAndProcesses) {
  zoo::ZooOptions options{.seed = 3, .batch = std::nullopt};
  ir::Graph g = lowered(zoo::build_zoo_model("bert_tiny", options).onnx_bytes);
  std::string hex = key_of(g).hex();
  EXPECT_EQ(key_of(g).hex(), hex);
  // A copy lives at other addresses: no pointer may reach the hash.
  std::vector<std::string> ballast(1000, std::string(100, 'x'));
  ir::Graph copy = g;
  EXPECT_EQ(key_of(copy).hex(), hex);

  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(fds[0]);
    // Re-import from bytes in the child so nothing is shared with the parent's graph.
    ir::Graph fresh = lowered(zoo::build_zoo_model("bert_tiny", options).onnx_bytes);
    std::string child_hex = key_of(fresh).hex();
    ssize_t n = ::write(fds[1], child_hex.data(), child_hex.size());
    ::_exit(n == static_cast<ssize_t>(child_hex.size()) ? 0 : 1);
  }
  ::close(fds[1]);
  std::string from_child;
  char buf[128];
  ssize_t n = 0;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0) from_child.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(from_child, hex);
}

TEST(EngineKey, CanonicalTextIsReadableAndNameFree) {
  ir::Graph g = small(mixed(), "secret_");
  std::string text = key::canonical_graph_text(g);
  EXPECT_NE(text.find("op \"MatMul\""), std::string::npos) << text;
  EXPECT_NE(text.find("weight 0 = 1 2 dim 8 dim 16 recipe 0 0"), std::string::npos) << text;
  EXPECT_NE(text.find("attr \"axis\" int -1"), std::string::npos) << text;
  EXPECT_EQ(text.find("secret_"), std::string::npos) << text;
}

// ---- KeyHasher ------------------------------------------------------------------

key::Digest digest_of(const std::function<void(key::KeyHasher&)>& writes) {
  key::KeyHasher h;
  writes(h);
  return h.finish();
}

TEST(KeyHasher, EmptyStreamIsTheSha256OfNothing) {
  EXPECT_EQ(key::to_hex(digest_of([](key::KeyHasher&) {})),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(KeyHasher, FieldsAreDelimitedAndTyped) {
  auto ab_c = digest_of([](key::KeyHasher& h) {
    h.str("ab");
    h.str("c");
  });
  auto a_bc = digest_of([](key::KeyHasher& h) {
    h.str("a");
    h.str("bc");
  });
  EXPECT_NE(ab_c, a_bc);
  EXPECT_NE(digest_of([](key::KeyHasher& h) { h.u64(1); }), digest_of([](key::KeyHasher& h) { h.i64(1); }));
  std::vector<int64_t> one_two{1, 2};
  auto as_ints = digest_of([&](key::KeyHasher& h) { h.ints(one_two); });
  auto as_two = digest_of([](key::KeyHasher& h) {
    h.i64(1);
    h.i64(2);
  });
  EXPECT_NE(as_ints, as_two);
  std::string s = "xy";
  EXPECT_NE(digest_of([&](key::KeyHasher& h) { h.str(s); }),
            digest_of([&](key::KeyHasher& h) { h.bytes(std::as_bytes(std::span(s))); }));
}

TEST(KeyHasher, FloatsHashTheirBitsWithOneNan) {
  float quiet = std::numeric_limits<float>::quiet_NaN();
  float payload = std::bit_cast<float>(uint32_t{0x7fc00123});
  float negative = std::bit_cast<float>(uint32_t{0xffc00000});
  auto of = [](float f) { return digest_of([f](key::KeyHasher& h) { h.f32(f); }); };
  EXPECT_EQ(of(quiet), of(payload));
  EXPECT_EQ(of(quiet), of(negative));
  EXPECT_NE(of(0.0f), of(-0.0f));
  EXPECT_NE(of(1.0f), of(std::nextafter(1.0f, 2.0f)));
}

TEST(KeyHasher, TextDumpRecordsEveryWrite) {
  key::KeyHasher h(/*keep_text=*/true);
  h.tag(key::Tag::node);
  h.str("Conv");
  h.i64(-3);
  std::vector<int64_t> v{1, 2};
  h.ints(v);
  EXPECT_EQ(h.text(), "node \"Conv\" -3 [1,2]");
}

}  // namespace
}  // namespace kiln
