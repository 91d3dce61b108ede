// The blob envelope around every cached engine plan.
//
// Grammar (all integers little endian):
//
//   blob     := magic version header_len header payload
//   magic    := "KILNBLOB"                       8 bytes
//   version  := u32                              k_envelope_version
//   header_len := u32                            bytes of header
//   header   := flags (u32)                      0 so far; bit 0 is
//                                                reserved for the HMAC trailer
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
//
// The checksum covers every byte before it (magic through payload_len) and
// then the payload, so any corruption of the header (a flipped bit in the key,
// the producer or the fingerprint) is caught, not only of the payload. The
// header's fields must fill header_len exactly, and the payload must end the
// blob exactly: trailing bytes are rejected.
//
// open() checks, in order and before trusting any length: size for the fixed
// fields, magic, version, header_len against the blob size, each header field
// against header_len, payload_len against what remains, the flags, the
// checksum, then the key against the expected key. Any failure is a reason
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

}  // namespace kiln::format
