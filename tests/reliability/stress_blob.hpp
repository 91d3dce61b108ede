// Self-checking cache entries for the reliability tests: real envelopes
// (format::seal) around payloads whose every byte follows from a small
// header, so a reader can tell a complete entry of the right key from a torn,
// mixed or misplaced one without any shared state with the writer.
//
//   payload := "KSTRESS1" id (u64) generation (u64) size (u64) prng bytes
//
// The key of entry `id` is a deterministic EngineKey; the PRNG is seeded from
// (id, generation). Header-only: shared by cache_stress (the processes that
// are killed) and the tests that check what they left behind.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "format/envelope.hpp"
#include "key/engine_key.hpp"

namespace kiln::reliability {

inline uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

inline key::EngineKey stress_key(uint64_t id) {
  key::EngineKey key;
  uint64_t state = 0x6b696c6e0000ull + id;
  for (auto* digest :
       {&key.digest, &key.parts.graph, &key.parts.inputs, &key.parts.settings, &key.parts.fingerprint}) {
    for (size_t i = 0; i < digest->size(); i += 8) {
      uint64_t word = splitmix64(state);
      std::memcpy(digest->data() + i, &word, 8);
    }
  }
  return key;
}

constexpr char k_stress_magic[8] = {'K', 'S', 'T', 'R', 'E', 'S', 'S', '1'};
constexpr size_t k_stress_head = 8 + 3 * 8;

inline std::vector<std::byte> stress_payload(uint64_t id, uint64_t generation, size_t size) {
  size = std::max(size, k_stress_head);
  std::vector<std::byte> payload(size);
  std::memcpy(payload.data(), k_stress_magic, 8);
  uint64_t size64 = size;
  std::memcpy(payload.data() + 8, &id, 8);
  std::memcpy(payload.data() + 16, &generation, 8);
  std::memcpy(payload.data() + 24, &size64, 8);
  uint64_t state = id * 0x100000001b3ull ^ generation;
  size_t i = k_stress_head;
  for (; i + 8 <= size; i += 8) {
    uint64_t word = splitmix64(state);
    std::memcpy(payload.data() + i, &word, 8);
  }
  uint64_t word = splitmix64(state);
  std::memcpy(payload.data() + i, &word, size - i);
  return payload;
}

inline std::vector<std::byte> stress_blob(uint64_t id, uint64_t generation, size_t size) {
  format::EnvelopeHeader header{stress_key(id), "kiln-reliability", "stress", 0, 0};
  return format::seal(header, stress_payload(id, generation, size));
}

// Empty when `blob` is exactly stress_blob(id, g, n) for some g and n; else
// why not.
inline std::string check_stress_blob(uint64_t id, std::span<const std::byte> blob) {
  auto opened = format::open(blob, stress_key(id));
  if (auto* rejection = std::get_if<format::Rejection>(&opened)) return "envelope: " + rejection->reason;
  auto payload = std::get<format::OpenedBlob>(opened).payload;
  if (payload.size() < k_stress_head || std::memcmp(payload.data(), k_stress_magic, 8) != 0)
    return "foreign payload";
  uint64_t stored_id = 0, generation = 0, size = 0;
  std::memcpy(&stored_id, payload.data() + 8, 8);
  std::memcpy(&generation, payload.data() + 16, 8);
  std::memcpy(&size, payload.data() + 24, 8);
  if (stored_id != id)
    return "payload of entry " + std::to_string(stored_id) + " under entry " + std::to_string(id);
  if (size != payload.size())
    return "payload size " + std::to_string(payload.size()) + ", header says " + std::to_string(size);
  auto expected = stress_payload(id, generation, size);
  if (std::memcmp(expected.data(), payload.data(), size) != 0)
    return "payload bytes differ from generation " + std::to_string(generation);
  return {};
}

// The id behind a stress key's hex, or nullopt for another key.
inline std::optional<uint64_t> stress_id_of(const std::string& hex, uint64_t max_id) {
  for (uint64_t id = 0; id < max_id; ++id) {
    if (stress_key(id).hex() == hex) return id;
  }
  return std::nullopt;
}

}  // namespace kiln::reliability
