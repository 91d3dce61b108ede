// Internals of the C API (include/kiln/kiln.h): the structs behind its
// opaque handles and the guard that turns every exception into a status.
#pragma once

#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "frontend/onnx/onnx_importer.hpp"
#include "kiln/compile.hpp"
#include "kiln/error.hpp"
#include "kiln/kiln.h"
#include "kiln/settings.hpp"
#include "kiln/tensor.hpp"
#include "reference/executor.hpp"
#include "runtime/compiled_model.hpp"

struct kiln_settings {
  kiln::CompileSettings settings;
  std::string backend = "cpu";  // "cpu" or "ref"
};

struct kiln_tensor {
  // For a device tensor, a header only: its bytes are device memory, which
  // no host code may read (every host entry point refuses device >= 0).
  kiln::Tensor tensor;
  bool writable = false;
  int device = -1;  // the CUDA device ordinal; -1: host memory
};

struct kiln_model {
  std::string backend;
  std::vector<kiln::InputSpec> specs;
  std::vector<std::string> output_names;
  // The imported graph (its address is stable: the engines and the
  // interpreter borrow it) and where its ONNX bytes are, for save: the
  // file, or a copy.
  std::unique_ptr<kiln::frontend::ImportedModel> imported;
  std::filesystem::path model_path;
  std::vector<std::byte> model_bytes;
  // backend "cpu":
  std::optional<kiln::runtime::CompiledModel> compiled;
  // backend "ref":
  std::optional<kiln::ref::Executor> executor;
  double compile_ms = 0;
  std::optional<kiln::RefitStats> last_refit;  // the last successful kiln_model_refit
};

namespace kiln::capi {

// This thread's kiln_last_error().
std::string& last_error();
// Records `message` as this thread's kiln_last_error() and returns `status`.
kiln_status fail(kiln_status status, const std::string& message);
kiln_status status_of(ErrorCode code);
kiln_status from_current_exception();
// Throws Error(invalid_argument) naming `what` when `pointer` is NULL.
void require(const void* pointer, const char* what);

// Runs `body` (which returns nothing) and maps any exception to a status.
template <typename Body>
kiln_status guard(Body&& body) noexcept {
  try {
    body();
    return KILN_OK;
  } catch (...) {
    return from_current_exception();
  }
}

// Throws Error(invalid_argument) naming `what` when `tensor` is a device
// tensor, which a host run or refit cannot read.
void require_host(const kiln_tensor& tensor, const std::string& what);

// Duplicates `text` into memory released by kiln_free.
char* copy_string(const std::string& text);

}  // namespace kiln::capi
