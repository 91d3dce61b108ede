#include "backends/cpu/winograd_weights.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <vector>

namespace kiln::cpu {

namespace {

constexpr int k_r = 3;          // kernel size: 3x3 only
constexpr int k_max_alpha = 6;  // tile size of F(4x4,3x3)
constexpr int k_lanes = 16;     // output channels transformed together

// The interpolation matrices oneDNN's reorder uses (cpu/x64/wino_reorder.hpp).
// F(4x4,3x3)'s rows are pre-scaled there, so these exact constants, not the
// textbook ones, give its kernels the weights they expect.
constexpr float k_g_2x3[4][3] = {
    {1.0f, 0.0f, 0.0f}, {0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f}, {0.0f, 0.0f, 1.0f}};
constexpr float k_g_4x3[6][3] = {{1.13777777777778f, 0.f, 0.f},
                                 {-0.688403361344538f, -0.430252100840336f, -0.26890756302521f},
                                 {-0.688403361344538f, 0.430252100840336f, -0.26890756302521f},
                                 {0.119514472455649f, 0.179271708683473f, 0.26890756302521f},
                                 {0.119514472455649f, -0.179271708683473f, 0.26890756302521f},
                                 {0.f, 0.f, 1.f}};

// Where element (u_h, u_w, ic, oc) of the transformed weights lives, for
// one of the two layouts. `oc` is a multiple of oc_block: the oc_block
// channels from there on are contiguous in both layouts.
struct WinoLayout {
  dnnl_wino_desc_t w;
  int64_t nb_ic, nb_oc, ic_chunks, oc_chunks;

  explicit WinoLayout(const dnnl_wino_desc_t& desc) : w(desc) {
    nb_ic = w.ic / w.ic_block;
    nb_oc = w.oc / w.oc_block;
    const int64_t ic2 = w.wino_format == dnnl_wino_wei_OBaaIBOIio ? w.ic2_block : 1;
    ic_chunks = nb_ic / ic2;
    oc_chunks = w.oc2_block > 0 ? nb_oc / w.oc2_block : 0;
  }

