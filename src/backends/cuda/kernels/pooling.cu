// Pooling kernels: windowed 2-D max and average pooling over NCHW and over
// channels-last (NHWC) tensors, the row reductions behind GlobalAveragePool,
// GlobalMaxPool and ReduceMean, and the channels-last global pools.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

#include "common.cuh"
#include "kernels.hpp"

namespace kiln::cuda {

namespace {

using detail::Elem;
using detail::global_thread;
using detail::grid_for;
using detail::grid_threads;
using detail::k_block;

// The pooled value of the window at (oh, ow) over one channel whose pixel
// (ih, iw) is xc[(ih * w + iw) * pixel_stride]: 1 for NCHW, C for NHWC.
// Taps outside the input are skipped; for the average they count toward the
// divisor only with count_include_pad. Both layouts visit the taps in this
// one order, so they compute the same value bit for bit.
template <typename T, bool Max>
__device__ __forceinline__ float pool_window(const T* xc, int64_t pixel_stride, const Pool2d& p, int64_t oh,
                                             int64_t ow) {
  const int64_t h0 = oh * p.stride_h - p.pad_top;
  const int64_t w0 = ow * p.stride_w - p.pad_left;
  float acc = Max ? -INFINITY : 0.0f;
  int64_t valid = 0;
  for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
    const int64_t ih = h0 + kh * p.dilation_h;
    if (ih < 0 || ih >= p.h) continue;
    for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
      const int64_t iw = w0 + kw * p.dilation_w;
      if (iw < 0 || iw >= p.w) continue;
      const float v = detail::load(xc, (ih * p.w + iw) * pixel_stride);
      acc = Max ? detail::max_prop(acc, v) : acc + v;
      ++valid;
    }
  }
  if (Max) return valid > 0 ? acc : Elem<T>::lowest;
  // Without ceil_mode every tap of a window lies inside the padded input,
  // so counting the padding means dividing by the window size.
  const int64_t count = p.count_include_pad ? p.kernel_h * p.kernel_w : valid;
  return count > 0 ? acc / static_cast<float>(count) : 0.0f;
}

// One thread per output element.
template <typename T, bool Max>
__global__ void pool2d_kernel(const T* x, T* y, Pool2d p, int64_t total) {
  for (int64_t i = global_thread(); i < total; i += grid_threads()) {
    const int64_t ow = i % p.out_w;
    const int64_t oh = (i / p.out_w) % p.out_h;
    const int64_t plane = i / (p.out_w * p.out_h);  // n * C + c
    detail::store(y, i, pool_window<T, Max>(x + plane * p.h * p.w, 1, p, oh, ow));
  }
}

// The channels-last twin of pool2d_kernel: output element i is (n, oh, ow,
// c) with c innermost, so consecutive threads read consecutive channels of
// one tap.
template <typename T, bool Max>
__global__ void pool2d_nhwc_kernel(const T* x, T* y, Pool2d p, int64_t total) {
  for (int64_t i = global_thread(); i < total; i += grid_threads()) {
    const int64_t c = i % p.c;
    const int64_t ow = (i / p.c) % p.out_w;
    const int64_t oh = (i / (p.c * p.out_w)) % p.out_h;
    const int64_t n = i / (p.c * p.out_w * p.out_h);
    detail::store(y, i, pool_window<T, Max>(x + n * p.h * p.w * p.c + c, p.c, p, oh, ow));
  }
}

// pool2d_nhwc_kernel with one 16-byte vector of channels per thread (C a
// multiple of the vector size, both tensors 16-byte aligned): the same
// arithmetic per channel, so the same bits, with a quarter to an eighth of
// the loads and index arithmetic.
template <typename T, bool Max>
__global__ void pool2d_nhwc_vec_kernel(const T* x, T* y, Pool2d p, int64_t total_vecs) {
  constexpr int V = detail::Vec<T>::size;
  const int64_t vecs_per_pixel = p.c / V;
  for (int64_t i = global_thread(); i < total_vecs; i += grid_threads()) {
    const int64_t c0 = (i % vecs_per_pixel) * V;
    const int64_t ow = (i / vecs_per_pixel) % p.out_w;
    const int64_t oh = (i / (vecs_per_pixel * p.out_w)) % p.out_h;
    const int64_t n = i / (vecs_per_pixel * p.out_w * p.out_h);
    const T* xn = x + n * p.h * p.w * p.c + c0;
    const int64_t h0 = oh * p.stride_h - p.pad_top;
    const int64_t w0 = ow * p.stride_w - p.pad_left;
    float acc[V];
#pragma unroll
    for (int k = 0; k < V; ++k) acc[k] = Max ? -INFINITY : 0.0f;
    int64_t valid = 0;
    for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
      const int64_t ih = h0 + kh * p.dilation_h;
      if (ih < 0 || ih >= p.h) continue;
      for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
        const int64_t iw = w0 + kw * p.dilation_w;
        if (iw < 0 || iw >= p.w) continue;
        const detail::Vec<T> v = *reinterpret_cast<const detail::Vec<T>*>(xn + (ih * p.w + iw) * p.c);
#pragma unroll
        for (int k = 0; k < V; ++k) {
          const float e = Elem<T>::load(v.e[k]);
          acc[k] = Max ? detail::max_prop(acc[k], e) : acc[k] + e;
        }
        ++valid;
      }
    }
    detail::Vec<T> out;
    const int64_t count = p.count_include_pad ? p.kernel_h * p.kernel_w : valid;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      float o;
      if (Max) {
        o = valid > 0 ? acc[k] : Elem<T>::lowest;
      } else {
        o = count > 0 ? acc[k] / static_cast<float>(count) : 0.0f;
      }
      out.e[k] = Elem<T>::store(o);
    }
    reinterpret_cast<detail::Vec<T>*>(y)[i] = out;
  }
}

