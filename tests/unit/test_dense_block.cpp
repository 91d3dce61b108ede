// DenseNet's dense block on the cpu backend: each layer concatenates the
// block's input with every earlier layer's features, normalizes the result
// (BatchNormalization -> Relu) and adds features of its own (1x1 conv, 3x3
// conv). A Concat runs either as oneDNN's concat primitive or as one reorder
// per input into its window of the output (the build times both and the plan
// keeps the choice); both must match the reference executor, in nhwc and in
// 16-channel blocks, at batch 1 and above. At batch 1 in blocks every window
// is a dense tensor: each conv writes its features straight into the
// block's buffer and no Concat copies anything; in nhwc each feature map is
// copied once, into the first Concat that reads it. In a bf16 build the
// Concats and BatchNorms stay bf16: no activation goes back to f32 between
// the convs (that round trip made DenseNet's bf16 build slower than its fp32
// one).
#include <gtest/gtest.h>

#include <onnx/onnx_pb.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "backends/cpu/cpu_backend.hpp"
#include "backends/cpu/dnnl_util.hpp"
#include "backends/cpu/plan_format.hpp"
#include "cpu_test_helpers.hpp"
#include "onnx_test_model.hpp"
#include "passes/passes.hpp"
#include "reference/executor.hpp"

namespace kiln {
namespace {

using onnx::TensorProto;
using Model = testing::ProtoModel;
using testing::set_int;
using testing::set_ints;

constexpr int k_layers = 3;
constexpr int64_t k_in_channels = 32;
constexpr int64_t k_growth = 16;  // a whole 16-channel block per layer
constexpr int64_t k_size = 8;
constexpr double k_fp32_tolerance = 1e-4;
// The bench's bound for a bf16 build against fp32 (bench/README.md): bf16
// rounding through three layers stays well inside it; an activation read in
// the wrong data type or layout does not.
constexpr double k_bf16_tolerance = 3e-2;

std::string name(const std::string& base, int i) { return base + std::to_string(i); }

// x [batch, 3, 8, 8] -> a 3x3 conv to 32 channels (the block's input, in
// the conv's layout as DenseNet's pooled stem output is) -> k_layers dense
// layers -> the Concat of the block's input and every layer's 16 features.
Model dense_block(int64_t batch) {
  Model m(17);
  m.input("x", {batch, 3, k_size, k_size});
  m.weight("w0", {k_in_channels, 3, 3, 3});
  set_ints(m.node("Conv", "conv0", {"x", "w0"}, {"x0"}), "pads", {1, 1, 1, 1});
  std::vector<std::string> features = {"x0"};
  int64_t channels = k_in_channels;
  for (int i = 0; i < k_layers; ++i) {
    std::string in = "x0";
    if (i > 0) {
      in = name("cat", i);
      set_int(m.node("Concat", in, features, {in}), "axis", 1);
    }
    m.weight(name("scale", i), {channels}, 0.5, 1.0);
    m.weight(name("shift", i), {channels});
    m.weight(name("mean", i), {channels});
    m.weight(name("var", i), {channels}, 0.5, 1.0);
    m.node("BatchNormalization", name("norm", i),
           {in, name("scale", i), name("shift", i), name("mean", i), name("var", i)}, {name("n", i)});
    m.node("Relu", name("relu", i), {name("n", i)}, {name("r", i)});
    m.weight(name("w1_", i), {32, channels, 1, 1}, 2.0);
    m.node("Conv", name("conv1_", i), {name("r", i), name("w1_", i)}, {name("c", i)});
    m.node("Relu", name("relu1_", i), {name("c", i)}, {name("cr", i)});
    m.weight(name("w2_", i), {k_growth, 32, 3, 3}, 2.0);
    set_ints(m.node("Conv", name("conv2_", i), {name("cr", i), name("w2_", i)}, {name("f", i)}), "pads",
             {1, 1, 1, 1});
    features.push_back(name("f", i));
    channels += k_growth;
  }
  set_int(m.node("Concat", "out", features, {"y"}), "axis", 1);
  m.output_shaped("y", TensorProto::FLOAT, {batch, channels, k_size, k_size});
  return m;
}

struct BlockRun {
  Tensor output;
  std::vector<LayerTiming> steps;
};

// Builds `graph` at level 0 (first choices, no timing; bf16 kernels when
// `bf16`), then rewrites the plan: every conv takes `conv` where given, every
// Concat the way `concat_algo` names (automatic: oneDNN's concat, direct:
// reorders into the windows); reloads it and runs profiled.
BlockRun run_dense_block(const Model& m, bool bf16, std::optional<cpu::Tactic> conv,
                         cpu::ConvAlgo concat_algo) {
  const ir::Graph graph = m.import("dense.onnx").graph;
  auto backend = make_cpu_backend();
  CompileSettings settings;
  settings.optimization_level = 0;
  if (bf16) settings.enabled_precisions = {Precision::fp32, Precision::bf16};
  auto engine = testing::build_engine(*backend, graph, m.inputs(), settings);
  cpu::EnginePlan plan = cpu::parse_plan(engine->serialize());
  for (cpu::LayerDesc& l : plan.layers) {
    if (l.kind == cpu::LayerKind::conv && conv) l.tactic = *conv;
    if (l.kind == cpu::LayerKind::concat) l.tactic.algo = concat_algo;
  }
  auto rebuilt = backend->deserialize(cpu::serialize_plan(plan));
  rebuilt->refit(passes::source_weights(graph));
  BlockRun run;
  std::vector<Tensor> out = rebuilt->run_profiled(m.inputs(), run.steps);
  run.output = out.at(0);
  return run;
}

double error_against_reference(const Model& m, const Tensor& got) {
  return testing::relative_error(got, ref::Executor(m.import("dense.onnx").graph).run(m.inputs())[0]);
}

// The steps that run Concat node `node`: its primitive, or its reorders.
std::vector<const LayerTiming*> concat_steps(const std::vector<LayerTiming>& steps, const std::string& node) {
  std::vector<const LayerTiming*> found;
  for (const LayerTiming& t : steps) {
    if (t.name == node) found.push_back(&t);
  }
  return found;
}

struct Case {
  int64_t batch;
  cpu::Layout layout;
  cpu::ConvAlgo concat;
};

// Each Concat (the layers' and the block's) ran the way `c` says. At batch 1
// in blocks, none runs a step: every input is already in its window. An f32
// layer's Concat that would copy (only its batch norm reads it) runs no step
// either: the batch norm gathers and normalizes its inputs' channels in one
// pass. In bf16, at batch 1 in nhwc, a layer's Concat after the first (in
// 16-channel blocks: a batch norm reads it) finds the earlier features in the
// previous one's buffer and copies only the newest. Otherwise, as `c.concat`
// says: one oneDNN concat primitive, or one reorder per input and no
// primitive.
void expect_concats_ran(const std::vector<LayerTiming>& steps, const Case& c, bool bf16) {
  for (int i = 1; i <= k_layers; ++i) {
    const std::string node = i < k_layers ? name("cat", i) : "out";
    const auto found = concat_steps(steps, node);
    if (c.batch == 1 && c.layout == cpu::Layout::blocked) {
      EXPECT_TRUE(found.empty()) << node << ": " << found.size() << " steps, first " << found.at(0)->tactic;
      continue;
    }
    if (!bf16 && node != "out") {
      EXPECT_TRUE(found.empty()) << node << ": " << found.size() << " steps, first " << found.at(0)->tactic;
      const auto norm = concat_steps(steps, name("norm", i));
      ASSERT_EQ(norm.size(), 1u) << name("norm", i);
      EXPECT_EQ(norm[0]->tactic, "native:channel_gather+batch_norm+relu");
      continue;
    }
    if (c.batch == 1 && node != "out" && i > 1) {
      ASSERT_EQ(found.size(), 1u) << node;
      EXPECT_EQ(found[0]->kind, "reorder") << node << ": " << found[0]->tactic;
      continue;
    }
    if (c.concat == cpu::ConvAlgo::direct) {
      EXPECT_EQ(found.size(), static_cast<size_t>(i + 1)) << node;  // x and i layers' features
      for (const LayerTiming* t : found) EXPECT_EQ(t->kind, "reorder") << node << ": " << t->tactic;
    } else {
      int primitives = 0;
      for (const LayerTiming* t : found) {
        if (t->kind == "onednn") {
          ++primitives;
          EXPECT_EQ(t->tactic.rfind("concat:", 0), 0u) << t->tactic;
        }
      }
      EXPECT_EQ(primitives, 1) << node;
    }
  }
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  return "batch" + std::to_string(c.batch) + (c.layout == cpu::Layout::nhwc ? "_nhwc" : "_blocked") +
         (c.concat == cpu::ConvAlgo::direct ? "_reorders" : "_primitive");
}

class DenseBlock : public ::testing::TestWithParam<Case> {};

TEST_P(DenseBlock, Fp32MatchesTheReferenceWithEitherConcat) {
  const Case c = GetParam();
  const Model m = dense_block(c.batch);
  const std::string layout = c.layout == cpu::Layout::nhwc ? "nhwc" : "nChw16c";
  const BlockRun run = run_dense_block(
      m, false, cpu::Tactic(cpu::ConvAlgo::direct, c.layout, cpu::Prec::f32, layout), c.concat);
  EXPECT_LE(error_against_reference(m, run.output), k_fp32_tolerance);
  expect_concats_ran(run.steps, c, false);
}

TEST_P(DenseBlock, Bf16StaysWithinTheBf16BoundWithEitherConcat) {
  const Case c = GetParam();
  const Model m = dense_block(c.batch);
  const std::string layout = c.layout == cpu::Layout::nhwc ? "nhwc" : "nChw16c";
  const BlockRun run = run_dense_block(
      m, true, cpu::Tactic(cpu::ConvAlgo::direct, c.layout, cpu::Prec::bf16, layout), c.concat);
  EXPECT_LE(error_against_reference(m, run.output), k_bf16_tolerance);
  expect_concats_ran(run.steps, c, true);
}

INSTANTIATE_TEST_SUITE_P(Layouts, DenseBlock,
                         ::testing::Values(Case{1, cpu::Layout::nhwc, cpu::ConvAlgo::direct},
                                           Case{1, cpu::Layout::nhwc, cpu::ConvAlgo::automatic},
                                           Case{1, cpu::Layout::blocked, cpu::ConvAlgo::direct},
                                           Case{1, cpu::Layout::blocked, cpu::ConvAlgo::automatic},
                                           Case{2, cpu::Layout::nhwc, cpu::ConvAlgo::direct},
                                           Case{2, cpu::Layout::blocked, cpu::ConvAlgo::direct},
                                           Case{2, cpu::Layout::blocked, cpu::ConvAlgo::automatic}),
                         case_name);

// A bf16 build (level 0: the bf16 kernels are every conv's first choice)
// keeps the block in bf16: every Concat and BatchNorm runs in bf16, and no
// step converts a bf16 activation to f32 except the one into the returned
// tensor. Before, each Concat reordered its bf16 inputs to f32 and each
// BatchNorm read f32.
TEST(DenseBlockBf16, ConcatsAndBatchNormsStayBf16) {
  const Model m = dense_block(1);
  const ir::Graph graph = m.import("dense.onnx").graph;
  auto backend = make_cpu_backend();
  auto engine = testing::build_bf16_engine(*backend, graph, m.inputs());
  std::vector<LayerTiming> steps;
  const std::vector<Tensor> got = engine->run_profiled(m.inputs(), steps);
  EXPECT_LE(error_against_reference(m, got.at(0)), k_bf16_tolerance);
  int concats = 0, norms = 0;
  for (const LayerTiming& t : steps) {
    if (t.kind == "reorder") {
      const bool to_f32 = t.tactic.rfind("bf16", 0) == 0 && t.tactic.find("-> f32") != std::string::npos;
      EXPECT_FALSE(to_f32 && t.name != "outputs") << t.name << ": " << t.tactic;
      continue;
    }
    if (t.op == "Concat") {
      ++concats;
      EXPECT_NE(t.tactic.find("/bf16"), std::string::npos) << t.name << ": " << t.tactic;
    }
    if (t.op.rfind("BatchNormalization", 0) == 0) {
      ++norms;
      EXPECT_NE(t.tactic.find("/bf16"), std::string::npos) << t.name << ": " << t.tactic;
    }
  }
  EXPECT_EQ(norms, k_layers);
  EXPECT_GT(concats, 0);  // the level-0 build takes oneDNN's concat: a step of its own
}

// A Concat that only a BatchNormalization reads, at batch 2 (where its
// inputs' windows are not dense tensors and it would copy them), runs no
// step: the batch norm gathers its inputs' channels from the convs' nhwc
// outputs, normalizes them and writes 16-channel blocks. The block's
// output, which the caller reads, is a Concat of its own in the inputs' nhwc.
TEST(DenseBlockLayout, ConcatsReadByABatchNormAreGatheredByIt) {
  const Model m = dense_block(2);
  const BlockRun run =
      run_dense_block(m, false, cpu::Tactic(cpu::ConvAlgo::direct, cpu::Layout::nhwc, cpu::Prec::f32, "nhwc"),
                      cpu::ConvAlgo::direct);
  EXPECT_LE(error_against_reference(m, run.output), k_fp32_tolerance);
  for (int i = 1; i < k_layers; ++i) {
    EXPECT_TRUE(concat_steps(run.steps, name("cat", i)).empty()) << name("cat", i);
    const auto norm = concat_steps(run.steps, name("norm", i));
    ASSERT_EQ(norm.size(), 1u) << name("norm", i);
    EXPECT_EQ(norm[0]->kind, "native");
    EXPECT_EQ(norm[0]->tactic, "native:channel_gather+batch_norm+relu");
  }
  const auto out = concat_steps(run.steps, "out");
  ASSERT_FALSE(out.empty());
  for (const LayerTiming* t : out) {
    const size_t arrow = t->tactic.find("->");
    ASSERT_NE(arrow, std::string::npos) << t->tactic;
    EXPECT_EQ(t->tactic.find("|b:1x16", arrow), std::string::npos) << t->tactic;
  }
}

// A timed build chooses each Concat's way itself; whatever it chose is in the
// plan, and the engine reloaded from that plan runs it the same way and
// matches the reference.
TEST(DenseBlockTimed, TheChosenConcatIsKeptInThePlan) {
  const Model m = dense_block(1);
  const ir::Graph graph = m.import("dense.onnx").graph;
  auto backend = make_cpu_backend();
  auto engine = testing::build_engine(*backend, graph, m.inputs(), 1);
  const cpu::EnginePlan plan = cpu::parse_plan(engine->serialize());
  auto reloaded = backend->deserialize(engine->serialize());
  reloaded->refit(passes::source_weights(graph));
  std::vector<LayerTiming> steps;
  const std::vector<Tensor> got = reloaded->run_profiled(m.inputs(), steps);
  EXPECT_LE(error_against_reference(m, got.at(0)), k_fp32_tolerance);
  int concats = 0;
  for (const cpu::LayerDesc& l : plan.layers) {
    if (l.kind != cpu::LayerKind::concat) continue;
    ++concats;
    const std::string node = graph.node(l.anchor()).name;
    const auto found = concat_steps(steps, node);
    int primitives = 0;
    for (const LayerTiming* t : found) primitives += t->kind == "onednn" ? 1 : 0;
    if (l.tactic.name.rfind("concat:in_place", 0) == 0) {
      // Every input already in its window of the output (batch 1, blocks).
      EXPECT_EQ(l.tactic.algo, cpu::ConvAlgo::direct) << l.tactic.name;
      EXPECT_TRUE(found.empty()) << node << ": " << found.size() << " steps";
    } else if (l.tactic.algo == cpu::ConvAlgo::direct) {
      // Reorders into the windows of an output in the inputs' layout.
      ASSERT_FALSE(found.empty()) << node;
      EXPECT_EQ(primitives, 0) << node << ": " << l.tactic.name;
      EXPECT_EQ(l.tactic.name.rfind("concat:reorders:", 0), 0u) << l.tactic.name;
    } else {
      ASSERT_FALSE(found.empty()) << node;
      EXPECT_EQ(primitives, 1) << node << ": " << l.tactic.name;  // oneDNN's concat
    }
  }
  EXPECT_EQ(concats, k_layers);
}

// Which windows of a concat's output a producer can write as a dense tensor
// of its own: whole-block channel windows at batch 1, in NCHW and in
// 16-channel blocks; never in nhwc (channels innermost) or with a batch
// above 1 (a gap between images).
TEST(DenseWindows, OnlyChannelsOutermostAtBatchOneAreDense) {
  using Tag = dnnl::memory::format_tag;
  const cpu::Md blocked({1, 96, 7, 5}, cpu::Dt::f32, Tag::nChw16c);
  const auto window = cpu::dense_window(blocked, {1, 32, 7, 5}, {0, 64, 0, 0});
  ASSERT_TRUE(window);
  EXPECT_EQ(window->byte_offset, 64u * 7 * 5 * 4);
  EXPECT_TRUE(cpu::same_addressing(window->md, cpu::Md({1, 32, 7, 5}, cpu::Dt::f32, Tag::nChw16c)));
  EXPECT_FALSE(cpu::same_addressing(window->md, cpu::Md({1, 32, 7, 5}, cpu::Dt::f32, Tag::nhwc)));
  // Not whole blocks.
  EXPECT_FALSE(cpu::dense_window(blocked, {1, 8, 7, 5}, {0, 8, 0, 0}));
  const cpu::Md plain({1, 96, 7, 5}, cpu::Dt::bf16, Tag::nchw);
  const auto plain_window = cpu::dense_window(plain, {1, 3, 7, 5}, {0, 5, 0, 0});
  ASSERT_TRUE(plain_window);
  EXPECT_EQ(plain_window->byte_offset, 5u * 7 * 5 * 2);
  EXPECT_FALSE(
      cpu::dense_window(cpu::Md({1, 96, 7, 5}, cpu::Dt::f32, Tag::nhwc), {1, 32, 7, 5}, {0, 32, 0, 0}));
  EXPECT_FALSE(
      cpu::dense_window(cpu::Md({2, 96, 7, 5}, cpu::Dt::f32, Tag::nChw16c), {2, 32, 7, 5}, {0, 32, 0, 0}));
  // Along the batch axis every image is dense, whatever the layout.
  EXPECT_TRUE(
      cpu::dense_window(cpu::Md({4, 96, 7, 5}, cpu::Dt::f32, Tag::nhwc), {2, 96, 7, 5}, {2, 0, 0, 0}));
}

// Two Concats that share an input but are not one inside the other: the
// second cannot take the first's buffer (its other input would land on the
// first's), so it copies, and both still match the reference.
TEST(DenseWindows, ConcatsThatShareAnInputButNotAPrefixStayCorrect) {
  Model m(17);
  m.input("x", {1, 3, k_size, k_size});
  for (const char* w : {"wa", "wb", "wc"}) m.weight(w, {16, 3, 3, 3});
  set_ints(m.node("Conv", "conv_a", {"x", "wa"}, {"a"}), "pads", {1, 1, 1, 1});
  set_ints(m.node("Conv", "conv_b", {"x", "wb"}, {"b"}), "pads", {1, 1, 1, 1});
  set_ints(m.node("Conv", "conv_c", {"x", "wc"}, {"c"}), "pads", {1, 1, 1, 1});
  set_int(m.node("Concat", "cat_ab", {"a", "b"}, {"ab"}), "axis", 1);
  set_int(m.node("Concat", "cat_ac", {"a", "c"}, {"ac"}), "axis", 1);
  set_int(m.node("Concat", "cat_ca", {"c", "a"}, {"ca"}), "axis", 1);
  m.node("Add", "sum", {"ab", "ac"}, {"s"});
  m.node("Add", "out", {"s", "ca"}, {"y"});
  m.output_shaped("y", TensorProto::FLOAT, {1, 32, k_size, k_size});
  const ir::Graph graph = m.import("dense.onnx").graph;
  auto backend = make_cpu_backend();
  auto engine = testing::build_engine(*backend, graph, m.inputs(), 0);
  cpu::EnginePlan plan = cpu::parse_plan(engine->serialize());
  for (cpu::LayerDesc& l : plan.layers) {
    if (l.kind == cpu::LayerKind::conv) {
      l.tactic = cpu::Tactic(cpu::ConvAlgo::direct, cpu::Layout::blocked, cpu::Prec::f32, "nChw16c");
    }
  }
  auto blocked = backend->deserialize(cpu::serialize_plan(plan));
  blocked->refit(passes::source_weights(graph));
  std::vector<LayerTiming> steps;
  const std::vector<Tensor> got = blocked->run_profiled(m.inputs(), steps);
  EXPECT_LE(testing::relative_error(got.at(0), ref::Executor(graph).run(m.inputs())[0]), k_fp32_tolerance);
  EXPECT_TRUE(concat_steps(steps, "cat_ab").empty());  // a and b written into it
  EXPECT_FALSE(concat_steps(steps, "cat_ac").empty());
  EXPECT_FALSE(concat_steps(steps, "cat_ca").empty());
}

}  // namespace
}  // namespace kiln
