#include "kiln/error.hpp"

namespace kiln {

const char* to_string(ErrorCode code) {
  switch (code) {
    case ErrorCode::invalid_argument:
      return "invalid argument";
    case ErrorCode::invalid_model:
      return "invalid model";
    case ErrorCode::unsupported:
      return "unsupported";
    case ErrorCode::io:
      return "I/O error";
    case ErrorCode::internal:
      return "internal error";
  }
  return "unknown error";
}

Error::Error(ErrorCode code, const std::string& message) : std::runtime_error(message), m_code(code) {}

Error Error::with_context(const std::string& context) const { return Error(m_code, context + what()); }

bool is_user_error(ErrorCode code) { return code != ErrorCode::internal; }

}  // namespace kiln
