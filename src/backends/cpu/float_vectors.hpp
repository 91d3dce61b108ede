// 16 floats as one GCC vector value, for kiln's own loops. Compiled inside a
// target_clones function, the arithmetic becomes that target's vector
// instructions (one AVX-512 register, two AVX2 ones); -O2's vectoriser
// leaves loops of unknown trip count, and branchy selects, scalar.
//
// The helpers are always inlined into the clones, so no call passes a
// vector by value and GCC's note that such a call's ABI differs between
// targets never applies. GCC reports it at the end of the including file,
// so an includer has -Wpsabi off from here on.
#pragma once

#include <cstring>

#pragma GCC diagnostic ignored "-Wpsabi"

namespace kiln::cpu {

using Floats16 = float __attribute__((vector_size(64)));

[[gnu::always_inline]] inline Floats16 load16(const float* p) {
  Floats16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

[[gnu::always_inline]] inline void store16(float* p, Floats16 v) { std::memcpy(p, &v, sizeof v); }

}  // namespace kiln::cpu
