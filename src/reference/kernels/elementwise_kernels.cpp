// Elementwise reference kernels: unary math, activations, Clip, PRelu and
// Cast. The broadcasting binary and variadic ops live in
// elementwise_binary_kernels.cpp.
#include "reference/kernels/elementwise_kernels.hpp"

#include <cmath>
#include <cstring>
#include <limits>
#include <numbers>
#include <type_traits>

#include "util/half.hpp"

namespace kiln::ref {

using namespace elementwise;

namespace {

template <typename T, typename Out = T, typename Fn>
void unary(KernelContext& ctx, Fn&& fn) {
  auto in = ctx.input(0).data<T>();
  auto out = ctx.output(0).mutable_data<Out>();
  for (size_t i = 0; i < in.size(); ++i) out[i] = fn(in[i]);
}

// A float-only op whose per-element function needs no attributes. `fn` is a
// generic lambda so that float inputs compute in float, as numpy does.
template <typename Fn>
void add_float_math(KernelRegistry& r, const char* op, Fn fn) {
  r.add(
      op,
      [fn](KernelContext& ctx) {
        dispatch_float(ctx.input(0).dtype(), [&](auto tag) {
          using T = decltype(tag);
          unary<T>(ctx, [&](T x) { return static_cast<T>(fn(x)); });
        });
      },
      only(k_float_types));
}

// A float-only op whose function depends on attributes: `make(attrs, tag)`
// reads them once and returns the per-element function.
template <typename Make>
void add_float_attr_math(KernelRegistry& r, const char* op, Make make) {
  r.add(
      op,
      [make](KernelContext& ctx) {
        dispatch_float(ctx.input(0).dtype(), [&](auto tag) {
          using T = decltype(tag);
          unary<T>(ctx, make(ctx.attrs(), tag));
        });
      },
      only(k_float_types));
}

template <typename T>
T abs_value(T x) {
  if constexpr (std::is_unsigned_v<T>) {
    return x;
  } else {
    return x < T(0) ? static_cast<T>(-x) : x;
  }
}

template <typename T>
T sign_value(T x) {
  if constexpr (std::is_floating_point_v<T>) {
    if (std::isnan(x)) return x;
  }
  return static_cast<T>(static_cast<int>(T(0) < x) - static_cast<int>(x < T(0)));
}

// numpy-compatible conversion: NaN and out-of-range floats have no defined
// C++ conversion to integers, so floats go through int64 (which is what
// numpy does on x86 for the narrower integer types).
template <typename To, typename From>
To convert(From x) {
  if constexpr (std::is_same_v<To, bool>) {
    return x != From(0);
  } else if constexpr (std::is_floating_point_v<From> && std::is_integral_v<To>) {
    if (std::isnan(x)) return To(0);
    if constexpr (std::is_same_v<To, uint64_t>) {
      if (x >= From(0)) {
        return x >= From(18446744073709551616.0) ? std::numeric_limits<uint64_t>::max()
                                                 : static_cast<uint64_t>(x);
      }
    }
    constexpr From lo = From(-9223372036854775808.0);
    if (x < lo || x >= -lo) return static_cast<To>(std::numeric_limits<int64_t>::min());
    return static_cast<To>(static_cast<int64_t>(x));
  } else {
    return static_cast<To>(x);
  }
}

bool is_16_bit_float(DType d) { return d == DType::float16 || d == DType::bfloat16; }

std::optional<std::string> check_cast(DType from, DType to) {
  for (DType d : {from, to}) {
    // An input type that static inference could not tell is checked at run time.
    if (d == DType::undefined || is_16_bit_float(d)) continue;
    if (std::find(k_all_types.begin(), k_all_types.end(), d) == k_all_types.end()) {
      return "cast from " + std::string(dtype_name(from)) + " to " + std::string(dtype_name(to)) +
             " is not supported";
    }
  }
  return std::nullopt;
}

// float16 and bfloat16 have no C++ type here: they convert through float,
// as their bits, rounding to nearest even.
void cast_16_bit_float(const Tensor& in, Tensor& out) {
  const auto read16 = [](const Tensor& t, size_t i) {
    uint16_t bits = 0;
    std::memcpy(&bits, t.bytes().data() + i * 2, 2);
    return t.dtype() == DType::float16 ? half_to_float(bits) : bfloat16_to_float(bits);
  };
  const auto n = static_cast<size_t>(in.numel());
  const auto element = [&](size_t i, auto tag) {
    using From = decltype(tag);
    return is_16_bit_float(in.dtype()) ? read16(in, i) : convert<float>(in.data<From>()[i]);
  };
  const auto cast_from = [&](auto from_tag) {
    if (is_16_bit_float(out.dtype())) {
      const bool half = out.dtype() == DType::float16;
      std::byte* dst = out.mutable_bytes().data();
      for (size_t i = 0; i < n; ++i) {
        const float v = element(i, from_tag);
        const uint16_t bits = half ? float_to_half(v) : float_to_bfloat16(v);
        std::memcpy(dst + i * 2, &bits, 2);
      }
      return;
    }
    dispatch_all(out.dtype(), [&](auto to_tag) {
      using To = decltype(to_tag);
      auto dst = out.mutable_data<To>();
      for (size_t i = 0; i < n; ++i) dst[i] = convert<To>(element(i, from_tag));
    });
  };
  if (is_16_bit_float(in.dtype())) {
    cast_from(float{});
  } else {
    dispatch_all(in.dtype(), cast_from);
  }
}

void run_cast(KernelContext& ctx) {
  const Tensor& in = ctx.input(0);
  Tensor& out = ctx.output(0);
  if (is_16_bit_float(in.dtype()) || is_16_bit_float(out.dtype())) {
    cast_16_bit_float(in, out);
    return;
  }
  dispatch_all(in.dtype(), [&](auto from_tag) {
    using From = decltype(from_tag);
    auto src = in.data<From>();
    dispatch_all(out.dtype(), [&](auto to_tag) {
      using To = decltype(to_tag);
      auto dst = out.mutable_data<To>();
      for (size_t i = 0; i < src.size(); ++i) dst[i] = convert<To>(src[i]);
    });
  });
}

void run_clip(KernelContext& ctx) {
  dispatch_numeric(ctx.input(0).dtype(), [&](auto tag) {
    using T = decltype(tag);
    T lo = std::numeric_limits<T>::lowest();
    T hi = std::numeric_limits<T>::max();
    if (ctx.opset() < 11) {
      // Before opset 11 the bounds were float attributes.
      lo = static_cast<T>(ctx.attrs().get_float("min", -std::numeric_limits<float>::max()));
      hi = static_cast<T>(ctx.attrs().get_float("max", std::numeric_limits<float>::max()));
    } else {
      if (ctx.has_input(1)) lo = ctx.input(1).data<T>()[0];
      if (ctx.has_input(2)) hi = ctx.input(2).data<T>()[0];
    }
    // min(max(x, lo), hi): when lo > hi everything becomes hi, as in ONNX.
    unary<T>(ctx, [&](T x) { return std::min(std::max(x, lo), hi); });
  });
}

void run_prelu(KernelContext& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& slope = ctx.input(1);
  std::vector<int64_t> slope_shape = slope.shape();
  // Before opset 7 a rank-1 slope held one value per channel (axis 1).
  if (ctx.opset() < 7 && slope.rank() == 1 && x.rank() >= 2 && slope.dim(0) == x.dim(1)) {
    slope_shape.resize(static_cast<size_t>(x.rank() - 1), 1);
  }
  dispatch<float, double, int32_t, int64_t>(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    auto px = x.data<T>();
    auto ps = slope.data<T>();
    Tensor& out = ctx.output(0);
    auto po = out.mutable_data<T>();
    for_each_broadcast(out.shape(), {x.shape(), slope_shape}, [&](size_t i, const std::vector<int64_t>& off) {
      T v = px[static_cast<size_t>(off[0])];
      po[i] = v < T(0) ? static_cast<T>(v * ps[static_cast<size_t>(off[1])]) : v;
    });
  });
}

template <typename T>
T softplus(T x) {
  // log(1 + exp(x)) without overflowing exp for large x.
  return x > T(0) ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
}

template <typename T>
T gelu(T x, bool tanh_approx) {
  if (tanh_approx) {
    const T k = static_cast<T>(std::sqrt(2.0 / std::numbers::pi));
    return T(0.5) * x * (T(1) + std::tanh(k * (x + T(0.044715) * x * x * x)));
  }
  return T(0.5) * x * (T(1) + std::erf(x / static_cast<T>(std::numbers::sqrt2)));
}

void register_math(KernelRegistry& r) {
  add_float_math(r, "Sigmoid", [](auto x) { return 1 / (1 + std::exp(-x)); });
  add_float_math(r, "Tanh", [](auto x) { return std::tanh(x); });
  add_float_math(r, "Erf", [](auto x) { return std::erf(x); });
  add_float_math(r, "Sqrt", [](auto x) { return std::sqrt(x); });
  add_float_math(r, "Exp", [](auto x) { return std::exp(x); });
  add_float_math(r, "Log", [](auto x) { return std::log(x); });
  add_float_math(r, "Reciprocal", [](auto x) { return 1 / x; });
  add_float_math(r, "Floor", [](auto x) { return std::floor(x); });
  add_float_math(r, "Ceil", [](auto x) { return std::ceil(x); });
  // nearbyint in the default rounding mode rounds halves to even.
  add_float_math(r, "Round", [](auto x) { return std::nearbyint(x); });
  add_float_math(r, "Softplus", [](auto x) { return softplus(x); });
  add_float_math(r, "Softsign", [](auto x) { return x / (1 + std::fabs(x)); });
  add_float_math(r, "HardSwish", [](auto x) {
    using T = decltype(x);
    return x * std::max(T(0), std::min(T(1), x / T(6) + T(0.5)));
  });
  add_float_math(r, "Sin", [](auto x) { return std::sin(x); });
  add_float_math(r, "Cos", [](auto x) { return std::cos(x); });
  add_float_math(r, "Tan", [](auto x) { return std::tan(x); });
  add_float_math(r, "Asin", [](auto x) { return std::asin(x); });
  add_float_math(r, "Acos", [](auto x) { return std::acos(x); });
  add_float_math(r, "Atan", [](auto x) { return std::atan(x); });
  add_float_math(r, "Sinh", [](auto x) { return std::sinh(x); });
  add_float_math(r, "Cosh", [](auto x) { return std::cosh(x); });
  add_float_math(r, "Asinh", [](auto x) { return std::asinh(x); });
  add_float_math(r, "Acosh", [](auto x) { return std::acosh(x); });
  add_float_math(r, "Atanh", [](auto x) { return std::atanh(x); });
}

void register_activations(KernelRegistry& r) {
  add_float_attr_math(r, "LeakyRelu", [](const ir::Attributes& a, auto tag) {
    using T = decltype(tag);
    T alpha = static_cast<T>(a.get_float("alpha", 0.01f));
    return [alpha](T x) { return x < T(0) ? alpha * x : x; };
  });
  add_float_attr_math(r, "HardSigmoid", [](const ir::Attributes& a, auto tag) {
    using T = decltype(tag);
    T alpha = static_cast<T>(a.get_float("alpha", 0.2f));
    T beta = static_cast<T>(a.get_float("beta", 0.5f));
    // NaN stays NaN (std::min/max would clamp it to a bound), as in PyTorch.
    return
        [alpha, beta](T x) { return std::isnan(x) ? x : std::max(T(0), std::min(T(1), alpha * x + beta)); };
  });
  add_float_attr_math(r, "Elu", [](const ir::Attributes& a, auto tag) {
    using T = decltype(tag);
    T alpha = static_cast<T>(a.get_float("alpha", 1.0f));
    return [alpha](T x) { return x < T(0) ? alpha * (std::exp(x) - T(1)) : x; };
  });
  add_float_attr_math(r, "Selu", [](const ir::Attributes& a, auto tag) {
    using T = decltype(tag);
    T alpha = static_cast<T>(a.get_float("alpha", 1.67326319217681884765625f));
    T gamma = static_cast<T>(a.get_float("gamma", 1.05070102214813232421875f));
    return [alpha, gamma](T x) { return x <= T(0) ? gamma * alpha * (std::exp(x) - T(1)) : gamma * x; };
  });
  add_float_attr_math(r, "Celu", [](const ir::Attributes& a, auto tag) {
    using T = decltype(tag);
    T alpha = static_cast<T>(a.get_float("alpha", 1.0f));
    return [alpha](T x) {
      if (std::isnan(x)) return x;  // std::max/min would turn it into 0
      return std::max(T(0), x) + std::min(T(0), alpha * (std::exp(x / alpha) - T(1)));
    };
  });
  add_float_attr_math(r, "ThresholdedRelu", [](const ir::Attributes& a, auto tag) {
    using T = decltype(tag);
    T alpha = static_cast<T>(a.get_float("alpha", 1.0f));
    return [alpha](T x) { return x > alpha ? x : T(0); };
  });
  r.add(
      "Gelu",
      [](KernelContext& ctx) {
        bool tanh_approx = ctx.attrs().get_string("approximate", "none") == "tanh";
        dispatch_float(ctx.input(0).dtype(), [&](auto tag) {
          using T = decltype(tag);
          unary<T>(ctx, [&](T x) { return gelu(x, tanh_approx); });
        });
      },
      [](const ir::Node& node, std::span<const DType> dtypes) -> std::optional<std::string> {
        std::string mode = node.attrs.get_string("approximate", "none");
        if (mode != "none" && mode != "tanh") return "unknown approximate mode '" + mode + "'";
        return check_dtypes(dtypes, k_float_types, true);
      });
  r.add("PRelu", run_prelu, [](const ir::Node&, std::span<const DType> dtypes) {
    return check_dtypes(dtypes, {DType::float32, DType::float64, DType::int32, DType::int64}, true);
  });
}

void register_numeric_unary(KernelRegistry& r) {
  r.add(
      "Relu",
      [](KernelContext& ctx) {
        dispatch_numeric(ctx.input(0).dtype(), [&](auto tag) {
          using T = decltype(tag);
          unary<T>(ctx, [](T x) { return std::max(x, T(0)); });
        });
      },
      only(k_numeric_types));
  r.add(
      "Neg",
      [](KernelContext& ctx) {
        dispatch_numeric(ctx.input(0).dtype(), [&](auto tag) {
          using T = decltype(tag);
          unary<T>(ctx, [](T x) { return static_cast<T>(-x); });
        });
      },
      only(k_numeric_types));
  r.add(
      "Abs",
      [](KernelContext& ctx) {
        dispatch_numeric(ctx.input(0).dtype(), [&](auto tag) {
          using T = decltype(tag);
          unary<T>(ctx, [](T x) { return abs_value(x); });
        });
      },
      only(k_numeric_types));
  r.add(
      "Sign",
      [](KernelContext& ctx) {
        dispatch_numeric(ctx.input(0).dtype(), [&](auto tag) {
          using T = decltype(tag);
          unary<T>(ctx, [](T x) { return sign_value(x); });
        });
      },
      only(k_numeric_types));
  r.add("Clip", run_clip, only(k_numeric_types));
  r.add(
      "Not", [](KernelContext& ctx) { unary<bool>(ctx, [](bool x) { return !x; }); }, only({DType::boolean}));
  r.add(
      "IsNaN",
      [](KernelContext& ctx) {
        dispatch_float(ctx.input(0).dtype(), [&](auto tag) {
          using T = decltype(tag);
          unary<T, bool>(ctx, [](T x) { return std::isnan(x); });
        });
      },
      only(k_float_types));
  r.add(
      "IsInf",
      [](KernelContext& ctx) {
        bool positive = ctx.attrs().get_int("detect_positive", 1) != 0;
        bool negative = ctx.attrs().get_int("detect_negative", 1) != 0;
        dispatch_float(ctx.input(0).dtype(), [&](auto tag) {
          using T = decltype(tag);
          unary<T, bool>(ctx, [&](T x) { return std::isinf(x) && (x > 0 ? positive : negative); });
        });
      },
      only(k_float_types));
}

void register_casts(KernelRegistry& r) {
  r.add("Cast", run_cast,
        [](const ir::Node& node, std::span<const DType> dtypes) -> std::optional<std::string> {
          int64_t to = node.attrs.get_int("to");
          std::optional<DType> target = dtype_from_onnx(static_cast<int32_t>(to));
          if (!target) return "cast to ONNX type " + std::to_string(to) + " is not supported";
          return check_cast(dtypes.empty() ? DType::undefined : dtypes[0], *target);
        });
  r.add("CastLike", run_cast,
        [](const ir::Node&, std::span<const DType> dtypes) -> std::optional<std::string> {
          if (dtypes.size() < 2) return "CastLike needs two inputs";
          return check_cast(dtypes[0], dtypes[1]);
        });
}

}  // namespace

void register_elementwise_kernels(KernelRegistry& r) {
  register_math(r);
  register_activations(r);
  register_numeric_unary(r);
  register_casts(r);
  register_binary_kernels(r);
}

}  // namespace kiln::ref
