// libFuzzer target: the CPU plan verifier and deserializer behind the
// checksums. The input is the FlatBuffer part of a plan; the harness appends
// the plan's FNV-1a checksum, as a corrupted-but-resealed plan would carry,
// so every input reaches the FlatBuffers verifier and the index checks of
// cpu::parse_plan instead of stopping at the checksum. A plan that parses is
// then instantiated by the backend (oneDNN primitives), as a cache hit does.
// Anything but success or a kiln::Error is a finding.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "backends/cpu/cpu_backend.hpp"
#include "backends/cpu/plan_format.hpp"
#include "kiln/error.hpp"
#include "util/log.hpp"

namespace {

std::vector<std::byte> with_checksum(const uint8_t* data, size_t size) {
  std::vector<std::byte> plan(size + 8);
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < size; ++i) {
    plan[i] = static_cast<std::byte>(data[i]);
    h ^= data[i];
    h *= 0x100000001b3ull;
  }
  for (size_t i = 0; i < 8; ++i) plan[size + i] = static_cast<std::byte>((h >> (8 * i)) & 0xff);
  return plan;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kiln::log::set_level(kiln::log::Level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static auto backend = kiln::make_cpu_backend();
  auto plan = with_checksum(data, size);
  try {
    (void)kiln::cpu::parse_plan(plan);
  } catch (const kiln::Error&) {
    return 0;
  }
  try {
    auto engine = backend->deserialize(plan, 1);
  } catch (const kiln::Error&) {
  }
  return 0;
}
