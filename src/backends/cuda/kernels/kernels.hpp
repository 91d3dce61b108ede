// kiln's own CUDA kernels: what the cuda backend runs outside cuDNN and
// cuBLASLt (activations, broadcast arithmetic, pooling, softmax, LayerNorm,
// transposes, dtype casts). Every launch is asynchronous on `stream`. A
// launcher throws std::runtime_error (naming the kernel) for bad arguments
// or a launch that fails; a fault while the kernel runs is reported by the
// next synchronising CUDA call (the engine checks at the end of every run).
//
// Tensors are dense, row-major (NCHW for images, unless a launcher says
// channels-last: NHWC), of one element type.
// Sizes are int64: a tensor of more than 2^31 elements is supported.
#pragma once

#include <cuda_runtime_api.h>

#include <array>
#include <cstdint>

namespace kiln::cuda {

enum class ElemType : uint8_t { f32 = 0, f16 = 1, bf16 = 2 };

// Persistent values (plans store them): never renumber.
enum class Act : uint8_t {
  none = 0,
  relu = 1,
  sigmoid = 2,
  tanh = 3,
  gelu_erf = 4,
  gelu_tanh = 5,
  silu = 6,
  hardswish = 7,
  hardsigmoid = 8,  // max(0, min(1, alpha * x + beta)), ONNX defaults alpha 0.2, beta 0.5
  leaky_relu = 9,   // alpha
  clip = 10,        // min alpha, max beta
  elu = 11,         // alpha
  softplus = 12,
  abs = 13,
  neg = 14,
  exp = 15,
  log = 16,
  sqrt = 17,
  reciprocal = 18,
  erf = 19,
};

struct ActParams {
  Act kind = Act::none;
  float alpha = 0;
  float beta = 0;
};

// Persistent values: never renumber.
enum class BinaryOp : uint8_t { add = 0, sub = 1, mul = 2, div = 3, max = 4, min = 5, pow = 6 };

constexpr int k_max_rank = 6;

// Output shape and each input's element strides over it (0 along a
// broadcast dimension), rank <= k_max_rank, leading dims first.
struct BroadcastShape {
  int rank = 0;
  std::array<int64_t, k_max_rank> out{};
  std::array<int64_t, k_max_rank> a_strides{};
  std::array<int64_t, k_max_rank> b_strides{};
};

// y[i] = act(x[i]), n elements. x may equal y.
void launch_unary(ActParams act, ElemType type, const void* x, void* y, int64_t n, cudaStream_t stream);

// y = act(a op b) with broadcasting. y may equal a or b when it has their shape.
void launch_binary(BinaryOp op, ActParams act, ElemType type, const void* a, const void* b, void* y,
                   const BroadcastShape& shape, cudaStream_t stream);

// The epilogue of a conv that cuDNN ran alone: over x of shape
// [outer, channels, inner], y = act(x + bias[c] + residual). bias and
// residual may be null; y may equal x.
void launch_bias_act(ElemType type, const void* x, const void* bias, const void* residual, void* y,
                     int64_t outer, int64_t channels, int64_t inner, ActParams act, cudaStream_t stream);

// 2-D pooling over NCHW. Padding is counted in an average only when
// count_include_pad (ONNX's attribute); ceil_mode is expressed through the
// output size the caller computed.
struct Pool2d {
  int64_t n = 0, c = 0, h = 0, w = 0;
  int64_t out_h = 0, out_w = 0;
  int64_t kernel_h = 0, kernel_w = 0;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_top = 0, pad_left = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  bool count_include_pad = false;
};
void launch_max_pool2d(ElemType type, const void* x, void* y, const Pool2d& p, cudaStream_t stream);
void launch_avg_pool2d(ElemType type, const void* x, void* y, const Pool2d& p, cudaStream_t stream);
// The same over channels-last tensors: x is [n, h, w, c] and y [n, out_h,
// out_w, c] in memory. c is innermost, so a warp reads and writes
// consecutive channels (16 bytes of them per thread where c allows); each
// channel is computed as the NCHW kernels compute it, bit for bit.
void launch_max_pool2d_nhwc(ElemType type, const void* x, void* y, const Pool2d& p, cudaStream_t stream);
void launch_avg_pool2d_nhwc(ElemType type, const void* x, void* y, const Pool2d& p, cudaStream_t stream);

// y[r] = mean (or max) of x[r, 0..inner) for r < rows: GlobalAveragePool /
// GlobalMaxPool over NC(HW), and ReduceMean over trailing axes.
void launch_reduce_rows(ElemType type, bool max, const void* x, void* y, int64_t rows, int64_t inner,
                        cudaStream_t stream);

// y[b, c] = mean (or max) of x[b, 0..inner, c] for b < outer, c < channels:
// GlobalAveragePool / GlobalMaxPool over a channels-last [N, H*W, C] tensor,
// whose [N, C] output is the same bytes as NCHW [N, C, 1, 1].
void launch_reduce_nhwc(ElemType type, bool max, const void* x, void* y, int64_t outer, int64_t inner,
                        int64_t channels, cudaStream_t stream);

// Softmax (or LogSoftmax) over the last axis of [rows, cols].
void launch_softmax(ElemType type, bool log, const void* x, void* y, int64_t rows, int64_t cols,
                    cudaStream_t stream);

// LayerNormalization over the last axis of [rows, cols]; gamma and beta have
// cols elements (beta may be null). Statistics accumulate in fp32.
void launch_layer_norm(ElemType type, const void* x, const void* gamma, const void* beta, void* y,
                       int64_t rows, int64_t cols, float epsilon, cudaStream_t stream);

// y = transpose(x, perm); in_shape and perm have `rank` entries.
void launch_transpose(ElemType type, const void* x, void* y, int rank, const int64_t* in_shape,
                      const int* perm, cudaStream_t stream);

// Copies a [outer, x_inner] block into columns [offset, offset + x_inner) of
// a [outer, y_inner] tensor: one input of a Concat.
void launch_concat_part(ElemType type, const void* x, void* y, int64_t outer, int64_t x_inner,
                        int64_t y_inner, int64_t offset, cudaStream_t stream);

// y[i] = x[offset + sum over d of c_d * in_strides[d]], c the coordinates of
// output element i in out_shape (`rank` entries): any chain of slices,
// reshapes and transposes as one gather. `extent` bounds every input element
// index the walk reaches (x's element count). Strides are non-negative.
void launch_strided_copy(ElemType type, const void* x, void* y, int rank, const int64_t* out_shape,
                         const int64_t* in_strides, int64_t offset, int64_t extent, cudaStream_t stream);

// y = x[starts[d] + i * steps[d] for each dim d]: Slice, and one output of a
// Split. in_shape, starts, steps and out_shape have `rank` entries; every
// step is at least 1 and the box lies inside x.
void launch_slice(ElemType type, const void* x, void* y, int rank, const int64_t* in_shape,
                  const int64_t* starts, const int64_t* steps, const int64_t* out_shape, cudaStream_t stream);

// Element-type conversion of n elements (precision boundaries).
void launch_cast(ElemType from, ElemType to, const void* x, void* y, int64_t n, cudaStream_t stream);

// One operand of launch_attention as a [batch, heads, rows, cols] view:
// element (b, h, r, c) at data[b * strides[0] + h * strides[1] + r *
// strides[2] + c * strides[3]] (elements; 0 along a broadcast dimension).
struct AttentionOperand {
  const void* data = nullptr;
  std::array<int64_t, 4> strides{};
};

constexpr int64_t k_attention_max_dim = 128;

// out = softmax(scale * Q * K^T + mask) * V per (batch, head), the softmax
// over the keys. scale is constant_scale times the first n_scales one-element
// device tensors of the storage type, each dividing where its bit of
// divide_mask is set (read when the kernel runs, so a refit that changes them
// is honoured). A fully masked row gives NaN, as the unfused softmax does.
struct AttentionArgs {
  int64_t batch = 0, heads = 0, q_len = 0, kv_len = 0, head_dim = 0, v_dim = 0;
  AttentionOperand q;     // [batch, heads, q_len, head_dim]
  AttentionOperand k;     // [batch, heads, kv_len, head_dim]: key j, feature d
  AttentionOperand v;     // [batch, heads, kv_len, v_dim]
  AttentionOperand mask;  // [batch, heads, q_len, kv_len] added to the scores; data null when none
  void* out = nullptr;    // [batch, heads, q_len, v_dim] through out_strides
  std::array<int64_t, 4> out_strides{};
  float constant_scale = 1.0f;
  std::array<const void*, 4> scales{};
  int n_scales = 0;
  uint32_t divide_mask = 0;
};

// Whether launch_attention takes this problem: fp16 or bf16, head and value
// dimensions of at most k_attention_max_dim.
bool attention_supported(ElemType type, int64_t head_dim, int64_t v_dim);

// Fused attention (attention.cu): the scores never leave the chip.
void launch_attention(ElemType type, const AttentionArgs& args, cudaStream_t stream);

}  // namespace kiln::cuda
