// Device helpers shared by kiln's CUDA kernels: element-type traits (every
// kernel computes in fp32 and converts at load and store), the host-side
// dispatch from ElemType to a C++ type, the launch check every launcher ends
// with, grid sizing for grid-stride loops, and warp/block reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels.hpp"

namespace kiln::cuda::detail {

// fp32 is the arithmetic type of every kernel; T is only the storage type.
template <typename T>
struct Elem;

template <>
struct Elem<float> {
  __device__ __forceinline__ static float load(float v) { return v; }
  __device__ __forceinline__ static float store(float v) { return v; }
  // The most negative finite value: what a max over an empty window gives,
  // as in the reference MaxPool.
  static constexpr float lowest = -3.40282347e38f;
};

template <>
struct Elem<__half> {
  __device__ __forceinline__ static float load(__half v) { return __half2float(v); }
  __device__ __forceinline__ static __half store(float v) { return __float2half_rn(v); }
  static constexpr float lowest = -65504.0f;
};

template <>
struct Elem<__nv_bfloat16> {
  __device__ __forceinline__ static float load(__nv_bfloat16 v) { return __bfloat162float(v); }
  __device__ __forceinline__ static __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
  static constexpr float lowest = -3.38953139e38f;  // 0xff7f
};

template <typename T>
__device__ __forceinline__ float load(const T* p, int64_t i) {
  return Elem<T>::load(p[i]);
}
template <typename T>
__device__ __forceinline__ void store(T* p, int64_t i, float v) {
  p[i] = Elem<T>::store(v);
}

// 16 bytes of elements (4 floats, 8 halves), the widest load one thread
// issues: memory-bound kernels move a vector per thread per iteration where
// every pointer is 16-byte aligned.
template <typename T>
struct alignas(16) Vec {
  static constexpr int size = 16 / sizeof(T);
  T e[size];
};

inline bool aligned16(const void* p) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Calls f(std::type_identity<T>{}) with the storage type of `type`.
template <typename F>
void dispatch(ElemType type, const char* kernel, F&& f) {
  switch (type) {
    case ElemType::f32:
      f(std::type_identity<float>{});
      return;
    case ElemType::f16:
      f(std::type_identity<__half>{});
      return;
    case ElemType::bf16:
      f(std::type_identity<__nv_bfloat16>{});
      return;
  }
  throw std::runtime_error(std::string(kernel) + ": unknown element type " +
                           std::to_string(static_cast<int>(type)));
}

// Launches are asynchronous; a bad configuration (grid, shared memory) is
// only visible through cudaGetLastError, so every launcher checks it at once
// and names itself, rather than leaving the error to a later unrelated call.
inline void check_launch(const char* kernel) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string(kernel) + ": launch failed: " + cudaGetErrorString(err));
  }
}

inline void require(bool ok, const char* kernel, const std::string& what) {
  if (!ok) throw std::runtime_error(std::string(kernel) + ": " + what);
}

constexpr int k_block = 256;
// Grid-stride loops cover any n, so the grid stops growing once it can fill
// the GPU several times over (132 SMs x 2048 threads on an H100 is ~1k blocks).
constexpr int64_t k_max_blocks = 8192;

inline unsigned grid_for(int64_t n, int block = k_block) {
  const int64_t blocks = (n + block - 1) / block;
  return static_cast<unsigned>(blocks < k_max_blocks ? blocks : k_max_blocks);
}

__device__ __forceinline__ int64_t global_thread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_threads() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// NaN-propagating max and min (numpy's maximum/minimum, torch.amax): fmaxf
// would drop the NaN.
__device__ __forceinline__ float max_nan(float a, float b) { return (a > b || a != a) ? a : b; }
__device__ __forceinline__ float min_nan(float a, float b) { return (a < b || a != a) ? a : b; }
// Keeps a NaN from either side; otherwise the larger.
__device__ __forceinline__ float max_prop(float a, float b) { return (b != b) ? b : max_nan(a, b); }
__device__ __forceinline__ float min_prop(float a, float b) { return (b != b) ? b : min_nan(a, b); }

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = max_prop(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Reduces over the whole block and returns the result to every thread.
// `scratch` holds 32 floats; blockDim.x is a multiple of 32. The leading
// __syncthreads lets one scratch array serve consecutive reductions.
template <bool Max>
__device__ float block_reduce(float v, float* scratch) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  v = Max ? warp_max(v) : warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : (Max ? -INFINITY : 0.0f);
  return Max ? warp_max(v) : warp_sum(v);
}

// The activations of kernels.hpp in fp32, as ONNX defines them. NaN stays
// NaN through every one (relu, clip and hardsigmoid included), as in
// PyTorch and kiln's reference kernels.
__device__ __forceinline__ float apply_act(const ActParams& a, float x) {
  switch (a.kind) {
    case Act::none:
      return x;
    case Act::relu:
      return x < 0.0f ? 0.0f : x;
    case Act::sigmoid:
      return 1.0f / (1.0f + expf(-x));
    case Act::tanh:
      return tanhf(x);
    case Act::gelu_erf:
      return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case Act::gelu_tanh: {
      const float k = 0.79788456080286536f;  // sqrt(2 / pi)
      return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
    }
    case Act::silu:
      return x / (1.0f + expf(-x));
    case Act::hardswish:
      return x * fmaxf(0.0f, fminf(1.0f, x / 6.0f + 0.5f));
    case Act::hardsigmoid:
      return x != x ? x : fmaxf(0.0f, fminf(1.0f, a.alpha * x + a.beta));
    case Act::leaky_relu:
      return x < 0.0f ? a.alpha * x : x;
    case Act::clip:
      return x < a.alpha ? a.alpha : (x > a.beta ? a.beta : x);
    case Act::elu:
      return x < 0.0f ? a.alpha * expm1f(x) : x;
    case Act::softplus:
      // log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)): exp never overflows.
      return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x)));
    case Act::abs:
      return fabsf(x);
    case Act::neg:
      return -x;
    case Act::exp:
      return expf(x);
    case Act::log:
      return logf(x);
    case Act::sqrt:
      return sqrtf(x);
    case Act::reciprocal:
      return 1.0f / x;
    case Act::erf:
      return erff(x);
  }
  return x;
}

// Host-side check that `act` names an activation this file knows, so a
// corrupt plan fails at launch instead of silently computing the identity.
inline void check_act(ActParams act, const char* kernel) {
  require(static_cast<uint8_t>(act.kind) <= static_cast<uint8_t>(Act::erf), kernel,
          "unknown activation " + std::to_string(static_cast<int>(act.kind)));
}

}  // namespace kiln::cuda::detail
