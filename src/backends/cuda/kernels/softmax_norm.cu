// Row kernels over the last axis of [rows, cols]: Softmax, LogSoftmax and
// LayerNormalization. A row of up to k_warp_row_limit columns takes one warp
// (eight rows per block); a longer row takes a whole block. Statistics are
// fp32 whatever the storage type.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

#include "common.cuh"
#include "kernels.hpp"

namespace kiln::cuda {

namespace {

using detail::grid_for;
using detail::k_block;

constexpr int64_t k_warp_row_limit = 1024;
constexpr int k_row_block = 512;  // threads of a block that owns one long row

// Online softmax state: the running max m and the sum s of exp(x - m), so
// a row is read once for its statistics. -inf inputs are skipped (they add
// exp(-inf) = 0), which also keeps exp(-inf - -inf) = NaN out of s; a row of
// only -inf then ends with s = 0 and gives NaN, as PyTorch does. A NaN input
// makes s NaN and so the whole row NaN.
struct MaxSum {
  float m = -INFINITY;
  float s = 0.0f;
};

__device__ __forceinline__ void add(MaxSum& st, float v) {
  if (v == -INFINITY) return;
  if (v > st.m) {
    st.s = st.s * expf(st.m - v) + 1.0f;
    st.m = v;
  } else {
    st.s += expf(v - st.m);  // NaN v makes s NaN
  }
}

__device__ __forceinline__ MaxSum merge(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.m, b.m);  // neither m is ever NaN
  MaxSum r;
  r.m = m;
  r.s = a.s * (a.m == m ? 1.0f : expf(a.m - m)) + b.s * (b.m == m ? 1.0f : expf(b.m - m));
  return r;
}

__device__ __forceinline__ MaxSum warp_merge(MaxSum st) {
  for (int o = 16; o > 0; o >>= 1) {
    MaxSum other;
    other.m = __shfl_xor_sync(0xffffffffu, st.m, o);
    other.s = __shfl_xor_sync(0xffffffffu, st.s, o);
    st = merge(st, other);
  }
  return st;
}

template <typename T>
__device__ __forceinline__ void softmax_write(const T* row, T* out, int64_t cols, int64_t first, int64_t step,
                                              MaxSum st, bool log) {
  if (log) {
    const float shift = st.m + logf(st.s);
    for (int64_t j = first; j < cols; j += step) detail::store(out, j, detail::load(row, j) - shift);
  } else {
    const float inv = 1.0f / st.s;
    for (int64_t j = first; j < cols; j += step)
      detail::store(out, j, expf(detail::load(row, j) - st.m) * inv);
  }
}

template <typename T>
__global__ void softmax_warp_kernel(const T* x, T* y, int64_t rows, int64_t cols, bool log) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = blockDim.x >> 5;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * warps + (threadIdx.x >> 5); r < rows;
       r += static_cast<int64_t>(gridDim.x) * warps) {
    const T* row = x + r * cols;
    MaxSum st;
    for (int64_t j = lane; j < cols; j += 32) add(st, detail::load(row, j));
    st = warp_merge(st);
    softmax_write(row, y + r * cols, cols, lane, 32, st, log);
  }
}

// A row of at most 32 * kVec * kIters columns held in registers: each lane
// loads its kIters chunks of kVec neighbouring elements once (one vector load
// per chunk), and the row is never read again. Two reductions over the
// registers (max, then the sum of exp(x - max)); a NaN anywhere makes the sum
// NaN and so the row, and a row of only -inf gives exp(NaN) = NaN, as the
// online kernels above do. Columns past the row's end are -inf, which add 0.
template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) Chunk {
  T e[kVec];
};

template <typename T, int kVec, int kIters>
__global__ void softmax_regs_kernel(const T* x, T* y, int64_t rows, int cols, bool log) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = blockDim.x >> 5;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * warps + (threadIdx.x >> 5); r < rows;
       r += static_cast<int64_t>(gridDim.x) * warps) {
    const T* row = x + r * cols;
    T* out = y + r * cols;
    float v[kIters][kVec];
#pragma unroll
    for (int i = 0; i < kIters; ++i) {
      const int j = (i * 32 + lane) * kVec;
      if (j < cols) {
        const Chunk<T, kVec> c = *reinterpret_cast<const Chunk<T, kVec>*>(row + j);
#pragma unroll
        for (int k = 0; k < kVec; ++k) v[i][k] = detail::Elem<T>::load(c.e[k]);
      } else {
#pragma unroll
        for (int k = 0; k < kVec; ++k) v[i][k] = -INFINITY;
      }
    }
    float m = -INFINITY;
#pragma unroll
    for (int i = 0; i < kIters; ++i) {
#pragma unroll
      for (int k = 0; k < kVec; ++k) m = fmaxf(m, v[i][k]);
    }
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < kIters; ++i) {
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        const float e = expf(v[i][k] - m);
        s += e;
        if (!log) v[i][k] = e;
      }
    }
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    const float shift = m + logf(s), inv = 1.0f / s;
#pragma unroll
    for (int i = 0; i < kIters; ++i) {
      const int j = (i * 32 + lane) * kVec;
      if (j >= cols) continue;
      Chunk<T, kVec> c;
#pragma unroll
      for (int k = 0; k < kVec; ++k) c.e[k] = detail::Elem<T>::store(log ? v[i][k] - shift : v[i][k] * inv);
      *reinterpret_cast<Chunk<T, kVec>*>(out + j) = c;
    }
  }
}

