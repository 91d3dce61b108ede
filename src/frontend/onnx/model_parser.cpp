#include "frontend/onnx/model_parser.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <vector>

#include "frontend/onnx/raw_data_scanner.hpp"
#include "util/huge_page_buffer.hpp"

namespace kiln::frontend {

namespace {

// The file the scanned bytes are a mapping of, and its descriptor.
struct FileSource {
  const std::shared_ptr<const MappedFile>& mapping;
  int fd;
};

// Reads `to.size()` bytes at `offset` of the file. pread, not a copy out of
// the mapping: the kernel copies from the page cache directly, where touching
// the mapped pages would fault each one in first (three times slower on a
// VM) and leave them in the process's resident memory beside the copy.
void read_exactly(int fd, std::span<std::byte> to, size_t offset, const std::string& source) {
  size_t done = 0;
  while (done < to.size()) {
    ssize_t n = ::pread(fd, to.data() + done, to.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error(ErrorCode::io, source + ": cannot read: " + std::strerror(errno));
    if (n == 0) throw Error(ErrorCode::io, source + ": the file shrank while it was being read");
    done += static_cast<size_t>(n);
  }
}

// Points each parsed initializer whose raw_data the scanner elided at its
// payload, copied once into one buffer, each at a 64-byte boundary: a
// tensor's data must be aligned for its type, and a payload's offset in the
// file is whatever the writer's field sizes made it. Nothing is borrowed
// from a file's mapping, though an aligned payload could be: a model file
// rewritten in place (onnx.save, cp) while its graph lives would change the
// weights under it, or end the process with SIGBUS where it shrank. The copy
// costs a few milliseconds per 50 MB; the mapping is only read while the
// model is imported.
void place_payloads(const onnx::GraphProto& graph,
                    std::span<const std::optional<std::span<const std::byte>>> payloads,
                    const std::optional<FileSource>& file, const std::string& source, ParsedModel& parsed) {
  if (static_cast<size_t>(graph.initializer_size()) != payloads.size()) {
    throw Error(ErrorCode::internal, source + ": the wire-format scan found " +
                                         std::to_string(payloads.size()) + " initializers, protobuf " +
                                         std::to_string(graph.initializer_size()));
  }
  constexpr size_t k_slot_alignment = 64;
  std::vector<size_t> offsets(payloads.size(), 0);
  size_t arena_size = 0;
  for (size_t i = 0; i < payloads.size(); ++i) {
    if (!payloads[i]) continue;
    offsets[i] = arena_size;
    arena_size += (payloads[i]->size() + k_slot_alignment - 1) / k_slot_alignment * k_slot_alignment;
  }
  std::shared_ptr<HugePageBuffer> arena;
  if (arena_size > 0) arena = std::make_shared<HugePageBuffer>(arena_size);
  for (size_t i = 0; i < payloads.size(); ++i) {
    if (!payloads[i]) continue;
    const auto& payload = *payloads[i];
    const onnx::TensorProto* tensor = &graph.initializer(static_cast<int>(i));
    std::span<std::byte> slot(arena->data() + offsets[i], payload.size());
    if (file) {
      read_exactly(file->fd, slot, static_cast<size_t>(payload.data() - file->mapping->bytes().data()),
                   source);
    } else {
      std::memcpy(slot.data(), payload.data(), payload.size());
    }
    parsed.elided[tensor] = {slot, arena};
  }
}

ParsedModel parse(std::span<const std::byte> bytes, const std::optional<FileSource>& file,
                  const std::string& source) {
  ParsedModel parsed;
  parsed.proto = std::make_shared<onnx::ModelProto>();
  auto elided = elide_initializer_payloads(bytes);
  // Without an elided copy, protobuf parses the bytes as they are, and its
  // verdict on malformed input stands.
  std::span<const std::byte> wire = elided ? std::as_bytes(std::span<const char>(elided->pruned)) : bytes;
  if (wire.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max()) ||
      !parsed.proto->ParseFromArray(wire.data(), static_cast<int>(wire.size()))) {
    throw_not_a_model(source);
  }
  if (elided) place_payloads(parsed.proto->graph(), elided->initializer_payloads, file, source, parsed);
  return parsed;
}

}  // namespace

void throw_not_a_model(const std::string& source) {
  throw Error(ErrorCode::invalid_model, source + ": not a valid ONNX model (truncated or corrupt protobuf)");
}

ParsedModel parse_model(const std::shared_ptr<const MappedFile>& file, int fd, const std::string& source) {
  return parse(file->bytes(), FileSource{file, fd}, source);
}

ParsedModel parse_model(std::span<const std::byte> bytes, const std::string& source) {
  return parse(bytes, std::nullopt, source);
}

}  // namespace kiln::frontend
