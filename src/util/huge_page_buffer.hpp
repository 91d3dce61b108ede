// A zero-initialized heap buffer that asks the kernel for transparent huge
// pages (madvise(MADV_HUGEPAGE); Debian's default THP mode is "madvise").
//
// An engine's weights and activations are tens to hundreds of MB written once
// per refit and read at every inference. With 4 KiB pages, the first write
// of a fresh engine's weights is page faults as much as copying (a ResNet-18
// winograd refit spent about a third of its time in the kernel), and
// inference walks hundreds of TLB entries per layer. 2 MiB pages cut both.
// Where huge pages are unavailable the advice is ignored and the buffer is
// an ordinary one.
#pragma once

#include <cstddef>
#include <span>

namespace kiln {

class HugePageBuffer {
 public:
  HugePageBuffer() = default;
  // Throws kiln::Error(internal) when `bytes` cannot be allocated.
  explicit HugePageBuffer(size_t bytes);
  HugePageBuffer(HugePageBuffer&& other) noexcept;
  HugePageBuffer& operator=(HugePageBuffer&& other) noexcept;
  HugePageBuffer(const HugePageBuffer&) = delete;
  HugePageBuffer& operator=(const HugePageBuffer&) = delete;
  ~HugePageBuffer();

  std::byte* data() const { return m_data; }
  size_t size() const { return m_size; }

 private:
  std::byte* m_data = nullptr;
  size_t m_size = 0;
  size_t m_mapped = 0;  // bytes mapped: size rounded up to whole huge pages
};

}  // namespace kiln
