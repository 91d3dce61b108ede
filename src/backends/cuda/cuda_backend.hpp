// The cuda backend: builds, deserializes and refits CudaEngines on one
// NVIDIA GPU through cuDNN's graph API (convolutions, with bias, residual
// and activation fused where cuDNN has an engine for the graph), cuBLASLt
// (MatMul/Gemm with bias and activation epilogues) and kiln's own kernels.
// Ops it cannot run go to the reference backend through the partitioner.
//
// make_cuda_backend() throws kiln::Error(unsupported) on a machine without a
// usable GPU, with the reason (no driver, no device, an older GPU).
//
// The fingerprint names the GPU's SM architecture and count and the CUDA
// runtime, cuDNN and cuBLASLt versions: an engine built elsewhere is a
// clean cache miss.
//
// Thread-safety: a CudaBackend may be shared; each engine is single-caller.
#pragma once

#include <memory>

#include "backends/backend.hpp"

namespace kiln {

std::unique_ptr<Backend> make_cuda_backend();

}  // namespace kiln
