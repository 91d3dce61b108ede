// ShuffleNet's channel shuffle and split as gathered values: the pass that
// writes a tensor from other tensors' channels (channel_gather.hpp), from
// and into plain, channels-last and 8- and 16-channel-blocked layouts, f32
// and bf16, with
// channel counts that fill the blocks and ones that pad them, and a shuffle's
// interleave of two blocked halves; and two
// ShuffleNet units on the cpu backend, whose Concats, Reshapes and
// Transposes add no step while each conv's input is written once, against
// the reference backend.
#include <gtest/gtest.h>

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "backends/cpu/channel_gather.hpp"
#include "backends/cpu/cpu_backend.hpp"
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
using testing::set_int;
using testing::set_ints;

constexpr int64_t k_images = 2, k_height = 3, k_width = 21, k_source_channels = 40;

// Element (n, c, h, w) of source s: distinct for every element, exact in
// f32 and as a 16-bit pattern (the bf16 pass moves bits, it never reads them
// as numbers).
template <typename T>
T source_value(size_t s, int64_t n, int64_t c, int64_t h, int64_t w) {
  return static_cast<T>(static_cast<int64_t>(s) * 5040 + n * 2520 + c * 63 + h * 21 + w + 1);
}

struct GatherCase {
  Tag dst;
  int64_t channels;
  // Two 16-channel-blocked sources interleaved from `shuffle_from` on, as a
  // channel shuffle's halves: (from 0) each destination block from two
  // source blocks, or (from 9) from windows across them. Otherwise three
  // sources (channels-last, blocked, plain) with channels far apart.
  int64_t shuffle_from = -1;
  bool bf16 = false;  // 16-bit elements on both sides
};

class ChannelGatherLayouts : public ::testing::TestWithParam<GatherCase> {};

template <typename T>
void expect_gathered(const GatherCase& c) {
  const cpu::Dt dt = c.bf16 ? cpu::Dt::bf16 : cpu::Dt::f32;
  const bool shuffle = c.shuffle_from >= 0;
  const std::vector<Tag> source_tags = shuffle ? std::vector<Tag>{Tag::nChw16c, Tag::nChw16c}
                                               : std::vector<Tag>{Tag::nhwc, Tag::nChw16c, Tag::nchw};
  std::vector<std::vector<T>> sources;
  std::vector<cpu::PlaneLayout> layouts;
  for (size_t s = 0; s < source_tags.size(); ++s) {
    const cpu::Md md({k_images, k_source_channels, k_height, k_width}, dt, source_tags[s]);
    const cpu::PlaneLayout l = *cpu::plane_layout(md);
    std::vector<T> data(md.get_size() / sizeof(T), T{});
    for (int64_t n = 0; n < k_images; ++n)
      for (int64_t ch = 0; ch < k_source_channels; ++ch)
        for (int64_t h = 0; h < k_height; ++h)
          for (int64_t w = 0; w < k_width; ++w)
            data[l.at(n, ch) + h * l.row + w * l.col] = source_value<T>(s, n, ch, h, w);
    sources.push_back(std::move(data));
    layouts.push_back(l);
  }
  // Channel k from source k % 3, channel 7k mod 40: neighbours come from
  // different tensors and channels far apart.
  std::vector<std::pair<int, int64_t>> channels;
  for (int64_t k = 0; k < c.channels; ++k) {
    if (shuffle) {
      channels.emplace_back(static_cast<int>(k % 2), c.shuffle_from + k / 2);
    } else {
      channels.emplace_back(static_cast<int>(k % 3), (7 * k) % k_source_channels);
    }
  }
  const cpu::Md dst_md({k_images, c.channels, k_height, k_width}, dt, c.dst);
  const cpu::PlaneLayout d = *cpu::plane_layout(dst_md);
  std::vector<T> dst(dst_md.get_size() / sizeof(T), std::numeric_limits<T>::max());
  const int64_t padded = dst_md.data.padded_dims[1];
  const cpu::ChannelGather pass({k_images, c.channels, k_height, k_width}, layouts, channels, d, padded);
  std::vector<const std::byte*> data;
  for (const std::vector<T>& source : sources)
    data.push_back(reinterpret_cast<const std::byte*>(source.data()));
  pass.run(data, reinterpret_cast<std::byte*>(dst.data()));
  for (int64_t n = 0; n < k_images; ++n) {
    for (int64_t k = 0; k < padded; ++k) {
      for (int64_t h = 0; h < k_height; ++h) {
        for (int64_t w = 0; w < k_width; ++w) {
          const T got = dst[static_cast<size_t>(d.at(n, k) + h * d.row + w * d.col)];
          if (k >= c.channels) {
            ASSERT_EQ(got, T{}) << "padding channel " << k;
            continue;
          }
          const auto [s, ch] = channels[static_cast<size_t>(k)];
          ASSERT_EQ(got, source_value<T>(static_cast<size_t>(s), n, ch, h, w))
              << "image " << n << " channel " << k << " at " << h << "," << w;
        }
      }
    }
  }
}

