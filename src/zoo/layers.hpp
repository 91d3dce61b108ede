// Building blocks shared by the convolutional zoo models: a Conv (no bias)
// followed by BatchNormalization, laid out as torch.onnx exports an
// nn.Conv2d + nn.BatchNorm2d pair in eval mode (without folding the BN).
#pragma once

#include <cstdint>
#include <string>

#include "zoo/model_builder.hpp"

namespace kiln::zoo {

struct ConvSpec {
  int64_t in_channels;
  int64_t out_channels;
  int64_t kernel;
  int64_t stride = 1;
  int64_t group = 1;  // in_channels for a depthwise conv
};

// Conv (He-initialised, "same" padding for odd kernels) → BatchNormalization.
// Weights are named `prefix.weight` and `prefix_bn.{weight,bias,running_mean,
// running_var}`; the running statistics are not counted as parameters.
// Returns the BatchNormalization output.
std::string conv_bn(ModelBuilder& b, const std::string& prefix, const std::string& x, const ConvSpec& spec);

// GlobalAveragePool → Flatten → Gemm(transB), torchvision's classifier head
// (adaptive_avg_pool2d(1) + flatten(1) + Linear named `fc_name`, e.g. "fc").
// Writes graph output `output`.
std::string classifier_head(ModelBuilder& b, const std::string& x, const std::string& fc_name,
                            int64_t channels, int64_t classes);

}  // namespace kiln::zoo
