// Elementwise kernels: activations, broadcast binary arithmetic with a fused
// activation, the bias/residual/activation epilogue of a conv, and casts.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

#include "common.cuh"
#include "kernels.hpp"

namespace kiln::cuda {

namespace {

using detail::aligned16;
using detail::Elem;
using detail::global_thread;
using detail::grid_for;
using detail::grid_threads;
using detail::k_block;
using detail::Vec;

template <typename T>
__global__ void unary_kernel(ActParams act, const T* x, T* y, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    detail::store(y, i, detail::apply_act(act, detail::load(x, i)));
  }
}

// x and y 16-byte aligned: one vector per thread per iteration, then the
// n % V tail elements by the first threads.
template <typename T>
__global__ void unary_vec_kernel(ActParams act, const T* x, T* y, int64_t n) {
  constexpr int V = Vec<T>::size;
  const int64_t nv = n / V;
  const auto* xv = reinterpret_cast<const Vec<T>*>(x);
  auto* yv = reinterpret_cast<Vec<T>*>(y);
  for (int64_t i = global_thread(); i < nv; i += grid_threads()) {
    Vec<T> v = xv[i];
#pragma unroll
    for (int k = 0; k < V; ++k) v.e[k] = Elem<T>::store(detail::apply_act(act, Elem<T>::load(v.e[k])));
    yv[i] = v;
  }
  const int64_t t = nv * V + global_thread();
  if (t < n) detail::store(y, t, detail::apply_act(act, detail::load(x, t)));
}

// The broadcast shape after dropping size-1 dimensions and merging
// neighbours that both inputs walk contiguously (or both broadcast), so the
// common same-shape and scalar cases become rank 1 and need no index
// division. Rank is at least 1.
struct Collapsed {
  int rank = 1;
  int64_t out[k_max_rank] = {1};
  int64_t a[k_max_rank] = {0};
  int64_t b[k_max_rank] = {0};
};

Collapsed collapse(const BroadcastShape& s, int64_t& n) {
  detail::require(s.rank >= 0 && s.rank <= k_max_rank, "binary",
                  "rank " + std::to_string(s.rank) + " is outside 0.." + std::to_string(k_max_rank));
  Collapsed c;
  c.rank = 0;
  n = 1;
  for (int d = 0; d < s.rank; ++d) {
    const int64_t size = s.out[static_cast<size_t>(d)];
    detail::require(size >= 0, "binary", "negative output dimension " + std::to_string(size));
    n *= size;
    if (size == 1) continue;
    const int64_t sa = s.a_strides[static_cast<size_t>(d)];
    const int64_t sb = s.b_strides[static_cast<size_t>(d)];
    if (c.rank > 0) {
      const int p = c.rank - 1;
      if (c.a[p] == sa * size && c.b[p] == sb * size) {
        c.out[p] *= size;
        c.a[p] = sa;
        c.b[p] = sb;
        continue;
      }
    }
    c.out[c.rank] = size;
    c.a[c.rank] = sa;
    c.b[c.rank] = sb;
    ++c.rank;
  }
  if (c.rank == 0) {  // a scalar result: one element at offset 0 of both
    c.rank = 1;
    c.out[0] = 1;
    c.a[0] = 0;
    c.b[0] = 0;
  }
  return c;
}

__device__ __forceinline__ float binary_op(BinaryOp op, float a, float b) {
  switch (op) {
    case BinaryOp::add:
      return a + b;
    case BinaryOp::sub:
      return a - b;
    case BinaryOp::mul:
      return a * b;
    case BinaryOp::div:
      return a / b;
    case BinaryOp::max:  // a NaN on either side wins, as numpy's maximum
      return (a != a || b != b) ? a + b : fmaxf(a, b);
    case BinaryOp::min:
      return (a != a || b != b) ? a + b : fminf(a, b);
    case BinaryOp::pow:
      return powf(a, b);
  }
  return a;
}

// Rank 1 (after collapse) needs no division: offsets are i times a stride.
template <typename T, bool Flat>
__global__ void binary_kernel(BinaryOp op, ActParams act, const T* a, const T* b, T* y, Collapsed s,
                              int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    int64_t oa = 0, ob = 0;
    if constexpr (Flat) {
      oa = i * s.a[0];
      ob = i * s.b[0];
    } else {
      int64_t rem = i;
      for (int d = s.rank - 1; d >= 0; --d) {
        const int64_t coord = rem % s.out[d];
        rem /= s.out[d];
        oa += coord * s.a[d];
        ob += coord * s.b[d];
      }
    }
    detail::store(y, i, detail::apply_act(act, binary_op(op, detail::load(a, oa), detail::load(b, ob))));
  }
}

