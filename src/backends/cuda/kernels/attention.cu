// Fused scaled dot-product attention for fp16 and bf16 (kernels.hpp,
// launch_attention): softmax(scale · Q·Kᵀ + mask)·V without the score
// tensor in memory, in the manner of FlashAttention-2. A block owns 64 query
// rows of one (batch, head), four warps of 16 rows each; it walks the keys in
// tiles of 64. Everything a warp computes stays in its registers: its rows of
// Q as tensor-core operands, the 16×64 scores of a tile (mma.sync m16n8k16,
// fp32 accumulation), the running maximum and sum of the online softmax, and
// the fp32 output accumulator, rescaled by how much the maximum moved. The
// scores' accumulator layout is the next product's operand layout, so the
// probabilities feed P·V without leaving the registers; they are rounded to
// the storage type for that product, as every fused attention on tensor cores
// does. Shared memory holds only Q and two buffers of K and V tiles: each
// tile after the first is copied in (cp.async) while the one before it is used.
//
// Operands are read through four strides each, so Kᵀ (a transposed view of
// K), and Q, K, V as strided views of one fused projection, cost no copy.
// Head dimensions are padded with zeros to the tile's 32, 64 or 128 columns;
// rows past the sequence are zeros (Q, V) or masked out (keys).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common.cuh"

namespace kiln::cuda {
namespace {

using namespace detail;

constexpr int k_warps = 4;
constexpr int k_threads = 32 * k_warps;
constexpr int k_rows = 16 * k_warps;  // query rows per block
constexpr int k_keys = 64;            // keys per tile
// Padding (in elements) of every shared-memory row: a row of Q, K or V then
// starts 4 banks after the one before, so the eight rows a fragment load
// touches fall in different banks, and each row stays 16-byte aligned.
constexpr int k_half_pad = 8;

// Q, then two buffers of K and V: the next tile loads while this one is used.
template <int Cols>
struct Layout {
  static constexpr int ld = Cols + k_half_pad;  // Q, K, V tiles (storage type)
  static constexpr size_t q_elems = size_t{k_rows} * ld;
  static constexpr size_t kv_elems = size_t{k_keys} * ld;
  static constexpr size_t bytes = (q_elems + 4 * kv_elems) * 2;
};

template <typename T>
__device__ __forceinline__ T zero() {
  return Elem<T>::store(0.0f);
}

// Fills a rows × Cols tile (row stride `ld`) from `src`, where element (r, c)
// is src[r * rs + c * cs]; zeros past `valid_rows` or `valid_cols`. Threads
// walk whichever of the two dimensions is contiguous in memory, and load 16
// bytes at a time where a row is contiguous and aligned.
template <typename T, int Cols>
__device__ void load_tile(T* dst, int ld, int rows, const T* src, int64_t rs, int64_t cs, int valid_rows,
                          int valid_cols) {
  constexpr int vec = 16 / sizeof(T);
  const bool vector_rows = cs == 1 && valid_cols == Cols && rs % vec == 0 && ld % vec == 0 &&
                           reinterpret_cast<uintptr_t>(src) % 16 == 0;
  if (vector_rows) {
    constexpr int chunks = Cols / vec;
    for (int i = threadIdx.x; i < rows * chunks; i += blockDim.x) {
      const int r = i / chunks, c = (i % chunks) * vec;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (r < valid_rows) v = *reinterpret_cast<const uint4*>(src + r * rs + c);
      *reinterpret_cast<uint4*>(dst + r * ld + c) = v;
    }
    return;
  }
  const bool rows_fastest = rs == 1 && cs != 1;
  for (int i = threadIdx.x; i < rows * Cols; i += blockDim.x) {
    const int r = rows_fastest ? i % rows : i / Cols;
    const int c = rows_fastest ? i / rows : i % Cols;
    dst[r * ld + c] = (r < valid_rows && c < valid_cols) ? src[r * rs + c * cs] : zero<T>();
  }
}

// load_tile without waiting: where rows are whole 16-byte words, each word
// is copied by cp.async (rows past `valid_rows` are zero-filled by copying
// no bytes), to be waited for with async_wait; otherwise the plain load.
template <typename T, int Cols>
__device__ void load_tile_async(T* dst, int ld, int rows, const T* src, int64_t rs, int64_t cs,
                                int valid_rows, int valid_cols) {
  constexpr int vec = 16 / sizeof(T);
  const bool vector_rows = cs == 1 && valid_cols == Cols && rs % vec == 0 && ld % vec == 0 &&
                           reinterpret_cast<uintptr_t>(src) % 16 == 0;
  if (!vector_rows) {
    load_tile<T, Cols>(dst, ld, rows, src, rs, cs, valid_rows, valid_cols);
    return;
  }
  constexpr int chunks = Cols / vec;
  for (int i = threadIdx.x; i < rows * chunks; i += blockDim.x) {
    const int r = i / chunks, c = (i % chunks) * vec;
    const bool valid = r < valid_rows;
    const T* from = valid ? src + r * rs + c : src;
    const auto to = static_cast<unsigned>(__cvta_generic_to_shared(dst + r * ld + c));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(to), "l"(from), "r"(valid ? 16 : 0));
  }
}

__device__ __forceinline__ void async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

// Waits until at most `Pending` committed groups of this thread are in flight.
template <int Pending>
__device__ __forceinline__ void async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending));
}

