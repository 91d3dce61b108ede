// Broadcasting elementwise reference kernels: arithmetic, Pow, Mod,
// comparisons, logic, BitShift, the variadic Min/Max/Sum/Mean, and Where.
#include <cmath>
#include <limits>
#include <type_traits>

#include "backends/ref/kernels/elementwise_kernels.hpp"

namespace kiln::ref::elementwise {

namespace {

// numpy's minimum / maximum: a NaN in either operand wins.
template <typename T>
T min_value(T x, T y) {
  if constexpr (std::is_floating_point_v<T>) {
    if (std::isnan(x) || std::isnan(y)) return std::numeric_limits<T>::quiet_NaN();
  }
  return std::min(x, y);
}

template <typename T>
T max_value(T x, T y) {
  if constexpr (std::is_floating_point_v<T>) {
    if (std::isnan(x) || std::isnan(y)) return std::numeric_limits<T>::quiet_NaN();
  }
  return std::max(x, y);
}

template <typename T>
T divide(T x, T y) {
  if constexpr (std::is_integral_v<T>) {
    // Integer division truncates like C; division by zero and the one
    // overflowing quotient have no defined result, so give 0 / x.
    if (y == T(0)) return T(0);
    if constexpr (std::is_signed_v<T>) {
      if (y == T(-1)) return static_cast<T>(T(0) - x);
    }
    return static_cast<T>(x / y);
  } else {
    return x / y;
  }
}

// fmod = 0: the result takes the divisor's sign (Python's %); fmod = 1: the
// dividend's sign (C's fmod).
template <typename T>
T modulo(T x, T y, bool c_fmod) {
  if constexpr (std::is_integral_v<T>) {
    if (y == T(0)) return T(0);
    T r;
    if constexpr (std::is_signed_v<T>) {
      r = y == T(-1) ? T(0) : static_cast<T>(x % y);
    } else {
      r = static_cast<T>(x % y);
    }
    if (!c_fmod && r != T(0) && ((r < T(0)) != (y < T(0)))) r = static_cast<T>(r + y);
    return r;
  } else {
    T r = std::fmod(x, y);
    if (!c_fmod && r != T(0) && ((r < T(0)) != (y < T(0)))) r += y;
    return r;
  }
}

template <typename B, typename E>
B power(B base, E exponent) {
  if constexpr (std::is_integral_v<B> && std::is_integral_v<E>) {
    // Exact integer power by squaring; negative exponents only keep ±1.
    if constexpr (std::is_signed_v<E>) {
      if (exponent < E(0)) {
        if (base == B(1)) return B(1);
        if constexpr (std::is_signed_v<B>) {
          if (base == B(-1)) return (exponent % 2 == 0) ? B(1) : B(-1);
        }
        return B(0);
      }
    }
    using Wide = std::conditional_t<std::is_signed_v<B>, int64_t, uint64_t>;
    Wide result = 1;
    Wide b = static_cast<Wide>(base);
    auto e = static_cast<uint64_t>(exponent);
    while (e != 0) {
      if (e & 1U) result = static_cast<Wide>(static_cast<uint64_t>(result) * static_cast<uint64_t>(b));
      b = static_cast<Wide>(static_cast<uint64_t>(b) * static_cast<uint64_t>(b));
      e >>= 1U;
    }
    return static_cast<B>(result);
  } else if constexpr (std::is_same_v<B, float> && std::is_same_v<E, float>) {
    return std::pow(base, exponent);
  } else {
    double r = std::pow(static_cast<double>(base), static_cast<double>(exponent));
    if constexpr (std::is_integral_v<B>) {
      if (std::isnan(r) || std::isinf(r)) return B(0);
      return static_cast<B>(static_cast<int64_t>(r));
    } else {
      return static_cast<B>(r);
    }
  }
}

template <typename T>
T shift(T x, T amount, bool left) {
  if (amount >= static_cast<T>(sizeof(T) * 8)) return T(0);
  return left ? static_cast<T>(x << amount) : static_cast<T>(x >> amount);
}

// Arithmetic over every numeric type.
template <typename Op>
void add_arith(KernelRegistry& r, const char* name, Op op) {
  r.add(
      name,
      [op](KernelContext& ctx) {
        dispatch_numeric(ctx.input(0).dtype(), [&](auto tag) {
          using T = decltype(tag);
          binary<T, T, T>(ctx, [&](T x, T y) { return static_cast<T>(op(x, y)); });
        });
      },
      only(k_numeric_types));
}

// Comparisons over numeric types (and bool where `allow_bool`); output bool.
template <typename Op>
void add_compare(KernelRegistry& r, const char* name, Op op, bool allow_bool) {
  r.add(
      name,
      [op](KernelContext& ctx) {
        dispatch_all(ctx.input(0).dtype(), [&](auto tag) {
          using T = decltype(tag);
          binary<T, T, bool>(ctx, [&](T x, T y) { return op(x, y); });
        });
      },
      only(allow_bool ? k_all_types : k_numeric_types));
}

template <typename Op>
void add_logic(KernelRegistry& r, const char* name, Op op) {
  r.add(
      name, [op](KernelContext& ctx) { binary<bool, bool, bool>(ctx, op); }, only({DType::boolean}));
}

void run_pow(KernelContext& ctx) {
  dispatch<float, double, int32_t, int64_t>(ctx.input(0).dtype(), [&](auto base_tag) {
    using B = decltype(base_tag);
    dispatch_numeric(ctx.input(1).dtype(), [&](auto exp_tag) {
      using E = decltype(exp_tag);
      binary<B, E, B>(ctx, [](B x, E y) { return power(x, y); });
    });
  });
}

// Min, Max, Sum and Mean: any number of inputs, broadcast together.
template <typename Op>
void add_variadic(KernelRegistry& r, const char* name, Op op, bool mean, const std::vector<DType>& types) {
  r.add(
      name,
      [op, mean](KernelContext& ctx) {
        Tensor& out = ctx.output(0);
        std::vector<std::vector<int64_t>> shapes;
        for (size_t k = 0; k < ctx.num_inputs(); ++k) shapes.push_back(ctx.input(k).shape());
        dispatch_numeric(out.dtype(), [&](auto tag) {
          using T = decltype(tag);
          std::vector<std::span<const T>> ins;
          for (size_t k = 0; k < ctx.num_inputs(); ++k) ins.push_back(ctx.input(k).data<T>());
          auto po = out.mutable_data<T>();
          for_each_broadcast(out.shape(), shapes, [&](size_t i, const std::vector<int64_t>& off) {
            T acc = ins[0][static_cast<size_t>(off[0])];
            for (size_t k = 1; k < ins.size(); ++k) acc = op(acc, ins[k][static_cast<size_t>(off[k])]);
            if (mean) acc = static_cast<T>(acc / static_cast<T>(ins.size()));
            po[i] = acc;
          });
        });
      },
      only(types));
}

void run_where(KernelContext& ctx) {
  Tensor& out = ctx.output(0);
  auto cond = ctx.input(0).data<bool>();
  dispatch_all(out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    auto px = ctx.input(1).data<T>();
    auto py = ctx.input(2).data<T>();
    auto po = out.mutable_data<T>();
    for_each_broadcast(out.shape(), {ctx.input(0).shape(), ctx.input(1).shape(), ctx.input(2).shape()},
                       [&](size_t i, const std::vector<int64_t>& off) {
                         po[i] = cond[static_cast<size_t>(off[0])] ? px[static_cast<size_t>(off[1])]
                                                                   : py[static_cast<size_t>(off[2])];
                       });
  });
}

}  // namespace

