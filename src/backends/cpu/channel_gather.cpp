#include "backends/cpu/channel_gather.hpp"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "kiln/error.hpp"

#include "backends/cpu/cpu_features.hpp"
#include "backends/cpu/openmp_pool.hpp"

namespace kiln::cpu {

std::optional<PlaneLayout> plane_layout(const Md& md) {
  const bool f32 = md.data_type() == Dt::f32;
  if (md.data.ndims != 4 || !(f32 || md.data_type() == Dt::bf16) || md.data.format_kind != dnnl_blocked)
    return std::nullopt;
  const auto& blocking = md.data.format_desc.blocking;
  PlaneLayout p;
  p.element_bytes = f32 ? 4 : 2;
  p.image = blocking.strides[0];
  p.channel = blocking.strides[1];
  p.row = blocking.strides[2];
  p.col = blocking.strides[3];
  if (blocking.inner_nblks == 1 && blocking.inner_idxs[0] == 1) {
    p.block = blocking.inner_blks[0];
  } else if (blocking.inner_nblks != 0) {
    return std::nullopt;
  }
  return p;
}

namespace {

// GCC 12 reports the intrinsics' own undefined pass-through vectors as
// maybe-uninitialized when AVX-512 is enabled per function (swish.cpp).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// The lanes of `store` of v at `at`: a plain store when that is all 16 (a
// blocked destination); on this AMD CPU masked stores cost a third of the
// whole pass.
// The group's epilogue (ChannelAffine) as registers.
struct Epilogue16 {
  bool affine = false, relu = false;
  const float* scale = nullptr;  // the group's 16 lanes
  const float* shift = nullptr;
};

__attribute__((target("avx512f"), always_inline)) inline void put16(float* at, __mmask16 store, __m512 v) {
  if (store == 0xFFFF) {
    _mm512_storeu_ps(at, v);
  } else {
    _mm512_mask_storeu_ps(at, store, v);
  }
}

// Row h of one lane group over every column: per column, each piece's
// masked load permuted into its lanes; lanes no piece fills are zeros.
__attribute__((target("avx512f"))) void group_row_avx512(std::span<const ChannelGather::Piece> pieces,
                                                         const float* const* base, const int64_t* col,
                                                         int64_t width, float* out, int64_t out_col,
                                                         __mmask16 store, const Epilogue16& epilogue) {
  const __m512 scale = epilogue.affine ? _mm512_loadu_ps(epilogue.scale) : _mm512_set1_ps(1.0f);
  const __m512 shift = epilogue.affine ? _mm512_loadu_ps(epilogue.shift) : _mm512_setzero_ps();
  // With an epilogue each vector is scaled, shifted and clamped before its
  // store (a branch the same way at every position); only a Relu clamps.
  const auto finish = [&](__m512 v) __attribute__((target("avx512f"), always_inline)) {
    if (!epilogue.affine) return v;
    const __m512 y = _mm512_fmadd_ps(v, scale, shift);
    return epilogue.relu ? _mm512_max_ps(y, _mm512_setzero_ps()) : y;
  };
  if (pieces.size() == 1 && pieces[0].identity) {
    // 16 consecutive floats of one source in order (a Concat's input in
    // blocks or channels-last): a plain load, no mask and no permute.
    for (int64_t w = 0; w < width; ++w, out += out_col)
      put16(out, store, finish(_mm512_loadu_ps(base[0] + w * col[0])));
    return;
  }
  if (pieces.size() == 2) {
    // Two sources (a channel shuffle's halves): one two-table permute, no
    // chain of merges through the destination register.
    const ChannelGather::Piece &a = pieces[0], &b = pieces[1];
    const __m512i index =
        _mm512_mask_blend_epi32(b.fill, _mm512_load_si512(a.index),
                                _mm512_add_epi32(_mm512_load_si512(b.index), _mm512_set1_epi32(16)));
    const auto fill = static_cast<__mmask16>(a.fill | b.fill);
    for (int64_t w = 0; w < width; ++w, out += out_col) {
      const __m512 from_a = _mm512_maskz_loadu_ps(a.load, base[0] + w * col[0]);
      const __m512 from_b = _mm512_maskz_loadu_ps(b.load, base[1] + w * col[1]);
      put16(out, store, finish(_mm512_maskz_permutex2var_ps(fill, from_a, index, from_b)));
    }
    return;
  }
  __m512i index[16];
  for (size_t i = 0; i < pieces.size(); ++i) index[i] = _mm512_load_si512(pieces[i].index);
  for (int64_t w = 0; w < width; ++w, out += out_col) {
    __m512 v = _mm512_setzero_ps();
    for (size_t i = 0; i < pieces.size(); ++i) {
      const __m512 loaded = _mm512_maskz_loadu_ps(pieces[i].load, base[i] + w * col[i]);
      v = _mm512_mask_permutexvar_ps(v, pieces[i].fill, index[i], loaded);
    }
    put16(out, store, finish(v));
  }
}

// group_row_avx512 for 16-bit elements (bf16): 16 lanes of a 256-bit
// register, the same pieces with their indices narrowed.
__attribute__((target("avx512f,avx512bw,avx512vl"))) void group_row16_avx512(
    std::span<const ChannelGather::Piece> pieces, const uint16_t* const* base, const int64_t* col,
    int64_t width, uint16_t* out, int64_t out_col, __mmask16 store) {
  __m256i index[16];
  for (size_t i = 0; i < pieces.size(); ++i)
    index[i] = _mm512_cvtepi32_epi16(_mm512_load_si512(pieces[i].index));
  for (int64_t w = 0; w < width; ++w, out += out_col) {
    __m256i v = _mm256_setzero_si256();
    for (size_t i = 0; i < pieces.size(); ++i) {
      const __m256i loaded = _mm256_maskz_loadu_epi16(pieces[i].load, base[i] + w * col[i]);
      v = _mm256_mask_permutexvar_epi16(v, pieces[i].fill, index[i], loaded);
    }
    if (store == 0xFFFF) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), v);
    } else {
      _mm256_mask_storeu_epi16(out, store, v);
    }
  }
}

