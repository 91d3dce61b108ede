// passes::evaluate_recipe: replays a weight recipe on source weights.
//
// The BatchNorm folds compute in double and round once to float32, so that
// lowering and refit produce the same bits for the same inputs.
#include <bit>
#include <cmath>
#include <cstring>
#include <string>

#include "passes/passes.hpp"
#include "passes/weight_uses.hpp"
#include "util/half.hpp"
#include "util/parallel_for.hpp"

namespace kiln::passes {

using ir::WeightRecipe;

namespace {

[[noreturn]] void fail(const std::string& message) {
  throw Error(ErrorCode::invalid_argument, "weight recipe: " + message);
}

const char* op_name(WeightRecipe::Op op) {
  switch (op) {
    case WeightRecipe::Op::source:
      return "source";
    case WeightRecipe::Op::bn_fold_scale:
      return "bn_fold_scale";
    case WeightRecipe::Op::bn_fold_bias:
      return "bn_fold_bias";
    case WeightRecipe::Op::transpose:
      return "transpose";
    case WeightRecipe::Op::reshape:
      return "reshape";
    case WeightRecipe::Op::zeros:
      return "zeros";
  }
  return "unknown";
}

void check_float(const Tensor& t, const char* what, WeightRecipe::Op op) {
  if (!is_floating(t.dtype())) {
    fail(std::string(op_name(op)) + ": " + what + " has dtype " + std::string(dtype_name(t.dtype())) +
         ", expected a float type");
  }
}

// A per-channel vector of `channels` elements (any float type) as doubles.
std::vector<double> channel_vector(const Tensor& t, int64_t channels, const char* what, WeightRecipe::Op op) {
  check_float(t, what, op);
  if (t.numel() != channels) {
    fail(std::string(op_name(op)) + ": " + what + " has shape [" + t.shape_string() + "], expected " +
         std::to_string(channels) + " elements");
  }
  std::vector<double> out(static_cast<size_t>(channels));
  for (int64_t i = 0; i < channels; ++i) out[static_cast<size_t>(i)] = float_element(t, i);
  return out;
}

void check_args(const WeightRecipe& r, size_t lo, size_t hi) {
  if (r.args.size() < lo || r.args.size() > hi) {
    fail(std::string(op_name(r.op)) + " takes " + std::to_string(lo) +
         (lo == hi ? "" : " to " + std::to_string(hi)) + " arguments, got " + std::to_string(r.args.size()));
  }
}

float epsilon_of(const WeightRecipe& r) {
  if (r.floats.size() != 1) fail(std::string(op_name(r.op)) + " needs floats = [epsilon]");
  return r.floats[0];
}

std::vector<double> inverse_std(const std::vector<double>& gamma, const std::vector<double>& var, float eps) {
  std::vector<double> s(gamma.size());
  for (size_t c = 0; c < s.size(); ++c) s[c] = gamma[c] / std::sqrt(var[c] + static_cast<double>(eps));
  return s;
}

Tensor bn_fold_scale(const WeightRecipe& r, std::span<const Tensor> sources) {
  check_args(r, 3, 3);
  const float eps = epsilon_of(r);
  Tensor w = evaluate_recipe(r.args[0], sources);
  check_float(w, "W", r.op);
  if (w.rank() < 1) fail("bn_fold_scale: W must have rank >= 1");
  const int64_t channels = w.shape()[0];
  auto gamma = channel_vector(evaluate_recipe(r.args[1], sources), channels, "gamma", r.op);
  auto var = channel_vector(evaluate_recipe(r.args[2], sources), channels, "var", r.op);
  auto scale = inverse_std(gamma, var, eps);
  Tensor out = Tensor::zeros(DType::float32, w.shape());
  auto dst = out.mutable_data<float>();
  const int64_t slice = channels ? w.numel() / channels : 0;
  if (w.dtype() == DType::float32) {
    // The refit hot path: one typed span instead of a per-element dispatch.
    auto src = w.data<float>();
    for (int64_t c = 0; c < channels; ++c) {
      const double sc = scale[static_cast<size_t>(c)];
      const size_t begin = static_cast<size_t>(c * slice);
      for (size_t i = begin; i < begin + static_cast<size_t>(slice); ++i) {
        dst[i] = static_cast<float>(static_cast<double>(src[i]) * sc);
      }
    }
    return out;
  }
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t j = 0; j < slice; ++j) {
      const int64_t i = c * slice + j;
      dst[static_cast<size_t>(i)] = static_cast<float>(float_element(w, i) * scale[static_cast<size_t>(c)]);
    }
  }
  return out;
}

