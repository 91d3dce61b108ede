#include "format/header_peek.hpp"

#include <cstring>
#include <string_view>

namespace kiln::format {

namespace {

// A bounds-checked reader over the prefix.
class Reader {
 public:
  explicit Reader(std::span<const std::byte> bytes) : m_bytes(bytes) {}

  bool take(void* out, size_t n) {
    if (n > m_bytes.size() - m_pos) return false;
    std::memcpy(out, m_bytes.data() + m_pos, n);
    m_pos += n;
    return true;
  }
  template <typename T>
  bool take_le(T& value) {  // kiln only runs on little-endian hosts
    return take(&value, sizeof value);
  }
  bool take_string(std::string& out) {
    uint16_t length = 0;
    if (!take_le(length) || length > m_bytes.size() - m_pos) return false;
    out.assign(reinterpret_cast<const char*>(m_bytes.data() + m_pos), length);
    m_pos += length;
    return true;
  }

 private:
  std::span<const std::byte> m_bytes;
  size_t m_pos = 0;
};

}  // namespace

std::optional<EnvelopeHeader> peek_header(std::span<const std::byte> prefix) {
  Reader r(prefix);
  char magic[8];
  uint32_t version = 0, header_len = 0, flags = 0;
  if (!r.take(magic, 8) || std::string_view(magic, 8) != "KILNBLOB") return std::nullopt;
  if (!r.take_le(version) || version != k_envelope_version || !r.take_le(header_len)) return std::nullopt;
  EnvelopeHeader h;
  if (!r.take_le(flags) || !r.take(h.key.digest.data(), 32) || !r.take(h.key.parts.graph.data(), 32) ||
      !r.take(h.key.parts.inputs.data(), 32) || !r.take(h.key.parts.settings.data(), 32) ||
      !r.take(h.key.parts.fingerprint.data(), 32) || !r.take_string(h.producer) ||
      !r.take_string(h.fingerprint) || !r.take_le(h.created_unix_ms) || !r.take_le(h.build_ms)) {
    return std::nullopt;
  }
  return h;
}

}  // namespace kiln::format
