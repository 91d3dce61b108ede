// Layout kernels: transposes of up to k_max_rank dimensions, the copy of
// one Concat input into its slice of the output, and slices (Slice, Split). Elements move unconverted.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

#include "common.cuh"
#include "kernels.hpp"

namespace kiln::cuda {

namespace {

using detail::global_thread;
using detail::grid_for;
using detail::grid_threads;
using detail::k_block;

// A transpose as the output shape and, per output dimension, the element
// stride of the input, after dropping size-1 dimensions and merging output
// neighbours that are also neighbours, in order, in the input.
struct Strided {
  int rank = 0;
  int64_t out[k_max_rank] = {};
  int64_t in_stride[k_max_rank] = {};
};

Strided plan_transpose(int rank, const int64_t* in_shape, const int* perm, int64_t& n) {
  detail::require(rank >= 0 && rank <= k_max_rank, "transpose",
                  "rank " + std::to_string(rank) + " is outside 0.." + std::to_string(k_max_rank));
  int64_t in_strides[k_max_rank] = {};
  n = 1;
  for (int d = rank - 1; d >= 0; --d) {
    detail::require(in_shape[d] >= 0, "transpose", "negative dimension " + std::to_string(in_shape[d]));
    in_strides[d] = n;
    n *= in_shape[d];
  }
  bool seen[k_max_rank] = {};
  Strided s;
  for (int d = 0; d < rank; ++d) {
    const int src = perm[d];
    detail::require(src >= 0 && src < rank && !seen[src], "transpose",
                    "perm is not a permutation of 0.." + std::to_string(rank - 1));
    seen[src] = true;
    const int64_t size = in_shape[src];
    if (size == 1) continue;
    if (s.rank > 0 && s.in_stride[s.rank - 1] == in_strides[src] * size) {
      s.out[s.rank - 1] *= size;
      s.in_stride[s.rank - 1] = in_strides[src];
      continue;
    }
    s.out[s.rank] = size;
    s.in_stride[s.rank] = in_strides[src];
    ++s.rank;
  }
  return s;
}

// The general case, shared by transposes and slices: y[i] = x[base +
// offset of i in the walk `s`], one thread per output word (writes coalesce,
// reads gather). `Word` is the unit moved: the element, or up to 16 bytes of
// elements where the walk's innermost run is contiguous in both tensors
// (attention's head transposes, a split's parts), so the index arithmetic is
// paid once per word rather than per element. `Index` is 32-bit wherever
// every offset fits: a 64-bit divide per dimension per element otherwise
// bounds this kernel, not memory.
template <typename Word, typename Index>
__global__ void gather_kernel(const Word* x, Word* y, Strided s, Index base, Index n) {
  const Index step = static_cast<Index>(gridDim.x) * blockDim.x;
  for (Index i = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    Index rem = i, off = base;
    for (int d = s.rank - 1; d >= 0; --d) {
      const auto size = static_cast<Index>(s.out[d]);
      off += (rem % size) * static_cast<Index>(s.in_stride[d]);
      rem /= size;
    }
    y[i] = x[off];
  }
}

// The widest word (16, 8 or 4 bytes, else the element) that divides the
// innermost contiguous run, every other stride and the base, and to which
// both pointers are aligned.
size_t gather_word_bytes(const Strided& s, int64_t base, size_t elem_bytes, const void* x, const void* y) {
  if (s.rank == 0 || s.in_stride[s.rank - 1] != 1) return elem_bytes;
  for (size_t word : {size_t{16}, size_t{8}, size_t{4}}) {
    if (word <= elem_bytes) break;
    auto divides = [word, elem_bytes](int64_t elements) {
      return static_cast<size_t>(elements) * elem_bytes % word == 0;
    };
    bool ok = divides(s.out[s.rank - 1]) && divides(base) && reinterpret_cast<uintptr_t>(x) % word == 0 &&
              reinterpret_cast<uintptr_t>(y) % word == 0;
    for (int d = 0; ok && d + 1 < s.rank; ++d) ok = divides(s.in_stride[d]);
    if (ok) return word;
  }
  return elem_bytes;
}

template <typename Word>
void launch_gather_words(const void* x, void* y, Strided s, int64_t base, int64_t n, int64_t extent,
                         cudaStream_t stream) {
  const auto* px = static_cast<const Word*>(x);
  auto* py = static_cast<Word*>(y);
  // 32-bit when every output index, input offset and grid step fits.
  constexpr int64_t k_int32 = int64_t{1} << 31;
  if (n < k_int32 && extent < k_int32) {
    gather_kernel<Word, uint32_t><<<grid_for(n), k_block, 0, stream>>>(px, py, s, static_cast<uint32_t>(base),
                                                                       static_cast<uint32_t>(n));
  } else {
    gather_kernel<Word, int64_t><<<grid_for(n), k_block, 0, stream>>>(px, py, s, base, n);
  }
}

// y = the `n` elements of x that the walk `s` from `base` visits; `extent`
// bounds every input offset (elements).
void launch_gather(size_t elem_bytes, const void* x, void* y, Strided s, int64_t base, int64_t n,
                   int64_t extent, cudaStream_t stream) {
  const size_t word = gather_word_bytes(s, base, elem_bytes, x, y);
  if (word != elem_bytes) {
    const auto per_word = static_cast<int64_t>(word / elem_bytes);
    s.out[s.rank - 1] /= per_word;
    for (int d = 0; d + 1 < s.rank; ++d) s.in_stride[d] /= per_word;
    base /= per_word;
    n /= per_word;
    extent /= per_word;
  }
  switch (word) {
    case 16:
      launch_gather_words<uint4>(x, y, s, base, n, extent, stream);
      return;
    case 8:
      launch_gather_words<uint2>(x, y, s, base, n, extent, stream);
      return;
    case 4:
      launch_gather_words<uint32_t>(x, y, s, base, n, extent, stream);
      return;
    default:
      launch_gather_words<uint16_t>(x, y, s, base, n, extent, stream);
  }
}

// Batched 2-D transpose, x [batch, q, p] -> y [batch, p, q] (NCHW <-> NHWC
// and matrix transposes): a 32x32 tile goes through shared memory so reads
// and writes both coalesce. The tile is fp32, which holds f16 and bf16
// exactly; the extra column avoids bank conflicts on the transposed read.
constexpr int k_tile = 32;
constexpr int k_tile_rows = 8;

template <typename T>
__global__ void transpose_tiled_kernel(const T* x, T* y, int64_t batch, int64_t q, int64_t p) {
  __shared__ float tile[k_tile][k_tile + 1];
  const int64_t tiles_p = (p + k_tile - 1) / k_tile;
  const int64_t tiles_q = (q + k_tile - 1) / k_tile;
  const int64_t tiles = batch * tiles_p * tiles_q;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t b = t / (tiles_p * tiles_q);
    const int64_t p0 = (t % tiles_p) * k_tile;
    const int64_t q0 = ((t / tiles_p) % tiles_q) * k_tile;
    const T* xb = x + b * q * p;
    T* yb = y + b * q * p;
    __syncthreads();  // the previous tile's readers are done
    for (int i = threadIdx.y; i < k_tile; i += k_tile_rows) {
      const int64_t qi = q0 + i, pi = p0 + threadIdx.x;
      if (qi < q && pi < p) tile[i][threadIdx.x] = detail::load(xb, qi * p + pi);
    }
    __syncthreads();
    for (int i = threadIdx.y; i < k_tile; i += k_tile_rows) {
      const int64_t pi = p0 + i, qi = q0 + threadIdx.x;
      if (pi < p && qi < q) detail::store(yb, pi * q + qi, tile[threadIdx.x][i]);
    }
  }
}

// The same transpose where one side is at most k_narrow wide (an image's 3
// channels): a 32x32 tile would leave most of its lanes idle (NCHW -> NHWC of
// a batch of 100 RGB images in fp16 took 0.45 ms, 15 times its bytes' worth).
// A thread moves one short row instead; the threads of a warp read
// neighbouring elements of each long row and write one contiguous span.
constexpr int64_t k_narrow = 4;

// y [batch, p, q] from x [batch, q, p], q <= k_narrow: a thread per y row.
template <typename T>
__global__ void transpose_to_narrow_kernel(const T* x, T* y, int64_t batch, int64_t q, int64_t p) {
  const int64_t n = batch * p;
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    const int64_t b = i / p, pi = i - b * p;
    const T* from = x + b * q * p + pi;
    T* to = y + i * q;
    for (int64_t qi = 0; qi < q; ++qi) to[qi] = from[qi * p];
  }
}

