// The blob envelope around every cached engine plan.
//
// Grammar (all integers little endian):
//
//   blob     := magic version header_len header payload
//   magic    := "KILNBLOB"                       8 bytes
//   version  := u32                              k_envelope_version
//   header_len := u32                            bytes of header
//   header   := flags (u32)                      bit 0: signed (an HMAC
//                                                trailer follows the payload)
//               key digest (32) part digests (4 x 32: graph, inputs,
//                                                settings, fingerprint)
//               producer (u16 length + UTF-8)    kiln version that wrote it
//               fingerprint (u16 length + UTF-8) Fingerprint::to_string()
//               created_unix_ms (i64)
//               build_ms (u64)                   how long the build took: each
//                                                hit saves about this much
//               payload_len (u64)
//               checksum (16)                    XXH3-128, low then high u64
//   payload  := payload_len bytes                the backend's plan
//   trailer  := HMAC-SHA256 (32)                 only when flags bit 0 is set:
//                                                over every byte before it
//
// The checksum covers every byte before it (magic through payload_len) and
// then the payload, so any corruption of the header (a flipped bit in the key,
// the producer or the fingerprint) is caught, not only of the payload. The
// header's fields must fill header_len exactly, and the payload must end the
// blob exactly (or be followed by exactly the 32-byte trailer of a signed
// blob): trailing bytes are rejected.
//
// Signing (shared caches): sign() sets flags bit 0, recomputes the checksum
// and appends HMAC-SHA256(secret, magic .. payload). open() checks a signed
// blob's structure but cannot check its HMAC (it has no secret);
// verify_signature() does, and cache::SigningEngineCache calls it on every
// load before a blob reaches open(). The HMAC lives in the envelope, not in a
// side file or a Redis field, so an entry carries its proof through every
// tier and copy (backfill, `kiln cache`, rsync of a folder).
//
// open() checks, in order and before trusting any length: size for the fixed
// fields, magic, version, header_len against the blob size, each header field
// against header_len, the flags, payload_len against what remains (less
// the trailer of a signed blob), the checksum, then the key against the
// expected key. Any failure is a reason
// string, never an exception: a bad blob is a cache miss that rebuilds and
// overwrites.
//
// Thread-safety: free functions without shared state. open() borrows the blob:
// OpenedBlob::payload points into it and lives no longer than it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "key/engine_key.hpp"

namespace kiln::format {

constexpr uint32_t k_envelope_version = 2;  // 2: build_ms added

struct EnvelopeHeader {
  key::EngineKey key;
  std::string producer;     // "kiln 0.1.0"
  std::string fingerprint;  // Fingerprint::to_string()
  int64_t created_unix_ms = 0;
  uint64_t build_ms = 0;  // the build this entry saves a hit from
};

// Wraps `payload`; computes the length and checksum. Throws kiln::Error
// (invalid_argument) when producer or fingerprint exceeds 65535 bytes.
std::vector<std::byte> seal(const EnvelopeHeader& header, std::span<const std::byte> payload);

struct OpenedBlob {
  EnvelopeHeader header;
  std::span<const std::byte> payload;  // points into the blob passed to open()
};

// Why a blob was rejected: "truncated", "bad magic", "envelope version 7
// (expected 1)", "checksum mismatch", "key mismatch", ...
struct Rejection {
  std::string reason;
};

std::variant<OpenedBlob, Rejection> open(std::span<const std::byte> blob);
// Also requires the blob's key (digest and part digests) to equal `expected`.
std::variant<OpenedBlob, Rejection> open(std::span<const std::byte> blob, const key::EngineKey& expected);

// --- signed blobs -----------------------------------------------------------

constexpr uint32_t k_flag_signed = 1;
constexpr size_t k_signature_size = 32;  // HMAC-SHA256

// True when `blob` is an envelope whose flags say it is signed (its structure
// and HMAC are not checked).
bool is_signed(std::span<const std::byte> blob);

// The blob, signed with `secret`: flags bit 0 set, checksum recomputed, the
// HMAC trailer appended (a signed blob is re-signed, its old trailer
// dropped). Throws kiln::Error (invalid_argument) when `blob` does not open
// or `secret` is empty.
std::vector<std::byte> sign(std::span<const std::byte> blob, std::span<const std::byte> secret);

// Nullopt when `blob` is signed and its HMAC under `secret` matches (compared
// in constant time); else why not: "unsigned entry", "bad signature ...".
// Checks only the HMAC: open() still checks the rest.
std::optional<Rejection> verify_signature(std::span<const std::byte> blob, std::span<const std::byte> secret);

}  // namespace kiln::format
