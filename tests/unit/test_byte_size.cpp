// parse_byte_size: exact, overflow-checked sizes; everything else refused.
#include <gtest/gtest.h>

#include "util/byte_size.hpp"

namespace kiln {
namespace {

uint64_t bytes_of(const char* text) {
  auto size = parse_byte_size(text);
  EXPECT_TRUE(size.ok()) << text << ": " << size.error;
  return size.bytes;
}

TEST(ByteSize, ParsesPlainNumbersUnitsAndFractions) {
  EXPECT_EQ(bytes_of("0"), 0u);
  EXPECT_EQ(bytes_of("4096"), 4096u);
  EXPECT_EQ(bytes_of("4096B"), 4096u);
  EXPECT_EQ(bytes_of("1K"), 1024u);
  EXPECT_EQ(bytes_of("1KiB"), 1024u);
  EXPECT_EQ(bytes_of("500M"), uint64_t{500} << 20);
  EXPECT_EQ(bytes_of("5GiB"), uint64_t{5} << 30);
  EXPECT_EQ(bytes_of("2T"), uint64_t{2} << 40);
  EXPECT_EQ(bytes_of("1.5G"), uint64_t{3} << 29);
  EXPECT_EQ(bytes_of("0.5K"), 512u);
  EXPECT_EQ(bytes_of("18446744073709551615"), UINT64_MAX);
  EXPECT_EQ(bytes_of("18446744073709551615.5"), UINT64_MAX) << "a fraction of a byte rounds down";
  EXPECT_EQ(bytes_of("16777215.999999T"),
            (uint64_t{16777215} << 40) + 999999ull * (uint64_t{1} << 40) / 1000000);
}

TEST(ByteSize, RefusesOverflowInsteadOfWrappingOrZeroing) {
  for (const char* text :
       {"18446744073709551616", "99999999999999999999999", "99999999999G", "17179869184G", "16777216T"}) {
    auto size = parse_byte_size(text);
    EXPECT_FALSE(size.ok()) << text << " parsed as " << size.bytes;
  }
  EXPECT_NE(parse_byte_size("17179869184G").error.find("larger than"), std::string::npos);
}

TEST(ByteSize, RefusesSignsExponentsInfNanAndGarbage) {
  for (const char* text :
       {"",    "-1",  "+1", "-0", "1e30", "1E3",  "inf",  "INF", "nan", "NaN", "infinity", " 1",        "1 ",
        "1M ", "1MB", "1m", "1.", ".5",   "1..5", "0x10", "1,5", "5Q",  "G",   "1GG",      "1.0000001K"}) {
    auto size = parse_byte_size(text);
    EXPECT_FALSE(size.ok()) << "'" << text << "' parsed as " << size.bytes;
    EXPECT_NE(size.error.find("is not a size"), std::string::npos) << size.error;
  }
}

TEST(ByteSize, HonoursTheCallersMaximum) {
  EXPECT_TRUE(parse_byte_size("1G", uint64_t{1} << 30).ok());
  EXPECT_FALSE(parse_byte_size("1025M", uint64_t{1} << 30).ok());
  EXPECT_FALSE(parse_byte_size("1073741824.5K", uint64_t{1} << 40).ok());
}

}  // namespace
}  // namespace kiln