Tensor bn_fold_bias(const WeightRecipe& r, std::span<const Tensor> sources) {
  check_args(r, 4, 5);
  const float eps = epsilon_of(r);
  Tensor gamma_t = evaluate_recipe(r.args[0], sources);
  const int64_t channels = gamma_t.numel();
  auto gamma = channel_vector(gamma_t, channels, "gamma", r.op);
  auto beta = channel_vector(evaluate_recipe(r.args[1], sources), channels, "beta", r.op);
  auto mean = channel_vector(evaluate_recipe(r.args[2], sources), channels, "mean", r.op);
  auto var = channel_vector(evaluate_recipe(r.args[3], sources), channels, "var", r.op);
  std::vector<double> bias(static_cast<size_t>(channels), 0.0);
  if (r.args.size() == 5) bias = channel_vector(evaluate_recipe(r.args[4], sources), channels, "bias", r.op);
  auto scale = inverse_std(gamma, var, eps);
  Tensor out = Tensor::zeros(DType::float32, {channels});
  auto dst = out.mutable_data<float>();
  for (size_t c = 0; c < dst.size(); ++c)
    dst[c] = static_cast<float>((bias[c] - mean[c]) * scale[c] + beta[c]);
  return out;
}

Tensor transpose(const WeightRecipe& r, std::span<const Tensor> sources) {
  check_args(r, 1, 1);
  Tensor x = evaluate_recipe(r.args[0], sources);
  const auto rank = static_cast<size_t>(x.rank());
  if (r.ints.size() != rank) {
    fail("transpose: permutation has " + std::to_string(r.ints.size()) + " entries for a tensor of shape [" +
         x.shape_string() + "]");
  }
  std::vector<bool> used(rank, false);
  std::vector<int64_t> out_shape(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t p = r.ints[i];
    if (p < 0 || static_cast<size_t>(p) >= rank || used[static_cast<size_t>(p)]) {
      fail("transpose: invalid permutation for a rank-" + std::to_string(rank) + " tensor");
    }
    used[static_cast<size_t>(p)] = true;
    out_shape[i] = x.shape()[static_cast<size_t>(p)];
  }
  std::vector<int64_t> in_strides(rank, 1);
  for (size_t i = rank; i-- > 1;) in_strides[i - 1] = in_strides[i] * x.shape()[i];
  Tensor out = Tensor::zeros(x.dtype(), out_shape);
  const size_t elem = dtype_size(x.dtype());
  const std::byte* src = x.bytes().data();
  std::byte* dst = out.mutable_bytes().data();
  std::vector<int64_t> index(rank, 0);
  for (int64_t flat = 0; flat < out.numel(); ++flat) {
    int64_t offset = 0;
    for (size_t d = 0; d < rank; ++d) offset += index[d] * in_strides[static_cast<size_t>(r.ints[d])];
    std::memcpy(dst + static_cast<size_t>(flat) * elem, src + static_cast<size_t>(offset) * elem, elem);
    for (size_t d = rank; d-- > 0;) {
      if (++index[d] < out_shape[d]) break;
      index[d] = 0;
    }
  }
  return out;
}

Tensor reshape(const WeightRecipe& r, std::span<const Tensor> sources) {
  check_args(r, 1, 1);
  Tensor x = evaluate_recipe(r.args[0], sources);
  for (int64_t d : r.ints) {
    if (d < 0) fail("reshape: negative dim in target shape [" + shape_to_string(r.ints) + "]");
  }
  if (shape_numel(r.ints) != x.numel()) {
    fail("reshape: cannot reshape [" + x.shape_string() + "] to [" + shape_to_string(r.ints) + "]");
  }
  return x.reshaped(r.ints);
}

}  // namespace

double float_element(const Tensor& tensor, int64_t i) {
  switch (tensor.dtype()) {
    case DType::float32:
      return static_cast<double>(tensor.data<float>()[static_cast<size_t>(i)]);
    case DType::float64:
      return tensor.data<double>()[static_cast<size_t>(i)];
    case DType::float16: {
      uint16_t bits;
      std::memcpy(&bits, tensor.bytes().data() + static_cast<size_t>(i) * 2, 2);
      return static_cast<double>(half_to_float(bits));
    }
    case DType::bfloat16: {
      uint16_t bits;
      std::memcpy(&bits, tensor.bytes().data() + static_cast<size_t>(i) * 2, 2);
      return static_cast<double>(bfloat16_to_float(bits));
    }
    default:
      throw Error(ErrorCode::invalid_argument,
                  "expected a float tensor, got " + std::string(dtype_name(tensor.dtype())));
  }
}

