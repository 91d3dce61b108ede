#include "zoo/zoo.hpp"

#include "kiln/error.hpp"

namespace kiln::zoo {

std::vector<ZooEntry> zoo_entries() {
  return {
      {"resnet18", "torchvision ResNet-18, 224x224, 1000 classes (11,689,512 parameters)"},
      {"resnet_tiny", "a 4-stage ResNet with BasicBlocks, 8-64 channels, 64x64, 10 classes; for tests"},
  };
}

ZooModel build_zoo_model(std::string_view name, const ZooOptions& options) {
  if (name == "resnet18") {
    return build_resnet_basic("resnet18", {{64, 128, 256, 512}, {2, 2, 2, 2}, 64, 224, 1000}, options);
  }
  if (name == "resnet_tiny") {
    return build_resnet_basic("resnet_tiny", {{8, 16, 32, 64}, {1, 1, 1, 1}, 8, 64, 10}, options);
  }
  std::string known;
  for (const auto& e : zoo_entries()) known += (known.empty() ? "" : ", ") + e.name;
  throw Error(ErrorCode::invalid_argument, "unknown zoo model '" + std::string(name) + "' (known: " + known + ")");
}

}  // namespace kiln::zoo
