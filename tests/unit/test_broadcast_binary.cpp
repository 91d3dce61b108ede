// Broadcast Add/Sub/Mul/Div on the cpu backend: the shape canonicalisation,
// kiln's own broadcast loop against a plain index loop, and whole engines
// against the reference backend for broadcast patterns oneDNN handles (per
// channel, Swin's attention mask once its dims are merged) and ones it has no
// jit kernel for (both operands broadcast, alternating dims), asserting that
// no layer runs oneDNN's reference binary kernel or a reference fallback.
#include <gtest/gtest.h>

#include <cmath>
#include <ostream>
#include <string>
#include <vector>

#include "backends/cpu/broadcast_binary.hpp"
#include "backends/cpu/cpu_backend.hpp"
#include "backends/cpu/dnnl_util.hpp"
#include "reference/executor.hpp"

#include "cpu_test_helpers.hpp"
#include "onnx_test_model.hpp"

namespace kiln {
namespace {

using cpu::BinaryOp;
using cpu::BroadcastShape;
using onnx::TensorProto;
using testing::ProtoModel;

using Shape = std::vector<int64_t>;

int64_t numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

// Distinct, signed, never zero (Div reads them as divisors).
std::vector<float> ramp(int64_t n, float phase) {
  std::vector<float> v(static_cast<size_t>(n));
  for (size_t i = 0; i < v.size(); ++i) {
    const float s = std::sin(0.37f * static_cast<float>(i) + phase);
    v[i] = s + (s >= 0 ? 0.25f : -0.25f);
  }
  return v;
}

TEST(BroadcastCanonical, MergesDimsThatBroadcastAlike) {
  const BroadcastShape swin =
      cpu::canonical_broadcast(Shape{1, 64, 3, 49, 49}, Shape{1, 64, 3, 49, 49}, Shape{1, 64, 1, 49, 49});
  EXPECT_EQ(swin.out, (Shape{64, 3, 2401}));
  EXPECT_EQ(swin.a, (Shape{64, 3, 2401}));
  EXPECT_EQ(swin.b, (Shape{64, 1, 2401}));
  EXPECT_TRUE(swin.a_full());
  EXPECT_FALSE(swin.b_full());

  const BroadcastShape both = cpu::canonical_broadcast(Shape{3, 4, 5}, Shape{3, 1, 5}, Shape{1, 4, 5});
  EXPECT_EQ(both.out, (Shape{3, 4, 5}));
  EXPECT_EQ(both.a, (Shape{3, 1, 5}));
  EXPECT_EQ(both.b, (Shape{1, 4, 5}));

  // A lower-rank operand aligns to the right; size-1 dims of both vanish.
  const BroadcastShape channel =
      cpu::canonical_broadcast(Shape{2, 8, 1, 6, 6}, Shape{2, 8, 1, 6, 6}, Shape{8, 1, 1, 1});
  EXPECT_EQ(channel.out, (Shape{2, 8, 36}));
  EXPECT_EQ(channel.b, (Shape{1, 8, 1}));

  const BroadcastShape same = cpu::canonical_broadcast(Shape{2, 3, 4}, Shape{2, 3, 4}, Shape{2, 3, 4});
  EXPECT_EQ(same.out, (Shape{24}));
  const BroadcastShape one = cpu::canonical_broadcast(Shape{1, 1}, Shape{1}, Shape{});
  EXPECT_EQ(one.out, (Shape{1}));

  EXPECT_THROW(cpu::canonical_broadcast(Shape{3, 4}, Shape{3, 2}, Shape{4}), Error);
}

// The kernel against numpy's rule written as an index loop over the
// original (uncanonicalised) shapes.
TEST(BroadcastKernel, MatchesAnIndexLoop) {
  struct Case {
    Shape out, a, b;
  };
  const std::vector<Case> cases = {
      {{1, 64, 3, 49, 49}, {1, 64, 3, 49, 49}, {1, 64, 1, 49, 49}},
      {{3, 4, 5}, {3, 1, 5}, {1, 4, 5}},
      {{2, 3, 4, 5}, {2, 3, 4, 5}, {2, 1, 4, 1}},
      {{2, 3, 4, 5}, {2, 1, 4, 1}, {2, 3, 4, 5}},
      {{5, 7}, {5, 1}, {1, 7}},
      {{70000}, {70000}, {1}},               // one long row: split into pieces
      {{3, 40000}, {3, 40000}, {3, 40000}},  // full + full: one row
      {{4000, 3}, {4000, 1}, {3}},           // many short rows
      // Rows against a repeated row, each way round, at the lengths the
      // kernel compiles for (16, 8) and others; groups spanning items.
      {{9, 1500, 16}, {9, 1500, 16}, {9, 1, 16}},
      {{6, 7, 16}, {6, 1, 16}, {6, 7, 16}},
      {{3000, 8}, {3000, 8}, {8}},
      {{2, 5, 33}, {2, 1, 33}, {2, 5, 33}},
  };
  for (const Case& c : cases) {
    const std::vector<float> a = ramp(numel(c.a), 0.1f);
    const std::vector<float> b = ramp(numel(c.b), 1.3f);
    const BroadcastShape shape = cpu::canonical_broadcast(c.out, c.a, c.b);
    for (BinaryOp op : {BinaryOp::add, BinaryOp::sub, BinaryOp::mul, BinaryOp::div}) {
      for (int threads : {1, 2, 3}) {
        std::vector<float> y(static_cast<size_t>(numel(c.out)), 0.0f);
        cpu::broadcast_binary(op, shape, a.data(), b.data(), y.data(), threads);
        const size_t rank = c.out.size();
        std::vector<int64_t> index(rank, 0);
        for (size_t i = 0; i < y.size(); ++i) {
          int64_t rest = static_cast<int64_t>(i);
          for (size_t d = rank; d-- > 0;) {
            index[d] = rest % c.out[d];
            rest /= c.out[d];
          }
          auto at = [&](const Shape& s) {
            int64_t off = 0;
            for (size_t d = 0; d < s.size(); ++d) {
              const int64_t k = index[rank - s.size() + d];
              off = off * s[d] + (s[d] == 1 ? 0 : k);
            }
            return static_cast<size_t>(off);
          };
          const float x = a[at(c.a)], z = b[at(c.b)];
          const float want = op == BinaryOp::add   ? x + z
                             : op == BinaryOp::sub ? x - z
                             : op == BinaryOp::mul ? x * z
                                                   : x / z;
          ASSERT_EQ(y[i], want) << "element " << i << " op " << static_cast<int>(op) << " threads "
                                << threads;
        }
      }
    }
  }
}

TEST(BroadcastKernel, RunsInPlaceOverTheFullOperand) {
  std::vector<float> a = ramp(2 * 3 * 5, 0.2f);
  const std::vector<float> b = ramp(2 * 1 * 5, 0.7f);
  const std::vector<float> original = a;
  const BroadcastShape shape = cpu::canonical_broadcast(Shape{2, 3, 5}, Shape{2, 3, 5}, Shape{2, 1, 5});
  cpu::broadcast_binary(BinaryOp::sub, shape, a.data(), b.data(), a.data(), 2);
  for (size_t i = 0; i < a.size(); ++i) {
    const size_t n = i / 15, w = i % 5;
    EXPECT_EQ(a[i], original[i] - b[n * 5 + w]) << i;
  }
}

struct EngineCase {
  std::string name;
  std::string op;
  Shape a, b;
  bool b_constant;     // an initializer (a weight of the engine), else a second input
  std::string tactic;  // the layer's expected tactic
};

void PrintTo(const EngineCase& c, std::ostream* os) { *os << c.name; }

class BroadcastEngine : public ::testing::TestWithParam<EngineCase> {};

Shape broadcast_shape(const Shape& a, const Shape& b) {
  Shape out(std::max(a.size(), b.size()), 1);
  for (size_t i = 0; i < out.size(); ++i) {
    const int64_t da = i < out.size() - a.size() ? 1 : a[i - (out.size() - a.size())];
    const int64_t db = i < out.size() - b.size() ? 1 : b[i - (out.size() - b.size())];
    out[i] = std::max(da, db);
  }
  return out;
}

// The engine's result equals the reference backend's, and the binary layer
// runs the expected tactic: never oneDNN's reference kernel or an aux
// (reference kernel) layer.
TEST_P(BroadcastEngine, MatchesTheReferenceWithoutReferenceKernels) {
  const EngineCase& c = GetParam();
  ProtoModel m(17);
  m.input("a", TensorProto::FLOAT, c.a);
  std::vector<Tensor> inputs = {Tensor::from_values<float>(c.a, ramp(numel(c.a), 0.3f))};
  if (c.b_constant) {
    m.floats("b", c.b, ramp(numel(c.b), 2.1f));
  } else {
    m.input("b", TensorProto::FLOAT, c.b);
    inputs.push_back(Tensor::from_values<float>(c.b, ramp(numel(c.b), 2.1f)));
  }
  // A Relu after the binary op: the result is then an inner value of the
  // engine, so an in-place write over a dying input is exercised too.
  m.node(c.op, {"a", "b"}, "t");
  m.node("Relu", {"t"}, "y");
  m.output("y", TensorProto::FLOAT, broadcast_shape(c.a, c.b).size());
  const ir::Graph graph = m.import().graph;
  const std::vector<Tensor> oracle = ref::Executor(graph).run(inputs);
  auto backend = make_cpu_backend();
  auto engine = testing::build_engine(*backend, graph, inputs, 0);
  const std::vector<Tensor> got = engine->run(inputs);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(testing::bitwise_equal(got[0], oracle[0]) || testing::relative_error(got[0], oracle[0]) <= 1e-6)
      << testing::relative_error(got[0], oracle[0]);
  bool found = false;
  for (const LayerReport& r : engine->info().layers) {
    if (r.op != c.op) continue;
    found = true;
    EXPECT_EQ(r.tactic.find("/ref"), std::string::npos) << r.tactic;
    EXPECT_EQ(r.tactic.rfind("aux:", 0), std::string::npos) << r.tactic;
    EXPECT_EQ(r.tactic, c.tactic);
  }
  EXPECT_TRUE(found) << "no " << c.op << " layer";
  // A profile names kiln's loop "native", not a reference kernel ("aux").
  std::vector<LayerTiming> steps;
  engine->run_profiled(inputs, steps);
  for (const LayerTiming& t : steps) {
    if (t.op != c.op) continue;
    EXPECT_EQ(t.kind, c.tactic.rfind("native:", 0) == 0 ? "native" : "onednn") << t.tactic;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Patterns, BroadcastEngine,
    ::testing::Values(
        // Swin's shifted-window mask: [1,64,3,49,49] + [1,64,1,49,49] is rows
        // against a repeated row once its dims are merged ([64,3,2401] +
        // [64,1,2401]): kiln's loop over the operands' own layout.
        EngineCase{
            "SwinMaskConstant", "Add", {1, 64, 3, 49, 49}, {1, 64, 1, 49, 49}, true, "native:nested_Add"},
        EngineCase{
            "SwinMaskInput", "Add", {1, 16, 3, 49, 49}, {1, 16, 1, 49, 49}, false, "native:nested_Add"},
        EngineCase{"RepeatedRowFirst", "Div", {2, 1, 40}, {2, 7, 40}, false, "native:nested_Div"},
        // Both operands broadcast: no oneDNN primitive at all.
        EngineCase{"BothSides", "Add", {3, 1, 5}, {1, 4, 5}, false, "native:broadcast_Add"},
        EngineCase{"BothSidesDiv", "Div", {3, 1, 5}, {1, 4, 5}, true, "native:broadcast_Div"},
        // The first operand broadcasts: swapped, with the sign or inverse as a
        // post-op, where oneDNN has a jit kernel for the swapped pattern
        // ([2,3,7] / [1,3,1] is per channel; [2,4,3,6] - [1,4,1,6] is none).
        EngineCase{"FirstBroadcastsSub", "Sub", {4, 1, 6}, {2, 4, 3, 6}, false, "native:broadcast_Sub"},
        EngineCase{"FirstBroadcastsDiv", "Div", {1, 3, 1}, {2, 3, 7}, false, "binary:Div"},
        // Alternating broadcast dims: no jit pattern, kiln's loop.
        EngineCase{"Alternating", "Mul", {2, 3, 4, 5}, {2, 1, 4, 1}, false, "native:broadcast_Mul"},
        EngineCase{"AlternatingFirst", "Sub", {2, 1, 4, 1}, {2, 3, 4, 5}, true, "native:broadcast_Sub"},
        // Per channel and full size: oneDNN's jit.
        EngineCase{"PerChannel", "Mul", {1, 8, 5, 5}, {8, 1, 1}, true, "binary:Mul"},
        EngineCase{"Same", "Sub", {2, 3, 4}, {2, 3, 4}, false, "binary:Sub"}),
    [](const ::testing::TestParamInfo<EngineCase>& p) { return p.param.name; });

// The nesting of a tensor's bytes that kiln's loop reads a broadcast over:
// nhwc as [N,H,W,C], nChw16c as [N,C/16,H,W,16] with the channels padded,
// and a [N,C,1,1] scale laid out like it as the same nesting with 1s.
TEST(BroadcastLayouts, NestedDimsFollowTheBlocking) {
  using Tag = dnnl::memory::format_tag;
  const cpu::Md nhwc({2, 24, 5, 7}, cpu::Dt::f32, Tag::nhwc);
  const std::vector<size_t> nhwc_order = cpu::stride_order(nhwc);
  EXPECT_EQ(cpu::nested_dims(nhwc, nhwc_order), (cpu::Dims{2, 5, 7, 24}));
  const cpu::Md blocked({2, 24, 5, 7}, cpu::Dt::f32, Tag::nChw16c);
  const std::vector<size_t> order = cpu::stride_order(blocked);
  EXPECT_EQ(cpu::nested_dims(blocked, order), (cpu::Dims{2, 2, 5, 7, 16}));
  const std::optional<cpu::Md> scale = cpu::layout_like(blocked, {2, 24, 1, 1});
  ASSERT_TRUE(scale);
  EXPECT_EQ(cpu::nested_dims(*scale, order), (cpu::Dims{2, 2, 1, 1, 16}));
  // A view with gaps (every other row of a plain tensor) does not nest densely.
  const cpu::Md gaps({2, 3}, cpu::Dt::f32, cpu::Dims{8, 1});
  EXPECT_FALSE(cpu::nested_dims(gaps, cpu::stride_order(gaps)));
}

// Squeeze-and-excitation: a conv's output (in the layout its tactic chose)
// times a
// per-image, per-channel scale computed from it. The Mul runs kiln's loop
// over the conv's own layout, at batch 1 and 3, either operand first, and
// matches the reference backend.
TEST(BroadcastEngine, SqueezeExcitationScaleRunsOverTheConvLayout) {
  for (int64_t batch : {1, 3}) {
    for (bool scale_first : {false, true}) {
      ProtoModel m(17);
      m.input("x", TensorProto::FLOAT, {batch, 8, 12, 12});
      m.weight("w", {24, 8, 3, 3}, 0.2);
      m.weight("bias", {24}, 0.1);
      auto* conv = m.node("Conv", {"x", "w", "bias"}, "c");
      testing::set_ints(conv, "pads", {1, 1, 1, 1});
      m.node("GlobalAveragePool", {"c"}, "pooled");
      m.node("Sigmoid", {"pooled"}, "s");
      if (scale_first) {
        m.node("Mul", {"s", "c"}, "scaled");
      } else {
        m.node("Mul", {"c", "s"}, "scaled");
      }
      m.node("Relu", {"scaled"}, "y");
      m.output("y", TensorProto::FLOAT, 4);
      const ir::Graph graph = m.import().graph;
      const std::vector<Tensor> inputs = {
          Tensor::from_values<float>({batch, 8, 12, 12}, ramp(batch * 8 * 144, 0.4f))};
      const std::vector<Tensor> oracle = ref::Executor(graph).run(inputs);
      auto backend = make_cpu_backend();
      auto engine = testing::build_engine(*backend, graph, inputs, 0);
      const std::vector<Tensor> got = engine->run(inputs);
      ASSERT_EQ(got.size(), 1u);
      EXPECT_LE(testing::relative_error(got[0], oracle[0]), 1e-5) << "batch " << batch;
      bool found = false;
      for (const LayerReport& r : engine->info().layers) {
        if (r.op != "Mul") continue;
        found = true;
        EXPECT_EQ(r.tactic, "native:nested_Mul") << "batch " << batch << " scale first " << scale_first;
      }
      EXPECT_TRUE(found);
    }
  }
}

}  // namespace
}  // namespace kiln
