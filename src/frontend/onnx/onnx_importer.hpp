// ONNX → IR.
//
// Loads a ModelProto from a file or from bytes, runs the ONNX model checker,
// and converts it into an ir::Graph with static shape inference applied.
// protobuf never copies the large initializer weights (model_parser.hpp):
// from a file, tensors borrow them from a read-only mapping of the file, or
// from one aligned buffer they are read into where their offset in the file
// is not aligned for their type; external data is mapped and borrowed too.
// The graph keeps those buffers alive for as long as any tensor refers to
// them. So a model file must not be rewritten in place while its graph lives
// (onnx.save and cp truncate and rewrite the same file): borrowed weights
// would change under the graph, and a read past a shortened end is SIGBUS.
// Replace it by writing a new file and renaming it over the old one.
//
// Every failure is a kiln::Error naming the file, and the node and op where
// one is involved: invalid_model for a truncated, corrupt or checker-rejected
// file, unsupported for valid ONNX that kiln cannot hold (string tensors,
// subgraphs in a used op), io for unreadable files. Nothing is fatal.
#pragma once

#include <cstddef>
#include <filesystem>
#include <map>
#include <span>
#include <string>

#include "ir/graph.hpp"

namespace kiln::frontend {

struct ImportedModel {
  ir::Graph graph;
  int64_t ir_version = 0;
  std::map<std::string, int64_t> opsets;  // domain ("" for ONNX) → version
  std::string producer;
};

// External-data locations are resolved relative to the model's folder and
// must stay inside it.
ImportedModel import_onnx_file(const std::filesystem::path& path);

// The weights in `bytes` are copied once (the buffer need not outlive the
// model); `base_dir` resolves external data (empty: external data is
// refused). `source` names the model in errors.
ImportedModel import_onnx_bytes(std::span<const std::byte> bytes, const std::string& source = "<memory>",
                                const std::filesystem::path& base_dir = {});

// Reads a serialized onnx.TensorProto (the ONNX test suite's input_N.pb and
// output_N.pb files) into an owned tensor.
Tensor read_tensor_proto_file(const std::filesystem::path& path);

}  // namespace kiln::frontend
