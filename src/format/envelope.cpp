#include "format/envelope.hpp"

// XXH3_state_t on the stack needs the static-linking declarations.
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <array>
#include <cstring>
#include <limits>
#include <string_view>

#include "kiln/error.hpp"

namespace kiln::format {

namespace {

constexpr std::string_view k_magic = "KILNBLOB";
constexpr size_t k_preamble_size = 8 + 4 + 4;  // magic, version, header_len
constexpr size_t k_checksum_size = 16;
constexpr uint32_t k_known_flags = k_flag_signed;
constexpr size_t k_flags_offset = k_preamble_size;  // flags open the header

void put_bytes(std::vector<std::byte>& out, const void* data, size_t size) {
  const auto* p = static_cast<const std::byte*>(data);
  out.insert(out.end(), p, p + size);
}

template <typename T>
void put_le(std::vector<std::byte>& out, T value) {
  using U = std::make_unsigned_t<T>;
  auto bits = static_cast<U>(value);
  for (size_t i = 0; i < sizeof(T); ++i) out.push_back(static_cast<std::byte>((bits >> (8 * i)) & 0xff));
}

void put_string(std::vector<std::byte>& out, const std::string& text, const char* what) {
  if (text.size() > std::numeric_limits<uint16_t>::max()) {
    throw Error(ErrorCode::invalid_argument, std::string("blob envelope: the ") + what + " is " +
                                                 std::to_string(text.size()) + " bytes (at most 65535)");
  }
  put_le(out, static_cast<uint16_t>(text.size()));
  put_bytes(out, text.data(), text.size());
}

std::array<std::byte, k_checksum_size> checksum(std::span<const std::byte> covered_header,
                                                std::span<const std::byte> payload) {
  XXH3_state_t state;
  XXH3_128bits_reset(&state);
  XXH3_128bits_update(&state, covered_header.data(), covered_header.size());
  XXH3_128bits_update(&state, payload.data(), payload.size());
  XXH128_hash_t hash = XXH3_128bits_digest(&state);
  std::vector<std::byte> bytes;
  put_le(bytes, hash.low64);
  put_le(bytes, hash.high64);
  std::array<std::byte, k_checksum_size> out{};
  std::memcpy(out.data(), bytes.data(), out.size());
  return out;
}

// Reads fields from a bounded window; every read checks what is left first,
// so no length from the blob is ever used before it is checked.
class Reader {
 public:
  explicit Reader(std::span<const std::byte> bytes) : m_bytes(bytes) {}

  size_t left() const { return m_bytes.size() - m_pos; }
  size_t pos() const { return m_pos; }

  template <typename T>
  bool get_le(T& value) {
    if (left() < sizeof(T)) return false;
    std::make_unsigned_t<T> bits = 0;
    for (size_t i = 0; i < sizeof(T); ++i) {
      bits |= static_cast<std::make_unsigned_t<T>>(std::to_integer<uint8_t>(m_bytes[m_pos + i])) << (8 * i);
    }
    value = static_cast<T>(bits);
    m_pos += sizeof(T);
    return true;
  }

  bool get_raw(void* out, size_t size) {
    if (left() < size) return false;
    std::memcpy(out, m_bytes.data() + m_pos, size);
    m_pos += size;
    return true;
  }

  bool get_string(std::string& out) {
    uint16_t size = 0;
    if (!get_le(size) || left() < size) return false;
    out.assign(reinterpret_cast<const char*>(m_bytes.data() + m_pos), size);
    m_pos += size;
    return true;
  }