TEST_P(ChannelGatherLayouts, EveryChannelFromItsSourceAndZeroPadding) {
  const GatherCase c = GetParam();
  if (c.bf16) {
    expect_gathered<uint16_t>(c);
  } else {
    expect_gathered<float>(c);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, ChannelGatherLayouts,
    ::testing::Values(GatherCase{Tag::nchw, 58}, GatherCase{Tag::nhwc, 58}, GatherCase{Tag::nhwc, 32},
                      GatherCase{Tag::nChw16c, 58}, GatherCase{Tag::nChw16c, 32}, GatherCase{Tag::nChw8c, 20},
                      GatherCase{Tag::nChw16c, 58, 0}, GatherCase{Tag::nChw16c, 62, 9},
                      GatherCase{Tag::nhwc, 58, 0}, GatherCase{Tag::nchw, 58, -1, true},
                      GatherCase{Tag::nhwc, 58, -1, true}, GatherCase{Tag::nChw16c, 58, -1, true},
                      GatherCase{Tag::nChw8c, 20, -1, true}, GatherCase{Tag::nChw16c, 62, 9, true}));

// The pass's epilogue (a batch norm, and its Relu, of a gathered Concat):
// every channel scaled and shifted (and clamped at zero with a Relu) as it
// is gathered, into
// blocks with padding (the lane path; the padding stays zero) and into
// plain NCHW (the plane path).
TEST(ChannelGatherAffine, ScalesShiftsAndClampsEveryChannel) {
  const std::vector<Tag> source_tags = {Tag::nhwc, Tag::nChw16c};
  constexpr int64_t k_channels = 58;
  std::vector<std::vector<float>> sources;
  std::vector<cpu::PlaneLayout> layouts;
  for (size_t s = 0; s < source_tags.size(); ++s) {
    const cpu::Md md({k_images, k_source_channels, k_height, k_width}, cpu::Dt::f32, source_tags[s]);
    const cpu::PlaneLayout l = *cpu::plane_layout(md);
    std::vector<float> data(md.get_size() / sizeof(float), 0.0f);
    for (int64_t n = 0; n < k_images; ++n)
      for (int64_t ch = 0; ch < k_source_channels; ++ch)
        for (int64_t h = 0; h < k_height; ++h)
          for (int64_t w = 0; w < k_width; ++w)  // both signs, so the clamp matters
            data[l.at(n, ch) + h * l.row + w * l.col] = static_cast<float>((ch * 7 + h * 3 + w) % 11) - 5.0f;
    sources.push_back(std::move(data));
    layouts.push_back(l);
  }
  std::vector<std::pair<int, int64_t>> channels;
  for (int64_t k = 0; k < k_channels; ++k) channels.emplace_back(static_cast<int>(k % 2), k / 2 + 3);
  std::vector<const std::byte*> data;
  for (const std::vector<float>& source : sources)
    data.push_back(reinterpret_cast<const std::byte*>(source.data()));
  for (const auto& [tag, relu] : {std::pair{Tag::nChw16c, true}, std::pair{Tag::nchw, true},
                                  std::pair{Tag::nChw16c, false}, std::pair{Tag::nchw, false}}) {
    const cpu::Md dst_md({k_images, k_channels, k_height, k_width}, cpu::Dt::f32, tag);
    const cpu::PlaneLayout d = *cpu::plane_layout(dst_md);
    const int64_t padded = dst_md.data.padded_dims[1];
    std::vector<float> scale(static_cast<size_t>(padded), 0.0f), shift(static_cast<size_t>(padded), 0.0f);
    for (int64_t k = 0; k < k_channels; ++k) {
      scale[static_cast<size_t>(k)] = 0.25f * static_cast<float>(k % 5) - 0.5f;
      shift[static_cast<size_t>(k)] = 0.125f * static_cast<float>(k % 3);
    }
    std::vector<float> dst(dst_md.get_size() / sizeof(float), std::numeric_limits<float>::quiet_NaN());
    const cpu::ChannelGather pass({k_images, k_channels, k_height, k_width}, layouts, channels, d, padded);
    const cpu::ChannelAffine affine{scale, shift, relu};
    pass.run(data, reinterpret_cast<std::byte*>(dst.data()), &affine);
    for (int64_t n = 0; n < k_images; ++n) {
      for (int64_t k = 0; k < padded; ++k) {
        for (int64_t h = 0; h < k_height; ++h) {
          for (int64_t w = 0; w < k_width; ++w) {
            const float got = dst[static_cast<size_t>(d.at(n, k) + h * d.row + w * d.col)];
            if (k >= k_channels) {
              ASSERT_EQ(got, 0.0f) << "padding channel " << k;
              continue;
            }
            const auto [s, ch] = channels[static_cast<size_t>(k)];
            const cpu::PlaneLayout& l = layouts[static_cast<size_t>(s)];
            const float x =
                sources[static_cast<size_t>(s)][static_cast<size_t>(l.at(n, ch) + h * l.row + w * l.col)];
            const float y = x * scale[static_cast<size_t>(k)] + shift[static_cast<size_t>(k)];
            const float want = relu ? std::max(0.0f, y) : y;
            ASSERT_NEAR(got, want, 1e-6f) << (tag == Tag::nchw ? "nchw" : "nChw16c") << " image " << n
                                          << " channel " << k << " at " << h << "," << w;
          }
        }
      }
    }
  }
}

// Two ShuffleNet units (stride 1): split the input's channels in halves (two
// Slices, as torch 1.13 exports x.chunk(2, 1), or one Split, as it exports
// torch.split), the second half through 1x1 conv + Relu, Concat with the
// first, shuffle (Reshape, Transpose, Reshape); a final conv reads the
// second shuffle.
Model shuffle_units(int64_t batch, bool split) {
  constexpr int64_t k_channels = 116, k_half = 58, k_size = 6;
  Model m(17);
  m.input("x", {batch, k_channels, k_size, k_size});
  m.ints("lo", {0});
  m.ints("mid", {k_half});
  m.ints("hi", {k_channels});
  m.ints("axis", {1});
  m.ints("halves", {k_half, k_half});
  m.ints("split_shape", {batch, 2, k_half, k_size, k_size});
  m.ints("flat_shape", {batch, k_channels, k_size, k_size});
  std::string in = "x";
  for (int u = 1; u <= 2; ++u) {
    const std::string i = std::to_string(u);
    m.weight("w" + i, {k_half, k_half, 1, 1});
    if (split) {
      set_int(m.node("Split", "left" + i, {in, "halves"}, {"a" + i, "b" + i}), "axis", 1);
    } else {
      m.node("Slice", "left" + i, {in, "lo", "mid", "axis"}, {"a" + i});
      m.node("Slice", "right" + i, {in, "mid", "hi", "axis"}, {"b" + i});
    }
    m.node("Conv", "conv" + i, {"b" + i, "w" + i}, {"c" + i});
    m.node("Relu", "relu" + i, {"c" + i}, {"r" + i});
    set_int(m.node("Concat", "concat" + i, {"a" + i, "r" + i}, {"cat" + i}), "axis", 1);
    m.node("Reshape", "split" + i, {"cat" + i, "split_shape"}, {"s" + i});
    set_ints(m.node("Transpose", "shuffle" + i, {"s" + i}, {"t" + i}), "perm", {0, 2, 1, 3, 4});
    m.node("Reshape", "flat" + i, {"t" + i, "flat_shape"}, {"y" + i});
    in = "y" + i;
  }
  m.weight("w3", {16, k_channels, 1, 1});
  m.node("Conv", "head", {in, "w3"}, {"out"});
  m.output_shaped("out", TensorProto::FLOAT, {batch, 16, k_size, k_size});
  return m;
}

// (split: one Split rather than two Slices, bf16: the convs on bf16 kernels
// with bf16 activations, gathered as 16-bit elements)
class ChannelShuffle : public ::testing::TestWithParam<std::tuple<bool, bool>> {};

TEST_P(ChannelShuffle, UnitsWriteEachConvInputOnceAndMatchTheReference) {
  const auto [split, bf16] = GetParam();
  for (int64_t batch : {1, 2}) {
    const Model m = shuffle_units(batch, split);
    const ir::Graph graph = m.import("shuffle.onnx").graph;
    auto backend = make_cpu_backend();
    CompileSettings settings;
    settings.optimization_level = 0;
    if (bf16) settings.enabled_precisions = {Precision::fp32, Precision::bf16};
    auto engine = testing::build_engine(*backend, graph, m.inputs(), settings);
    if (bf16) {
      cpu::EnginePlan plan = cpu::parse_plan(engine->serialize());
      for (cpu::LayerDesc& l : plan.layers) {
        if (l.kind == cpu::LayerKind::conv)
          l.tactic = cpu::Tactic(cpu::ConvAlgo::direct, cpu::Layout::blocked, cpu::Prec::bf16, "conv");
      }
      engine = backend->deserialize(cpu::serialize_plan(plan));
      engine->refit(passes::source_weights(graph));
    }
    std::vector<LayerTiming> steps;
    const std::vector<Tensor> got = engine->run_profiled(m.inputs(), steps);
    const std::vector<Tensor> want = ref::Executor(graph).run(m.inputs());
    ASSERT_EQ(got.size(), 1u);
    EXPECT_LE(testing::relative_error(got[0], want[0]), bf16 ? 3e-2 : 1e-4) << "batch " << batch;
    // The second unit's conv reads the first shuffle's second half, the head
    // the second shuffle: one gather each. The first unit's halves are
    // windows of the input (a view and the conv's own reorder).
    int gathers = 0;
    for (const LayerTiming& t : steps) {
      EXPECT_NE(t.kind, "aux") << t.name;
      for (const char* elided : {"concat1", "concat2", "split1", "split2", "shuffle1", "shuffle2", "flat1",
                                 "flat2", "left2", "right2", "left2/slice0", "left2/slice1"}) {
        EXPECT_NE(t.name, elided) << t.kind << " " << t.tactic;
      }
      if (t.tactic == "native:channel_gather") {
        ++gathers;
        EXPECT_EQ(t.op, "GatherChannels");
        EXPECT_EQ(t.kind, "native");
      }
    }
    EXPECT_EQ(gathers, 2) << "batch " << batch;
  }
}

INSTANTIATE_TEST_SUITE_P(SliceOrSplit, ChannelShuffle,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool()),
                         [](const ::testing::TestParamInfo<std::tuple<bool, bool>>& p) {
                           return std::string(std::get<0>(p.param) ? "split" : "slices") +
                                  (std::get<1>(p.param) ? "_bf16" : "_fp32");
                         });

}  // namespace
}  // namespace kiln
