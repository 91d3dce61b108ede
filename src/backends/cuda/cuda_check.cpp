#include "backends/cuda/cuda_check.hpp"

#include <string>

#include "kiln/error.hpp"

namespace kiln::cuda {

void check(cudaError_t status, std::string_view call) {
  if (status == cudaSuccess) return;
  throw Error(ErrorCode::internal, "cuda: " + std::string(call) + ": " + cudaGetErrorString(status));
}

void check(cudnnStatus_t status, std::string_view call) {
  if (status == CUDNN_STATUS_SUCCESS) return;
  // cuDNN keeps a more specific message for the last error of this thread.
  char detail[512] = {};
  cudnnGetLastErrorString(detail, sizeof detail);
  std::string message = "cuDNN: " + std::string(call) + ": " + cudnnGetErrorString(status);
  if (detail[0]) message += " (" + std::string(detail) + ")";
  throw Error(ErrorCode::internal, message);
}

void check(cublasStatus_t status, std::string_view call) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  throw Error(ErrorCode::internal, "cuBLASLt: " + std::string(call) + ": status " + std::to_string(status));
}

}  // namespace kiln::cuda
