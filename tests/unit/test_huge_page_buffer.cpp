// HugePageBuffer: zeroed, writable, movable, and 64-byte aligned (the
// engine's arena and weights rely on that), small or large.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#include "util/huge_page_buffer.hpp"

namespace kiln {
namespace {

TEST(HugePageBuffer, ZeroedWritableAndAlignedAtEverySize) {
  for (size_t bytes : {size_t{1}, size_t{4096}, size_t{100000}, (size_t{2} << 20) + 1, size_t{5} << 20}) {
    SCOPED_TRACE(bytes);
    HugePageBuffer b(bytes);
    ASSERT_NE(b.data(), nullptr);
    EXPECT_EQ(b.size(), bytes);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % 64, 0u);
    EXPECT_TRUE(std::all_of(b.data(), b.data() + bytes, [](std::byte x) { return x == std::byte{0}; }));
    std::fill(b.data(), b.data() + bytes, std::byte{0x5a});
    EXPECT_EQ(b.data()[bytes - 1], std::byte{0x5a});
  }
}

TEST(HugePageBuffer, EmptyAndMoved) {
  HugePageBuffer empty(0);
  EXPECT_EQ(empty.data(), nullptr);
  EXPECT_EQ(empty.size(), 0u);
  HugePageBuffer a(size_t{3} << 20);
  a.data()[7] = std::byte{1};
  std::byte* data = a.data();
  HugePageBuffer b(std::move(a));
  EXPECT_EQ(b.data(), data);
  EXPECT_EQ(a.data(), nullptr);  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
  HugePageBuffer c;
  c = std::move(b);
  EXPECT_EQ(c.data()[7], std::byte{1});
  EXPECT_EQ(c.size(), size_t{3} << 20);
}

}  // namespace
}  // namespace kiln