// y [batch, p, q] from x [batch, q, p], p <= k_narrow: a thread per x row.
template <typename T>
__global__ void transpose_from_narrow_kernel(const T* x, T* y, int64_t batch, int64_t q, int64_t p) {
  const int64_t n = batch * q;
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    const int64_t b = i / q, qi = i - b * q;
    const T* from = x + i * p;
    T* to = y + b * q * p + qi;
    for (int64_t pi = 0; pi < p; ++pi) to[pi * q] = from[pi];
  }
}

template <typename T>
__global__ void concat_part_kernel(const T* x, T* y, int64_t outer, int64_t x_inner, int64_t y_inner,
                                   int64_t offset) {
  const int64_t n = outer * x_inner;
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    const int64_t o = i / x_inner;
    y[o * y_inner + offset + (i - o * x_inner)] = x[i];
  }
}

}  // namespace

void launch_transpose(ElemType type, const void* x, void* y, int rank, const int64_t* in_shape,
                      const int* perm, cudaStream_t stream) {
  int64_t n = 0;
  const Strided s = plan_transpose(rank, in_shape, perm, n);
  if (n == 0) return;
  detail::dispatch(type, "transpose", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const auto* px = static_cast<const T*>(x);
    auto* py = static_cast<T*>(y);
    if (s.rank == 0 || (s.rank == 1 && s.in_stride[0] == 1)) {
      // The permutation only moves size-1 dimensions: the bytes are unchanged.
      if (x != y) {
        const cudaError_t err =
            cudaMemcpyAsync(py, px, static_cast<size_t>(n) * sizeof(T), cudaMemcpyDeviceToDevice, stream);
        if (err != cudaSuccess) {
          throw std::runtime_error(std::string("transpose: copy failed: ") + cudaGetErrorString(err));
        }
      }
      return;
    }
    const bool tiled_2d = s.rank == 2 && s.in_stride[0] == 1 && s.in_stride[1] == s.out[0];
    const bool tiled_3d = s.rank == 3 && s.in_stride[1] == 1 && s.in_stride[2] == s.out[1] &&
                          s.in_stride[0] == s.out[1] * s.out[2];
    if (tiled_2d || tiled_3d) {
      // y [batch, p, q] from x [batch, q, p]
      const int64_t batch = tiled_3d ? s.out[0] : 1;
      const int64_t p = tiled_3d ? s.out[1] : s.out[0];
      const int64_t q = tiled_3d ? s.out[2] : s.out[1];
      if (q <= k_narrow) {
        transpose_to_narrow_kernel<T><<<grid_for(batch * p), k_block, 0, stream>>>(px, py, batch, q, p);
        return;
      }
      if (p <= k_narrow) {
        transpose_from_narrow_kernel<T><<<grid_for(batch * q), k_block, 0, stream>>>(px, py, batch, q, p);
        return;
      }
      const int64_t tiles = batch * ((p + k_tile - 1) / k_tile) * ((q + k_tile - 1) / k_tile);
      const unsigned grid =
          static_cast<unsigned>(tiles < detail::k_max_blocks ? tiles : detail::k_max_blocks);
      transpose_tiled_kernel<T><<<grid, dim3(k_tile, k_tile_rows), 0, stream>>>(px, py, batch, q, p);
    } else {
      launch_gather(sizeof(T), px, py, s, 0, n, n, stream);
    }
  });
  detail::check_launch("transpose");
}