template <bool Max, bool ChannelsLast = false>
void launch_pool2d(const char* name, ElemType type, const void* x, void* y, const Pool2d& p,
                   cudaStream_t stream) {
  detail::require(p.n >= 0 && p.c >= 0 && p.h >= 0 && p.w >= 0 && p.out_h >= 0 && p.out_w >= 0, name,
                  "negative tensor dimension");
  detail::require(p.kernel_h > 0 && p.kernel_w > 0 && p.stride_h > 0 && p.stride_w > 0 && p.dilation_h > 0 &&
                      p.dilation_w > 0,
                  name, "kernel, stride and dilation must be positive");
  detail::require(p.pad_top >= 0 && p.pad_left >= 0, name, "negative padding");
  const int64_t total = p.n * p.c * p.out_h * p.out_w;
  if (total == 0) return;
  detail::dispatch(type, name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (ChannelsLast) {
      constexpr int V = detail::Vec<T>::size;
      if (p.c % V == 0 && detail::aligned16(x) && detail::aligned16(y)) {
        pool2d_nhwc_vec_kernel<T, Max><<<grid_for(total / V), k_block, 0, stream>>>(
            static_cast<const T*>(x), static_cast<T*>(y), p, total / V);
      } else {
        pool2d_nhwc_kernel<T, Max>
            <<<grid_for(total), k_block, 0, stream>>>(static_cast<const T*>(x), static_cast<T*>(y), p, total);
      }
    } else {
      pool2d_kernel<T, Max>
          <<<grid_for(total), k_block, 0, stream>>>(static_cast<const T*>(x), static_cast<T*>(y), p, total);
    }
  });
  detail::check_launch(name);
}

// Rows up to this length take one warp each; longer rows one block each, so
// a GlobalAveragePool over 7x7 planes does not idle 7/8 of a block.
constexpr int64_t k_warp_row_limit = 1024;

template <typename T, bool Max>
__global__ void reduce_rows_warp_kernel(const T* x, T* y, int64_t rows, int64_t inner) {
  const int lane = threadIdx.x & 31;
  const int64_t warps_per_block = blockDim.x >> 5;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * warps_per_block + (threadIdx.x >> 5);
  const int64_t step = static_cast<int64_t>(gridDim.x) * warps_per_block;
  for (int64_t r = first; r < rows; r += step) {
    const T* row = x + r * inner;
    float acc = Max ? -INFINITY : 0.0f;
    for (int64_t j = lane; j < inner; j += 32) {
      const float v = detail::load(row, j);
      acc = Max ? detail::max_prop(acc, v) : acc + v;
    }
    acc = Max ? detail::warp_max(acc) : detail::warp_sum(acc);
    if (lane == 0) detail::store(y, r, Max ? acc : acc / static_cast<float>(inner));
  }
}

template <typename T, bool Max>
__global__ void reduce_rows_block_kernel(const T* x, T* y, int64_t rows, int64_t inner) {
  __shared__ float scratch[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = x + r * inner;
    float acc = Max ? -INFINITY : 0.0f;
    for (int64_t j = threadIdx.x; j < inner; j += blockDim.x) {
      const float v = detail::load(row, j);
      acc = Max ? detail::max_prop(acc, v) : acc + v;
    }
    acc = detail::block_reduce<Max>(acc, scratch);
    if (threadIdx.x == 0) detail::store(y, r, Max ? acc : acc / static_cast<float>(inner));
  }
}

// Channels-last global pooling: a block is 32 channels (threadIdx.x, so a
// warp reads 32 consecutive channels of one position) by k_nhwc_rows
// positions (threadIdx.y, each summing every k_nhwc_rows-th position); the
// rows are then combined through shared memory.
constexpr int k_nhwc_rows = 8;