// A block's share of the problem: its (batch, head), its first query row
// and how many rows it has, the operands at that head, and the scores' scale.
template <typename T>
struct BlockProblem {
  int64_t b, h, q0;
  int q_rows;
  const T *q, *k, *v, *mask;
  float scale;

  __device__ explicit BlockProblem(const AttentionArgs& a)
      : b(blockIdx.x / a.heads), h(blockIdx.x % a.heads), q0(static_cast<int64_t>(blockIdx.y) * k_rows) {
    q_rows = static_cast<int>(a.q_len - q0 < k_rows ? a.q_len - q0 : int64_t{k_rows});
    scale = a.constant_scale;
    for (int i = 0; i < a.n_scales; ++i) {
      const float f = Elem<T>::load(*static_cast<const T*>(a.scales[i]));
      scale = (a.divide_mask >> i & 1u) ? scale / f : scale * f;
    }
    q = at(a.q) + q0 * a.q.strides[2];
    k = at(a.k);
    v = at(a.v);
    mask = a.mask.data ? at(a.mask) : nullptr;
  }
  __device__ const T* at(const AttentionOperand& o) const {
    return static_cast<const T*>(o.data) + b * o.strides[0] + h * o.strides[1];
  }
};

// One m16n8k16 tensor-core product, D = A·B + D, in fp32 (PTX ISA, "Matrix
// Fragments for mma.m16n8k16"). With lane = 4·g + t, a lane holds:
//   A (16×16, row major): a[0] = (g, 2t..2t+1), a[1] = (g+8, 2t..2t+1),
//                         a[2] = (g, 2t+8..2t+9), a[3] = (g+8, 2t+8..2t+9)
//   B (16×8, k × n):      b[0] = (k 2t..2t+1, n g), b[1] = (k 2t+8..2t+9, n g)
//   D (16×8):             d[0], d[1] = (g, 2t..2t+1), d[2], d[3] = (g+8, 2t..2t+1)
// Each register of A and B packs two elements, the lower column (or k) in
// the lower half.
template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}

// Two adjacent elements of shared memory as one register.
template <typename T>
__device__ __forceinline__ uint32_t pair_at(const T* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

// Two fp32 values rounded to T and packed, `lo` in the lower half.
template <typename T>
__device__ __forceinline__ uint32_t pack_pair(float lo, float hi) {
  uint32_t bits;
  if constexpr (std::is_same_v<T, __half>) {
    const __half2 v = __floats2half2_rn(lo, hi);
    memcpy(&bits, &v, sizeof bits);
  } else {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    memcpy(&bits, &v, sizeof bits);
  }
  return bits;
}

// The B operand (16 keys × 8 columns) of P·V from V's row-major tile: the
// transposing matrix load gives lane 4·g + t the keys 2t..2t+1 (and 2t+8..2t+9)
// of column g. Lanes 0..15 name the 16 key rows; the others repeat them.
template <typename T>
__device__ __forceinline__ void load_v_operand(uint32_t (&b)[2], const T* tile, int ld, int lane) {
  const auto address = static_cast<unsigned>(__cvta_generic_to_shared(tile + (lane & 15) * ld));
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(b[0]), "=r"(b[1])
               : "r"(address));
}

