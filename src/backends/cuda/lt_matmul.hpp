// Y[M, N] = X[M, K] · W[K, N] (+ bias[N]) (then ReLU or tanh-GELU) on
// cuBLASLt, all row-major and of one element type (fp32, fp16 or bf16; the
// bias too): the MatMul/Gemm layers with a constant weight (Linear), with
// bias and activation fused as cuBLASLt epilogues; and `batch` such products
// at fixed element strides, one launch (attention's Q·Kᵀ and P·V, where W is
// an activation too). Whatever the type, the products accumulate in fp32
// (CUBLAS_COMPUTE_32F, fp32 alpha and beta) and the epilogue runs in fp32
// before the one rounding to Y's type.
//
// Half operands on tensor cores want 16-byte aligned pointers and leading
// dimensions that are multiples of 8 elements: every pointer kiln passes is
// at least 256-byte aligned (cudaMalloc, the arena's offsets), and the
// heuristics see the leading dimensions (N, K) and offer only algorithms
// that take them, so an odd K or N gets a slower kernel, never a wrong one.
//
// cuBLASLt is column-major; row-major Y = X·W is computed as the
// column-major Yᵀ = Wᵀ·Xᵀ, which reads the same bytes without a transpose.
//
// A tactic is a cuBLASLt algorithm (a 64-byte cublasLtMatmulAlgo_t): the
// plan records its bytes, and LtMatmul::restore() checks it with
// cublasLtMatmulAlgoCheck, without heuristics or timing.
#pragma once

#include <cublasLt.h>

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "backends/cuda/kernels/kernels.hpp"

namespace kiln::cuda {

enum class LtEpilogue : uint8_t { none = 0, relu = 1, gelu_tanh = 2 };

struct LtShape {
  int64_t m = 0, k = 0, n = 0;
  bool bias = false;
  LtEpilogue epilogue = LtEpilogue::none;
  bool allow_tf32 = false;  // fp32 only
  // Y = X·W + bias + C, C (a residual, of Y's shape) read through Y's
  // layout with beta 1: the residual Add after a Linear costs no kernel.
  // The activation epilogues apply after C, so only `none` goes with it.
  bool accumulate = false;
  ElemType type = ElemType::f32;
  // Strided batches: product b reads X at b * stride_x, W at b * stride_w and
  // writes Y at b * stride_y (elements). batch 1 ignores the strides.
  int64_t batch = 1;
  int64_t stride_x = 0, stride_w = 0, stride_y = 0;
};

using LtAlgoBytes = std::array<uint8_t, sizeof(cublasLtMatmulAlgo_t)>;

class LtMatmul {
 public:
  LtMatmul(cublasLtHandle_t handle, const LtShape& shape);
  LtMatmul(const LtMatmul&) = delete;
  LtMatmul& operator=(const LtMatmul&) = delete;
  LtMatmul(LtMatmul&& other) noexcept;
  LtMatmul& operator=(LtMatmul&&) = delete;
  ~LtMatmul();

  // The algorithms cuBLASLt's heuristics offer for this shape (at most
  // max_count) with a workspace of at most max_workspace bytes.
  std::vector<LtAlgoBytes> candidates(size_t max_count, size_t max_workspace) const;
  // Selects an algorithm; false when cuBLASLt rejects it for this shape.
  bool select(const LtAlgoBytes& algo);
  size_t workspace() const { return m_workspace; }

  // Enqueues Y = epilogue(X·W + bias (+ C)) on `stream`; `c` is read when
  // the shape accumulates, and may equal y.
  void run(const void* x, const void* w, const void* bias, const void* c, void* y, void* workspace,
           cudaStream_t stream) const;

 private:
  cublasLtHandle_t m_handle = nullptr;
  LtShape m_shape;
  cublasLtMatmulDesc_t m_op = nullptr;
  cublasLtMatrixLayout_t m_w = nullptr, m_x = nullptr, m_y = nullptr;
  std::optional<cublasLtMatmulAlgo_t> m_algo;
  size_t m_workspace = 0;
};

}  // namespace kiln::cuda
