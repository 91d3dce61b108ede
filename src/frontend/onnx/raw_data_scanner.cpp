#include "frontend/onnx/raw_data_scanner.hpp"

#include <cstdint>
#include <limits>

namespace kiln::frontend {

namespace {

// Field numbers and wire types from onnx.proto and the protobuf encoding.
constexpr uint32_t k_model_graph = 7;
constexpr uint32_t k_graph_initializer = 5;
constexpr uint32_t k_tensor_raw_data = 9;
constexpr uint32_t k_varint = 0;
constexpr uint32_t k_fixed64 = 1;
constexpr uint32_t k_length_delimited = 2;
constexpr uint32_t k_fixed32 = 5;

struct Field {
  uint32_t number = 0;
  uint32_t wire_type = 0;
  std::span<const std::byte> whole;    // tag, length and payload, as read
  std::span<const std::byte> payload;  // length-delimited fields only
};

// Reads fields off one message's bytes. Every read is checked against the
// end of the span: a length or varint that runs past it stops the walk.
class WireReader {
 public:
  explicit WireReader(std::span<const std::byte> bytes) : m_bytes(bytes) {}

  bool done() const { return m_pos == m_bytes.size(); }

  // False for a field that is malformed or that the scanner does not walk
  // (groups, wire types 6 and 7, field number 0): such input goes to
  // protobuf whole.
  bool next(Field& field) {
    const size_t start = m_pos;
    uint64_t tag = 0;
    if (!varint(tag) || tag > std::numeric_limits<uint32_t>::max()) return false;
    field.number = static_cast<uint32_t>(tag >> 3);
    field.wire_type = static_cast<uint32_t>(tag & 7);
    if (field.number == 0) return false;
    field.payload = {};
    switch (field.wire_type) {
      case k_varint: {
        uint64_t ignored = 0;
        if (!varint(ignored)) return false;
        break;
      }
      case k_fixed64:
        if (!skip(8)) return false;
        break;
      case k_fixed32:
        if (!skip(4)) return false;
        break;
      case k_length_delimited: {
        uint64_t length = 0;
        if (!varint(length) || length > m_bytes.size() - m_pos) return false;
        field.payload = m_bytes.subspan(m_pos, static_cast<size_t>(length));
        m_pos += static_cast<size_t>(length);
        break;
      }
      default:
        return false;
    }
    field.whole = m_bytes.subspan(start, m_pos - start);
    return true;
  }

 private:
  bool varint(uint64_t& value) {
    value = 0;
    // Ten bytes carry 64 bits; protobuf rejects a longer varint.
    for (int shift = 0; shift < 70; shift += 7) {
      if (m_pos == m_bytes.size()) return false;
      const auto byte = static_cast<uint8_t>(m_bytes[m_pos++]);
      value |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return true;
    }
    return false;
  }

  bool skip(size_t n) {
    if (n > m_bytes.size() - m_pos) return false;
    m_pos += n;
    return true;
  }

  std::span<const std::byte> m_bytes;
  size_t m_pos = 0;
};

void append_varint(std::string& out, uint64_t value) {
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}

void append(std::string& out, std::span<const std::byte> bytes) {
  out.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

void append_length_delimited(std::string& out, uint32_t number, const std::string& payload) {
  append_varint(out, (static_cast<uint64_t>(number) << 3) | k_length_delimited);
  append_varint(out, payload.size());
  out += payload;
}

// One TensorProto. protobuf keeps the last of repeated occurrences of a
// singular field, so `payload` is the last raw_data's when that one is
// elided, and nullopt when the last one is kept.
bool prune_tensor(std::span<const std::byte> tensor, size_t min_payload, std::string& out,
                  std::optional<std::span<const std::byte>>& payload) {
  WireReader reader(tensor);
  payload.reset();
  Field field;
  while (!reader.done()) {
    if (!reader.next(field)) return false;
    if (field.number == k_tensor_raw_data && field.wire_type == k_length_delimited) {
      if (field.payload.size() >= min_payload) {
        append_length_delimited(out, k_tensor_raw_data, std::string(1, '\0'));
        payload = field.payload;
        continue;
      }
      payload.reset();
    }
    append(out, field.whole);
  }
  return true;
}

// One GraphProto occurrence. protobuf merges repeated occurrences of the
// model's graph field, appending their initializers in order; the payloads
// are appended in the same order.
bool prune_graph(std::span<const std::byte> graph, size_t min_payload, std::string& out,
                 ElidedModel& result) {
  WireReader reader(graph);
  Field field;
  std::string tensor;
  while (!reader.done()) {
    if (!reader.next(field)) return false;
    if (field.number == k_graph_initializer && field.wire_type == k_length_delimited) {
      tensor.clear();
      auto& payload = result.initializer_payloads.emplace_back();
      if (!prune_tensor(field.payload, min_payload, tensor, payload)) return false;
      append_length_delimited(out, k_graph_initializer, tensor);
      continue;
    }
    // A field with a known number but another wire type is an unknown field
    // to protobuf, and copied here as it is.
    append(out, field.whole);
  }
  return true;
}

}  // namespace

std::optional<ElidedModel> elide_initializer_payloads(std::span<const std::byte> model, size_t min_payload) {
  // protobuf parses at most 2 GiB from an array.
  if (model.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) return std::nullopt;
  ElidedModel result;
  WireReader reader(model);
  Field field;
  std::string graph;
  while (!reader.done()) {
    if (!reader.next(field)) return std::nullopt;
    if (field.number == k_model_graph && field.wire_type == k_length_delimited) {
      graph.clear();
      if (!prune_graph(field.payload, min_payload, graph, result)) return std::nullopt;
      append_length_delimited(result.pruned, k_model_graph, graph);
      continue;
    }
    append(result.pruned, field.whole);
  }
  bool elided = false;
  for (const auto& payload : result.initializer_payloads) elided = elided || payload.has_value();
  if (!elided) return std::nullopt;
  return result;
}

}  // namespace kiln::frontend