template <typename T, int Cols>
__global__ void __launch_bounds__(k_threads) attention_kernel(AttentionArgs a) {
  using L = Layout<Cols>;
  constexpr int k_feature_steps = Cols / 16;  // A fragments of Q per row block
  constexpr int k_key_tiles = k_keys / 8;     // 16×8 score tiles per key tile
  constexpr int k_out_tiles = Cols / 8;       // 16×8 output tiles
  extern __shared__ __align__(128) unsigned char smem[];
  T* s_q = reinterpret_cast<T*>(smem);
  T* s_k = s_q + L::q_elems;
  T* s_v = s_k + L::kv_elems;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane >> 2, t = lane & 3;
  const int d = static_cast<int>(a.head_dim), dv = static_cast<int>(a.v_dim);
  const BlockProblem<T> p(a);
  const float scale = p.scale;
  // This lane's two query rows: g and g + 8 of the warp's 16.
  const int64_t rows[2] = {p.q0 + warp * 16 + g, p.q0 + warp * 16 + g + 8};

  // Tile k0's K and V into buffer `buf`.
  auto load_keys = [&](int64_t k0, int buf) {
    const int keys = static_cast<int>((a.kv_len - k0 < k_keys ? a.kv_len - k0 : int64_t{k_keys}));
    load_tile_async<T, Cols>(s_k + buf * 2 * L::kv_elems, L::ld, k_keys, p.k + k0 * a.k.strides[2],
                             a.k.strides[2], a.k.strides[3], keys, d);
    load_tile_async<T, Cols>(s_v + buf * 2 * L::kv_elems, L::ld, k_keys, p.v + k0 * a.v.strides[2],
                             a.v.strides[2], a.v.strides[3], keys, dv);
  };
  // Q and the first tile in one group.
  load_tile_async<T, Cols>(s_q, L::ld, k_rows, p.q, a.q.strides[2], a.q.strides[3], p.q_rows, d);
  load_keys(0, 0);
  async_commit();
  uint32_t qa[k_feature_steps][4];

  float o[k_out_tiles][4];
#pragma unroll
  for (int n = 0; n < k_out_tiles; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  // Per row: the running maximum (shared by the row's four lanes) and this
  // lane's share of the running sum (added up across the four at the end).
  float run_max[2] = {-INFINITY, -INFINITY}, run_sum[2] = {0.0f, 0.0f};

  int buf = 0;
  for (int64_t k0 = 0; k0 < a.kv_len; k0 += k_keys, buf ^= 1) {
    const int keys = static_cast<int>((a.kv_len - k0 < k_keys ? a.kv_len - k0 : int64_t{k_keys}));
    // Start the next tile into the other buffer, whose last reader (the
    // previous tile) every warp has finished, then wait for this one.
    __syncthreads();
    if (k0 + k_keys < a.kv_len) {
      load_keys(k0 + k_keys, buf ^ 1);
      async_commit();
      async_wait<1>();
    } else {
      async_wait<0>();
    }
    __syncthreads();
    if (k0 == 0) {
      const T* q_warp = s_q + warp * 16 * L::ld;
#pragma unroll
      for (int kk = 0; kk < k_feature_steps; ++kk) {
        const T* at = q_warp + g * L::ld + kk * 16 + 2 * t;
        qa[kk][0] = pair_at(at);
        qa[kk][1] = pair_at(at + 8 * L::ld);
        qa[kk][2] = pair_at(at + 8);
        qa[kk][3] = pair_at(at + 8 * L::ld + 8);
      }
    }
    const T* k_tile = s_k + buf * 2 * L::kv_elems;
    const T* v_tile = s_v + buf * 2 * L::kv_elems;

    // Scores of the warp's 16 rows against the tile's 64 keys: key tile j's
    // B operand is K's rows j·8..j·8+7, features along k.
    float s[k_key_tiles][4];
#pragma unroll
    for (int j = 0; j < k_key_tiles; ++j) {
      s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
      const T* key_row = k_tile + (j * 8 + g) * L::ld + 2 * t;
#pragma unroll
      for (int kk = 0; kk < k_feature_steps; ++kk) {
        const uint32_t kb[2] = {pair_at(key_row + kk * 16), pair_at(key_row + kk * 16 + 8)};
        mma_16816<T>(s[j], qa[kk], kb);
      }
    }

    // Scale, mask and the online softmax. Element e of tile j is row e / 2,
    // key j·8 + 2t + e % 2.
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < k_key_tiles; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = j * 8 + 2 * t + (e & 1), r = e >> 1;
        float x = -INFINITY;
        if (key < keys) {
          x = s[j][e] * scale;
          if (p.mask && rows[r] < a.q_len)
            x += Elem<T>::load(p.mask[rows[r] * a.mask.strides[2] + (k0 + key) * a.mask.strides[3]]);
        }
        s[j][e] = x;
        tile_max[r] = fmaxf(tile_max[r], x);
      }
    }
    float alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
      const float new_max = fmaxf(run_max[r], tile_max[r]);
      alpha[r] = run_max[r] == -INFINITY ? 0.0f : __expf(run_max[r] - new_max);
      run_max[r] = new_max;
      run_sum[r] *= alpha[r];
    }