// The lane kernel for element type T.
void group_row(std::span<const ChannelGather::Piece> pieces, const float* const* base, const int64_t* col,
               int64_t width, float* out, int64_t out_col, __mmask16 store, const Epilogue16& epilogue) {
  group_row_avx512(pieces, base, col, width, out, out_col, store, epilogue);
}

void group_row(std::span<const ChannelGather::Piece> pieces, const uint16_t* const* base, const int64_t* col,
               int64_t width, uint16_t* out, int64_t out_col, __mmask16 store, const Epilogue16&) {
  group_row16_avx512(pieces, base, col, width, out, out_col, store);
}

// One plane row of a plain destination from a source row `col` floats
// apart: a strided gather, 16 columns at a time.
__attribute__((target("avx512f"))) void strided_row_avx512(const float* in, int64_t col, int64_t width,
                                                           float* out) {
  const __m512i index =
      _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                         _mm512_set1_epi32(static_cast<int>(col)));
  int64_t w = 0;
  for (; w + 16 <= width; w += 16) _mm512_storeu_ps(out + w, _mm512_i32gather_ps(index, in + w * col, 4));
  for (; w < width; ++w) out[w] = in[w * col];
}

#pragma GCC diagnostic pop

}  // namespace

ChannelGather::ChannelGather(const Dims& dims, std::vector<PlaneLayout> sources,
                             std::vector<std::pair<int, int64_t>> channels, const PlaneLayout& dst,
                             int64_t padded_channels)
    : m_dims(dims),
      m_sources(std::move(sources)),
      m_channels(std::move(channels)),
      m_dst(dst),
      m_padded(padded_channels),
      m_element_bytes(dst.element_bytes) {
  for (const PlaneLayout& source : m_sources) {
    if (source.element_bytes != m_element_bytes) {
      throw Error(ErrorCode::internal,
                  "channel gather: a source's element type differs from the destination's");
    }
  }
  // Lane groups: one block of a blocked destination (padding included), or
  // 16 channels of a channels-last one.
  const bool blocked = m_dst.block == 8 || m_dst.block == 16;
  const bool channels_last = m_dst.block == 1 && m_dst.channel == 1 && m_dst.col != 1;
  const bool vector = m_element_bytes == 4 ? has_avx512f() : has_avx512bw_vl();
  if (!vector || !(blocked || channels_last)) return;
  m_lanes = blocked ? m_dst.block : 16;
  const auto count = static_cast<int64_t>(m_channels.size());
  for (int64_t c0 = 0; c0 < m_padded; c0 += m_lanes) {
    const size_t first = m_pieces.size();
    m_group_begin.push_back(first);
    for (int64_t k = 0; k < m_lanes && c0 + k < count; ++k) {
      const auto [source, channel] = m_channels[static_cast<size_t>(c0 + k)];
      const int64_t offset = m_sources[static_cast<size_t>(source)].at(0, channel);
      size_t i = first;
      while (i < m_pieces.size() && !(m_pieces[i].source == source && offset >= m_pieces[i].offset &&
                                      offset < m_pieces[i].offset + 16))
        ++i;
      if (i == m_pieces.size()) {
        m_pieces.emplace_back();
        m_pieces.back().source = source;
        m_pieces.back().offset = offset;
      }
      Piece& p = m_pieces[i];
      const auto at = static_cast<int32_t>(offset - p.offset);
      p.index[k] = at;
      p.fill = static_cast<uint16_t>(p.fill | (1u << k));
      p.load = static_cast<uint16_t>(p.load | ((2u << at) - 1));
    }
  }
  m_group_begin.push_back(m_pieces.size());
  for (Piece& p : m_pieces) {
    p.identity = p.load == 0xFFFF && p.fill == 0xFFFF;
    for (int k = 0; k < 16 && p.identity; ++k) p.identity = p.index[k] == k;
  }
  const auto dense = [&](const PlaneLayout& p) { return p.row == m_dims[3] * p.col; };
  // A channels-last source is walked once per group this way: worth it
  // only where every group is one plain load (a Concat's inputs: DenseNet's
  // first dense layers read their block's channels-last input, 1.5 against
  // 0.78 ms per row and per plane); a shuffle's groups of several windows
  // keep the per-row walk, which reads such a source's row once for all.
  const bool all_identity =
      std::all_of(m_pieces.begin(), m_pieces.end(), [](const Piece& p) { return p.identity; });
  m_whole_planes =
      blocked && dense(m_dst) && std::all_of(m_sources.begin(), m_sources.end(), [&](const PlaneLayout& p) {
        return dense(p) && (p.block > 1 || all_identity);
      });
}