 private:
  std::span<const std::byte> m_bytes;
  size_t m_pos = 0;
};

Rejection reject(std::string reason) { return Rejection{std::move(reason)}; }

std::string short_hex(const key::Digest& digest) { return key::to_hex(digest).substr(0, 16); }

}  // namespace

std::vector<std::byte> seal(const EnvelopeHeader& header, std::span<const std::byte> payload) {
  std::vector<std::byte> fields;
  put_le(fields, uint32_t{0});  // flags
  const auto& parts = header.key.parts;
  for (const auto* digest :
       {&header.key.digest, &parts.graph, &parts.inputs, &parts.settings, &parts.fingerprint}) {
    put_bytes(fields, digest->data(), digest->size());
  }
  put_string(fields, header.producer, "producer");
  put_string(fields, header.fingerprint, "fingerprint");
  put_le(fields, header.created_unix_ms);
  put_le(fields, header.build_ms);
  put_le(fields, static_cast<uint64_t>(payload.size()));

  std::vector<std::byte> blob;
  blob.reserve(k_preamble_size + fields.size() + k_checksum_size + payload.size());
  put_bytes(blob, k_magic.data(), k_magic.size());
  put_le(blob, k_envelope_version);
  put_le(blob, static_cast<uint32_t>(fields.size() + k_checksum_size));
  blob.insert(blob.end(), fields.begin(), fields.end());
  auto sum = checksum(blob, payload);
  blob.insert(blob.end(), sum.begin(), sum.end());
  blob.insert(blob.end(), payload.begin(), payload.end());
  return blob;
}

std::variant<OpenedBlob, Rejection> open(std::span<const std::byte> blob) {
  if (blob.empty()) return reject("empty blob");
  if (blob.size() < k_preamble_size) {
    return reject("truncated: " + std::to_string(blob.size()) + " bytes, shorter than the " +
                  std::to_string(k_preamble_size) + "-byte preamble");
  }
  if (std::memcmp(blob.data(), k_magic.data(), k_magic.size()) != 0)
    return reject("bad magic (not a kiln blob)");
  Reader preamble(blob.subspan(k_magic.size(), 8));
  uint32_t version = 0;
  uint32_t header_len = 0;
  (void)preamble.get_le(version);
  (void)preamble.get_le(header_len);
  if (version != k_envelope_version) {
    return reject("envelope version " + std::to_string(version) + " (expected " +
                  std::to_string(k_envelope_version) + ")");
  }
  if (header_len > blob.size() - k_preamble_size) {
    return reject("truncated: header of " + std::to_string(header_len) + " bytes but only " +
                  std::to_string(blob.size() - k_preamble_size) + " follow the preamble");
  }

  Reader header(blob.subspan(k_preamble_size, header_len));
  OpenedBlob opened;
  auto& key = opened.header.key;
  uint32_t flags = 0;
  uint64_t payload_len = 0;
  std::array<std::byte, k_checksum_size> stored_sum{};
  bool fields_ok = header.get_le(flags);
  for (auto* digest :
       {&key.digest, &key.parts.graph, &key.parts.inputs, &key.parts.settings, &key.parts.fingerprint}) {
    fields_ok = fields_ok && header.get_raw(digest->data(), digest->size());
  }
  fields_ok = fields_ok && header.get_string(opened.header.producer) &&
              header.get_string(opened.header.fingerprint) && header.get_le(opened.header.created_unix_ms) &&
              header.get_le(opened.header.build_ms) && header.get_le(payload_len);
  size_t covered_end = k_preamble_size + header.pos();
  fields_ok = fields_ok && header.get_raw(stored_sum.data(), stored_sum.size());
  if (!fields_ok)
    return reject("corrupt header: its fields overrun header_len " + std::to_string(header_len));
  if (header.left() != 0) {
    return reject("corrupt header: " + std::to_string(header.left()) +
                  " unread bytes at the end of the header");
  }

  if ((flags & ~k_known_flags) != 0) return reject("unknown envelope flags " + std::to_string(flags));
  size_t payload_offset = k_preamble_size + header_len;
  size_t remaining = blob.size() - payload_offset;
  if ((flags & k_flag_signed) != 0) {
    // The HMAC trailer is checked by verify_signature(); here only its room.
    if (remaining < k_signature_size) return reject("truncated: a signed blob without its 32-byte signature");
    remaining -= k_signature_size;
  }
  if (payload_len != remaining) {
    return reject(payload_len > remaining
                      ? "truncated: payload of " + std::to_string(payload_len) + " bytes but only " +
                            std::to_string(remaining) + " remain"
                      : "payload of " + std::to_string(payload_len) + " bytes followed by " +
                            std::to_string(remaining - payload_len) + " trailing bytes");
  }

  opened.payload = blob.subspan(payload_offset, payload_len);
  auto actual_sum = checksum(blob.first(covered_end), opened.payload);
  if (actual_sum != stored_sum) return reject("checksum mismatch (corrupt blob)");
  return opened;
}

namespace {

uint32_t read_flags(std::span<const std::byte> blob) {
  uint32_t flags = 0;
  Reader reader(blob.subspan(k_flags_offset, 4));
  (void)reader.get_le(flags);
  return flags;
}

std::array<std::byte, k_signature_size> hmac_sha256(std::span<const std::byte> secret,
                                                    std::span<const std::byte> data) {
  std::array<std::byte, k_signature_size> mac{};
  unsigned int length = 0;
  if (!HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
            reinterpret_cast<const unsigned char*>(data.data()), data.size(),
            reinterpret_cast<unsigned char*>(mac.data()), &length) ||
      length != mac.size()) {
    throw Error(ErrorCode::internal, "blob envelope: HMAC-SHA256 failed in OpenSSL");
  }
  return mac;
}

}  // namespace

