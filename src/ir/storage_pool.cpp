#include "ir/storage_pool.hpp"

#include <sanitizer/asan_interface.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdlib>
#include <list>
#include <map>
#include <mutex>
#include <new>
#include <vector>

#include "kiln/error.hpp"
#include "util/byte_size.hpp"

namespace kiln {

namespace {

constexpr size_t k_alignment = 64;
constexpr uint64_t k_default_limit = uint64_t{256} << 20;

size_t round_up(size_t n, size_t step) { return (n + step - 1) / step * step; }

// Whole pages, then eight classes per power of two: a block serves any
// request of its class, wasting at most an eighth, and the tensors of one
// model's repeated runs (the same shapes every time) land in the same class.
size_t size_class(size_t bytes) {
  const size_t pages = round_up(bytes, 4096);
  return round_up(pages, std::max<size_t>(4096, std::bit_floor(pages) / 8));
}

uint64_t limit_from_env() {
  const char* text = std::getenv("KILN_TENSOR_POOL_BYTES");
  if (!text || !*text) return k_default_limit;
  auto size = parse_byte_size(text);
  if (!size.ok()) throw Error(ErrorCode::invalid_argument, "KILN_TENSOR_POOL_BYTES: " + size.error);
  return size.bytes;
}

class StoragePool {
 public:
  explicit StoragePool(uint64_t limit) : m_limit(limit) {}

  std::byte* acquire(size_t cls) {
    {
      std::lock_guard lock(m_mutex);
      auto [first, last] = m_by_class.equal_range(cls);
      if (first != last) {
        // The most recently freed block of the class: the likeliest to be in cache.
        auto entry = std::prev(last);
        std::byte* p = entry->second->data;
        ASAN_UNPOISON_MEMORY_REGION(p, cls);
        m_lru.erase(entry->second);
        m_by_class.erase(entry);
        m_cached_bytes -= cls;
        ++m_reused;
        return p;
      }
      ++m_fresh;
    }
    void* p = ::mmap(nullptr, cls, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    return static_cast<std::byte*>(p);
  }

  void release(std::byte* p, size_t cls) noexcept {
    std::vector<Block> unmap;
    {
      std::lock_guard lock(m_mutex);
      if (cls <= m_limit) {
        // Under AddressSanitizer a read or write through a stale pointer
        // into a cached block is reported, as it would be for freed memory.
        ASAN_POISON_MEMORY_REGION(p, cls);
        m_lru.push_front(Block{p, cls});
        m_by_class.emplace(cls, m_lru.begin());
        m_cached_bytes += cls;
        p = nullptr;
      }
      evict_locked(unmap);
    }
    if (p) ::munmap(p, cls);
    for (const Block& b : unmap) ::munmap(b.data, b.bytes);
  }

  void set_limit(uint64_t limit) {
    std::vector<Block> unmap;
    {
      std::lock_guard lock(m_mutex);
      m_limit = limit;
      evict_locked(unmap);
    }
    for (const Block& b : unmap) ::munmap(b.data, b.bytes);
  }

  uint64_t limit() const {
    std::lock_guard lock(m_mutex);
    return m_limit;
  }

  StoragePoolStats stats() const {
    std::lock_guard lock(m_mutex);
    return {m_cached_bytes, m_lru.size(), m_reused, m_fresh};
  }

 private:
  struct Block {
    std::byte* data;
    size_t bytes;
  };
  using LruList = std::list<Block>;  // front: most recently freed

  // Least recently freed first, until the total is within the bound; the
  // blocks are unmapped by the caller, outside the lock.
  void evict_locked(std::vector<Block>& unmap) {
    while (m_cached_bytes > m_limit) {
      const Block oldest = m_lru.back();
      auto [first, last] = m_by_class.equal_range(oldest.bytes);
      for (auto it = first; it != last; ++it) {
        if (it->second == std::prev(m_lru.end())) {
          m_by_class.erase(it);
          break;
        }
      }
      m_lru.pop_back();
      ASAN_UNPOISON_MEMORY_REGION(oldest.data, oldest.bytes);
      m_cached_bytes -= oldest.bytes;
      unmap.push_back(oldest);
    }
  }

  mutable std::mutex m_mutex;
  uint64_t m_limit;
  uint64_t m_cached_bytes = 0;
  uint64_t m_reused = 0;
  uint64_t m_fresh = 0;
  LruList m_lru;
  std::multimap<size_t, LruList::iterator> m_by_class;  // equal keys: oldest first
};

// Never destroyed: tensors in static storage release into it after main().
StoragePool& pool() {
  static StoragePool* const instance = new StoragePool(limit_from_env());
  return *instance;
}

}  // namespace

std::shared_ptr<std::byte> allocate_storage(size_t bytes) {
  bytes = std::max<size_t>(bytes, 1);
  if (bytes < k_pooled_storage_min_bytes) {
    // aligned_alloc wants a multiple of the alignment.
    auto* p = static_cast<std::byte*>(std::aligned_alloc(k_alignment, round_up(bytes, k_alignment)));
    if (!p) throw std::bad_alloc();
    return std::shared_ptr<std::byte>(p, [](std::byte* q) { std::free(q); });
  }
  const size_t cls = size_class(bytes);
  StoragePool& from = pool();
  // Should the control block's allocation throw, shared_ptr calls the deleter.
  return std::shared_ptr<std::byte>(from.acquire(cls), [&from, cls](std::byte* q) { from.release(q, cls); });
}

StoragePoolStats storage_pool_stats() { return pool().stats(); }

uint64_t storage_pool_limit() { return pool().limit(); }

void set_storage_pool_limit(uint64_t bytes) { pool().set_limit(bytes); }

}  // namespace kiln
