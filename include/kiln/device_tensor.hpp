// Tensors in a caller's device memory, for runs on device memory
// (kiln::CompiledModel::run_device): a header of dtype, shape and address;
// kiln never owns, keeps or frees the memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kiln/dtype.hpp"
#include "kiln/tensor.hpp"

namespace kiln {

// One tensor in device memory. Inputs are only read; outputs are written.
struct DeviceTensor {
  DType dtype = DType::undefined;
  std::vector<int64_t> shape;
  void* data = nullptr;  // a device (or managed) address
  int device = 0;        // the CUDA device ordinal the memory belongs to

  size_t byte_size() const { return static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype); }
};

// The dtype and shape of a tensor, without its bytes.
struct TensorDesc {
  DType dtype = DType::undefined;
  std::vector<int64_t> shape;
};

}  // namespace kiln
