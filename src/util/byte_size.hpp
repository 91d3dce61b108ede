// Byte sizes written by people: "500M", "5G", "1.5GiB", "4096", "0".
//
//   size   := digits [ "." digits ] [ unit ]
//   unit   := "B" | "K" | "KiB" | "M" | "MiB" | "G" | "GiB" | "T" | "TiB"   (powers of 1024)
//
// Exact integer arithmetic, no floating point: a fraction (at most 6
// digits) is rounded down to whole bytes. Anything else is refused with a
// reason, never clamped or wrapped: a sign, an exponent ("1e30"), "inf",
// "nan", spaces, an unknown unit, and any value above 2^64 - 1 bytes (or
// above the caller's `max`). A size that silently became 0 or wrapped to a
// small number once made `kiln cache prune` delete everything.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

namespace kiln {

struct ParsedByteSize {
  uint64_t bytes = 0;
  std::string error;  // why `text` is not a size; empty on success

  bool ok() const { return error.empty(); }
};

ParsedByteSize parse_byte_size(std::string_view text, uint64_t max = std::numeric_limits<uint64_t>::max());

}  // namespace kiln
