// kiln::Error is the one exception type that crosses kiln's public boundary.
//
// It carries a small code (what kind of failure, which the CLI maps to an exit
// code) and a message that names the file, node and op involved wherever they
// are known. User-facing failures (bad model, bad arguments, unsupported op)
// throw it; expected, recoverable failures (cache I/O) never do: they return a
// result and degrade to a cache miss.
#pragma once

#include <stdexcept>
#include <string>

namespace kiln {

enum class ErrorCode {
  invalid_argument,  // the caller passed something malformed (shape, flag, input)
  invalid_model,     // the model file is truncated, corrupt or fails the checker
  unsupported,       // valid ONNX that kiln does not implement (op, dtype, attribute)
  io,                // a file could not be read or written
  internal,          // a bug in kiln
};

const char* to_string(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message);

  ErrorCode code() const { return m_code; }

  // Returns a copy whose message is prefixed with `context` ("file.onnx: ",
  // "node 'conv1' (Conv): "), so callers can add what they know as the error
  // travels up without losing the original code.
  Error with_context(const std::string& context) const;

 private:
  ErrorCode m_code;
};

// True for the codes that a user can fix (exit code 1 in the CLI); false for
// internal failures (exit code 2).
bool is_user_error(ErrorCode code);

}  // namespace kiln