void launch_concat_part(ElemType type, const void* x, void* y, int64_t outer, int64_t x_inner,
                        int64_t y_inner, int64_t offset, cudaStream_t stream) {
  detail::require(outer >= 0 && x_inner >= 0 && offset >= 0 && offset + x_inner <= y_inner, "concat_part",
                  "columns [" + std::to_string(offset) + ", " + std::to_string(offset + x_inner) +
                      ") do not fit rows of " + std::to_string(y_inner));
  const int64_t n = outer * x_inner;
  if (n == 0) return;
  detail::dispatch(type, "concat_part", [&](auto tag) {
    using T = typename decltype(tag)::type;
    concat_part_kernel<T><<<grid_for(n), k_block, 0, stream>>>(static_cast<const T*>(x), static_cast<T*>(y),
                                                               outer, x_inner, y_inner, offset);
  });
  detail::check_launch("concat_part");
}

void launch_strided_copy(ElemType type, const void* x, void* y, int rank, const int64_t* out_shape,
                         const int64_t* in_strides, int64_t offset, int64_t extent, cudaStream_t stream) {
  detail::require(rank >= 0 && rank <= k_max_rank, "strided_copy",
                  "rank " + std::to_string(rank) + " is outside 0.." + std::to_string(k_max_rank));
  Strided s;
  int64_t n = 1;
  for (int d = 0; d < rank; ++d) {
    detail::require(out_shape[d] >= 0 && in_strides[d] >= 0 && offset >= 0, "strided_copy",
                    "negative size, stride or offset");
    n *= out_shape[d];
    if (out_shape[d] == 1) continue;
    // Merge with the previous output dim when the two walk the input as one.
    if (s.rank > 0 && s.in_stride[s.rank - 1] == in_strides[d] * out_shape[d]) {
      s.out[s.rank - 1] *= out_shape[d];
      s.in_stride[s.rank - 1] = in_strides[d];
      continue;
    }
    s.out[s.rank] = out_shape[d];
    s.in_stride[s.rank] = in_strides[d];
    ++s.rank;
  }
  if (n == 0) return;
  int64_t last = offset;
  for (int d = 0; d < s.rank; ++d) last += (s.out[d] - 1) * s.in_stride[d];
  detail::require(last < extent, "strided_copy",
                  "the walk reaches element " + std::to_string(last) + " of " + std::to_string(extent));
  size_t es = 0;
  detail::dispatch(type, "strided_copy", [&](auto tag) { es = sizeof(typename decltype(tag)::type); });
  if (s.rank == 0 || (s.rank == 1 && s.in_stride[0] == 1)) {
    const cudaError_t err =
        cudaMemcpyAsync(y, static_cast<const std::byte*>(x) + offset * static_cast<int64_t>(es),
                        static_cast<size_t>(n) * es, cudaMemcpyDeviceToDevice, stream);
    if (err != cudaSuccess)
      throw std::runtime_error(std::string("strided_copy: copy failed: ") + cudaGetErrorString(err));
    return;
  }
  launch_gather(es, x, y, s, offset, n, extent, stream);
  detail::check_launch("strided_copy");
}

