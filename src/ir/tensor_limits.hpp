// The largest tensor kiln allocates. Shapes come from models, and a model
// must not be able to exhaust memory: Tensor::zeros() (through which every
// constant, folded value, activation and reference-kernel output is
// allocated) refuses a tensor above max_tensor_bytes() with
// kiln::Error(invalid_model), to which the executor and the passes add the
// node's name and op.
//
// The limit is 16 GiB by default, or the environment's KILN_MAX_TENSOR_BYTES
// (a size such as 64G, parsed by parse_byte_size) read once per process;
// set_max_tensor_bytes() overrides both.
//
// Thread-safety: both functions may be called from any thread.
#pragma once

#include <cstdint>

namespace kiln {

uint64_t max_tensor_bytes();
void set_max_tensor_bytes(uint64_t bytes);

}  // namespace kiln
