// Importing must not copy weights: a ResNet-50-sized model (25.6 M float
// parameters, ~102 MB) is imported in a fresh process whose peak resident
// memory must stay well under twice the file size.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <cstdio>
#include <filesystem>

#include "test_helpers.hpp"
#include "zoo/model_builder.hpp"

#ifndef KILN_IMPORT_MEMORY_PROBE
#error "KILN_IMPORT_MEMORY_PROBE must name the probe executable"
#endif

namespace kiln {
namespace {

TEST(ImportMemory, PeakResidentMemoryStaysNearOneCopyOfTheWeights) {
  testing::TempDir dir;
  auto path = dir / "resnet50_sized.onnx";
  {
    // Four 2528x2528 MatMul weights: 25,563,136 parameters, as many as ResNet-50.
    zoo::ModelBuilder b("resnet50_sized", 17, 7);
    b.add_input("x", onnx::TensorProto::FLOAT, {{1, {}}, {2528, {}}});
    std::string x = "x";
    for (int i = 0; i < 4; ++i) {
      std::string w = b.weight("w" + std::to_string(i), {2528, 2528}, 0.02f);
      x = b.node("MatMul", "matmul" + std::to_string(i), {x, w});
    }
    b.node("Relu", "relu", {x}, {}, {"y"});
    b.add_output("y", onnx::TensorProto::FLOAT, {{1, {}}, {2528, {}}});
    testing::write_file(path, b.serialize());
  }
  auto file_size = static_cast<double>(std::filesystem::file_size(path));
  ASSERT_GT(file_size, 100e6);

  std::string command = std::string(KILN_IMPORT_MEMORY_PROBE) + " " + path.string();
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  long baseline_kb = 0, peak_kb = 0, weight_bytes = 0;
  int fields = std::fscanf(pipe, "%ld %ld %ld", &baseline_kb, &peak_kb, &weight_bytes);
  ASSERT_EQ(::pclose(pipe), 0);
  ASSERT_EQ(fields, 3);
  double growth = static_cast<double>(peak_kb - baseline_kb) * 1024.0;
  std::cout << "file " << file_size / 1e6 << " MB, import peak growth " << growth / 1e6 << " MB ("
            << growth / file_size << "x)\n";
  EXPECT_GE(weight_bytes, static_cast<long>(file_size * 0.99));
  // One copy of the weights lives in the parsed model; a second copy would
  // put growth at 2x or more.
  EXPECT_LT(growth, 1.3 * file_size);
}

}  // namespace
}  // namespace kiln
