// Small time helpers shared by the runtime's reports and blob headers.
#pragma once

#include <chrono>
#include <cstdint>

#include "kiln/version.hpp"

namespace kiln::runtime {

using Clock = std::chrono::steady_clock;

inline double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

inline int64_t unix_ms_now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Written into every blob and artifact this kiln produces.
inline constexpr const char* k_producer = "kiln " KILN_VERSION_STRING;

}  // namespace kiln::runtime
