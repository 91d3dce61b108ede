// The built-in model zoo: real architectures, written as ONNX the way a
// PyTorch export lays them out, with seeded random weights. Nothing is
// downloaded; the same name, seed and batch give the same bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::zoo {

struct ZooOptions {
  uint64_t seed = 0;
  std::optional<int64_t> batch;  // nullopt: a symbolic "batch" dimension
};

struct ZooModel {
  std::string onnx_bytes;
  int64_t parameters = 0;  // trainable parameters, as torchvision counts them
};

struct ZooEntry {
  std::string name;
  std::string description;
};

std::vector<ZooEntry> zoo_entries();

// Throws kiln::Error(invalid_argument) naming the known models for an
// unknown name.
ZooModel build_zoo_model(std::string_view name, const ZooOptions& options);

// Per-architecture builders (one file each).

enum class ResNetBlock {
  basic,       // two 3x3 convs (ResNet-18/34)
  bottleneck,  // 1x1 → 3x3 (strided, as torchvision v1.5) → 1x1 with 4x expansion (ResNet-50/101/152)
};

struct ResNetConfig {
  std::vector<int64_t> widths;  // channels of the four stages (bottleneck: before the 4x expansion)
  std::vector<int> blocks;      // blocks per stage
  int64_t stem_width;
  int64_t image_size;
  int64_t classes;
  ResNetBlock block = ResNetBlock::basic;
};
ZooModel build_resnet(const std::string& name, const ResNetConfig& config, const ZooOptions& options);
// Kept for callers written before Bottleneck support; same as build_resnet.
ZooModel build_resnet_basic(const std::string& name, const ResNetConfig& config, const ZooOptions& options);

// One row of MobileNetV2's inverted-residual table (torchvision's t, c, n, s).
struct InvertedResidualStage {
  int64_t expand_ratio;
  int64_t channels;
  int repeats;
  int64_t stride;  // of the first block in the stage
};

struct MobileNetV2Config {
  std::vector<InvertedResidualStage> stages;
  int64_t stem_width;
  int64_t last_width;
  int64_t image_size;
  int64_t classes;
};
ZooModel build_mobilenet_v2(const std::string& name, const MobileNetV2Config& config,
                            const ZooOptions& options);

struct BertConfig {
  int layers;
  int64_t hidden;
  int64_t heads;
  int64_t intermediate;
  int64_t vocab;
  int64_t max_positions;
  int64_t type_vocab = 2;
  // LayerNorm as the ReduceMean/Sub/Pow/.../Add chain that exporters emit
  // below opset 17, instead of one LayerNormalization node.
  bool decomposed_layer_norm = false;
};
ZooModel build_bert(const std::string& name, const BertConfig& config, const ZooOptions& options);

}  // namespace kiln::zoo