template <typename T, int kVec, int kIters>
void launch_softmax_regs(const T* x, T* y, int64_t rows, int64_t cols, bool log, cudaStream_t stream) {
  softmax_regs_kernel<T, kVec, kIters>
      <<<grid_for(rows, k_block / 32), k_block, 0, stream>>>(x, y, rows, static_cast<int>(cols), log);
}

// The register kernel for rows of up to 32 * 32 elements: kVec the widest
// chunk (at most 16 bytes, at most a 32nd of the row) that divides the row
// and to which both tensors are aligned; kIters the power of two of chunks
// per lane that covers the row. False when no instance fits.
template <typename T, int kVec>
bool softmax_regs_with(const T* x, T* y, int64_t rows, int64_t cols, bool log, cudaStream_t stream) {
  const int64_t chunks = (cols + 32 * kVec - 1) / (32 * kVec);
  if constexpr (kVec * 1 <= 32) {
    if (chunks <= 1) {
      launch_softmax_regs<T, kVec, 1>(x, y, rows, cols, log, stream);
      return true;
    }
  }
  if constexpr (kVec * 2 <= 32) {
    if (chunks <= 2) {
      launch_softmax_regs<T, kVec, 2>(x, y, rows, cols, log, stream);
      return true;
    }
  }
  if constexpr (kVec * 4 <= 32) {
    if (chunks <= 4) {
      launch_softmax_regs<T, kVec, 4>(x, y, rows, cols, log, stream);
      return true;
    }
  }
  if constexpr (kVec * 8 <= 32) {
    if (chunks <= 8) {
      launch_softmax_regs<T, kVec, 8>(x, y, rows, cols, log, stream);
      return true;
    }
  }
  if constexpr (kVec * 16 <= 32) {
    if (chunks <= 16) {
      launch_softmax_regs<T, kVec, 16>(x, y, rows, cols, log, stream);
      return true;
    }
  }
  if constexpr (kVec * 32 <= 32) {
    if (chunks <= 32) {
      launch_softmax_regs<T, kVec, 32>(x, y, rows, cols, log, stream);
      return true;
    }
  }
  return false;
}

template <typename T>
bool softmax_in_registers(const T* x, T* y, int64_t rows, int64_t cols, bool log, cudaStream_t stream) {
  if (cols > 32 * 32) return false;
  auto fits = [&](int vec) {
    const auto bytes = static_cast<uintptr_t>(vec) * sizeof(T);
    return vec * sizeof(T) <= 16 && cols % vec == 0 && cols >= 32 * vec &&
           reinterpret_cast<uintptr_t>(x) % bytes == 0 && reinterpret_cast<uintptr_t>(y) % bytes == 0;
  };
  if (fits(8)) return softmax_regs_with<T, 8>(x, y, rows, cols, log, stream);
  if (fits(4)) return softmax_regs_with<T, 4>(x, y, rows, cols, log, stream);
  if (fits(2)) return softmax_regs_with<T, 2>(x, y, rows, cols, log, stream);
  return softmax_regs_with<T, 1>(x, y, rows, cols, log, stream);
}

template <typename T>
__global__ void softmax_block_kernel(const T* x, T* y, int64_t rows, int64_t cols, bool log) {
  __shared__ float scratch_m[32];
  __shared__ float scratch_s[32];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = x + r * cols;
    MaxSum st;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) add(st, detail::load(row, j));
    st = warp_merge(st);
    __syncthreads();  // the previous row's readers are done with scratch
    if (lane == 0) {
      scratch_m[warp] = st.m;
      scratch_s[warp] = st.s;
    }
    __syncthreads();
    MaxSum part;
    if (lane < warps) {
      part.m = scratch_m[lane];
      part.s = scratch_s[lane];
    }
    st = warp_merge(part);
    softmax_write(row, y + r * cols, cols, threadIdx.x, blockDim.x, st, log);
  }
}

