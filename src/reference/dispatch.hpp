// Calls a generic lambda with a value of the C++ type that stores `dtype`,
// chosen among the listed types:
//
//   dispatch<float, double, int64_t>(t.dtype(), [&](auto tag) {
//     using T = decltype(tag);
//     ...
//   });
//
// Throws kiln::Error(unsupported) for any other dtype.
//
// is_nan(x) is std::isnan for floating types and false for integers, for
// kernels written once over both.
#pragma once

#include <cmath>
#include <string>
#include <type_traits>

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

template <typename T>
bool is_nan(T x) {
  if constexpr (std::is_floating_point_v<T>) return std::isnan(x);
  return false;
}

}  // namespace kiln::ref
