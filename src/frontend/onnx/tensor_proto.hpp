// onnx.TensorProto → kiln::Tensor, without copying where the bytes allow it.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <unordered_map>

#include "kiln/tensor.hpp"
#include "util/mapped_file.hpp"

namespace onnx {
class TensorProto;
}

namespace kiln::frontend {

struct TensorSource {
  // Keeps the parsed proto (whose raw_data strings tensors borrow) alive.
  std::shared_ptr<const void> owner;
  // raw_data that the parsed proto holds only a placeholder for (see
  // raw_data_scanner.hpp): the real payload and what keeps it alive.
  struct Payload {
    std::span<const std::byte> bytes;
    std::shared_ptr<const void> owner;
  };
  std::unordered_map<const onnx::TensorProto*, Payload> elided;
  // Folder that external-data locations are relative to; empty refuses them.
  std::filesystem::path base_dir;
  // External files mapped so far, shared by every tensor that lives in them.
  std::map<std::filesystem::path, std::shared_ptr<const MappedFile>> mapped;
};

// raw_data and external data are borrowed (zero copy) when suitably aligned;
// typed fields (float_data, int64_data, ...) are converted into an owned
// tensor. Throws kiln::Error for string/complex types, sizes that do not
// match the shape, and external data outside base_dir or the file's bounds.
Tensor tensor_from_proto(const onnx::TensorProto& proto, TensorSource& source);

}  // namespace kiln::frontend