Tensor evaluate_recipe(const WeightRecipe& recipe, std::span<const Tensor> sources) {
  switch (recipe.op) {
    case WeightRecipe::Op::source:
      if (recipe.index < 0 || static_cast<size_t>(recipe.index) >= sources.size()) {
        fail("source index " + std::to_string(recipe.index) + " is out of range (the model has " +
             std::to_string(sources.size()) + " source weights)");
      }
      return sources[static_cast<size_t>(recipe.index)];
    case WeightRecipe::Op::bn_fold_scale:
      return bn_fold_scale(recipe, sources);
    case WeightRecipe::Op::bn_fold_bias:
      return bn_fold_bias(recipe, sources);
    case WeightRecipe::Op::transpose:
      return transpose(recipe, sources);
    case WeightRecipe::Op::reshape:
      return reshape(recipe, sources);
    case WeightRecipe::Op::zeros:
      for (int64_t d : recipe.ints) {
        if (d < 0) fail("zeros: negative dim in shape [" + shape_to_string(recipe.ints) + "]");
      }
      return Tensor::zeros(DType::float32, recipe.ints);
  }
  fail("unknown op " + std::to_string(static_cast<int>(recipe.op)));
}

namespace {

// The shape evaluate_recipe would give, and a source of at least that size.
std::vector<int64_t> recipe_shape(const WeightRecipe& recipe, std::span<const Tensor> sources,
                                  const Tensor*& leaf) {
  switch (recipe.op) {
    case WeightRecipe::Op::source:
      if (recipe.index < 0 || static_cast<size_t>(recipe.index) >= sources.size()) {
        fail("source index " + std::to_string(recipe.index) + " is out of range");
      }
      leaf = &sources[static_cast<size_t>(recipe.index)];
      return leaf->shape();
    case WeightRecipe::Op::bn_fold_scale:
    case WeightRecipe::Op::bn_fold_bias:
      if (recipe.args.empty()) fail("a fold without arguments");
      return recipe_shape(recipe.args[0], sources, leaf);
    case WeightRecipe::Op::transpose: {
      if (recipe.args.size() != 1) fail("transpose takes one argument");
      auto in = recipe_shape(recipe.args[0], sources, leaf);
      if (recipe.ints.size() != in.size()) fail("transpose: permutation rank differs");
      std::vector<int64_t> out;
      for (int64_t axis : recipe.ints) {
        if (axis < 0 || static_cast<size_t>(axis) >= in.size()) fail("transpose: bad axis");
        out.push_back(in[static_cast<size_t>(axis)]);
      }
      return out;
    }
    case WeightRecipe::Op::reshape:
      if (recipe.args.size() != 1) fail("reshape takes one argument");
      (void)recipe_shape(recipe.args[0], sources, leaf);
      return recipe.ints;
    case WeightRecipe::Op::zeros:
      leaf = nullptr;
      return recipe.ints;
  }
  fail("unknown op " + std::to_string(static_cast<int>(recipe.op)));
}

}  // namespace

std::optional<AxisScaledWeight> split_axis_scale(const WeightRecipe& recipe,
                                                 std::span<const Tensor> sources) {
  if (recipe.op != WeightRecipe::Op::bn_fold_scale || recipe.args.size() != 3 ||
      recipe.args[0].op != WeightRecipe::Op::source) {
    return std::nullopt;
  }
  Tensor w = evaluate_recipe(recipe.args[0], sources);
  if (w.dtype() != DType::float32 || w.rank() < 1) return std::nullopt;
  const int64_t channels = w.shape()[0];
  auto gamma = channel_vector(evaluate_recipe(recipe.args[1], sources), channels, "gamma", recipe.op);
  auto var = channel_vector(evaluate_recipe(recipe.args[2], sources), channels, "var", recipe.op);
  return AxisScaledWeight{std::move(w), inverse_std(gamma, var, epsilon_of(recipe))};
}

Tensor placeholder_for(const WeightRecipe& recipe, std::span<const Tensor> sources) {
  const Tensor* leaf = nullptr;
  auto shape = recipe_shape(recipe, sources, leaf);
  // Same element count (scale, transpose, reshape keep it): a view of the
  // source costs nothing. Anything else is small enough to compute.
  if (leaf && leaf->dtype() == DType::float32 && leaf->numel() == shape_numel(shape))
    return leaf->reshaped(shape);
  return evaluate_recipe(recipe, sources);
}

bool has_placeholder_weights(const ir::Graph& lowered) {
  for (size_t v = 0; v < lowered.num_values(); ++v) {
    if (lowered.value(static_cast<ir::ValueId>(v)).placeholder) return true;
  }
  return false;
}

void materialize_weights(ir::Graph& lowered, std::span<const Tensor> sources) {
  std::vector<ir::ValueId> pending;
  for (size_t v = 0; v < lowered.num_values(); ++v) {
    if (lowered.value(static_cast<ir::ValueId>(v)).placeholder)
      pending.push_back(static_cast<ir::ValueId>(v));
  }
  parallel_for(pending.size(), 0, [&](size_t i) {
    ir::Value& v = lowered.value(pending[i]);
    v.initializer = evaluate_recipe(*v.recipe, sources);
    v.placeholder = false;
  });
}

}  // namespace kiln::passes
