// MobileNetV2 (torchvision, width 1.0) and a tiny variant for tests, laid out
// as torch.onnx exports it in eval mode: Conv (no bias) → BatchNormalization
// → Clip(0, 6) for ReLU6, depthwise 3x3 convs with group = channels,
// inverted residuals (1x1 expand → 3x3 depthwise → 1x1 linear projection)
// joined by Add where stride is 1 and the channels match, a 1x1 conv to the
// last width, then GlobalAveragePool → Flatten → Gemm. The classifier's
// Dropout disappears in an eval-mode export, so there is none here.
#include <onnx/onnx_pb.h>

#include "zoo/layers.hpp"
#include "zoo/model_builder.hpp"
#include "zoo/zoo.hpp"

namespace kiln::zoo {

namespace {

class MobileNetWriter {
 public:
  explicit MobileNetWriter(ModelBuilder& b) : m_b(b) {
    // Opset 11+ Clip takes min/max as inputs; one pair of scalar
    // initializers serves every ReLU6 (they are constants, not parameters).
    m_min = m_b.float_constant("relu6_min", {}, {0.0f});
    m_max = m_b.float_constant("relu6_max", {}, {6.0f});
  }

  std::string conv_bn_relu6(const std::string& prefix, const std::string& x, const ConvSpec& spec) {
    return m_b.node("Clip", prefix + "/Clip", {conv_bn(m_b, prefix, x, spec), m_min, m_max});
  }

  std::string inverted_residual(const std::string& prefix, const std::string& x, int64_t in_c, int64_t out_c,
                                int64_t stride, int64_t expand_ratio) {
    const int64_t hidden = in_c * expand_ratio;
    std::string y = x;
    int layer = 0;
    auto next = [&] { return prefix + ".conv." + std::to_string(layer++); };
    if (expand_ratio != 1) y = conv_bn_relu6(next(), y, {in_c, hidden, 1, 1});
    y = conv_bn_relu6(next(), y, {hidden, hidden, 3, stride, hidden});
    y = conv_bn(m_b, next(), y, {hidden, out_c, 1, 1});  // linear bottleneck: no activation
    if (stride == 1 && in_c == out_c) y = m_b.node("Add", prefix + "/Add", {x, y});
    return y;
  }

 private:
  ModelBuilder& m_b;
  std::string m_min;
  std::string m_max;
};

}  // namespace

ZooModel build_mobilenet_v2(const std::string& name, const MobileNetV2Config& config,
                            const ZooOptions& options) {
  ModelBuilder b(name, 17, options.seed);
  IoDim batch = options.batch ? IoDim{*options.batch, {}} : IoDim{0, "batch"};
  b.add_input("input", onnx::TensorProto::FLOAT,
              {batch, {3, {}}, {config.image_size, {}}, {config.image_size, {}}});
  MobileNetWriter w(b);
  std::string x = w.conv_bn_relu6("features.0", "input", {3, config.stem_width, 3, 2});
  int64_t channels = config.stem_width;
  int feature = 1;
  for (const InvertedResidualStage& stage : config.stages) {
    for (int i = 0; i < stage.repeats; ++i) {
      const int64_t stride = i == 0 ? stage.stride : 1;
      x = w.inverted_residual("features." + std::to_string(feature++), x, channels, stage.channels, stride,
                              stage.expand_ratio);
      channels = stage.channels;
    }
  }
  x = w.conv_bn_relu6("features." + std::to_string(feature), x, {channels, config.last_width, 1, 1});
  classifier_head(b, x, "classifier.1", config.last_width, config.classes);
  b.add_output("output", onnx::TensorProto::FLOAT, {batch, {config.classes, {}}});
  return {b.serialize(), b.parameter_count()};
}

}  // namespace kiln::zoo