template <typename T, bool Max>
__global__ void reduce_nhwc_kernel(const T* x, T* y, int64_t outer, int64_t inner, int64_t channels) {
  __shared__ float partial[k_nhwc_rows][33];
  const int64_t channel_tiles = (channels + 31) / 32;
  const int64_t tiles = outer * channel_tiles;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t b = t / channel_tiles;
    const int64_t c = (t % channel_tiles) * 32 + threadIdx.x;
    float acc = Max ? -INFINITY : 0.0f;
    if (c < channels) {
      const T* xb = x + b * inner * channels + c;
      for (int64_t j = threadIdx.y; j < inner; j += k_nhwc_rows) {
        const float v = detail::load(xb, j * channels);
        acc = Max ? detail::max_prop(acc, v) : acc + v;
      }
    }
    __syncthreads();  // the previous tile's readers are done
    partial[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < channels) {
      for (int r = 1; r < k_nhwc_rows; ++r) {
        const float v = partial[r][threadIdx.x];
        acc = Max ? detail::max_prop(acc, v) : acc + v;
      }
      detail::store(y, b * channels + c, Max ? acc : acc / static_cast<float>(inner));
    }
  }
}

}  // namespace

void launch_max_pool2d_nhwc(ElemType type, const void* x, void* y, const Pool2d& p, cudaStream_t stream) {
  launch_pool2d<true, true>("max_pool2d_nhwc", type, x, y, p, stream);
}

void launch_avg_pool2d_nhwc(ElemType type, const void* x, void* y, const Pool2d& p, cudaStream_t stream) {
  launch_pool2d<false, true>("avg_pool2d_nhwc", type, x, y, p, stream);
}

void launch_reduce_nhwc(ElemType type, bool max, const void* x, void* y, int64_t outer, int64_t inner,
                        int64_t channels, cudaStream_t stream) {
  detail::require(outer >= 0 && inner >= 0 && channels >= 0, "reduce_nhwc",
                  "negative shape [" + std::to_string(outer) + ", " + std::to_string(inner) + ", " +
                      std::to_string(channels) + "]");
  // As reduce_rows: an empty window still has an output (-inf, or NaN).
  if (outer == 0 || channels == 0) return;
  detail::dispatch(type, "reduce_nhwc", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const auto* px = static_cast<const T*>(x);
    auto* py = static_cast<T*>(y);
    const dim3 block(32, k_nhwc_rows);
    const unsigned grid = grid_for(outer * ((channels + 31) / 32), 1);
    if (max) {
      reduce_nhwc_kernel<T, true><<<grid, block, 0, stream>>>(px, py, outer, inner, channels);
    } else {
      reduce_nhwc_kernel<T, false><<<grid, block, 0, stream>>>(px, py, outer, inner, channels);
    }
  });
  detail::check_launch("reduce_nhwc");
}

void launch_max_pool2d(ElemType type, const void* x, void* y, const Pool2d& p, cudaStream_t stream) {
  launch_pool2d<true>("max_pool2d", type, x, y, p, stream);
}

void launch_avg_pool2d(ElemType type, const void* x, void* y, const Pool2d& p, cudaStream_t stream) {
  launch_pool2d<false>("avg_pool2d", type, x, y, p, stream);
}

void launch_reduce_rows(ElemType type, bool max, const void* x, void* y, int64_t rows, int64_t inner,
                        cudaStream_t stream) {
  detail::require(rows >= 0 && inner >= 0, "reduce_rows",
                  "negative shape [" + std::to_string(rows) + ", " + std::to_string(inner) + "]");
  // Rows of no elements still have an output: the max of nothing is -inf
  // (ONNX's ReduceMax over an empty set) and the mean 0 / 0, NaN.
  if (rows == 0) return;
  detail::dispatch(type, "reduce_rows", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const auto* px = static_cast<const T*>(x);
    auto* py = static_cast<T*>(y);
    if (inner <= k_warp_row_limit) {
      const int64_t rows_per_block = k_block / 32;
      const unsigned grid = grid_for(rows, static_cast<int>(rows_per_block));
      if (max) {
        reduce_rows_warp_kernel<T, true><<<grid, k_block, 0, stream>>>(px, py, rows, inner);
      } else {
        reduce_rows_warp_kernel<T, false><<<grid, k_block, 0, stream>>>(px, py, rows, inner);
      }
    } else {
      const unsigned grid = grid_for(rows, 1);
      if (max) {
        reduce_rows_block_kernel<T, true><<<grid, k_block, 0, stream>>>(px, py, rows, inner);
      } else {
        reduce_rows_block_kernel<T, false><<<grid, k_block, 0, stream>>>(px, py, rows, inner);
      }
    }
  });
  detail::check_launch("reduce_rows");
}

}  // namespace kiln::cuda
