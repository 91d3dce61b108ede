// ResNet with BasicBlocks (resnet18, resnet_tiny) or Bottleneck blocks
// (resnet50), laid out as torchvision's models export: Conv (no bias) →
// BatchNormalization → Relu, a 1x1 Conv + BatchNormalization on the shortcut
// where the shape changes, residual Add → Relu, GlobalAveragePool → Flatten →
// Gemm. Bottlenecks put the stride on the 3x3 conv (torchvision's "v1.5").
#include <onnx/onnx_pb.h>

#include "kiln/error.hpp"
#include "zoo/layers.hpp"
#include "zoo/model_builder.hpp"
#include "zoo/zoo.hpp"

namespace kiln::zoo {

namespace {

constexpr int64_t k_bottleneck_expansion = 4;

class ResNetWriter {
 public:
  explicit ResNetWriter(ModelBuilder& b) : m_b(b) {}

  std::string conv_bn_relu(const std::string& prefix, const std::string& x, const ConvSpec& spec) {
    return m_b.node("Relu", prefix + "/Relu", {conv_bn(m_b, prefix, x, spec)});
  }

  std::string basic_block(const std::string& prefix, const std::string& x, int64_t in_c, int64_t out_c,
                          int64_t stride) {
    std::string y = conv_bn_relu(prefix + ".conv1", x, {in_c, out_c, 3, stride});
    y = conv_bn(m_b, prefix + ".conv2", y, {out_c, out_c, 3, 1});
    return residual(prefix, x, y, in_c, out_c, stride);
  }

  // torchvision Bottleneck: width = planes; output channels = planes * 4.
  std::string bottleneck_block(const std::string& prefix, const std::string& x, int64_t in_c, int64_t planes,
                               int64_t stride) {
    const int64_t out_c = planes * k_bottleneck_expansion;
    std::string y = conv_bn_relu(prefix + ".conv1", x, {in_c, planes, 1, 1});
    y = conv_bn_relu(prefix + ".conv2", y, {planes, planes, 3, stride});
    y = conv_bn(m_b, prefix + ".conv3", y, {planes, out_c, 1, 1});
    return residual(prefix, x, y, in_c, out_c, stride);
  }

 private:
  std::string residual(const std::string& prefix, const std::string& x, const std::string& y, int64_t in_c,
                       int64_t out_c, int64_t stride) {
    std::string shortcut = x;
    if (stride != 1 || in_c != out_c)
      shortcut = conv_bn(m_b, prefix + ".downsample", x, {in_c, out_c, 1, stride});
    std::string sum = m_b.node("Add", prefix + "/Add", {y, shortcut});
    return m_b.node("Relu", prefix + "/Relu", {sum});
  }

  ModelBuilder& m_b;
};

}  // namespace

ZooModel build_resnet(const std::string& name, const ResNetConfig& config, const ZooOptions& options) {
  if (config.widths.size() != config.blocks.size()) {
    throw Error(ErrorCode::internal, "zoo: ResNet config '" + name + "' has mismatched widths and blocks");
  }
  ModelBuilder b(name, 17, options.seed);
  IoDim batch = options.batch ? IoDim{*options.batch, {}} : IoDim{0, "batch"};
  b.add_input("input", onnx::TensorProto::FLOAT,
              {batch, {3, {}}, {config.image_size, {}}, {config.image_size, {}}});
  ResNetWriter w(b);
  std::string x = w.conv_bn_relu("conv1", "input", {3, config.stem_width, 7, 2});
  x = b.node(
      "MaxPool", "maxpool/MaxPool", {x},
      {Attr::of("kernel_shape", std::vector<int64_t>{3, 3}),
       Attr::of("pads", std::vector<int64_t>{1, 1, 1, 1}), Attr::of("strides", std::vector<int64_t>{2, 2})});
  int64_t channels = config.stem_width;
  for (size_t stage = 0; stage < config.widths.size(); ++stage) {
    for (int block = 0; block < config.blocks[stage]; ++block) {
      const int64_t stride = (stage > 0 && block == 0) ? 2 : 1;
      const std::string prefix = "layer" + std::to_string(stage + 1) + "." + std::to_string(block);
      const int64_t width = config.widths[stage];
      if (config.block == ResNetBlock::basic) {
        x = w.basic_block(prefix, x, channels, width, stride);
        channels = width;
      } else {
        x = w.bottleneck_block(prefix, x, channels, width, stride);
        channels = width * k_bottleneck_expansion;
      }
    }
  }
  classifier_head(b, x, "fc", channels, config.classes);
  b.add_output("output", onnx::TensorProto::FLOAT, {batch, {config.classes, {}}});
  return {b.serialize(), b.parameter_count()};
}

ZooModel build_resnet_basic(const std::string& name, const ResNetConfig& config, const ZooOptions& options) {
  return build_resnet(name, config, options);
}

}  // namespace kiln::zoo
