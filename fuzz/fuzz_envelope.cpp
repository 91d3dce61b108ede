// libFuzzer target: the blob envelope parser (format::open) and the header
// peek that `kiln cache explain` uses. Any input must be accepted or rejected
// with a reason, never crash; and an accepted blob must seal back to exactly
// the same bytes (nothing in an accepted blob goes unchecked).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <variant>

#include "format/envelope.hpp"
#include "format/header_peek.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const std::byte> blob(reinterpret_cast<const std::byte*>(data), size);
  (void)kiln::format::peek_header(blob.first(std::min(size, kiln::format::k_peek_bytes)));
  auto result = kiln::format::open(blob);
  if (auto* opened = std::get_if<kiln::format::OpenedBlob>(&result)) {
    auto resealed = kiln::format::seal(opened->header, opened->payload);
    if (resealed.size() != size || std::memcmp(resealed.data(), data, size) != 0) std::abort();
    // With its own key as the expected key, it still opens.
    if (!std::holds_alternative<kiln::format::OpenedBlob>(kiln::format::open(blob, opened->header.key)))
      std::abort();
  }
  return 0;
}
