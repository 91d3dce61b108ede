// run_allocation_probe MODEL [--control]: builds a cpu engine for the zoo
// model MODEL at batch 1 (optimization level 0), runs it twice to warm up,
// then counts every operator new of the next run and prints
//   <allocations> <large allocations> <large bytes> <activation bytes> <output bytes>
// where "large" is 64 KiB or more, and the output bytes are those of the
// tensors the run returns (allocated per call by design). --control also allocates a vector of the
// engine's activation size inside the counted run, so the test can see the
// count is live. A separate process because replacing the global operator
// new affects the whole program.
#include <atomic>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "backends/cpu/cpu_backend.hpp"
#include "cpu_test_helpers.hpp"

namespace {

constexpr std::size_t k_large = 64 * 1024;
std::atomic<bool> g_counting{false};
std::atomic<long long> g_allocations{0}, g_large{0}, g_large_bytes{0};

void count(std::size_t size) {
  if (!g_counting.load(std::memory_order_relaxed)) return;
  ++g_allocations;
  if (size >= k_large) {
    ++g_large;
    g_large_bytes += static_cast<long long>(size);
  }
}

void* counted_allocation(std::size_t size, std::size_t alignment = 0) noexcept {
  count(size);
  if (size == 0) size = 1;
  if (alignment <= alignof(std::max_align_t)) return std::malloc(size);
  return std::aligned_alloc(alignment, (size + alignment - 1) / alignment * alignment);
}

void* counted_or_throw(std::size_t size, std::size_t alignment = 0) {
  if (void* p = counted_allocation(size, alignment)) return p;
  throw std::bad_alloc();
}

}  // namespace

// Every form of operator new and delete, so that all of them meet in malloc
// and free (a sanitizer checks that allocation and release functions pair up).
void* operator new(std::size_t size) { return counted_or_throw(size); }
void* operator new[](std::size_t size) { return counted_or_throw(size); }
void* operator new(std::size_t size, const std::nothrow_t&) noexcept { return counted_allocation(size); }
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept { return counted_allocation(size); }
void* operator new(std::size_t size, std::align_val_t a) {
  return counted_or_throw(size, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t size, std::align_val_t a) {
  return counted_or_throw(size, static_cast<std::size_t>(a));
}
void* operator new(std::size_t size, std::align_val_t a, const std::nothrow_t&) noexcept {
  return counted_allocation(size, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t size, std::align_val_t a, const std::nothrow_t&) noexcept {
  return counted_allocation(size, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: run_allocation_probe MODEL [--control]\n");
    return 2;
  }
  const std::string model = argv[1];
  const bool control = argc > 2 && std::string(argv[2]) == "--control";
  try {
    std::vector<kiln::Tensor> inputs = model.rfind("bert", 0) == 0
                                           ? kiln::testing::bert_inputs(1, 128)
                                           : std::vector<kiln::Tensor>{kiln::testing::sine_images(1, 224)};
    auto backend = kiln::make_cpu_backend();
    auto engine = kiln::testing::build_engine(*backend, kiln::testing::import_zoo(model, 1), inputs, 0);
    engine->run(inputs);
    engine->run(inputs);
    const std::size_t activations = engine->info().activation_bytes;
    g_counting = true;
    auto outputs = engine->run(inputs);
    if (control) {
      std::vector<char> fresh(activations, 1);
      std::printf("%s", fresh[activations / 2] == 1 ? "" : "?");
    }
    g_counting = false;
    std::size_t output_bytes = 0;
    for (const kiln::Tensor& t : outputs) output_bytes += t.bytes().size();
    std::printf("%lld %lld %lld %zu %zu\n", g_allocations.load(), g_large.load(), g_large_bytes.load(),
                activations, output_bytes);
    return outputs.empty() ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "run_allocation_probe: %s\n", e.what());
    return 1;
  }
}
