// A model whose blocks mix engine layers with data-dependent nodes that fall
// back to the reference backend; shared by the partition and profile tests.
#pragma once

#include <onnx/onnx_pb.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "zoo/model_builder.hpp"

namespace kiln::testing {

// `blocks` times: Conv → Relu, then an add of (number of nonzeros) / 1024.
// The NonZero and the Shape of its output depend on data, so they fall back;
// the rest of each block (Gather ... Add, the next Conv → Relu) is one engine,
// the same for every middle block. The fallback's count reaches every output
// element (a count off by one moves them all by 2^-10, exactly representable),
// so a wrong fallback shows in the comparison with the reference. `batch`
// fixes the batch dim (nullopt: symbolic).
inline std::string nonzero_blocks_model(int blocks, uint64_t seed,
                                        std::optional<int64_t> batch = std::nullopt) {
  zoo::ModelBuilder b("nonzero_blocks", 13, seed);
  const std::vector<zoo::IoDim> dims{
      batch ? zoo::IoDim{*batch, {}} : zoo::IoDim{0, "batch"}, {4, {}}, {8, {}}, {8, {}}};
  b.add_input("input", onnx::TensorProto::FLOAT, dims);
  std::string one = b.int64_constant("one", {}, {1});
  std::string scale = b.float_constant("scale", {}, {1.0f / 1024});
  std::string h = "input";
  for (int i = 0; i < blocks; ++i) {
    std::string p = "block" + std::to_string(i);
    std::string w = b.weight(p + ".w", {4, 4, 3, 3}, 0.3f);
    std::string bias = b.weight(p + ".b", {4}, 0.1f);
    std::string c =
        b.node("Conv", p + ".conv", {h, w, bias}, {zoo::Attr::of("pads", std::vector<int64_t>{1, 1, 1, 1})});
    std::string r = b.node("Relu", p + ".relu", {c});
    std::string nz = b.node("NonZero", p + ".nonzero", {r});
    std::string s = b.node("Shape", p + ".shape", {nz});
    std::string count = b.node("Gather", p + ".count", {s, one}, {zoo::Attr::of("axis", int64_t{0})});
    std::string f =
        b.node("Cast", p + ".cast", {count}, {zoo::Attr::of("to", int64_t{onnx::TensorProto::FLOAT})});
    std::string z = b.node("Mul", p + ".scale", {f, scale});
    h = b.node("Add", p + ".add", {r, z});
  }
  b.add_output(h, onnx::TensorProto::FLOAT, dims);
  return b.serialize();
}

}  // namespace kiln::testing
