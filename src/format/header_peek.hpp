// Reads an envelope's header from the first bytes of a blob, without the
// payload and therefore WITHOUT verifying the checksum. For explaining cache
// misses and listing entries only: never serve an engine on the strength of
// a peeked header (format::open is the check for that).
#pragma once

#include <cstddef>
#include <optional>
#include <span>

#include "format/envelope.hpp"

namespace kiln::format {

// Bytes that always suffice to peek a header (its strings are short).
constexpr size_t k_peek_bytes = 4096;

// Nullopt when `prefix` is not the start of a version-1 envelope.
std::optional<EnvelopeHeader> peek_header(std::span<const std::byte> prefix);

}  // namespace kiln::format