void ChannelGather::run(std::span<const std::byte* const> data, std::byte* dst,
                        const ChannelAffine* affine) const {
  if (affine && (m_element_bytes != 4 || static_cast<int64_t>(affine->scale.size()) < m_padded ||
                 static_cast<int64_t>(affine->shift.size()) < m_padded)) {
    throw Error(ErrorCode::internal,
                "channel gather: an epilogue needs f32 and a scale and shift per channel");
  }
  if (m_element_bytes == 4) {
    m_lanes > 0 ? run_lanes<float>(data, dst, affine) : run_planes<float>(data, dst, affine);
  } else {
    m_lanes > 0 ? run_lanes<uint16_t>(data, dst, affine) : run_planes<uint16_t>(data, dst, affine);
  }
}

template <typename T>
void ChannelGather::run_lanes(std::span<const std::byte* const> data, std::byte* dst_bytes,
                              const ChannelAffine* affine) const {
  T* dst = reinterpret_cast<T*>(dst_bytes);
  const int64_t images = m_dims[0], channels = m_dims[1], height = m_dims[2], width = m_dims[3];
  const size_t groups = m_group_begin.size() - 1;
  const bool blocked = m_dst.block > 1;
  // Row h (every row, as one, when `whole_planes`) of group g of image n.
  const auto group_rows = [&](int64_t n, int64_t h, size_t g, int64_t positions) {
    const std::span<const Piece> pieces(m_pieces.data() + m_group_begin[g],
                                        m_group_begin[g + 1] - m_group_begin[g]);
    const T* base[16];
    int64_t col[16];
    for (size_t i = 0; i < pieces.size(); ++i) {
      const PlaneLayout& s = m_sources[static_cast<size_t>(pieces[i].source)];
      base[i] = reinterpret_cast<const T*>(data[static_cast<size_t>(pieces[i].source)]) + pieces[i].offset +
                n * s.image + h * s.row;
      col[i] = s.col;
    }
    const int64_t c0 = static_cast<int64_t>(g) * m_lanes;
    const int64_t stored = blocked ? m_lanes : std::min<int64_t>(m_lanes, channels - c0);
    Epilogue16 epilogue;
    if (affine) {
      epilogue = {true, affine->relu, affine->scale.data() + c0, affine->shift.data() + c0};
    }
    group_row(pieces, base, col, positions, dst + m_dst.at(n, c0) + h * m_dst.row, m_dst.col,
              static_cast<__mmask16>((1u << stored) - 1), epilogue);
  };
  if (m_whole_planes) {
    // Every side's rows follow each other: a group's whole plane is one
    // walk, one task per image and group (per row, the set-up of each
    // 28-column walk was a third of ShuffleNet's gathers).
    run_on_openmp_pool(static_cast<size_t>(images) * groups, [&](size_t task) {
      group_rows(static_cast<int64_t>(task / groups), 0, task % groups, height * width);
    });
    return;
  }
  // One image's row per task, every group of it: a channels-last source's
  // row is read once for all the groups it feeds.
  run_on_openmp_pool(static_cast<size_t>(images * height), [&](size_t task) {
    const auto n = static_cast<int64_t>(task) / height, h = static_cast<int64_t>(task) % height;
    for (size_t g = 0; g < groups; ++g) group_rows(n, h, g, width);
  });
}

