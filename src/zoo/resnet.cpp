// ResNet with BasicBlocks (resnet18 and a tiny variant for tests), laid out as
// torchvision's model exports: Conv (no bias) → BatchNormalization → Relu,
// a 1x1 Conv + BatchNormalization on the shortcut where the shape changes,
// GlobalAveragePool → Flatten → Gemm.
#include <cmath>
#include <onnx/onnx_pb.h>

#include "zoo/model_builder.hpp"
#include "zoo/zoo.hpp"

namespace kiln::zoo {

namespace {

class ResNetWriter {
 public:
  explicit ResNetWriter(ModelBuilder& b) : m_b(b) {}

  std::string conv_bn(const std::string& prefix, const std::string& x, int64_t in_c, int64_t out_c, int64_t k,
                      int64_t stride, bool relu) {
    // He initialization keeps activations in a sane range through depth.
    float stddev = std::sqrt(2.0f / static_cast<float>(in_c * k * k));
    std::string w = m_b.weight(prefix + ".weight", {out_c, in_c, k, k}, stddev);
    int64_t pad = k / 2;
    std::string y = m_b.node("Conv", prefix + "/Conv", {x, w},
                             {Attr::of("dilations", std::vector<int64_t>{1, 1}), Attr::of("group", int64_t{1}),
                              Attr::of("kernel_shape", std::vector<int64_t>{k, k}),
                              Attr::of("pads", std::vector<int64_t>{pad, pad, pad, pad}),
                              Attr::of("strides", std::vector<int64_t>{stride, stride})});
    std::string bn = prefix + "_bn";
    std::string scale = m_b.uniform_weight(bn + ".weight", {out_c}, 0.5f, 1.0f);
    std::string bias = m_b.weight(bn + ".bias", {out_c}, 0.05f);
    std::string mean = m_b.weight(bn + ".running_mean", {out_c}, 0.05f);
    std::string var = m_b.uniform_weight(bn + ".running_var", {out_c}, 0.5f, 1.5f);
    m_b.exclude_from_parameters(2 * out_c);  // running statistics are buffers, not parameters
    y = m_b.node("BatchNormalization", bn + "/BatchNormalization", {y, scale, bias, mean, var},
                 {Attr::of("epsilon", 1e-5f), Attr::of("momentum", 0.9f)});
    if (relu) y = m_b.node("Relu", prefix + "/Relu", {y});
    return y;
  }

  std::string basic_block(const std::string& prefix, const std::string& x, int64_t in_c, int64_t out_c,
                          int64_t stride) {
    std::string y = conv_bn(prefix + ".conv1", x, in_c, out_c, 3, stride, true);
    y = conv_bn(prefix + ".conv2", y, out_c, out_c, 3, 1, false);
    std::string shortcut = x;
    if (stride != 1 || in_c != out_c) shortcut = conv_bn(prefix + ".downsample", x, in_c, out_c, 1, stride, false);
    y = m_b.node("Add", prefix + "/Add", {y, shortcut});
    return m_b.node("Relu", prefix + "/Relu", {y});
  }

 private:
  ModelBuilder& m_b;
};

}  // namespace

ZooModel build_resnet_basic(const std::string& name, const ResNetConfig& config, const ZooOptions& options) {
  ModelBuilder b(name, 17, options.seed);
  IoDim batch = options.batch ? IoDim{*options.batch, {}} : IoDim{0, "batch"};
  b.add_input("input", onnx::TensorProto::FLOAT, {batch, {3, {}}, {config.image_size, {}}, {config.image_size, {}}});
  ResNetWriter w(b);
  std::string x = w.conv_bn("conv1", "input", 3, config.stem_width, 7, 2, true);
  x = b.node("MaxPool", "maxpool/MaxPool", {x},
             {Attr::of("kernel_shape", std::vector<int64_t>{3, 3}), Attr::of("pads", std::vector<int64_t>{1, 1, 1, 1}),
              Attr::of("strides", std::vector<int64_t>{2, 2})});
  int64_t channels = config.stem_width;
  for (size_t stage = 0; stage < config.widths.size(); ++stage) {
    for (int block = 0; block < config.blocks[stage]; ++block) {
      int64_t stride = (stage > 0 && block == 0) ? 2 : 1;
      std::string prefix = "layer" + std::to_string(stage + 1) + "." + std::to_string(block);
      x = w.basic_block(prefix, x, channels, config.widths[stage], stride);
      channels = config.widths[stage];
    }
  }
  x = b.node("GlobalAveragePool", "avgpool/GlobalAveragePool", {x});
  x = b.node("Flatten", "Flatten", {x}, {Attr::of("axis", int64_t{1})});
  float fc_std = 1.0f / std::sqrt(static_cast<float>(channels));
  std::string fc_w = b.weight("fc.weight", {config.classes, channels}, fc_std);
  std::string fc_b = b.weight("fc.bias", {config.classes}, fc_std);
  b.node("Gemm", "fc/Gemm", {x, fc_w, fc_b},
         {Attr::of("alpha", 1.0f), Attr::of("beta", 1.0f), Attr::of("transB", int64_t{1})}, {"output"});
  b.add_output("output", onnx::TensorProto::FLOAT, {batch, {config.classes, {}}});
  return {b.serialize(), b.parameter_count()};
}

}  // namespace kiln::zoo