void register_binary_kernels(KernelRegistry& r) {
  add_arith(r, "Add", [](auto x, auto y) { return x + y; });
  add_arith(r, "Sub", [](auto x, auto y) { return x - y; });
  add_arith(r, "Mul", [](auto x, auto y) { return x * y; });
  add_arith(r, "Div", [](auto x, auto y) { return divide(x, y); });

  r.add(
      "Mod",
      [](KernelContext& ctx) {
        bool c_fmod = ctx.attrs().get_int("fmod", 0) != 0;
        dispatch_numeric(ctx.input(0).dtype(), [&](auto tag) {
          using T = decltype(tag);
          binary<T, T, T>(ctx, [&](T x, T y) { return modulo(x, y, c_fmod); });
        });
      },
      only(k_numeric_types));

  r.add("Pow", run_pow, [](const ir::Node&, std::span<const DType> dtypes) -> std::optional<std::string> {
    if (dtypes.size() < 2) return "Pow needs two inputs";
    if (auto why = check_dtypes(dtypes.subspan(0, 1),
                                {DType::float32, DType::float64, DType::int32, DType::int64}, false)) {
      return why;
    }
    return check_dtypes(dtypes.subspan(1, 1), k_numeric_types, false);
  });

  add_compare(
      r, "Equal", [](auto x, auto y) { return x == y; }, true);
  add_compare(
      r, "Less", [](auto x, auto y) { return x < y; }, false);
  add_compare(
      r, "Greater", [](auto x, auto y) { return x > y; }, false);
  add_compare(
      r, "LessOrEqual", [](auto x, auto y) { return x <= y; }, false);
  add_compare(
      r, "GreaterOrEqual", [](auto x, auto y) { return x >= y; }, false);

  add_logic(r, "And", [](bool x, bool y) { return x && y; });
  add_logic(r, "Or", [](bool x, bool y) { return x || y; });
  add_logic(r, "Xor", [](bool x, bool y) { return x != y; });

  r.add(
      "BitShift",
      [](KernelContext& ctx) {
        bool left = ctx.attrs().get_string("direction") == "LEFT";
        dispatch<uint8_t, uint16_t, uint32_t, uint64_t>(ctx.input(0).dtype(), [&](auto tag) {
          using T = decltype(tag);
          binary<T, T, T>(ctx, [&](T x, T y) { return shift(x, y, left); });
        });
      },
      [](const ir::Node& node, std::span<const DType> dtypes) -> std::optional<std::string> {
        std::string direction = node.attrs.get_string("direction", "");
        if (direction != "LEFT" && direction != "RIGHT") return "unknown direction '" + direction + "'";
        return check_dtypes(dtypes, {DType::uint8, DType::uint16, DType::uint32, DType::uint64}, true);
      });

  add_variadic(
      r, "Min", [](auto x, auto y) { return min_value(x, y); }, false, k_numeric_types);
  add_variadic(
      r, "Max", [](auto x, auto y) { return max_value(x, y); }, false, k_numeric_types);
  add_variadic(
      r, "Sum", [](auto x, auto y) { return static_cast<decltype(x)>(x + y); }, false, k_numeric_types);
  add_variadic(
      r, "Mean", [](auto x, auto y) { return x + y; }, true, k_float_types);

  r.add("Where", run_where, [](const ir::Node&, std::span<const DType> dtypes) -> std::optional<std::string> {
    if (dtypes.size() != 3) return "Where needs three inputs";
    if (dtypes[0] != DType::boolean)
      return "condition has unsupported type " + std::string(dtype_name(dtypes[0]));
    return check_dtypes(dtypes.subspan(1), k_all_types, true);
  });
}

}  // namespace kiln::ref::elementwise
