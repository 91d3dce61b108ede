// Swish (x * sigmoid(x), PyTorch's SiLU: EfficientNet's activation) as
// kiln's own pass over a conv's output, in place.
//
// oneDNN 2.6 fuses swish into a convolution as an eltwise post-op, but its
// jit code for it (an exp and a full-precision divide per element) costs
// more than the conv itself on some CPUs: on a 2-core AVX-512 VM a depthwise
// 3x3 conv over [8,144,56,56] took 0.58 ms alone and 1.61 ms with the swish
// post-op, where this pass takes 0.31 ms. The conv builder times both ways
// and the plan keeps the choice (Tactic::native_swish).
//
// Stateless; safe to call concurrently on distinct buffers.
#pragma once

#include <cstddef>
#include <span>

namespace kiln::cpu {

// Whether this CPU runs the vector kernel (AVX-512). Without it the pass is
// a scalar loop, slower than any post-op: the builder does not offer it.
bool native_swish_available();

// x * sigmoid(x) for every element, in place, on oneDNN's OpenMP threads.
// Within 2e-7 of the exact value relative to |x| (the vector kernel's exp
// polynomial and reciprocal); NaN stays NaN.
void swish_in_place(std::span<float> data);

}  // namespace kiln::cpu
