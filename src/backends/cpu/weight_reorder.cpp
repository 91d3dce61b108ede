#include "backends/cpu/weight_reorder.hpp"

#include "backends/cpu/winograd_weights.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <vector>

namespace kiln::cpu {

namespace {

constexpr int k_max_dims = DNNL_MAX_NDIMS;

// A blocked layout's offset is a sum of one term per logical dim (outer
// stride plus that dim's inner-block positions), so per-dim tables of those
// terms turn the reorder into table lookups and additions.
std::vector<std::vector<int64_t>> offset_tables(const dnnl_memory_desc_t& md) {
  const auto& b = md.format_desc.blocking;
  std::vector<std::vector<int64_t>> tables(static_cast<size_t>(md.ndims));
  for (int d = 0; d < md.ndims; ++d) {
    int64_t block = 1;
    for (int k = 0; k < b.inner_nblks; ++k) {
      if (b.inner_idxs[k] == d) block *= b.inner_blks[k];
    }
    auto& table = tables[static_cast<size_t>(d)];
    table.resize(static_cast<size_t>(md.dims[d]));
    for (int64_t i = 0; i < md.dims[d]; ++i) {
      int64_t off = (i / block) * b.strides[d];
      int64_t div = 1;
      int64_t mult = 1;
      for (int k = b.inner_nblks - 1; k >= 0; --k) {
        if (b.inner_idxs[k] == d) {
          off += ((i / div) % b.inner_blks[k]) * mult;
          div *= b.inner_blks[k];
        }
        mult *= b.inner_blks[k];
      }
      table[static_cast<size_t>(i)] = off;
    }
  }
  return tables;
}

bool addressable(const dnnl_memory_desc_t& md) {
  return md.format_kind == dnnl_blocked && md.extra.flags == dnnl_memory_extra_flag_none;
}

uint16_t to_bf16(float value) {
  uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // quiet NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(bits >> 16);
}

// Every element at its own offset in [0, elements): a row-major layout of
// the dims in some order (a transposed view of a dense tensor qualifies).
// Then an element's offset is its index in the tensor's own buffer.
bool dense_permutation(const dnnl_memory_desc_t& md) {
  const auto& b = md.format_desc.blocking;
  if (md.format_kind != dnnl_blocked || b.inner_nblks != 0 || md.offset0 != 0) return false;
  std::array<int, k_max_dims> order{};
  for (int d = 0; d < md.ndims; ++d) order[static_cast<size_t>(d)] = d;
  std::sort(order.begin(), order.begin() + md.ndims,
            [&](int x, int y) { return b.strides[x] < b.strides[y]; });
  int64_t stride = 1;
  for (int i = 0; i < md.ndims; ++i) {
    const int d = order[static_cast<size_t>(i)];
    if (md.dims[d] != 1 && b.strides[d] != stride) return false;
    stride *= md.dims[d];
  }
  return true;
}

}  // namespace

bool reorder_weights(const dnnl::memory::desc& src_md, const float* src, const dnnl::memory::desc& dst_md,
                     void* dst, std::span<const double> slice_factors) {
  const dnnl_memory_desc_t& s = src_md.data;
  const dnnl_memory_desc_t& d = dst_md.data;
  if (d.format_kind == dnnl_format_kind_wino)
    return transform_winograd_weights(src_md, src, dst_md, dst, slice_factors);
  if (!addressable(s) || !addressable(d) || s.ndims != d.ndims || s.data_type != dnnl_f32) return false;
  if (d.data_type != dnnl_f32 && d.data_type != dnnl_bf16) return false;
  for (int i = 0; i < s.ndims; ++i) {
    if (s.dims[i] != d.dims[i]) return false;
  }
  const int ndims = s.ndims;
  if (ndims == 0) return false;
  int64_t elements = 1;
  for (int i = 0; i < ndims; ++i) elements *= s.dims[i];
  const auto factors = static_cast<int64_t>(slice_factors.size());
  if (factors > 0 && (!dense_permutation(s) || elements % factors != 0)) return false;
  const int64_t slice = factors > 0 ? elements / factors : 0;
  const size_t element_size = d.data_type == dnnl_bf16 ? 2 : 4;
  // Padding (blocked layouts round channels up) must read as zero; without
  // padding every byte is written below.
  if (dst_md.get_size() != static_cast<size_t>(elements) * element_size)
    std::memset(dst, 0, dst_md.get_size());
  auto from = offset_tables(s);
  auto to = offset_tables(d);
  const bool bf16 = d.data_type == dnnl_bf16;
  // The innermost loop runs over the longest dim: for a 1x1 or 3x3 kernel
  // (O, I, kh, kw) that is I, not kw, so the per-run bookkeeping (one table
  // lookup per other dim) is paid per I elements instead of per 1 to 3.
  int inner_dim = ndims - 1;
  for (int i = ndims - 1; i >= 0; --i) {
    if (s.dims[i] > s.dims[inner_dim]) inner_dim = i;
  }
  std::array<int, k_max_dims> outer_dims{};
  int n_outer = 0;
  for (int i = 0; i < ndims; ++i) {
    if (i != inner_dim) outer_dims[static_cast<size_t>(n_outer++)] = i;
  }
  const int64_t inner = s.dims[inner_dim];
  const int64_t* src_inner = from[static_cast<size_t>(inner_dim)].data();
  const int64_t* dst_inner = to[static_cast<size_t>(inner_dim)].data();
  const int64_t outer = inner > 0 ? elements / inner : 0;
  std::array<int64_t, k_max_dims> idx{};
  for (int64_t n = 0; n < outer; ++n) {
    int64_t src_base = s.offset0;
    int64_t dst_base = d.offset0;
    for (int k = 0; k < n_outer; ++k) {
      const auto dim = static_cast<size_t>(outer_dims[static_cast<size_t>(k)]);
      src_base += from[dim][static_cast<size_t>(idx[dim])];
      dst_base += to[dim][static_cast<size_t>(idx[dim])];
    }
    if (factors > 0) {
      // Dense source: an offset is the element's index in the tensor's
      // buffer, which is what the slices divide. A run inside one slice (the
      // usual case) shares one factor.
      const int64_t first = src_base + src_inner[0];
      const int64_t last_at = src_base + src_inner[inner - 1];
      const bool one_slice = first / slice == last_at / slice;
      const double shared = one_slice ? slice_factors[static_cast<size_t>(first / slice)] : 0.0;
      for (int64_t j = 0; j < inner; ++j) {
        const int64_t at = src_base + src_inner[j];
        const double factor = one_slice ? shared : slice_factors[static_cast<size_t>(at / slice)];
        const auto value = static_cast<float>(static_cast<double>(src[at]) * factor);
        if (bf16) {
          static_cast<uint16_t*>(dst)[dst_base + dst_inner[j]] = to_bf16(value);
        } else {
          static_cast<float*>(dst)[dst_base + dst_inner[j]] = value;
        }
      }
    } else if (bf16) {
      auto* out = static_cast<uint16_t*>(dst) + dst_base;
      for (int64_t j = 0; j < inner; ++j) out[dst_inner[j]] = to_bf16(src[src_base + src_inner[j]]);
    } else {
      auto* out = static_cast<float*>(dst) + dst_base;
      for (int64_t j = 0; j < inner; ++j) out[dst_inner[j]] = src[src_base + src_inner[j]];
    }
    for (int k = n_outer; k-- > 0;) {
      const auto dim = static_cast<size_t>(outer_dims[static_cast<size_t>(k)]);
      if (++idx[dim] < s.dims[dim]) break;
      idx[dim] = 0;
    }
  }
  return true;
}

}  // namespace kiln::cpu
