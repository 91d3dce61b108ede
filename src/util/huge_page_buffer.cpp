#include "util/huge_page_buffer.hpp"

#include <sys/mman.h>

#include <string>
#include <utility>

#include "kiln/error.hpp"

namespace kiln {

namespace {
constexpr size_t k_huge_page = size_t{2} << 20;
}

HugePageBuffer::HugePageBuffer(size_t bytes) : m_size(bytes) {
  if (bytes == 0) return;
  // Anonymous mappings are zeroed and page-aligned; a mapping of whole huge
  // pages lets the kernel back all of it with them once advised. Buffers
  // under one huge page keep ordinary pages: rounding a tiny model's arena
  // up to 2 MiB would cost more memory than its page faults cost time.
  const bool huge = bytes >= k_huge_page;
  m_mapped = huge ? (bytes + k_huge_page - 1) / k_huge_page * k_huge_page : bytes;
  void* p = mmap(nullptr, m_mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    m_size = m_mapped = 0;
    throw Error(ErrorCode::internal, "cannot allocate a " + std::to_string(bytes) + "-byte buffer");
  }
  if (huge) (void)madvise(p, m_mapped, MADV_HUGEPAGE);  // advice only: without THP, ordinary pages
  m_data = static_cast<std::byte*>(p);
}

HugePageBuffer::HugePageBuffer(HugePageBuffer&& other) noexcept
    : m_data(std::exchange(other.m_data, nullptr)),
      m_size(std::exchange(other.m_size, 0)),
      m_mapped(std::exchange(other.m_mapped, 0)) {}

HugePageBuffer& HugePageBuffer::operator=(HugePageBuffer&& other) noexcept {
  if (this != &other) {
    if (m_data) munmap(m_data, m_mapped);
    m_data = std::exchange(other.m_data, nullptr);
    m_size = std::exchange(other.m_size, 0);
    m_mapped = std::exchange(other.m_mapped, 0);
  }
  return *this;
}

HugePageBuffer::~HugePageBuffer() {
  if (m_data) munmap(m_data, m_mapped);
}

}  // namespace kiln
