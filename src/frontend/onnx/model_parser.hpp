// Serialized onnx.ModelProto → parsed proto, with the weights left out of
// protobuf's hands.
//
// protobuf copies every raw_data payload into a std::string of its own. Here
// the large initializer payloads are cut out before parsing (see
// raw_data_scanner.hpp) and each tensor is given its payload directly:
// borrowed from the file's read-only mapping where it is aligned for its
// element type, else copied once into one huge-page buffer (read from the
// file with pread, which is cheaper than faulting the mapping in).
#pragma once

#include <onnx/onnx_pb.h>

#include <memory>
#include <span>
#include <string>
#include <unordered_map>

#include "frontend/onnx/tensor_proto.hpp"
#include "util/mapped_file.hpp"

namespace kiln::frontend {

struct ParsedModel {
  std::shared_ptr<onnx::ModelProto> proto;
  // The initializers whose raw_data `proto` holds only a one-byte placeholder
  // for, with their real payloads (TensorSource::elided).
  std::unordered_map<const onnx::TensorProto*, TensorSource::Payload> elided;
};

// `file` is a mapping of the regular file open on `fd`. Aligned payloads are
// borrowed from the mapping, which they keep alive; the others are read
// through `fd`, which need not outlive the call. Throws kiln::Error
// (invalid_model) naming `source` for bytes that are not a ModelProto.
ParsedModel parse_model(const std::shared_ptr<const MappedFile>& file, int fd, const std::string& source);

// Copies the payloads: `bytes` need not outlive the result.
ParsedModel parse_model(std::span<const std::byte> bytes, const std::string& source);

// Throws the error parse_model throws for bytes that are not a ModelProto.
[[noreturn]] void throw_not_a_model(const std::string& source);

}  // namespace kiln::frontend
