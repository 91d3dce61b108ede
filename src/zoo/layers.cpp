// Conv + BatchNormalization and the classifier head shared by the
// convolutional zoo models (ResNet, MobileNetV2).
#include "zoo/layers.hpp"

#include <cmath>
#include <vector>

namespace kiln::zoo {

std::string conv_bn(ModelBuilder& b, const std::string& prefix, const std::string& x, const ConvSpec& spec) {
  const int64_t k = spec.kernel;
  const int64_t fan_in = (spec.in_channels / spec.group) * k * k;
  // He initialization keeps activations in a sane range through depth.
  const float stddev = std::sqrt(2.0f / static_cast<float>(fan_in));
  std::string w =
      b.weight(prefix + ".weight", {spec.out_channels, spec.in_channels / spec.group, k, k}, stddev);
  const int64_t pad = k / 2;
  std::string y = b.node("Conv", prefix + "/Conv", {x, w},
                         {Attr::of("dilations", std::vector<int64_t>{1, 1}), Attr::of("group", spec.group),
                          Attr::of("kernel_shape", std::vector<int64_t>{k, k}),
                          Attr::of("pads", std::vector<int64_t>{pad, pad, pad, pad}),
                          Attr::of("strides", std::vector<int64_t>{spec.stride, spec.stride})});
  const std::string bn = prefix + "_bn";
  const int64_t c = spec.out_channels;
  std::string scale = b.uniform_weight(bn + ".weight", {c}, 0.5f, 1.0f);
  std::string bias = b.weight(bn + ".bias", {c}, 0.05f);
  std::string mean = b.weight(bn + ".running_mean", {c}, 0.05f);
  std::string var = b.uniform_weight(bn + ".running_var", {c}, 0.5f, 1.5f);
  b.exclude_from_parameters(2 * c);  // running statistics are buffers, not parameters
  return b.node("BatchNormalization", bn + "/BatchNormalization", {y, scale, bias, mean, var},
                {Attr::of("epsilon", 1e-5f), Attr::of("momentum", 0.9f)});
}

std::string classifier_head(ModelBuilder& b, const std::string& x, const std::string& fc_name,
                            int64_t channels, int64_t classes) {
  std::string y = b.node("GlobalAveragePool", "avgpool/GlobalAveragePool", {x});
  y = b.node("Flatten", "Flatten", {y}, {Attr::of("axis", int64_t{1})});
  // nn.Linear's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)); a normal of
  // the same scale is as good for keeping logits finite.
  const float fc_std = 1.0f / std::sqrt(static_cast<float>(channels));
  std::string fc_w = b.weight(fc_name + ".weight", {classes, channels}, fc_std);
  std::string fc_b = b.weight(fc_name + ".bias", {classes}, fc_std);
  return b.node("Gemm", fc_name + "/Gemm", {y, fc_w, fc_b},
                {Attr::of("alpha", 1.0f), Attr::of("beta", 1.0f), Attr::of("transB", int64_t{1})},
                {"output"});
}

}  // namespace kiln::zoo