// LayerNorm in two passes over the row (mean, then the mean of squared
// deviations), which stays accurate when |mean| >> stddev, unlike E[x^2] -
// E[x]^2. The mean sums x - x[0], so an offset row (all near 1000, say)
// does not lose its low bits in a large fp32 sum.
template <typename T>
__device__ __forceinline__ void layer_norm_write(const T* row, T* out, const T* gamma, const T* beta,
                                                 int64_t cols, int64_t first, int64_t step, float mean,
                                                 float rstd) {
  for (int64_t j = first; j < cols; j += step) {
    float v = (detail::load(row, j) - mean) * rstd * detail::load(gamma, j);
    if (beta != nullptr) v += detail::load(beta, j);
    detail::store(out, j, v);
  }
}

template <typename T>
__global__ void layer_norm_warp_kernel(const T* x, const T* gamma, const T* beta, T* y, int64_t rows,
                                       int64_t cols, float epsilon) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = blockDim.x >> 5;
  const float inv_cols = 1.0f / static_cast<float>(cols);
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * warps + (threadIdx.x >> 5); r < rows;
       r += static_cast<int64_t>(gridDim.x) * warps) {
    const T* row = x + r * cols;
    const float shift = detail::load(row, 0);
    float sum = 0.0f;
    for (int64_t j = lane; j < cols; j += 32) sum += detail::load(row, j) - shift;
    const float mean = shift + detail::warp_sum(sum) * inv_cols;
    float sq = 0.0f;
    for (int64_t j = lane; j < cols; j += 32) {
      const float d = detail::load(row, j) - mean;
      sq += d * d;
    }
    const float var = detail::warp_sum(sq) * inv_cols;
    layer_norm_write(row, y + r * cols, gamma, beta, cols, lane, 32, mean, 1.0f / sqrtf(var + epsilon));
  }
}

template <typename T>
__global__ void layer_norm_block_kernel(const T* x, const T* gamma, const T* beta, T* y, int64_t rows,
                                        int64_t cols, float epsilon) {
  __shared__ float scratch[32];
  const float inv_cols = 1.0f / static_cast<float>(cols);
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = x + r * cols;
    const float shift = detail::load(row, 0);
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) sum += detail::load(row, j) - shift;
    const float mean = shift + detail::block_reduce<false>(sum, scratch) * inv_cols;
    float sq = 0.0f;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      const float d = detail::load(row, j) - mean;
      sq += d * d;
    }
    const float var = detail::block_reduce<false>(sq, scratch) * inv_cols;
    layer_norm_write(row, y + r * cols, gamma, beta, cols, threadIdx.x, blockDim.x, mean,
                     1.0f / sqrtf(var + epsilon));
  }
}

void check_rows(const char* name, int64_t rows, int64_t cols) {
  detail::require(rows >= 0 && cols >= 0, name,
                  "negative shape [" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
}

}  // namespace

void launch_softmax(ElemType type, bool log, const void* x, void* y, int64_t rows, int64_t cols,
                    cudaStream_t stream) {
  check_rows("softmax", rows, cols);
  if (rows == 0 || cols == 0) return;
  detail::dispatch(type, "softmax", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const auto* px = static_cast<const T*>(x);
    auto* py = static_cast<T*>(y);
    if (softmax_in_registers(px, py, rows, cols, log, stream)) {
      // a row of up to 1024 columns, read once
    } else if (cols <= k_warp_row_limit) {
      softmax_warp_kernel<T><<<grid_for(rows, k_block / 32), k_block, 0, stream>>>(px, py, rows, cols, log);
    } else {
      softmax_block_kernel<T><<<grid_for(rows, 1), k_row_block, 0, stream>>>(px, py, rows, cols, log);
    }
  });
  detail::check_launch("softmax");
}

void launch_layer_norm(ElemType type, const void* x, const void* gamma, const void* beta, void* y,
                       int64_t rows, int64_t cols, float epsilon, cudaStream_t stream) {
  check_rows("layer_norm", rows, cols);
  if (rows == 0 || cols == 0) return;
  detail::require(gamma != nullptr, "layer_norm", "no scale (gamma)");
  detail::dispatch(type, "layer_norm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const auto* px = static_cast<const T*>(x);
    const auto* pg = static_cast<const T*>(gamma);
    const auto* pb = static_cast<const T*>(beta);
    auto* py = static_cast<T*>(y);
    if (cols <= k_warp_row_limit) {
      layer_norm_warp_kernel<T>
          <<<grid_for(rows, k_block / 32), k_block, 0, stream>>>(px, pg, pb, py, rows, cols, epsilon);
    } else {
      layer_norm_block_kernel<T>
          <<<grid_for(rows, 1), k_row_block, 0, stream>>>(px, pg, pb, py, rows, cols, epsilon);
    }
  });
  detail::check_launch("layer_norm");
}

}  // namespace kiln::cuda
