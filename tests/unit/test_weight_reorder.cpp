// kiln's own weight reorder against oneDNN's reorder, the reference: every
// blocked layout a conv or matmul picks, f32 and bf16, with and without the
// folded BatchNorm factors.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <set>

#include "backends/cpu/weight_reorder.hpp"
#include "backends/cpu/winograd_weights.hpp"

namespace kiln::cpu {
namespace {

using Md = dnnl::memory::desc;
using Tag = dnnl::memory::format_tag;
using Dt = dnnl::memory::data_type;

struct Case {
  dnnl::memory::dims dims;
  Tag plain;
  Tag blocked;
};

std::vector<float> random_values(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// What oneDNN's reorder writes for `src` (already scaled by the caller).
std::vector<std::byte> reference(const Md& src_md, std::vector<float> src, const Md& dst_md) {
  dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  dnnl::memory from(src_md, engine, src.data());
  dnnl::memory to(dst_md, engine);
  std::memset(to.get_data_handle(), 0, dst_md.get_size());
  dnnl::reorder(from, to).execute(stream, from, to);
  stream.wait();
  std::vector<std::byte> out(dst_md.get_size());
  std::memcpy(out.data(), to.get_data_handle(), out.size());
  return out;
}

TEST(WeightReorder, EqualsOneDnnForBlockedLayoutsTypesAndFactors) {
  const std::vector<Case> cases = {
      {{64, 32, 3, 3}, Tag::oihw, Tag::OIhw16i16o},
      {{256, 64, 1, 1}, Tag::oihw, Tag::OIhw16i16o},
      {{24, 17, 3, 3}, Tag::oihw, Tag::OIhw16i16o},     // padded: channels not a multiple of 16
      {{4, 8, 1, 3, 3}, Tag::goihw, Tag::gOIhw16i16o},  // grouped, 5-D view
      {{32, 1, 1, 3, 3}, Tag::goihw, Tag::Goihw16g},    // depthwise
      {{128, 96}, Tag::ab, Tag::BA16a64b},              // matmul weights
  };
  uint32_t seed = 1;
  for (const Case& c : cases) {
    for (Dt dt : {Dt::f32, Dt::bf16}) {
      for (bool scaled : {false, true}) {
        SCOPED_TRACE(::testing::Message()
                     << "dims[0]=" << c.dims[0] << " ndims=" << c.dims.size()
                     << (dt == Dt::bf16 ? " bf16" : " f32") << (scaled ? " scaled" : ""));
        Md src_md(c.dims, Dt::f32, c.plain);
        Md dst_md(c.dims, dt, c.blocked);
        size_t n = src_md.get_size() / sizeof(float);
        auto src = random_values(n, seed++);
        // Factors per output channel: slices of the flattened weight.
        int64_t channels = c.dims.size() == 5 ? c.dims[0] * c.dims[1] : c.dims[0];
        std::vector<double> factors;
        std::vector<float> expected_src = src;
        if (scaled) {
          factors = std::vector<double>(static_cast<size_t>(channels));
          std::mt19937 rng(seed++);
          for (double& f : factors) f = std::uniform_real_distribution<double>(0.1, 3.0)(rng);
          size_t slice = n / factors.size();
          for (size_t i = 0; i < n; ++i) {
            expected_src[i] = static_cast<float>(static_cast<double>(src[i]) * factors[i / slice]);
          }
        }
        auto expected = reference(src_md, expected_src, dst_md);
        std::vector<std::byte> got(dst_md.get_size(), std::byte{0x5a});  // padding must be zeroed
        ASSERT_TRUE(reorder_weights(src_md, src.data(), dst_md, got.data(), factors));
        EXPECT_EQ(std::memcmp(got.data(), expected.data(), got.size()), 0);
      }
    }
  }
}

// A 1x1 conv run as a GEMM reads its [O, I] kernel through a transposed
// [I, O] view; the BatchNorm factors still go by output channel, i.e. by
// slice of the kernel's own buffer.
TEST(WeightReorder, FactorsFollowTheBufferOfATransposedSource) {
  const int64_t o = 48, i = 40;
  Md transposed({i, o}, Dt::f32, dnnl::memory::dims{1, i});  // [I, O] over an [O, I] buffer
  Md dst({i, o}, Dt::f32, Tag::BA16a64b);
  auto src = random_values(static_cast<size_t>(o * i), 7);
  std::vector<double> factors(static_cast<size_t>(o));
  std::mt19937 rng(8);
  for (double& f : factors) f = std::uniform_real_distribution<double>(0.1, 3.0)(rng);
  std::vector<float> scaled = src;
  for (size_t k = 0; k < scaled.size(); ++k) {
    scaled[k] = static_cast<float>(static_cast<double>(src[k]) * factors[k / static_cast<size_t>(i)]);
  }
  auto expected = reference(transposed, scaled, dst);
  std::vector<std::byte> got(dst.get_size(), std::byte{0x5a});
  ASSERT_TRUE(reorder_weights(transposed, src.data(), dst, got.data(), factors));
  EXPECT_EQ(std::memcmp(got.data(), expected.data(), got.size()), 0);
}

TEST(WeightReorder, FactorsNeedADenseSource) {
  // Rows padded to 20 floats: offsets are no longer buffer indices.
  Md padded({16, 16}, Dt::f32, dnnl::memory::dims{20, 1});
  Md dst({16, 16}, Dt::f32, Tag::BA16a64b);
  std::vector<float> src(16 * 20, 1.0f);
  std::vector<std::byte> out(dst.get_size());
  std::vector<double> factors(16, 2.0);
  EXPECT_FALSE(reorder_weights(padded, src.data(), dst, out.data(), factors));
  EXPECT_TRUE(reorder_weights(padded, src.data(), dst, out.data()));
}

// The winograd weight layouts oneDNN's convolutions pick for `dims` (OIHW,
// 3x3), one per implementation that takes transformed weights.
std::vector<Md> winograd_weight_layouts(const dnnl::memory::dims& dims, int64_t spatial) {
  dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  Md src({1, dims[1], spatial, spatial}, Dt::f32, Tag::any);
  Md dst({1, dims[0], spatial, spatial}, Dt::f32, Tag::any);
  Md wei(dims, Dt::f32, Tag::any);
  std::vector<Md> layouts;
  try {
    dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_inference,
                                         dnnl::algorithm::convolution_winograd, src, wei, dst, {1, 1}, {1, 1},
                                         {1, 1});
    dnnl::convolution_forward::primitive_desc pd(desc, engine);
    do {
      if (pd.weights_desc().data.format_kind == dnnl_format_kind_wino) layouts.push_back(pd.weights_desc());
    } while (pd.next_impl());
  } catch (const dnnl::error&) {
    // no winograd implementation on this CPU
  }
  return layouts;
}

TEST(WeightReorder, WinogradEqualsOneDnnForBothTileSizesAndFactors) {
  std::set<int> formats;
  uint32_t seed = 100;
  for (const auto& [dims, spatial] :
       std::vector<std::pair<dnnl::memory::dims, int64_t>>{{{64, 64, 3, 3}, 56},
                                                           {{128, 128, 3, 3}, 28},
                                                           {{256, 256, 3, 3}, 14},
                                                           {{64, 32, 3, 3}, 28},
                                                           {{40, 24, 3, 3}, 14}}) {
    for (const Md& dst_md : winograd_weight_layouts(dims, spatial)) {
      const dnnl_wino_desc_t& w = dst_md.data.format_desc.wino_desc;
      formats.insert(w.wino_format);
      ASSERT_TRUE(winograd_layout_supported(dst_md)) << "wino format " << w.wino_format;
      for (bool scaled : {false, true}) {
        SCOPED_TRACE(::testing::Message() << "oc=" << dims[0] << " ic=" << dims[1]
                                          << " format=" << w.wino_format << (scaled ? " scaled" : ""));
        Md src_md(dims, Dt::f32, Tag::oihw);
        const size_t n = src_md.get_size() / sizeof(float);
        auto src = random_values(n, seed++);
        std::vector<double> factors;
        std::vector<float> expected_src = src;
        if (scaled) {
          factors.resize(static_cast<size_t>(dims[0]));
          std::mt19937 rng(seed++);
          for (double& f : factors) f = std::uniform_real_distribution<double>(0.1, 3.0)(rng);
          const size_t slice = n / factors.size();
          for (size_t i = 0; i < n; ++i) {
            expected_src[i] = static_cast<float>(static_cast<double>(src[i]) * factors[i / slice]);
          }
        }
        auto expected = reference(src_md, expected_src, dst_md);
        std::vector<std::byte> got(dst_md.get_size(), std::byte{0x5a});
        ASSERT_TRUE(reorder_weights(src_md, src.data(), dst_md, got.data(), factors));
        EXPECT_EQ(std::memcmp(got.data(), expected.data(), got.size()), 0);
      }
    }
  }
  if (formats.empty()) GTEST_SKIP() << "oneDNN offers no winograd convolution on this CPU";
  // Both avx512_core kernels: F(2x2,3x3) and F(4x4,3x3).
  EXPECT_TRUE(formats.count(dnnl_wino_wei_aaOBiOo));
  EXPECT_TRUE(formats.count(dnnl_wino_wei_aaOio));
  EXPECT_TRUE(formats.count(dnnl_wino_wei_OBaaIBOIio));
}

TEST(WeightReorder, WinogradRejectsWhatItCannotTransform) {
  auto layouts = winograd_weight_layouts({64, 64, 3, 3}, 28);
  if (layouts.empty()) GTEST_SKIP() << "oneDNN offers no winograd convolution on this CPU";
  std::vector<float> src(64 * 64 * 9, 1.0f);
  std::vector<std::byte> out(layouts[0].get_size());
  // A transposed source, and factors that are not one per output channel.
  EXPECT_FALSE(reorder_weights(Md({64, 64, 3, 3}, Dt::f32, Tag::ihwo), src.data(), layouts[0], out.data()));
  std::vector<double> factors(7, 2.0);
  EXPECT_FALSE(
      reorder_weights(Md({64, 64, 3, 3}, Dt::f32, Tag::oihw), src.data(), layouts[0], out.data(), factors));
}

}  // namespace
}  // namespace kiln::cpu
