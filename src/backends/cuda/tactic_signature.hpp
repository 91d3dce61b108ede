// The timing-cache signatures of the cuda backend's timed layers: what a
// conv's cuDNN engines or a matmul's cuBLASLt algorithms were timed on. Two
// layers share timings only where these agree, so everything that changes
// the kernels offered or their speed is in them: shapes, fusion, epilogue,
// and the storage precision (an fp32 timing is never reused for fp16).
//
// Stateless; thread-safe.
#pragma once

#include <string>

#include "backends/cuda/cudnn_conv.hpp"
#include "backends/cuda/lt_matmul.hpp"

namespace kiln::cuda {

// "conv|x=1x64x56x56|w=...|fusion=110|dt=fp16|nhwc" (the layout only when
// channels-last: NCHW signatures stay as they were); `fusion` null: no fused graph.
std::string conv_signature(const ConvGeometry& geometry, const ConvFusion* fusion);

// "matmul|m=..|k=..|n=..|bias=1|epilogue=1|batch=1|dt=fp16"
std::string matmul_signature(const LtShape& shape);

}  // namespace kiln::cuda