template <typename T>
void ChannelGather::run_planes(std::span<const std::byte* const> data, std::byte* dst_bytes,
                               const ChannelAffine* affine) const {
  T* dst = reinterpret_cast<T*>(dst_bytes);
  const int64_t images = m_dims[0], channels = m_dims[1], height = m_dims[2], width = m_dims[3];
  const bool vector = std::is_same_v<T, float> && has_avx512f();
  run_on_openmp_pool(static_cast<size_t>(images * channels), [&](size_t task) {
    const auto n = static_cast<int64_t>(task) / channels, c = static_cast<int64_t>(task) % channels;
    const auto [source, channel] = m_channels[static_cast<size_t>(c)];
    const PlaneLayout& s = m_sources[static_cast<size_t>(source)];
    const T* plane = reinterpret_cast<const T*>(data[static_cast<size_t>(source)]) + s.at(n, channel);
    for (int64_t h = 0; h < height; ++h) {
      const T* in = plane + h * s.row;
      T* out = dst + m_dst.at(n, c) + h * m_dst.row;
      if (m_dst.col == 1 && s.col == 1) {
        std::memcpy(out, in, static_cast<size_t>(width) * sizeof(T));
        continue;
      }
      if constexpr (std::is_same_v<T, float>) {
        if (m_dst.col == 1 && vector) {
          strided_row_avx512(in, s.col, width, out);
          continue;
        }
      }
      for (int64_t w = 0; w < width; ++w) out[w * m_dst.col] = in[w * s.col];
    }
    if constexpr (std::is_same_v<T, float>) {
      if (affine) {  // the channel's plane again, while it is in cache
        const float a = affine->scale[static_cast<size_t>(c)], z = affine->shift[static_cast<size_t>(c)];
        for (int64_t h = 0; h < height; ++h) {
          float* out = dst + m_dst.at(n, c) + h * m_dst.row;
          for (int64_t w = 0; w < width; ++w) {
            const float y = out[w * m_dst.col] * a + z;
            out[w * m_dst.col] = affine->relu && !(y > 0.0f) ? 0.0f : y;
          }
        }
      }
    }
  });
  for (int64_t n = 0; n < images; ++n) {
    for (int64_t c = channels; c < m_padded; ++c) {
      for (int64_t h = 0; h < height; ++h) {
        T* out = dst + m_dst.at(n, c) + h * m_dst.row;
        for (int64_t w = 0; w < width; ++w) out[w * m_dst.col] = T{};
      }
    }
  }
}

}  // namespace kiln::cpu
