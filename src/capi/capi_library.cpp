// The C API's library functions: versions, errors, memory, tensors.
#include <cstdlib>
#include <cstring>

#include "capi/capi_internal.hpp"
#include "kiln/version.hpp"

namespace kiln::capi {

std::string& last_error() {
  thread_local std::string message;
  return message;
}

kiln_status fail(kiln_status status, const std::string& message) {
  last_error() = message;
  return status;
}

kiln_status status_of(ErrorCode code) {
  switch (code) {
    case ErrorCode::invalid_argument:
      return KILN_ERROR_INVALID_ARGUMENT;
    case ErrorCode::invalid_model:
      return KILN_ERROR_INVALID_MODEL;
    case ErrorCode::unsupported:
      return KILN_ERROR_UNSUPPORTED;
    case ErrorCode::io:
      return KILN_ERROR_IO;
    case ErrorCode::internal:
      return KILN_ERROR_INTERNAL;
  }
  return KILN_ERROR_INTERNAL;
}

kiln_status from_current_exception() {
  try {
    throw;
  } catch (const Error& e) {
    return fail(status_of(e.code()), e.what());
  } catch (const std::bad_alloc&) {
    return fail(KILN_ERROR_OUT_OF_MEMORY, "out of memory");
  } catch (const std::exception& e) {
    return fail(KILN_ERROR_INTERNAL, std::string("internal error: ") + e.what());
  } catch (...) {
    return fail(KILN_ERROR_INTERNAL, "internal error: unknown exception");
  }
}

void require(const void* pointer, const char* what) {
  if (pointer == nullptr) throw Error(ErrorCode::invalid_argument, std::string(what) + " is NULL");
}

char* copy_string(const std::string& text) {
  char* out = static_cast<char*>(std::malloc(text.size() + 1));
  if (out == nullptr) throw std::bad_alloc();
  std::memcpy(out, text.c_str(), text.size() + 1);
  return out;
}

namespace {

bool known_dtype(kiln_dtype dtype) { return dtype_size(static_cast<DType>(dtype)) != 0; }

std::vector<int64_t> read_shape(const int64_t* shape, size_t rank) {
  if (rank > 0) require(shape, "shape");
  std::vector<int64_t> dims(shape, shape + rank);
  for (int64_t d : dims) {
    if (d < 0) throw Error(ErrorCode::invalid_argument, "negative dim in shape " + shape_to_string(dims));
  }
  return dims;
}

kiln_status wrap(kiln_dtype dtype, const int64_t* shape, size_t rank, const void* data, size_t byte_size,
                 bool writable, kiln_tensor** tensor_out) {
  return guard([&] {
    require(tensor_out, "tensor_out");
    if (!known_dtype(dtype))
      throw Error(ErrorCode::invalid_argument, "unknown dtype " + std::to_string(dtype));
    auto dims = read_shape(shape, rank);
    size_t expected = static_cast<size_t>(shape_numel(dims)) * dtype_size(static_cast<DType>(dtype));
    if (byte_size != expected) {
      throw Error(ErrorCode::invalid_argument, "tensor " + shape_to_string(dims) + " of " +
                                                   std::string(dtype_name(static_cast<DType>(dtype))) +
                                                   " needs " + std::to_string(expected) + " bytes, got " +
                                                   std::to_string(byte_size));
    }
    if (expected > 0) require(data, "data");
    auto handle = std::make_unique<kiln_tensor>();
    // A no-op owner: the caller keeps the memory alive (kiln.h).
    handle->tensor = Tensor::borrow(static_cast<DType>(dtype), std::move(dims),
                                    {static_cast<const std::byte*>(data), byte_size}, nullptr);
    handle->writable = writable;
    *tensor_out = handle.release();
  });
}

}  // namespace

void require_host(const kiln_tensor& tensor, const std::string& what) {
  if (tensor.device >= 0) {
    throw Error(ErrorCode::invalid_argument, what + " is in the memory of CUDA device " +
                                                 std::to_string(tensor.device) +
                                                 ": device tensors run through kiln_model_run_into_stream");
  }
}

}  // namespace kiln::capi

using namespace kiln;
using namespace kiln::capi;

