// The zoo's table of models: names, descriptions and the configs that
// reproduce each real architecture's exact parameter count.
#include "zoo/zoo.hpp"

#include <functional>

#include "kiln/error.hpp"

namespace kiln::zoo {

namespace {

struct Recipe {
  ZooEntry entry;
  std::function<ZooModel(const std::string&, const ZooOptions&)> build;
};

// torchvision's MobileNetV2 inverted-residual table (t, c, n, s).
const std::vector<InvertedResidualStage> k_mobilenet_v2_stages = {
    {1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2}, {6, 64, 4, 2}, {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1},
};

// Every stage kind of the real table (t = 1 without expansion, residual
// repeats, a stride-1 width change) at small widths.
const std::vector<InvertedResidualStage> k_mobilenet_tiny_stages = {
    {1, 8, 1, 1}, {6, 12, 2, 2}, {6, 16, 2, 2}, {6, 24, 2, 2}, {6, 32, 1, 1},
};

const std::vector<Recipe>& recipes() {
  static const std::vector<Recipe> table = {
      {{"resnet18", "torchvision ResNet-18, 224x224, 1000 classes (11,689,512 parameters)"},
       [](const std::string& n, const ZooOptions& o) {
         return build_resnet(n, {{64, 128, 256, 512}, {2, 2, 2, 2}, 64, 224, 1000, ResNetBlock::basic}, o);
       }},
      {{"resnet50",
        "torchvision ResNet-50 (Bottleneck, stride on the 3x3 conv), 224x224, 1000 classes "
        "(25,557,032 parameters)"},
       [](const std::string& n, const ZooOptions& o) {
         return build_resnet(n, {{64, 128, 256, 512}, {3, 4, 6, 3}, 64, 224, 1000, ResNetBlock::bottleneck},
                             o);
       }},
      {{"resnet_tiny",
        "a 4-stage ResNet with BasicBlocks, 8-64 channels, 64x64, 10 classes; for tests "
        "(78,962 parameters)"},
       [](const std::string& n, const ZooOptions& o) {
         return build_resnet(n, {{8, 16, 32, 64}, {1, 1, 1, 1}, 8, 64, 10, ResNetBlock::basic}, o);
       }},
      {{"mobilenet_v2",
        "torchvision MobileNetV2, width 1.0, 224x224, 1000 classes, ReLU6 as Clip "
        "(3,504,872 parameters)"},
       [](const std::string& n, const ZooOptions& o) {
         return build_mobilenet_v2(n, {k_mobilenet_v2_stages, 32, 1280, 224, 1000}, o);
       }},
      {{"mobilenet_tiny",
        "a MobileNetV2 with 8-32 channel inverted residuals (16-channel stem, 64-channel "
        "head), 64x64, 10 classes; for tests (39,210 parameters)"},
       [](const std::string& n, const ZooOptions& o) {
         return build_mobilenet_v2(n, {k_mobilenet_tiny_stages, 16, 64, 64, 10}, o);
       }},
      {{"bert_base",
        "BERT-base encoder without pooler: 12 layers, hidden 768, 12 heads, vocab 30522; inputs "
        "input_ids, attention_mask [batch, sequence] (108,891,648 parameters: 23,837,184 in "
        "embeddings, 85,054,464 in the encoder)"},
       [](const std::string& n, const ZooOptions& o) {
         return build_bert(n, {12, 768, 12, 3072, 30522, 512}, o);
       }},
      {{"bert_tiny",
        "a 2-layer BERT encoder, hidden 128, 2 heads, intermediate 512, vocab 1000, 128 positions; "
        "for tests (541,440 parameters)"},
       [](const std::string& n, const ZooOptions& o) {
         return build_bert(n, {2, 128, 2, 512, 1000, 128}, o);
       }},
      {{"bert_tiny_decomposed",
        "bert_tiny with LayerNorm as the ReduceMean/Sub/Pow/Sqrt/Div chain that "
        "pre-opset-17 exporters emit (541,440 parameters)"},
       [](const std::string& n, const ZooOptions& o) {
         return build_bert(n, {2, 128, 2, 512, 1000, 128, 2, true}, o);
       }},
  };
  return table;
}

}  // namespace

std::vector<ZooEntry> zoo_entries() {
  std::vector<ZooEntry> entries;
  for (const Recipe& r : recipes()) entries.push_back(r.entry);
  return entries;
}

ZooModel build_zoo_model(std::string_view name, const ZooOptions& options) {
  for (const Recipe& r : recipes()) {
    if (r.entry.name == name) return r.build(r.entry.name, options);
  }
  std::string known;
  for (const Recipe& r : recipes()) known += (known.empty() ? "" : ", ") + r.entry.name;
  throw Error(ErrorCode::invalid_argument,
              "unknown zoo model '" + std::string(name) + "' (known: " + known + ")");
}

}  // namespace kiln::zoo
