#include "backends/cuda/lt_matmul.hpp"

#include <cstring>
#include <utility>

#include "backends/cuda/cuda_check.hpp"
#include "kiln/error.hpp"

namespace kiln::cuda {

namespace {

cudaDataType_t cuda_type(ElemType type) {
  switch (type) {
    case ElemType::f32:
      return CUDA_R_32F;
    case ElemType::f16:
      return CUDA_R_16F;
    case ElemType::bf16:
      return CUDA_R_16BF;
  }
  throw Error(ErrorCode::internal,
              "cuBLASLt: unknown element type " + std::to_string(static_cast<int>(type)));
}

}  // namespace

LtMatmul::LtMatmul(cublasLtHandle_t handle, const LtShape& shape) : m_handle(handle), m_shape(shape) {
  // fp32 accumulation for every type; TF32 only where fp32 asked for it.
  const cublasComputeType_t compute =
      shape.allow_tf32 && shape.type == ElemType::f32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  check(cublasLtMatmulDescCreate(&m_op, compute, CUDA_R_32F), "cublasLtMatmulDescCreate");
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  switch (shape.epilogue) {
    case LtEpilogue::none:
      epilogue = shape.bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
      break;
    case LtEpilogue::relu:
      epilogue = shape.bias ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_RELU;
      break;
    case LtEpilogue::gelu_tanh:
      epilogue = shape.bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU;
      break;
  }
  check(cublasLtMatmulDescSetAttribute(m_op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue),
        "epilogue");
  // The bias vector has Y's type: CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE is
  // left at its default, "the type of D", for every non-integer, non-FP8
  // matmul, which is what kiln uploads.
  const cudaDataType_t data = cuda_type(shape.type);
  // Column-major view: Wᵀ is N x K (ld N), Xᵀ is K x M (ld K), Yᵀ is N x M (ld N).
  const auto n = static_cast<uint64_t>(shape.n), k = static_cast<uint64_t>(shape.k),
             m = static_cast<uint64_t>(shape.m);
  check(cublasLtMatrixLayoutCreate(&m_w, data, n, k, static_cast<int64_t>(n)), "layout W");
  check(cublasLtMatrixLayoutCreate(&m_x, data, k, m, static_cast<int64_t>(k)), "layout X");
  check(cublasLtMatrixLayoutCreate(&m_y, data, n, m, static_cast<int64_t>(n)), "layout Y");
  if (shape.batch > 1) {
    const auto batch = static_cast<int32_t>(shape.batch);
    const std::pair<cublasLtMatrixLayout_t, int64_t> layouts[] = {
        {m_w, shape.stride_w}, {m_x, shape.stride_x}, {m_y, shape.stride_y}};
    for (const auto& [layout, stride] : layouts) {
      check(
          cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof batch),
          "batch count");
      check(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                             sizeof stride),
            "batch stride");
    }
  }
}

LtMatmul::LtMatmul(LtMatmul&& other) noexcept
    : m_handle(other.m_handle),
      m_shape(other.m_shape),
      m_op(std::exchange(other.m_op, nullptr)),
      m_w(std::exchange(other.m_w, nullptr)),
      m_x(std::exchange(other.m_x, nullptr)),
      m_y(std::exchange(other.m_y, nullptr)),
      m_algo(other.m_algo),
      m_workspace(other.m_workspace) {}

LtMatmul::~LtMatmul() {
  if (m_y) cublasLtMatrixLayoutDestroy(m_y);
  if (m_x) cublasLtMatrixLayoutDestroy(m_x);
  if (m_w) cublasLtMatrixLayoutDestroy(m_w);
  if (m_op) cublasLtMatmulDescDestroy(m_op);
}

std::vector<LtAlgoBytes> LtMatmul::candidates(size_t max_count, size_t max_workspace) const {
  cublasLtMatmulPreference_t preference = nullptr;
  check(cublasLtMatmulPreferenceCreate(&preference), "cublasLtMatmulPreferenceCreate");
  std::vector<cublasLtMatmulHeuristicResult_t> results(max_count);
  int returned = 0;
  cublasStatus_t status = cublasLtMatmulPreferenceSetAttribute(
      preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_workspace, sizeof max_workspace);
  if (status == CUBLAS_STATUS_SUCCESS) {
    status = cublasLtMatmulAlgoGetHeuristic(m_handle, m_op, m_w, m_x, m_y, m_y, preference,
                                            static_cast<int>(max_count), results.data(), &returned);
  }
  cublasLtMatmulPreferenceDestroy(preference);
  check(status, "cublasLtMatmulAlgoGetHeuristic");
  std::vector<LtAlgoBytes> out;
  for (int i = 0; i < returned; ++i) {
    if (results[static_cast<size_t>(i)].state != CUBLAS_STATUS_SUCCESS) continue;
    LtAlgoBytes bytes{};
    std::memcpy(bytes.data(), &results[static_cast<size_t>(i)].algo, bytes.size());
    out.push_back(bytes);
  }
  return out;
}

bool LtMatmul::select(const LtAlgoBytes& bytes) {
  cublasLtMatmulAlgo_t algo;
  std::memcpy(&algo, bytes.data(), bytes.size());
  cublasLtMatmulHeuristicResult_t result{};
  if (cublasLtMatmulAlgoCheck(m_handle, m_op, m_w, m_x, m_y, m_y, &algo, &result) != CUBLAS_STATUS_SUCCESS ||
      result.state != CUBLAS_STATUS_SUCCESS) {
    return false;
  }
  m_algo = algo;
  m_workspace = result.workspaceSize;
  return true;
}

void LtMatmul::run(const void* x, const void* w, const void* bias, const void* c, void* y, void* workspace,
                   cudaStream_t stream) const {
  if (!m_algo) throw Error(ErrorCode::internal, "cuBLASLt matmul run before an algorithm was selected");
  if (m_shape.bias) {
    check(cublasLtMatmulDescSetAttribute(m_op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias),
          "bias pointer");
  }
  if (m_shape.accumulate && c == nullptr)
    throw Error(ErrorCode::internal, "cuBLASLt matmul: an accumulating product without its C");
  // Scale type fp32 (the descriptor's CUDA_R_32F).
  const float alpha = 1.0f, beta = m_shape.accumulate ? 1.0f : 0.0f;
  const void* c_or_y = m_shape.accumulate ? c : y;
  check(cublasLtMatmul(m_handle, m_op, &alpha, w, m_w, x, m_x, &beta, c_or_y, m_y, y, m_y, &*m_algo,
                       workspace, m_workspace, stream),
        "cublasLtMatmul");
}

}  // namespace kiln::cuda