extern "C" {

uint32_t kiln_abi_version(void) { return KILN_ABI_VERSION; }
uint32_t kiln_abi_minor_version(void) { return KILN_ABI_MINOR_VERSION; }
const char* kiln_version(void) { return KILN_VERSION_STRING; }
const char* kiln_last_error(void) { return last_error().c_str(); }

const char* kiln_status_name(kiln_status status) {
  switch (status) {
    case KILN_OK:
      return "ok";
    case KILN_ERROR_INVALID_ARGUMENT:
      return "invalid_argument";
    case KILN_ERROR_INVALID_MODEL:
      return "invalid_model";
    case KILN_ERROR_UNSUPPORTED:
      return "unsupported";
    case KILN_ERROR_IO:
      return "io";
    case KILN_ERROR_INTERNAL:
      return "internal";
    case KILN_ERROR_OUT_OF_MEMORY:
      return "out_of_memory";
  }
  return "unknown";
}

void kiln_free(void* memory) { std::free(memory); }

size_t kiln_dtype_size(kiln_dtype dtype) { return dtype_size(static_cast<DType>(dtype)); }

kiln_status kiln_tensor_create(kiln_dtype dtype, const int64_t* shape, size_t rank,
                               kiln_tensor** tensor_out) {
  return guard([&] {
    require(tensor_out, "tensor_out");
    if (!known_dtype(dtype))
      throw Error(ErrorCode::invalid_argument, "unknown dtype " + std::to_string(dtype));
    auto handle = std::make_unique<kiln_tensor>();
    handle->tensor = Tensor::zeros(static_cast<DType>(dtype), read_shape(shape, rank));
    handle->writable = true;
    *tensor_out = handle.release();
  });
}

kiln_status kiln_tensor_wrap(kiln_dtype dtype, const int64_t* shape, size_t rank, const void* data,
                             size_t byte_size, kiln_tensor** tensor_out) {
  return wrap(dtype, shape, rank, data, byte_size, false, tensor_out);
}

kiln_status kiln_tensor_wrap_mutable(kiln_dtype dtype, const int64_t* shape, size_t rank, void* data,
                                     size_t byte_size, kiln_tensor** tensor_out) {
  return wrap(dtype, shape, rank, data, byte_size, true, tensor_out);
}

kiln_status kiln_tensor_wrap_device(kiln_dtype dtype, const int64_t* shape, size_t rank, void* device_data,
                                    int device_index, kiln_tensor** tensor_out) {
  return guard([&] {
    require(tensor_out, "tensor_out");
    if (!known_dtype(dtype))
      throw Error(ErrorCode::invalid_argument, "unknown dtype " + std::to_string(dtype));
    if (device_index < 0) {
      throw Error(ErrorCode::invalid_argument,
                  "device_index " + std::to_string(device_index) + ": a CUDA device ordinal is 0 or more");
    }
    auto dims = read_shape(shape, rank);
    const size_t bytes = static_cast<size_t>(shape_numel(dims)) * dtype_size(static_cast<DType>(dtype));
    if (bytes > 0) require(device_data, "device_data");
    auto handle = std::make_unique<kiln_tensor>();
    // A header over the device address: nothing on the host reads it.
    handle->tensor = Tensor::borrow(static_cast<DType>(dtype), std::move(dims),
                                    {static_cast<const std::byte*>(device_data), bytes}, nullptr);
    handle->writable = true;
    handle->device = device_index;
    *tensor_out = handle.release();
  });
}

int kiln_tensor_device(const kiln_tensor* tensor) { return tensor ? tensor->device : -1; }

void kiln_tensor_destroy(kiln_tensor* tensor) { delete tensor; }

kiln_dtype kiln_tensor_dtype(const kiln_tensor* tensor) {
  return tensor ? static_cast<kiln_dtype>(tensor->tensor.dtype()) : static_cast<kiln_dtype>(0);
}

size_t kiln_tensor_rank(const kiln_tensor* tensor) { return tensor ? tensor->tensor.shape().size() : 0; }

const int64_t* kiln_tensor_shape(const kiln_tensor* tensor) {
  return tensor ? tensor->tensor.shape().data() : nullptr;
}

size_t kiln_tensor_byte_size(const kiln_tensor* tensor) { return tensor ? tensor->tensor.byte_size() : 0; }

const void* kiln_tensor_data(const kiln_tensor* tensor) {
  return tensor ? tensor->tensor.bytes().data() : nullptr;
}

void* kiln_tensor_mutable_data(kiln_tensor* tensor) {
  if (tensor == nullptr || !tensor->writable) return nullptr;
  // Writable handles own their bytes or wrap the caller's writable memory.
  return const_cast<std::byte*>(tensor->tensor.bytes().data());
}

}  // extern "C"