#pragma unroll
    for (int j = 0; j < k_key_tiles; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1;
        s[j][e] = s[j][e] == -INFINITY ? 0.0f : __expf(s[j][e] - run_max[r]);
        run_sum[r] += s[j][e];
      }
    }
#pragma unroll
    for (int n = 0; n < k_out_tiles; ++n) {
      o[n][0] *= alpha[0];
      o[n][1] *= alpha[0];
      o[n][2] *= alpha[1];
      o[n][3] *= alpha[1];
    }

    // O += P · V, 16 keys at a time: score tiles 2kk and 2kk+1 are the A
    // operand as they stand.
#pragma unroll
    for (int kk = 0; kk < k_keys / 16; ++kk) {
      const uint32_t pa[4] = {
          pack_pair<T>(s[2 * kk][0], s[2 * kk][1]), pack_pair<T>(s[2 * kk][2], s[2 * kk][3]),
          pack_pair<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]), pack_pair<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int n = 0; n < k_out_tiles; ++n) {
        uint32_t vb[2];
        load_v_operand(vb, v_tile + kk * 16 * L::ld + n * 8, L::ld, lane);
        mma_16816<T>(o[n], pa, vb);
      }
    }
  }

  // Normalise and write: lane 4g + t holds columns n·8 + 2t..2t+1 of rows g
  // and g + 8. A row whose every key was masked has sum 0 and gives NaN, as
  // the unfused Softmax does.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    run_sum[r] += __shfl_xor_sync(0xffffffffu, run_sum[r], 1);
    run_sum[r] += __shfl_xor_sync(0xffffffffu, run_sum[r], 2);
  }
  T* out = static_cast<T*>(a.out) + p.b * a.out_strides[0] + p.h * a.out_strides[1];
#pragma unroll
  for (int n = 0; n < k_out_tiles; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int col = n * 8 + 2 * t + (e & 1), r = e >> 1;
      if (rows[r] < a.q_len && col < dv)
        out[rows[r] * a.out_strides[2] + col * a.out_strides[3]] = Elem<T>::store(o[n][e] / run_sum[r]);
    }
  }
}

// Above 48 KiB a kernel must opt in to its dynamic shared memory, once per
// function (before any graph capture: the first launch is eager).
template <auto Kernel, size_t Bytes>
void launch_kernel(const AttentionArgs& a, cudaStream_t stream) {
  static const cudaError_t opted_in =
      cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(Bytes));
  if (opted_in != cudaSuccess) {
    throw std::runtime_error("attention: cannot use " + std::to_string(Bytes) +
                             " bytes of shared memory: " + cudaGetErrorString(opted_in));
  }
  const dim3 grid(static_cast<unsigned>(a.batch * a.heads),
                  static_cast<unsigned>((a.q_len + k_rows - 1) / k_rows));
  Kernel<<<grid, k_threads, Bytes, stream>>>(a);
  check_launch("attention");
}