void launch_slice(ElemType type, const void* x, void* y, int rank, const int64_t* in_shape,
                  const int64_t* starts, const int64_t* steps, const int64_t* out_shape,
                  cudaStream_t stream) {
  detail::require(rank >= 0 && rank <= k_max_rank, "slice",
                  "rank " + std::to_string(rank) + " is outside 0.." + std::to_string(k_max_rank));
  int64_t in_strides[k_max_rank] = {};
  int64_t stride = 1;
  for (int d = rank - 1; d >= 0; --d) {
    in_strides[d] = stride;
    stride *= in_shape[d];
  }
  int64_t base = 0, step_strides[k_max_rank] = {};
  for (int d = 0; d < rank; ++d) {
    const int64_t last = starts[d] + (out_shape[d] - 1) * steps[d];
    detail::require(
        steps[d] >= 1 && out_shape[d] >= 0 && starts[d] >= 0 && (out_shape[d] == 0 || last < in_shape[d]),
        "slice",
        "dim " + std::to_string(d) + ": " + std::to_string(out_shape[d]) + " elements from " +
            std::to_string(starts[d]) + " step " + std::to_string(steps[d]) + " do not fit in " +
            std::to_string(in_shape[d]));
    base += starts[d] * in_strides[d];
    step_strides[d] = in_strides[d] * steps[d];
  }
  // A slice is a strided walk from its first element: the same copy.
  launch_strided_copy(type, x, y, rank, out_shape, step_strides, base, stride, stream);
}

}  // namespace kiln::cuda