bool is_signed(std::span<const std::byte> blob) {
  return blob.size() >= k_flags_offset + 4 && std::memcmp(blob.data(), k_magic.data(), k_magic.size()) == 0 &&
         (read_flags(blob) & k_flag_signed) != 0;
}

std::vector<std::byte> sign(std::span<const std::byte> blob, std::span<const std::byte> secret) {
  if (secret.empty())
    throw Error(ErrorCode::invalid_argument, "blob envelope: cannot sign with an empty secret");
  auto result = open(blob);
  if (auto* rejected = std::get_if<Rejection>(&result)) {
    throw Error(ErrorCode::invalid_argument, "blob envelope: cannot sign a bad blob: " + rejected->reason);
  }
  const auto& opened = std::get<OpenedBlob>(result);
  // Header fields (flags set), a fresh checksum, the payload, then the HMAC
  // over all of it. The checksum covers the flags, so it must be redone.
  size_t payload_offset = static_cast<size_t>(opened.payload.data() - blob.data());
  size_t covered_end = payload_offset - k_checksum_size;
  std::vector<std::byte> out;
  out.reserve(payload_offset + opened.payload.size() + k_signature_size);
  out.insert(out.end(), blob.begin(), blob.begin() + static_cast<std::ptrdiff_t>(covered_end));
  uint32_t flags = read_flags(blob) | k_flag_signed;
  for (size_t i = 0; i < 4; ++i) out[k_flags_offset + i] = static_cast<std::byte>((flags >> (8 * i)) & 0xff);
  auto sum = checksum(out, opened.payload);
  out.insert(out.end(), sum.begin(), sum.end());
  out.insert(out.end(), opened.payload.begin(), opened.payload.end());
  auto mac = hmac_sha256(secret, out);
  out.insert(out.end(), mac.begin(), mac.end());
  return out;
}

std::optional<Rejection> verify_signature(std::span<const std::byte> blob,
                                          std::span<const std::byte> secret) {
  if (!is_signed(blob)) return reject("unsigned entry (a signing secret is configured)");
  if (blob.size() < k_preamble_size + k_signature_size) return reject("truncated signed entry");
  auto covered = blob.first(blob.size() - k_signature_size);
  auto mac = hmac_sha256(secret, covered);
  if (CRYPTO_memcmp(mac.data(), blob.data() + covered.size(), mac.size()) != 0) {
    return reject("bad signature (tampered, or signed with another secret)");
  }
  return std::nullopt;
}

std::variant<OpenedBlob, Rejection> open(std::span<const std::byte> blob, const key::EngineKey& expected) {
  auto result = open(blob);
  if (auto* opened = std::get_if<OpenedBlob>(&result)) {
    const auto& actual = opened->header.key;
    if (actual.digest != expected.digest) {
      return reject("key mismatch: the blob holds " + short_hex(actual.digest) + "…, expected " +
                    short_hex(expected.digest) + "…");
    }
    if (actual.parts != expected.parts) return reject("key mismatch: the part digests differ");
  }
  return result;
}

}  // namespace kiln::format
