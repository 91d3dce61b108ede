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
struct ResNetConfig {
  std::vector<int64_t> widths;  // channels of the four stages
  std::vector<int> blocks;      // BasicBlocks per stage
  int64_t stem_width;
  int64_t image_size;
  int64_t classes;
};
ZooModel build_resnet_basic(const std::string& name, const ResNetConfig& config, const ZooOptions& options);

}  // namespace kiln::zoo
