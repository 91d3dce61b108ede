// Calls a generic lambda with a value of the C++ type that stores `dtype`,
// chosen among the listed types:
//
//   dispatch<float, double, int64_t>(t.dtype(), [&](auto tag) {
//     using T = decltype(tag);
//     ...
//   });
//
// Throws kiln::Error(unsupported) for any other dtype.
#pragma once

#include <string>

#include "kiln/dtype.hpp"
#include "kiln/error.hpp"

namespace kiln::ref {

template <typename... Ts, typename Fn>
void dispatch(DType dtype, Fn&& fn) {
  bool handled = ((dtype == dtype_of<Ts>() ? (fn(Ts{}), true) : false) || ...);
  if (!handled) {
    throw Error(ErrorCode::unsupported,
                "the reference backend has no kernel for type " + std::string(dtype_name(dtype)));
  }
}

}  // namespace kiln::ref
