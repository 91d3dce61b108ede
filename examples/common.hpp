// Helpers shared by the examples, kept apart so each example reads like its
// section of the tutorial: a scratch folder, a model file (from kiln's zoo, so
// nothing is downloaded, or a path), and random image batches.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "frontend/onnx/onnx_importer.hpp"
#include "kiln/tensor.hpp"
#include "zoo/model_builder.hpp"
#include "zoo/zoo.hpp"

namespace example {

// A fresh folder under the temp dir, removed at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "kiln-example-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    m_path = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(m_path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return m_path; }

 private:
  std::filesystem::path m_path;
};

// `model` is a zoo name (written into `dir` with weights from `seed`, batch
// symbolic) or an .onnx path (used as is).
inline std::filesystem::path model_file(const std::string& model, uint64_t seed,
                                        const std::filesystem::path& dir) {
  if (std::filesystem::path(model).extension() == ".onnx") return model;
  auto file = dir / (model + "_seed" + std::to_string(seed) + ".onnx");
  std::string bytes = kiln::zoo::build_zoo_model(model, {seed, std::nullopt}).onnx_bytes;
  std::ofstream(file, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return file;
}

// The model's one image input: its name and shape (dim 0, the batch, as 1).
struct ImageInput {
  std::string name;
  std::vector<int64_t> shape;
};

inline ImageInput image_input(const std::filesystem::path& model) {
  auto imported = kiln::frontend::import_onnx_file(model);
  const auto& v = imported.graph.value(imported.graph.inputs().at(0));
  ImageInput input{v.name, {}};
  for (const auto& d : v.type.shape.value()) input.shape.push_back(d.is_static() ? d.value() : 1);
  return input;
}

// torch.rand((batch, ...)): uniform in [0, 1).
inline kiln::Tensor random_images(const ImageInput& input, int64_t batch, uint64_t seed) {
  std::vector<int64_t> shape = input.shape;
  shape[0] = batch;
  kiln::Tensor t = kiln::Tensor::zeros(kiln::DType::float32, shape);
  kiln::zoo::SeededRandom random(seed);
  for (float& x : t.mutable_data<float>()) x = static_cast<float>(random.uniform());
  return t;
}

inline double ms_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

// Usage: NAME [MODEL [BATCH]]; the tutorial's ResNet-18 at batch 100 by default.
struct Args {
  std::string model = "resnet18";
  int64_t batch = 100;
};
inline Args parse_args(int argc, char** argv) {
  Args args;
  if (argc > 1) args.model = argv[1];
  if (argc > 2) args.batch = std::stoll(argv[2]);
  if (argc > 3 || args.batch < 1)
    throw std::invalid_argument(std::string("usage: ") + argv[0] + " [MODEL [BATCH]]");
  return args;
}

}  // namespace example
