// Helpers shared by the tensor-op reference kernels (tensor_kernels.cpp,
// tensor_spatial_kernels.cpp).
//
// Most tensor ops only move elements, so they work on raw storage chosen by
// element size; one kernel then serves every dtype, bool and float16
// included.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "ir/op_schema.hpp"
#include "reference/kernel.hpp"

namespace kiln::ref {

// Calls `fn` with an unsigned integer of the dtype's element size.
template <typename Fn>
void dispatch_by_size(DType dtype, Fn&& fn) {
  switch (dtype_size(dtype)) {
    case 1:
      fn(uint8_t{});
      break;
    case 2:
      fn(uint16_t{});
      break;
    case 4:
      fn(uint32_t{});
      break;
    case 8:
      fn(uint64_t{});
      break;
    default:
      throw Error(ErrorCode::unsupported, "no element copy for type " + std::string(dtype_name(dtype)));
  }
}

template <typename U>
const U* raw_data(const Tensor& t) {
  return reinterpret_cast<const U*>(t.bytes().data());
}
template <typename U>
U* raw_mutable_data(Tensor& t) {
  return reinterpret_cast<U*>(t.mutable_bytes().data());
}

std::vector<int64_t> row_strides(std::span<const int64_t> shape);

// Fills `dst` (row-major with shape `shape`, which may be a view of dst's
// real shape with the same element count) from `src`, reading the element
// at src_offset + sum(index[a] * src_strides[a]).
void strided_copy(const Tensor& src, std::span<const int64_t> src_strides, int64_t src_offset,
                  std::span<const int64_t> shape, Tensor& dst);

// Every input's tensor (null for an omitted one).
std::vector<const Tensor*> input_values(const KernelContext& ctx);

void register_tensor_spatial_kernels(KernelRegistry& registry);
void register_tensor_einsum_kernels(KernelRegistry& registry);
// ScatterND, ScatterElements (Scatter), GatherND.
void register_tensor_index_kernels(KernelRegistry& registry);

}  // namespace kiln::ref
