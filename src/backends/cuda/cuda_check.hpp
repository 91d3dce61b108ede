// Turning CUDA, cuDNN and cuBLASLt status codes into kiln::Error, with the
// call that failed and the library's own message.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <cudnn_graph.h>

#include <string_view>

namespace kiln::cuda {

void check(cudaError_t status, std::string_view call);
void check(cudnnStatus_t status, std::string_view call);
void check(cublasStatus_t status, std::string_view call);

}  // namespace kiln::cuda
