// A rank-4 [N, C, H, W] f32 or bf16 tensor written channel by channel from
// other tensors' channels of the same type, in one pass, whatever the
// layouts on either side.
//
// Why: ShuffleNet's channel shuffle (Concat -> Reshape -> Transpose ->
// Reshape) followed by the next unit's channel split (two Slices)
// interleaves channels of two tensors. oneDNN descriptors cannot describe
// an interleave of channel-blocked tensors, so as views and reorders it cost
// four copies of every element per unit (the Concat's two, the Transpose's,
// the split half's reorder into the conv's layout): a third of ShuffleNetV2's
// time. The instance builder keeps such a tensor as a map of its channels
// (InstanceBuilder::define_gathered) and writes it once, by this pass, where
// a layer reads it, in the layout that layer wants.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "backends/cpu/dnnl_util.hpp"

namespace kiln::cpu {

// Where the elements of a rank-4 f32 or bf16 layout lie: element (n, c, h,
// w) at n * image + (c / block) * channel + (c % block) + h * row + w * col
// elements. Plain strided layouts have block 1; nChw16c and nChw8c are one
// channel block.
struct PlaneLayout {
  int64_t image = 0, channel = 0, block = 1, row = 0, col = 0;
  int64_t element_bytes = 4;  // 4 (f32) or 2 (bf16)
  int64_t at(int64_t n, int64_t c) const { return n * image + (c / block) * channel + c % block; }
};

// The addressing of `md` if it is rank 4, f32 or bf16, and plain strided or
// blocked by one inner block of channels; nullopt otherwise.
std::optional<PlaneLayout> plane_layout(const Md& md);

// A per-channel epilogue of the pass (a BatchNormalization, and its Relu,
// of the gathered tensor): destination channel c becomes
// x * scale[c] + shift[c], then max(., 0) with `relu`. Both spans cover the
// destination's padded channels (0 and 0 for the padding, which keeps it
// zero).
struct ChannelAffine {
  std::span<const float> scale, shift;
  bool relu = false;
};

// The pass for one destination, planned when the instance is built; run()
// takes the sources' storage. Immutable after construction: safe to run
// concurrently on distinct buffers.
class ChannelGather {
 public:
  // The destination has `dims` (N, C, H, W), is laid out as `dst` with
  // `padded_channels` >= C channels of storage (a blocked layout's last
  // block, written as zeros), and takes channel c from channel
  // channels[c].second of source channels[c].first, laid out as
  // sources[channels[c].first]. Every source has the destination's element
  // type (kiln::Error otherwise).
  ChannelGather(const Dims& dims, std::vector<PlaneLayout> sources,
                std::vector<std::pair<int, int64_t>> channels, const PlaneLayout& dst,
                int64_t padded_channels);

  // data[i]: source i's first element. On oneDNN's OpenMP threads. An
  // `affine` epilogue is for f32 destinations only.
  void run(std::span<const std::byte* const> data, std::byte* dst,
           const ChannelAffine* affine = nullptr) const;

  // Elements within 16 of each other in one source, moved to the lanes
  // they fill by one load and one permute per destination position.
  struct Piece {
    int source = 0;
    int64_t offset = 0;  // of its first float at image 0, row 0, column 0
    uint16_t load = 0, fill = 0;
    bool identity = false;  // all 16 lanes, each from the float at its own position
    alignas(64) int32_t index[16] = {};
  };

 private:
  template <typename T>
  void run_lanes(std::span<const std::byte* const> data, std::byte* dst, const ChannelAffine* affine) const;
  template <typename T>
  void run_planes(std::span<const std::byte* const> data, std::byte* dst, const ChannelAffine* affine) const;

  Dims m_dims;
  std::vector<PlaneLayout> m_sources;
  std::vector<std::pair<int, int64_t>> m_channels;
  PlaneLayout m_dst;
  int64_t m_padded = 0;
  int64_t m_element_bytes = 4;
  // The lane path (a blocked or channels-last destination on AVX-512): the
  // destination's channels in groups of `m_lanes` adjacent floats, each
  // group's pieces m_pieces[m_group_begin[g] .. m_group_begin[g + 1]).
  int64_t m_lanes = 0;
  std::vector<Piece> m_pieces;
  std::vector<size_t> m_group_begin;
  // A blocked destination and sources with rows back to back (channels-last
  // ones only where every group is one plain load): a group's plane is one run.
  bool m_whole_planes = false;
};

}  // namespace kiln::cpu
