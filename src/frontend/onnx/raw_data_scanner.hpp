// Finds the initializers' weights in a serialized onnx.ModelProto without
// parsing it, so that the importer can borrow them where they lie instead of
// letting protobuf copy them.
//
// Protobuf's C++ parser copies every bytes field into a fresh std::string: a
// model's weights, read from a file, land in new pages one 8 KiB read at a
// time, and importing ResNet-18 (47 MB) was almost all page faults and
// memmove. The scanner walks the wire format down to each initializer's
// raw_data (ModelProto.graph = 7, GraphProto.initializer = 5,
// TensorProto.raw_data = 9) and writes a copy of the model in which every
// large payload is cut down to a one-byte placeholder. That copy is small
// and quick to parse; the importer then points each such tensor at its
// payload in the original bytes.
//
// The placeholder keeps raw_data present and non-empty, so that the ONNX
// checker sees the same fields as in the original: it counts raw_data as a
// value field by being non-empty and never reads its bytes. Sizes are
// checked against the real payload by the importer.
//
// Only the main graph's initializers are elided; nested graphs and Constant
// nodes' tensors stay in the parsed model as before.
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace kiln::frontend {

// Payloads below this size stay in the parsed model: copying them costs
// less than tracking them.
inline constexpr size_t k_min_elided_raw_data = 1024;

struct ElidedModel {
  // The model with each elided raw_data payload replaced by one zero byte.
  std::string pruned;
  // One entry per graph.initializer, in the order the parsed `pruned` lists
  // them: the raw_data payload cut from it (a span of the scanned bytes), or
  // nullopt where the tensor keeps its own data.
  std::vector<std::optional<std::span<const std::byte>>> initializer_payloads;
};

// Returns nullopt where there is nothing to elide or the bytes are not a
// model the scanner can walk exactly as protobuf would (truncated or
// malformed fields, groups, more than 2 GiB): the caller then parses the
// original bytes, and protobuf's verdict on them stands. Reads nothing
// outside `model`.
std::optional<ElidedModel> elide_initializer_payloads(std::span<const std::byte> model,
                                                      size_t min_payload = k_min_elided_raw_data);

}  // namespace kiln::frontend