  int64_t offset(int64_t u_h, int64_t u_w, int64_t ic, int64_t oc) const {
    const int64_t a = w.alpha;
    const int64_t occ = oc / (int64_t{w.oc2_block} * w.oc_block);
    const int64_t ob = (oc / w.oc_block) % w.oc2_block;
    if (w.wino_format == dnnl_wino_wei_aaOio) {
      return (((u_h * a + u_w) * nb_oc + oc / w.oc_block) * w.ic + ic) * w.oc_block;
    }
    if (w.wino_format == dnnl_wino_wei_aaOBiOo) {
      const int64_t ib = ic / w.ic_block;
      const int64_t i = ic % w.ic_block;
      return ((((u_h * a + u_w) * oc_chunks + occ) * nb_ic + ib) * w.oc2_block * w.ic_block +
              i * w.oc2_block + ob) *
             w.oc_block;
    }
    // wino_wei_OBaaIBOIio
    const int64_t icc = ic / (int64_t{w.ic2_block} * w.ic_block);
    const int64_t ib = (ic / w.ic_block) % w.ic2_block;
    const int64_t i = ic % w.ic_block;
    return ((((((occ * a + u_h) * a + u_w) * ic_chunks + icc) * w.oc2_block + ob) * w.ic2_block + ib) *
                w.ic_block +
            i) *
           w.oc_block;
  }
};

bool dense_oihw_3x3(const dnnl_memory_desc_t& s) {
  if (s.format_kind != dnnl_blocked || s.data_type != dnnl_f32 || s.ndims != 4 || s.offset0 != 0)
    return false;
  if (s.dims[2] != k_r || s.dims[3] != k_r) return false;
  const auto& b = s.format_desc.blocking;
  if (b.inner_nblks != 0) return false;
  int64_t stride = 1;
  for (int d = 3; d >= 0; --d) {
    if (s.dims[d] != 1 && b.strides[d] != stride) return false;
    stride *= s.dims[d];
  }
  return true;
}

}  // namespace

bool winograd_layout_supported(const dnnl::memory::desc& dst_md) {
  const dnnl_memory_desc_t& d = dst_md.data;
  if (d.format_kind != dnnl_format_kind_wino || d.data_type != dnnl_f32) return false;
  const dnnl_wino_desc_t& w = d.format_desc.wino_desc;
  const bool two_by_three = w.wino_format == dnnl_wino_wei_aaOBiOo || w.wino_format == dnnl_wino_wei_aaOio;
  const bool known =
      (two_by_three && w.alpha == 4) || (w.wino_format == dnnl_wino_wei_OBaaIBOIio && w.alpha == 6);
  if (!known || w.r != k_r || w.oc_block <= 0 || w.ic_block <= 0 || w.oc2_block <= 0) return false;
  if (w.oc_block > k_lanes || k_lanes % w.oc_block != 0) return false;
  if (w.wino_format == dnnl_wino_wei_OBaaIBOIio && w.ic2_block <= 0) return false;
  const int64_t ic2 = w.wino_format == dnnl_wino_wei_OBaaIBOIio ? w.ic2_block : 1;
  const int64_t oc2 = w.wino_format == dnnl_wino_wei_aaOio ? 1 : w.oc2_block;
  return w.oc % (int64_t{w.oc_block} * oc2) == 0 && w.ic % (int64_t{w.ic_block} * ic2) == 0 &&
         w.size == static_cast<size_t>(w.alpha) * w.alpha * w.oc * w.ic * sizeof(float);
}

// Sixteen lanes are one AVX-512 register: the clone for it runs the lane
// loops 4x wider than the baseline (SSE2) build; both compute the same
// unfused products and sums (-ffp-contract=off for this file).
__attribute__((target_clones("avx512f", "default"))) bool transform_winograd_weights(
    const dnnl::memory::desc& src_md, const float* src, const dnnl::memory::desc& dst_md, void* dst,
    std::span<const double> slice_factors) {
  const dnnl_memory_desc_t& s = src_md.data;
  if (!winograd_layout_supported(dst_md) || !dense_oihw_3x3(s)) return false;
  const WinoLayout layout(dst_md.data.format_desc.wino_desc);
  const dnnl_wino_desc_t& w = layout.w;
  const int64_t src_oc = s.dims[0];
  const int64_t src_ic = s.dims[1];
  if (src_oc > w.oc || src_ic > w.ic) return false;
  if (!slice_factors.empty() && static_cast<int64_t>(slice_factors.size()) != src_oc) return false;

  const int alpha = w.alpha;
  const float* g = alpha == 4 ? &k_g_2x3[0][0] : &k_g_4x3[0][0];
  auto* out = static_cast<float*>(dst);
  // Padded channels (oc or ic rounded up to a block) hold zeros, which is
  // also what the transform of a zero kernel gives.
  if (src_oc != w.oc || src_ic != w.ic) std::memset(dst, 0, w.size);

  const int64_t block = w.oc_block;
  // Sixteen input channels at a time: each tile's outputs for consecutive
  // input channels are adjacent in every layout, so the tiles are written as
  // 36 runs of up to 1 KB instead of 36 scattered 64-byte pieces per channel.
  constexpr int64_t k_ic_step = 16;
  std::vector<float> tiles(static_cast<size_t>(k_ic_step * k_max_alpha * k_max_alpha * k_lanes));
  for (int64_t oc0 = 0; oc0 < src_oc; oc0 += block) {
    const int64_t lanes = std::min<int64_t>(block, src_oc - oc0);
    for (int64_t ic0 = 0; ic0 < src_ic; ic0 += k_ic_step) {
      const int64_t ics = std::min<int64_t>(k_ic_step, src_ic - ic0);
      for (int64_t c = 0; c < ics; ++c) {
        const int64_t ic = ic0 + c;
        // The kernel taps of `lanes` output channels, lane-minor.
        std::array<std::array<float, k_lanes>, k_r * k_r> tap{};
        for (int64_t o = 0; o < lanes; ++o) {
          const float* k = src + ((oc0 + o) * src_ic + ic) * k_r * k_r;
          const double factor = slice_factors.empty() ? 1.0 : slice_factors[static_cast<size_t>(oc0 + o)];
          for (int t = 0; t < k_r * k_r; ++t) {
            tap[static_cast<size_t>(t)][static_cast<size_t>(o)] =
                slice_factors.empty() ? k[t] : static_cast<float>(static_cast<double>(k[t]) * factor);
          }
        }
        // g G^T by rows, then G (g G^T): the sums start at 0 and add in
        // kernel order, exactly as oneDNN's reorder does, so the result is
        // bitwise its own.
        std::array<std::array<float, k_lanes>, k_r * k_max_alpha> row{};
        for (int ih = 0; ih < k_r; ++ih) {
          for (int j = 0; j < alpha; ++j) {
            auto& acc = row[static_cast<size_t>(ih * alpha + j)];
            for (int o = 0; o < k_lanes; ++o) acc[static_cast<size_t>(o)] = 0.f;
            for (int iw = 0; iw < k_r; ++iw) {
              const float gm = g[j * k_r + iw];
              const auto& in = tap[static_cast<size_t>(ih * k_r + iw)];
              for (int o = 0; o < k_lanes; ++o)
                acc[static_cast<size_t>(o)] += in[static_cast<size_t>(o)] * gm;
            }
          }
        }
        for (int i = 0; i < alpha; ++i) {
          for (int j = 0; j < alpha; ++j) {
            float* t = tiles.data() + ((i * alpha + j) * k_ic_step + c) * k_lanes;
            for (int o = 0; o < k_lanes; ++o) t[o] = 0.f;
            for (int k = 0; k < k_r; ++k) {
              const float gm = g[i * k_r + k];
              const auto& in = row[static_cast<size_t>(k * alpha + j)];
              for (int o = 0; o < k_lanes; ++o) t[o] += gm * in[static_cast<size_t>(o)];
            }
          }
        }
      }
      for (int i = 0; i < alpha; ++i) {
        for (int j = 0; j < alpha; ++j) {
          const float* t = tiles.data() + (i * alpha + j) * k_ic_step * k_lanes;
          for (int64_t c = 0; c < ics; ++c) {
            float* to = out + layout.offset(i, j, ic0 + c, oc0);
            // A whole block is a fixed-size copy the compiler inlines; a
            // variable-size one is a libc call per 64 bytes.
            if (lanes == k_lanes) {
              std::copy_n(t + c * k_lanes, k_lanes, to);
            } else {
              std::copy_n(t + c * k_lanes, lanes, to);
            }
          }
        }
      }
    }
  }
  return true;
}

}  // namespace kiln::cpu
