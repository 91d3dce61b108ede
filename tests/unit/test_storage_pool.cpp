// The recycling of large tensor storage: a freed block serves the next tensor
// of its size class (warm pages instead of fresh ones), the pool never holds
// more than its bound, zeros() is zero even from a dirty recycled block, and
// concurrent users never share a block.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

#include "ir/storage_pool.hpp"
#include "kiln/tensor.hpp"

namespace kiln {
namespace {

constexpr int64_t k_large_floats = 1 << 20;  // 4 MiB: pooled

// Each test starts from an empty pool with a known bound and restores the
// process's bound after.
class StoragePoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    m_saved = storage_pool_limit();
    set_storage_pool_limit(0);  // empties it
    set_storage_pool_limit(uint64_t{64} << 20);
  }
  void TearDown() override {
    set_storage_pool_limit(0);
    set_storage_pool_limit(m_saved);
  }

 private:
  uint64_t m_saved = 0;
};

TEST_F(StoragePoolTest, AFreedLargeBlockServesTheNextTensorOfItsSize) {
  const std::byte* first = nullptr;
  {
    Tensor t = Tensor::uninitialized(DType::float32, {k_large_floats});
    first = t.bytes().data();
  }
  EXPECT_EQ(storage_pool_stats().cached_blocks, 1u);
  const uint64_t reused = storage_pool_stats().reused;
  Tensor again = Tensor::uninitialized(DType::float32, {k_large_floats});
  EXPECT_EQ(again.bytes().data(), first);
  EXPECT_EQ(storage_pool_stats().reused, reused + 1);
  EXPECT_EQ(storage_pool_stats().cached_blocks, 0u);
}

TEST_F(StoragePoolTest, ZerosFromARecycledDirtyBlockIsAllZero) {
  {
    Tensor dirty = Tensor::uninitialized(DType::float32, {k_large_floats});
    auto d = dirty.mutable_data<float>();
    std::fill(d.begin(), d.end(), 7.0f);
  }
  const uint64_t reused = storage_pool_stats().reused;
  Tensor z = Tensor::zeros(DType::float32, {k_large_floats});
  ASSERT_EQ(storage_pool_stats().reused, reused + 1)
      << "the dirty block was not recycled: the test proves nothing";
  auto v = z.data<float>();
  EXPECT_TRUE(std::all_of(v.begin(), v.end(), [](float x) { return x == 0.0f; }));
}

TEST_F(StoragePoolTest, SmallTensorsAreNotPooled) {
  { Tensor small = Tensor::zeros(DType::float32, {1024}); }
  EXPECT_EQ(storage_pool_stats().cached_blocks, 0u);
}

TEST_F(StoragePoolTest, NeverHoldsMoreThanItsBoundAndDropsTheLeastRecentlyFreed) {
  const uint64_t block = static_cast<uint64_t>(k_large_floats) * 4;  // an exact size class
  set_storage_pool_limit(3 * block);
  std::vector<Tensor> live;
  std::vector<const std::byte*> addresses;
  for (int i = 0; i < 5; ++i) {
    live.push_back(Tensor::uninitialized(DType::float32, {k_large_floats}));
    addresses.push_back(live.back().bytes().data());
  }
  for (Tensor& t : live) t = Tensor();  // freed in order 0..4
  EXPECT_EQ(storage_pool_stats().cached_blocks, 3u);
  EXPECT_LE(storage_pool_stats().cached_bytes, 3 * block);
  // What is left are blocks 2, 3 and 4 (0 and 1 were unmapped), handed out
  // most recently freed first.
  std::vector<Tensor> again;
  for (int i = 0; i < 3; ++i) again.push_back(Tensor::uninitialized(DType::float32, {k_large_floats}));
  EXPECT_EQ(again[0].bytes().data(), addresses[4]);
  EXPECT_EQ(again[1].bytes().data(), addresses[3]);
  EXPECT_EQ(again[2].bytes().data(), addresses[2]);
}

TEST_F(StoragePoolTest, ABoundOfZeroTurnsRecyclingOff) {
  set_storage_pool_limit(0);
  { Tensor t = Tensor::uninitialized(DType::float32, {k_large_floats}); }
  EXPECT_EQ(storage_pool_stats().cached_blocks, 0u);
  EXPECT_EQ(storage_pool_stats().cached_bytes, 0u);
}

TEST_F(StoragePoolTest, LoweringTheBoundReturnsBlocksAtOnce) {
  { Tensor t = Tensor::uninitialized(DType::float32, {k_large_floats}); }
  ASSERT_EQ(storage_pool_stats().cached_blocks, 1u);
  set_storage_pool_limit(1 << 20);
  EXPECT_EQ(storage_pool_stats().cached_blocks, 0u);
}

// Threads allocating, filling with their own pattern, checking and freeing
// tensors of a few sizes at once: a block handed to two users at the same
// time would show another thread's pattern.
TEST_F(StoragePoolTest, ConcurrentUsersNeverShareABlock) {
  set_storage_pool_limit(uint64_t{16} << 20);
  constexpr int k_threads = 4;
  constexpr int k_rounds = 200;
  std::vector<int> corrupted(k_threads, 0);
  std::vector<std::thread> threads;
  for (int id = 0; id < k_threads; ++id) {
    threads.emplace_back([id, &corrupted] {
      for (int r = 0; r < k_rounds; ++r) {
        const int64_t n = (int64_t{1} << 16) * (1 + (r + id) % 3);  // 256 KiB, 512 KiB, 768 KiB
        Tensor t = Tensor::uninitialized(DType::int32, {n});
        auto v = t.mutable_data<int32_t>();
        const int32_t mark = id * 100000 + r;
        std::fill(v.begin(), v.end(), mark);
        std::this_thread::yield();
        if (!std::all_of(v.begin(), v.end(), [mark](int32_t x) { return x == mark; })) ++corrupted[id];
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int id = 0; id < k_threads; ++id) EXPECT_EQ(corrupted[id], 0) << "thread " << id;
  EXPECT_GT(storage_pool_stats().reused, 0u);
  EXPECT_LE(storage_pool_stats().cached_bytes, uint64_t{16} << 20);
}

}  // namespace
}  // namespace kiln
