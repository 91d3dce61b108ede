// GlobalAveragePool as kiln's loop over a conv's channels-last or channel-
// blocked output (global_pool.hpp): against the reference backend at batch 1
// and 3, channel counts that fill the 16-channel blocks and one that pads
// them (24), 2-D and 3-D; plain NCHW stays on oneDNN's pooling; and the
// nesting it reads from a descriptor.
#include <gtest/gtest.h>

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "backends/cpu/cpu_backend.hpp"
#include "backends/cpu/global_pool.hpp"
#include "backends/cpu/plan_format.hpp"
#include "cpu_test_helpers.hpp"
#include "onnx_test_model.hpp"
#include "passes/passes.hpp"
#include "reference/executor.hpp"

namespace kiln {
namespace {

using onnx::TensorProto;
using Model = testing::ProtoModel;
using Tag = dnnl::memory::format_tag;

TEST(GlobalPoolNesting, ChannelsLastAndBlocksNestPlainDoesNot) {
  const auto nhwc = cpu::nested_pool(cpu::Md({2, 24, 5, 7}, cpu::Dt::f32, Tag::nhwc));
  ASSERT_TRUE(nhwc);
  EXPECT_EQ(nhwc->outer, 2);
  EXPECT_EQ(nhwc->rows, 35);
  EXPECT_EQ(nhwc->inner, 24);
  const auto blocked = cpu::nested_pool(cpu::Md({2, 24, 5, 7}, cpu::Dt::f32, Tag::nChw16c));
  ASSERT_TRUE(blocked);
  EXPECT_EQ(blocked->outer, 4);  // 2 images x 2 blocks (24 channels padded to 32)
  EXPECT_EQ(blocked->rows, 35);
  EXPECT_EQ(blocked->inner, 16);
  const auto volume = cpu::nested_pool(cpu::Md({1, 32, 3, 4, 5}, cpu::Dt::f32, Tag::ndhwc));
  ASSERT_TRUE(volume);
  EXPECT_EQ(volume->rows, 60);
  EXPECT_FALSE(cpu::nested_pool(cpu::Md({2, 24, 5, 7}, cpu::Dt::f32, Tag::nchw)));
  EXPECT_FALSE(cpu::nested_pool(cpu::Md({2, 24, 5, 7}, cpu::Dt::bf16, Tag::nhwc)));
  EXPECT_FALSE(cpu::nested_pool(cpu::Md({2, 4, 5, 7}, cpu::Dt::f32, Tag::nhwc)));  // rows of 4 floats
}

// The loop itself against a plain mean, over nestings that take each of its
// paths: one group cut into tasks whose partial sums are combined (a single
// image's wide channels-last tensor), many groups as one task each, rows of
// 64-float strips, of 16-float strips and of a scalar tail, and 8-float
// blocks (an even and an odd row count).
TEST(GlobalPoolLoop, EveryPathMatchesAPlainMean) {
  struct Case {
    int64_t outer, rows, inner;
  };
  for (const Case c : {Case{1, 196, 960}, Case{1, 49, 1536}, Case{2, 300, 40}, Case{64, 49, 16},
                       Case{8, 49, 1536}, Case{3, 7, 100}}) {
    cpu::NestedPool p{c.outer, c.rows, c.inner, 0};
    p.chunk_rows = std::max<int64_t>(1, 16384 / c.inner);
    std::vector<float> x(static_cast<size_t>(c.outer * c.rows * c.inner));
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 7919) % 1000) / 250.0f - 2.0f;
    std::vector<float> y(static_cast<size_t>(c.outer * c.inner), -1.0f);
    std::vector<float> partial(static_cast<size_t>(p.tasks() * c.inner));
    cpu::global_average(p, x.data(), y.data(), partial);
    double worst = 0;
    for (int64_t o = 0; o < c.outer; ++o) {
      for (int64_t i = 0; i < c.inner; ++i) {
        double sum = 0;
        for (int64_t r = 0; r < c.rows; ++r) sum += x[static_cast<size_t>((o * c.rows + r) * c.inner + i)];
        worst = std::max(
            worst, std::abs(sum / static_cast<double>(c.rows) - y[static_cast<size_t>(o * c.inner + i)]));
      }
    }
    EXPECT_LE(worst, 1e-5) << c.outer << " x " << c.rows << " x " << c.inner;
  }
}