// The same-shape and scalar-operand cases (rank 1 after collapse, strides
// 1 or 0) with 16-byte aligned pointers: vectors of the stride-1 operands.
template <typename T>
__device__ __forceinline__ void load_vec(const T* p, bool scalar, int64_t i, float (&out)[Vec<T>::size]) {
  if (scalar) {
    const float v = detail::load(p, 0);
#pragma unroll
    for (int k = 0; k < Vec<T>::size; ++k) out[k] = v;
  } else {
    const Vec<T> v = reinterpret_cast<const Vec<T>*>(p)[i];
#pragma unroll
    for (int k = 0; k < Vec<T>::size; ++k) out[k] = Elem<T>::load(v.e[k]);
  }
}

template <typename T>
__global__ void binary_vec_kernel(BinaryOp op, ActParams act, const T* a, const T* b, T* y, bool a_scalar,
                                  bool b_scalar, int64_t n) {
  constexpr int V = Vec<T>::size;
  const int64_t nv = n / V;
  for (int64_t i = global_thread(); i < nv; i += grid_threads()) {
    float fa[V], fb[V];
    load_vec(a, a_scalar, i, fa);
    load_vec(b, b_scalar, i, fb);
    Vec<T> out;
#pragma unroll
    for (int k = 0; k < V; ++k)
      out.e[k] = Elem<T>::store(detail::apply_act(act, binary_op(op, fa[k], fb[k])));
    reinterpret_cast<Vec<T>*>(y)[i] = out;
  }
  const int64_t t = nv * V + global_thread();
  if (t < n) {
    const float va = detail::load(a, a_scalar ? 0 : t), vb = detail::load(b, b_scalar ? 0 : t);
    detail::store(y, t, detail::apply_act(act, binary_op(op, va, vb)));
  }
}

template <typename T>
__global__ void bias_act_kernel(const T* x, const T* bias, const T* residual, T* y, int64_t n,
                                int64_t channels, int64_t inner, ActParams act) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    float v = detail::load(x, i);
    if (bias != nullptr) v += detail::load(bias, (i / inner) % channels);
    if (residual != nullptr) v += detail::load(residual, i);
    detail::store(y, i, detail::apply_act(act, v));
  }
}

// The end of both vector epilogues: vector i of the residual (if any) added
// to v, the activation applied, and the result stored as vector i of y.
template <typename T>
__device__ __forceinline__ void residual_act_store(float (&v)[Vec<T>::size], const T* residual, int64_t i,
                                                   ActParams act, T* y) {
  constexpr int V = Vec<T>::size;
  if (residual != nullptr) {
    float r[V];
    load_vec(residual, false, i, r);
#pragma unroll
    for (int k = 0; k < V; ++k) v[k] += r[k];
  }
  Vec<T> out;
#pragma unroll
  for (int k = 0; k < V; ++k) out.e[k] = Elem<T>::store(detail::apply_act(act, v[k]));
  reinterpret_cast<Vec<T>*>(y)[i] = out;
}

// inner a multiple of the vector size and aligned pointers: a vector never
// straddles two channels, so it takes one bias value.
template <typename T>
__global__ void bias_act_vec_kernel(const T* x, const T* bias, const T* residual, T* y, int64_t n,
                                    int64_t channels, int64_t inner, ActParams act) {
  constexpr int V = Vec<T>::size;
  const int64_t nv = n / V;
  for (int64_t i = global_thread(); i < nv; i += grid_threads()) {
    float v[V];
    load_vec(x, false, i, v);
    if (bias != nullptr) {
      const float bv = detail::load(bias, (i * V / inner) % channels);
#pragma unroll
      for (int k = 0; k < V; ++k) v[k] += bv;
    }
    residual_act_store(v, residual, i, act, y);
  }
}

// inner == 1 (channels-last activations, a matmul's rows of N) with whole
// vectors of channels: a vector is V consecutive channels of one pixel, its
// bias V consecutive values. Without this, a channels-last epilogue went
// element by element, with a 64-bit division per element: on ResNet-50 at
// batch 100 in fp16 it took half of the engine's time.
template <typename T>
__global__ void bias_act_channels_vec_kernel(const T* x, const T* bias, const T* residual, T* y, int64_t n,
                                             int64_t channels, ActParams act) {
  constexpr int V = Vec<T>::size;
  const int64_t nv = n / V, channel_vectors = channels / V;
  for (int64_t i = global_thread(); i < nv; i += grid_threads()) {
    float v[V];
    load_vec(x, false, i, v);
    if (bias != nullptr) {
      float b[V];
      load_vec(bias, false, i % channel_vectors, b);
#pragma unroll
      for (int k = 0; k < V; ++k) v[k] += b[k];
    }
    residual_act_store(v, residual, i, act, y);
  }
}

template <typename From, typename To>
__global__ void cast_kernel(const From* x, To* y, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    y[i] = Elem<To>::store(Elem<From>::load(x[i]));
  }
}

size_t elem_size(ElemType t) { return t == ElemType::f32 ? 4 : 2; }

}  // namespace