template <typename T, int Cols>
void launch_with(const AttentionArgs& a, cudaStream_t stream) {
  launch_kernel<attention_kernel<T, Cols>, Layout<Cols>::bytes>(a, stream);
}

// fp32: the same tiles and online softmax on the CUDA cores, in exact fp32
// (the tensor cores would round the operands to TF32), organised as a
// register-tiled SGEMM: lane 8·rg + kg of a warp owns rows 4·rg..4·rg+3 of
// the warp's 16 and, of the tile's 64 keys, kg·4..kg·4+3 and 32+kg·4..
// 32+kg·4+3. Per feature it loads four rows of Qᵀ and eight keys of Kᵀ as
// three 16-byte words and does 32 FMAs with them. The probabilities go
// through a per-warp Pᵀ tile in shared memory, and P·V is tiled the same way
// over the output columns (Cols/32 groups of four per lane). An earlier
// version gave each lane pair one query row: nine loads per 32 FMAs, and
// about five times the time of cuBLAS's unfused products on BERT-base.
constexpr int k_rows_per_lane = 4;  // 4 row groups x 8 key (or column) groups per warp

template <int Cols>
struct LayoutF32 {
  static constexpr int ld_qt = k_rows + 4;  // Qᵀ rows (one per feature), query rows contiguous
  static constexpr int ld_kt = k_keys + 4;  // Kᵀ rows (one per feature), keys contiguous
  static constexpr int ld_v = Cols + 4;     // V rows
  static constexpr int ld_pt = 16 + 4;      // a warp's Pᵀ rows (one per key), its 16 rows contiguous
  static constexpr size_t qt_floats = size_t{Cols} * ld_qt;
  static constexpr size_t kt_floats = size_t{Cols} * ld_kt;
  static constexpr size_t v_floats = size_t{k_keys} * ld_v;
  static constexpr size_t pt_floats = size_t{k_warps} * k_keys * ld_pt;
  static constexpr size_t bytes = (qt_floats + kt_floats + v_floats + pt_floats) * 4;
};

// Fills a transposed tile [Cols][ld] from `rows` rows of a matrix whose row
// j and feature d are at src[j * rs + d * cs]: zeros past `valid_rows` or
// `valid_cols`. Threads walk whichever dimension is contiguous in memory.
template <int Cols>
__device__ void load_transposed(float* dst, int ld, int rows, const float* src, int64_t rs, int64_t cs,
                                int valid_rows, int valid_cols) {
  const bool rows_fastest = rs == 1;
  for (int i = threadIdx.x; i < rows * Cols; i += blockDim.x) {
    const int j = rows_fastest ? i % rows : i / Cols;
    const int d = rows_fastest ? i / rows : i % Cols;
    dst[d * ld + j] = (j < valid_rows && d < valid_cols) ? src[j * rs + d * cs] : 0.0f;
  }
}

__device__ __forceinline__ float4 load4(const float* p) { return *reinterpret_cast<const float4*>(p); }