// x -> conv (channels) -> Relu -> GlobalAveragePool -> y, with every conv's
// tactic set to `layout`; the profile names the pooling's kernel.
std::string run_conv_pool(int64_t batch, int64_t channels, bool volume, cpu::Layout layout, double* error) {
  Model m(17);
  std::vector<int64_t> in{batch, 8, 9, 11};
  std::vector<int64_t> w{channels, 8, 3, 3};
  std::vector<int64_t> pads{1, 1, 1, 1};
  std::vector<int64_t> out{batch, channels, 1, 1};
  if (volume) {
    in.insert(in.begin() + 2, 6);
    w.push_back(3);
    pads = {1, 1, 1, 1, 1, 1};
    out.push_back(1);
  }
  m.input("x", in);
  m.weight("w", w, 1.0);
  testing::set_ints(m.node("Conv", "conv", {"x", "w"}, {"c"}), "pads", pads);
  m.node("Relu", "relu", {"c"}, {"r"});
  m.node("GlobalAveragePool", "pool", {"r"}, {"y"});
  m.output_shaped("y", TensorProto::FLOAT, out);
  const ir::Graph graph = m.import("pool.onnx").graph;
  auto backend = make_cpu_backend();
  auto engine = testing::build_engine(*backend, graph, m.inputs(), 0);
  cpu::EnginePlan plan = cpu::parse_plan(engine->serialize());
  for (cpu::LayerDesc& l : plan.layers) {
    if (l.kind == cpu::LayerKind::conv)
      l.tactic = cpu::Tactic(cpu::ConvAlgo::direct, layout, cpu::Prec::f32, "conv");
  }
  auto rebuilt = backend->deserialize(cpu::serialize_plan(plan));
  rebuilt->refit(passes::source_weights(graph));
  std::vector<LayerTiming> steps;
  const std::vector<Tensor> got = rebuilt->run_profiled(m.inputs(), steps);
  *error = testing::relative_error(got.at(0), ref::Executor(graph).run(m.inputs())[0]);
  for (const LayerTiming& t : steps) {
    if (t.name == "pool") return t.tactic;
  }
  return "";
}

TEST(GlobalPoolEngine, ChannelsLastAndBlocksRunKilnsLoopAndMatchTheReference) {
  for (int64_t batch : {1, 3}) {
    for (int64_t channels : {32, 24}) {
      for (bool volume : {false, true}) {
        for (cpu::Layout layout : {cpu::Layout::nhwc, cpu::Layout::blocked}) {
          const std::string what = "batch " + std::to_string(batch) + ", " + std::to_string(channels) +
                                   " channels, " + (volume ? "3-D" : "2-D") +
                                   (layout == cpu::Layout::nhwc ? ", channels-last" : ", blocks");
          double error = 1;
          const std::string tactic = run_conv_pool(batch, channels, volume, layout, &error);
          EXPECT_LE(error, 1e-5) << what;
          EXPECT_EQ(tactic, "native:global_average") << what;
        }
      }
    }
  }
}

// A bf16 build's grouped conv of 8 channels per group (RegNet's) may write
// bf16 in 8-channel blocks, which oneDNN pools only with its reference
// kernel: the mean then reads an f32 copy, and no pooling step is oneDNN's
// reference implementation.
TEST(GlobalPoolEngine, Bf16GroupedConvOutputIsNeverPooledByAReferenceKernel) {
  Model m(17);
  m.input("x", {2, 48, 14, 14});
  m.weight("w", {48, 8, 3, 3}, 1.0);
  auto* conv = m.node("Conv", "conv", {"x", "w"}, {"c"});
  testing::set_ints(conv, "pads", {1, 1, 1, 1});
  testing::set_int(conv, "group", 6);
  m.node("GlobalAveragePool", "pool", {"c"}, {"y"});
  m.output_shaped("y", TensorProto::FLOAT, {2, 48, 1, 1});
  const ir::Graph graph = m.import("pool.onnx").graph;
  auto backend = make_cpu_backend();
  auto engine = testing::build_bf16_engine(*backend, graph, m.inputs());
  cpu::EnginePlan plan = cpu::parse_plan(engine->serialize());
  for (cpu::LayerDesc& l : plan.layers) {
    if (l.kind == cpu::LayerKind::conv)
      l.tactic = cpu::Tactic(cpu::ConvAlgo::automatic, cpu::Layout::any, cpu::Prec::bf16, "conv");
  }
  auto rebuilt = backend->deserialize(cpu::serialize_plan(plan));
  rebuilt->refit(passes::source_weights(graph));
  std::vector<LayerTiming> steps;
  const std::vector<Tensor> got = rebuilt->run_profiled(m.inputs(), steps);
  EXPECT_LE(testing::relative_error(got.at(0), ref::Executor(graph).run(m.inputs())[0]), 3e-2);
  bool pooled = false;
  for (const LayerTiming& t : steps) {
    if (t.name != "pool" || t.kind == "reorder") continue;
    pooled = true;
    EXPECT_FALSE(t.tactic.size() >= 4 && t.tactic.compare(t.tactic.size() - 4, 4, "/ref") == 0) << t.tactic;
  }
  EXPECT_TRUE(pooled);
}

}  // namespace
}  // namespace kiln