void launch_unary(ActParams act, ElemType type, const void* x, void* y, int64_t n, cudaStream_t stream) {
  detail::require(n >= 0, "unary", "negative element count " + std::to_string(n));
  detail::check_act(act, "unary");
  if (n == 0) return;
  detail::dispatch(type, "unary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const auto* px = static_cast<const T*>(x);
    auto* py = static_cast<T*>(y);
    if (aligned16(x) && aligned16(y)) {
      const int64_t vectors = n / Vec<T>::size;
      unary_vec_kernel<T><<<grid_for(vectors > 0 ? vectors : 1), k_block, 0, stream>>>(act, px, py, n);
    } else {
      unary_kernel<T><<<grid_for(n), k_block, 0, stream>>>(act, px, py, n);
    }
  });
  detail::check_launch("unary");
}

void launch_binary(BinaryOp op, ActParams act, ElemType type, const void* a, const void* b, void* y,
                   const BroadcastShape& shape, cudaStream_t stream) {
  detail::require(static_cast<uint8_t>(op) <= static_cast<uint8_t>(BinaryOp::pow), "binary",
                  "unknown operator " + std::to_string(static_cast<int>(op)));
  detail::check_act(act, "binary");
  int64_t n = 0;
  const Collapsed s = collapse(shape, n);
  if (n == 0) return;
  detail::dispatch(type, "binary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const auto* pa = static_cast<const T*>(a);
    const auto* pb = static_cast<const T*>(b);
    auto* py = static_cast<T*>(y);
    const bool a_scalar = s.a[0] == 0, b_scalar = s.b[0] == 0;
    const bool vector = s.rank == 1 && (a_scalar || s.a[0] == 1) && (b_scalar || s.b[0] == 1) &&
                        (a_scalar || aligned16(a)) && (b_scalar || aligned16(b)) && aligned16(y);
    if (vector) {
      const int64_t vectors = n / Vec<T>::size;
      binary_vec_kernel<T><<<grid_for(vectors > 0 ? vectors : 1), k_block, 0, stream>>>(
          op, act, pa, pb, py, a_scalar, b_scalar, n);
    } else if (s.rank == 1) {
      binary_kernel<T, true><<<grid_for(n), k_block, 0, stream>>>(op, act, pa, pb, py, s, n);
    } else {
      binary_kernel<T, false><<<grid_for(n), k_block, 0, stream>>>(op, act, pa, pb, py, s, n);
    }
  });
  detail::check_launch("binary");
}

void launch_bias_act(ElemType type, const void* x, const void* bias, const void* residual, void* y,
                     int64_t outer, int64_t channels, int64_t inner, ActParams act, cudaStream_t stream) {
  detail::require(outer >= 0 && channels >= 0 && inner >= 0, "bias_act",
                  "negative shape [" + std::to_string(outer) + ", " + std::to_string(channels) + ", " +
                      std::to_string(inner) + "]");
  detail::check_act(act, "bias_act");
  const int64_t n = outer * channels * inner;
  if (n == 0) return;
  detail::dispatch(type, "bias_act", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const auto* px = static_cast<const T*>(x);
    const auto* pb = static_cast<const T*>(bias);
    const auto* pr = static_cast<const T*>(residual);
    auto* py = static_cast<T*>(y);
    const bool aligned = aligned16(x) && aligned16(residual) && aligned16(y);
    if (inner == 1 && channels % Vec<T>::size == 0 && aligned && aligned16(bias)) {
      bias_act_channels_vec_kernel<T>
          <<<grid_for(n / Vec<T>::size), k_block, 0, stream>>>(px, pb, pr, py, n, channels, act);
    } else if (inner % Vec<T>::size == 0 && aligned) {
      bias_act_vec_kernel<T>
          <<<grid_for(n / Vec<T>::size), k_block, 0, stream>>>(px, pb, pr, py, n, channels, inner, act);
    } else {
      bias_act_kernel<T><<<grid_for(n), k_block, 0, stream>>>(px, pb, pr, py, n, channels, inner, act);
    }
  });
  detail::check_launch("bias_act");
}

void launch_cast(ElemType from, ElemType to, const void* x, void* y, int64_t n, cudaStream_t stream) {
  detail::require(n >= 0, "cast", "negative element count " + std::to_string(n));
  if (n == 0) return;
  if (from == to) {
    // dispatch validates the type before the copy trusts its size.
    detail::dispatch(from, "cast", [](auto) {});
    if (x != y) {
      const cudaError_t err =
          cudaMemcpyAsync(y, x, static_cast<size_t>(n) * elem_size(from), cudaMemcpyDeviceToDevice, stream);
      if (err != cudaSuccess)
        throw std::runtime_error(std::string("cast: copy failed: ") + cudaGetErrorString(err));
    }
    return;
  }
  detail::dispatch(from, "cast", [&](auto from_tag) {
    using From = typename decltype(from_tag)::type;
    detail::dispatch(to, "cast", [&](auto to_tag) {
      using To = typename decltype(to_tag)::type;
      cast_kernel<From, To>
          <<<grid_for(n), k_block, 0, stream>>>(static_cast<const From*>(x), static_cast<To*>(y), n);
    });
  });
  detail::check_launch("cast");
}

}  // namespace kiln::cuda
