#include "util/byte_size.hpp"

#include <cstddef>
#include <utility>

namespace kiln {

namespace {

constexpr size_t k_max_fraction_digits = 6;

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// The unit's multiplier, or 0 for an unknown unit.
uint64_t unit_scale(std::string_view unit) {
  constexpr std::pair<std::string_view, int> units[] = {{"", 0},   {"B", 0},    {"K", 10}, {"KiB", 10},
                                                        {"M", 20}, {"MiB", 20}, {"G", 30}, {"GiB", 30},
                                                        {"T", 40}, {"TiB", 40}};
  for (const auto& [name, shift] : units) {
    if (unit == name) return uint64_t{1} << shift;
  }
  return 0;
}

}  // namespace

ParsedByteSize parse_byte_size(std::string_view text, uint64_t max) {
  auto fail = [&](const std::string& why) {
    return ParsedByteSize{0, "'" + std::string(text) + "' is not a size like 500M or 5G (" + why + ")"};
  };
  size_t at = 0;
  uint64_t whole = 0;
  bool overflow = false;
  while (at < text.size() && is_digit(text[at])) {
    uint64_t digit = static_cast<uint64_t>(text[at] - '0');
    if (whole > (std::numeric_limits<uint64_t>::max() - digit) / 10)
      overflow = true;
    else
      whole = whole * 10 + digit;
    ++at;
  }
  if (at == 0) return fail(text.empty() ? "empty" : "it does not start with a digit");
  uint64_t fraction = 0;
  uint64_t fraction_scale = 1;
  if (at < text.size() && text[at] == '.') {
    size_t start = ++at;
    while (at < text.size() && is_digit(text[at])) {
      if (at - start >= k_max_fraction_digits) return fail("more than 6 decimal places");
      fraction = fraction * 10 + static_cast<uint64_t>(text[at] - '0');
      fraction_scale *= 10;
      ++at;
    }
    if (at == start) return fail("no digit after the decimal point");
  }
  uint64_t scale = unit_scale(text.substr(at));
  if (scale == 0) return fail("the unit must be B, K, M, G or T, or KiB, MiB, GiB or TiB");
  const std::string too_large = "larger than " + std::to_string(max) + " bytes";
  if (overflow || whole > max / scale) return fail(too_large);
  uint64_t bytes = whole * scale;
  // fraction < 10^6 and scale <= 2^40: the product fits in 64 bits.
  uint64_t extra = fraction * scale / fraction_scale;
  if (extra > max - bytes) return fail(too_large);
  return ParsedByteSize{bytes + extra, {}};
}

}  // namespace kiln
