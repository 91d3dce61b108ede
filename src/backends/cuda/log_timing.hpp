// Wall-clock times for the cuda engine's info logs (how long a load, an
// instance or its cuDNN plans took), with one decimal of a millisecond.
//
// Stateless; thread-safe.
#pragma once

#include <chrono>
#include <string>

namespace kiln::cuda {

using Clock = std::chrono::steady_clock;

inline double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

inline std::string ms_text(double ms) {
  std::string text = std::to_string(ms);
  return text.substr(0, text.find('.') + 2) + " ms";
}

}  // namespace kiln::cuda