template <int Cols>
__global__ void __launch_bounds__(k_threads) attention_f32_kernel(AttentionArgs a) {
  using L = LayoutF32<Cols>;
  constexpr int k_col_groups = Cols / 32;  // groups of four output columns per lane
  extern __shared__ __align__(128) unsigned char smem[];
  float* s_qt = reinterpret_cast<float*>(smem);
  float* s_kt = s_qt + L::qt_floats;
  float* s_v = s_kt + L::kt_floats;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* s_pt = s_v + L::v_floats + warp * k_keys * L::ld_pt;
  const int rg = lane / 8, kg = lane % 8;
  const int d = static_cast<int>(a.head_dim), dv = static_cast<int>(a.v_dim);
  const BlockProblem<float> p(a);
  const float scale = p.scale;
  const int row0 = warp * 16 + rg * k_rows_per_lane;  // the lane's first row within the block
  int64_t rows[k_rows_per_lane];
#pragma unroll
  for (int r = 0; r < k_rows_per_lane; ++r) rows[r] = p.q0 + row0 + r;
  // The lane's keys within a tile: column c of its scores.
  auto key_of = [kg](int c) { return c < 4 ? kg * 4 + c : 32 + kg * 4 + (c - 4); };

  load_transposed<Cols>(s_qt, L::ld_qt, k_rows, p.q, a.q.strides[2], a.q.strides[3], p.q_rows, d);
  float o[k_rows_per_lane][4 * k_col_groups];
#pragma unroll
  for (int r = 0; r < k_rows_per_lane; ++r)
#pragma unroll
    for (int c = 0; c < 4 * k_col_groups; ++c) o[r][c] = 0.0f;
  // Per row: the running maximum (shared by the row's eight lanes) and this
  // lane's share of the running sum.
  float run_max[k_rows_per_lane], run_sum[k_rows_per_lane];
#pragma unroll
  for (int r = 0; r < k_rows_per_lane; ++r) run_max[r] = -INFINITY, run_sum[r] = 0.0f;

  for (int64_t k0 = 0; k0 < a.kv_len; k0 += k_keys) {
    const int keys = static_cast<int>(a.kv_len - k0 < k_keys ? a.kv_len - k0 : int64_t{k_keys});
    __syncthreads();  // the previous tile's K and V are no longer read
    load_transposed<Cols>(s_kt, L::ld_kt, k_keys, p.k + k0 * a.k.strides[2], a.k.strides[2], a.k.strides[3],
                          keys, d);
    load_tile<float, Cols>(s_v, L::ld_v, k_keys, p.v + k0 * a.v.strides[2], a.v.strides[2], a.v.strides[3],
                           keys, dv);
    __syncthreads();

    float s[k_rows_per_lane][8];
#pragma unroll
    for (int r = 0; r < k_rows_per_lane; ++r)
#pragma unroll
      for (int c = 0; c < 8; ++c) s[r][c] = 0.0f;
#pragma unroll 4
    for (int e = 0; e < Cols; ++e) {
      const float4 qv = load4(s_qt + e * L::ld_qt + row0);
      const float4 ka = load4(s_kt + e * L::ld_kt + kg * 4), kb = load4(s_kt + e * L::ld_kt + 32 + kg * 4);
      const float q4[4] = {qv.x, qv.y, qv.z, qv.w};
      const float k8[8] = {ka.x, ka.y, ka.z, ka.w, kb.x, kb.y, kb.z, kb.w};
#pragma unroll
      for (int r = 0; r < k_rows_per_lane; ++r)
#pragma unroll
        for (int c = 0; c < 8; ++c) s[r][c] = fmaf(q4[r], k8[c], s[r][c]);
    }

    // Scale, mask and the online softmax; a row's eight lanes are adjacent.
#pragma unroll
    for (int r = 0; r < k_rows_per_lane; ++r) {
      float tile_max = -INFINITY;
#pragma unroll
      for (int c = 0; c < 8; ++c) {
        const int key = key_of(c);
        float x = -INFINITY;
        if (key < keys) {
          x = s[r][c] * scale;
          if (p.mask && rows[r] < a.q_len)
            x += p.mask[rows[r] * a.mask.strides[2] + (k0 + key) * a.mask.strides[3]];
        }
        s[r][c] = x;
        tile_max = fmaxf(tile_max, x);
      }
#pragma unroll
      for (int m = 1; m < 8; m <<= 1) tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, m));
      const float new_max = fmaxf(run_max[r], tile_max);
      const float alpha = run_max[r] == -INFINITY ? 0.0f : expf(run_max[r] - new_max);
      run_max[r] = new_max;
      float tile_sum = 0.0f;
#pragma unroll
      for (int c = 0; c < 8; ++c) {
        s[r][c] = s[r][c] == -INFINITY ? 0.0f : expf(s[r][c] - new_max);
        tile_sum += s[r][c];
      }
      run_sum[r] = run_sum[r] * alpha + tile_sum;
#pragma unroll
      for (int c = 0; c < 4 * k_col_groups; ++c) o[r][c] *= alpha;
    }

    // Pᵀ for the warp's rows, then O += P · V: per key, four rows of Pᵀ and
    // the lane's column groups of V.
    __syncwarp();  // the previous tile's Pᵀ is no longer read
#pragma unroll
    for (int c = 0; c < 8; ++c) {
      *reinterpret_cast<float4*>(s_pt + key_of(c) * L::ld_pt + rg * k_rows_per_lane) =
          make_float4(s[0][c], s[1][c], s[2][c], s[3][c]);
    }
    __syncwarp();
#pragma unroll 4
    for (int j = 0; j < k_keys; ++j) {
      const float4 pv = load4(s_pt + j * L::ld_pt + rg * k_rows_per_lane);
      const float p4[4] = {pv.x, pv.y, pv.z, pv.w};
#pragma unroll
      for (int g = 0; g < k_col_groups; ++g) {
        const float4 vv = load4(s_v + j * L::ld_v + g * 32 + kg * 4);
        const float v4[4] = {vv.x, vv.y, vv.z, vv.w};
#pragma unroll
        for (int r = 0; r < k_rows_per_lane; ++r)
#pragma unroll
          for (int c = 0; c < 4; ++c) o[r][g * 4 + c] = fmaf(p4[r], v4[c], o[r][g * 4 + c]);
      }
    }
  }

  // Normalise and write: the lane's rows, columns g·32 + kg·4 .. +3.
  float* out = static_cast<float*>(a.out) + p.b * a.out_strides[0] + p.h * a.out_strides[1];
#pragma unroll
  for (int r = 0; r < k_rows_per_lane; ++r) {
#pragma unroll
    for (int m = 1; m < 8; m <<= 1) run_sum[r] += __shfl_xor_sync(0xffffffffu, run_sum[r], m);
    if (rows[r] >= a.q_len) continue;
#pragma unroll
    for (int g = 0; g < k_col_groups; ++g) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int col = g * 32 + kg * 4 + c;
        if (col < dv) out[rows[r] * a.out_strides[2] + col * a.out_strides[3]] = o[r][g * 4 + c] / run_sum[r];
      }
    }
  }
}

template <int Cols>
void launch_f32_with(const AttentionArgs& a, cudaStream_t stream) {
  launch_kernel<attention_f32_kernel<Cols>, LayoutF32<Cols>::bytes>(a, stream);
}

}  // namespace

bool attention_supported(ElemType type, int64_t head_dim, int64_t v_dim) {
  return (type == ElemType::f32 || type == ElemType::f16 || type == ElemType::bf16) && head_dim >= 1 &&
         v_dim >= 1 && std::max(head_dim, v_dim) <= k_attention_max_dim;
}

static_assert(k_attention_max_dim == 128, "the refusal message below names the limit");

void launch_attention(ElemType type, const AttentionArgs& a, cudaStream_t stream) {
  // Checked on every launch (a layer's hot path): the message is built only
  // for a problem the kernel refuses.
  const char* refused = nullptr;
  if (!attention_supported(type, a.head_dim, a.v_dim)) {
    refused = "head dimensions must be 1..128";
  } else if (a.batch < 1 || a.heads < 1 || a.q_len < 1 || a.kv_len < 1) {
    refused = "empty problem";
  } else if (a.batch * a.heads > 0x7fffffff || (a.q_len + k_rows - 1) / k_rows > 65535) {
    refused = "too many heads or query rows for one grid";
  } else if (a.n_scales < 0 || a.n_scales > static_cast<int>(a.scales.size())) {
    refused = "too many scales";
  }
  if (refused) throw std::runtime_error(std::string("attention: ") + refused);
  const int64_t cols = std::max(a.head_dim, a.v_dim);
  dispatch(type, "attention", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_same_v<T, float>) {
      if (cols <= 32) {
        launch_f32_with<32>(a, stream);
      } else if (cols <= 64) {
        launch_f32_with<64>(a, stream);
      } else {
        launch_f32_with<128>(a, stream);
      }
    } else if (cols <= 32) {
      launch_with<T, 32>(a, stream);
    } else if (cols <= 64) {
      launch_with<T, 64>(a, stream);
    } else {
      launch_with<T, 128>(a, stream);
    }
  });
}

}  // namespace kiln::cuda
