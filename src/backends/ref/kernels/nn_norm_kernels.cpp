// Normalization reference kernels: BatchNormalization (inference),
// LayerNormalization, InstanceNormalization, LRN and
// MeanVarianceNormalization. Statistics are computed in double.
#include <cmath>
#include <string>

#include "backends/ref/broadcast.hpp"
#include "backends/ref/dispatch.hpp"
#include "backends/ref/kernels/nn_kernels.hpp"

namespace kiln::ref {

namespace {

bool output_used(const ir::Node& node, size_t i) {
  return i < node.outputs.size() && node.outputs[i] != ir::k_no_value;
}

std::vector<double> as_doubles(const Tensor& t) {
  std::vector<double> v(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < v.size(); ++i) v[i] = t.float_at(static_cast<int64_t>(i));
  return v;
}

template <typename T>
void run_batch_norm(KernelContext& ctx) {
  const Tensor& x = ctx.input(0);
  std::vector<double> scale = as_doubles(ctx.input(1));
  std::vector<double> bias = as_doubles(ctx.input(2));
  std::vector<double> mean = as_doubles(ctx.input(3));
  std::vector<double> var = as_doubles(ctx.input(4));
  const double eps = ctx.attrs().get_float("epsilon", 1e-5f);
  const int64_t batch = x.dim(0);
  const int64_t channels = x.rank() > 1 ? x.dim(1) : 1;
  const int64_t inner = batch * channels == 0 ? 0 : x.numel() / (batch * channels);
  // spatial = 0 (opsets before 9) gives per-activation statistics: one per
  // (channel, position) instead of one per channel.
  const bool per_activation = static_cast<int64_t>(scale.size()) == channels * inner && inner != 1;
  const int64_t group = per_activation ? 1 : inner;
  const int64_t num_params = per_activation ? channels * inner : channels;
  for (auto* p : {&scale, &bias, &mean, &var}) {
    if (static_cast<int64_t>(p->size()) != num_params) {
      throw Error(ErrorCode::invalid_model, "BatchNormalization parameters have " +
                                                std::to_string(p->size()) + " values, expected " +
                                                std::to_string(num_params));
    }
  }
  std::vector<double> mul(static_cast<size_t>(num_params)), add(static_cast<size_t>(num_params));
  for (size_t i = 0; i < mul.size(); ++i) {
    mul[i] = scale[i] / std::sqrt(var[i] + eps);
    add[i] = bias[i] - mean[i] * mul[i];
  }
  auto px = x.data<T>();
  auto py = ctx.output(0).mutable_data<T>();
  for (int64_t n = 0; n < batch; ++n) {
    for (int64_t i = 0; i < channels * inner; ++i) {
      const size_t p = static_cast<size_t>(i / group);
      const size_t at = static_cast<size_t>(n * channels * inner + i);
      py[at] = static_cast<T>(static_cast<double>(px[at]) * mul[p] + add[p]);
    }
  }
}

std::optional<std::string> check_batch_norm(const ir::Node& node, std::span<const DType> dtypes) {
  if (auto why = require_dtypes(dtypes, {DType::float32, DType::float64})) return why;
  if (node.attrs.get_int("training_mode", 0) != 0) return std::string("training_mode = 1 is not supported");
  // Before opset 7, is_test = 0 (the default) asks for batch statistics.
  if (node.opset < 7 && node.attrs.get_int("is_test", 0) == 0) {
    return std::string("training (is_test = 0) is not supported");
  }
  for (size_t i = 1; i < node.outputs.size(); ++i) {
    if (output_used(node, i))
      return "output " + std::to_string(i) + " (training statistics) is not supported";
  }
  return std::nullopt;
}

template <typename T>
void run_layer_norm(KernelContext& ctx) {
  const Tensor& x = ctx.input(0);
  const int64_t rank = x.rank();
  int64_t axis = ctx.attrs().get_int("axis", -1);
  if (axis < 0) axis += rank;
  const double eps = ctx.attrs().get_float("epsilon", 1e-5f);
  std::vector<int64_t> norm_shape(x.shape().begin() + axis, x.shape().end());
  const int64_t inner = shape_numel(norm_shape);
  const int64_t outer = inner == 0 ? 0 : x.numel() / inner;
  // Scale and B broadcast (one way) to the normalized shape.
  std::vector<double> scale = as_doubles(ctx.input(1));
  std::vector<double> bias = ctx.has_input(2) ? as_doubles(ctx.input(2)) : std::vector<double>{0.0};
  std::vector<std::vector<int64_t>> param_shapes{
      ctx.input(1).shape(), ctx.has_input(2) ? ctx.input(2).shape() : std::vector<int64_t>{}};
  std::vector<int64_t> scale_at(static_cast<size_t>(inner)), bias_at(static_cast<size_t>(inner));
  BroadcastWalker walk(norm_shape, param_shapes);
  for (int64_t i = 0; i < inner; ++i) {
    const auto& off = walk.offsets_for(i);
    scale_at[static_cast<size_t>(i)] = off[0];
    bias_at[static_cast<size_t>(i)] = off[1];
  }
  auto px = x.data<T>();
  auto py = ctx.output(0).mutable_data<T>();
  const bool want_mean = output_used(ctx.node(), 1);
  const bool want_inv = output_used(ctx.node(), 2);
  for (int64_t o = 0; o < outer; ++o) {
    const T* xin = px.data() + o * inner;
    T* yout = py.data() + o * inner;
    double sum = 0.0;
    for (int64_t i = 0; i < inner; ++i) sum += static_cast<double>(xin[i]);
    const double mean = sum / static_cast<double>(inner);
    double sq = 0.0;
    for (int64_t i = 0; i < inner; ++i) {
      const double d = static_cast<double>(xin[i]) - mean;
      sq += d * d;
    }
    const double inv = 1.0 / std::sqrt(sq / static_cast<double>(inner) + eps);
    for (int64_t i = 0; i < inner; ++i) {
      const size_t s = static_cast<size_t>(i);
      yout[i] = static_cast<T>((static_cast<double>(xin[i]) - mean) * inv *
                                   scale[static_cast<size_t>(scale_at[s])] +
                               bias[static_cast<size_t>(bias_at[s])]);
    }
    // Mean and InvStdDev have the stash type, float or double.
    auto store = [&](size_t out, double v) {
      Tensor& t = ctx.output(out);
      dispatch<float, double>(t.dtype(), [&](auto tag) {
        t.mutable_data<decltype(tag)>()[static_cast<size_t>(o)] = static_cast<decltype(tag)>(v);
      });
    };
    if (want_mean) store(1, mean);
    if (want_inv) store(2, inv);
  }
}

template <typename T>
void run_instance_norm(KernelContext& ctx) {
  const Tensor& x = ctx.input(0);
  std::vector<double> scale = as_doubles(ctx.input(1));
  std::vector<double> bias = as_doubles(ctx.input(2));
  const double eps = ctx.attrs().get_float("epsilon", 1e-5f);
  const int64_t channels = x.dim(1);
  const int64_t planes = x.dim(0) * channels;
  const int64_t inner = planes == 0 ? 0 : x.numel() / planes;
  if (static_cast<int64_t>(scale.size()) != channels || static_cast<int64_t>(bias.size()) != channels) {
    throw Error(ErrorCode::invalid_model, "InstanceNormalization scale and B must have C values");
  }
  auto px = x.data<T>();
  auto py = ctx.output(0).mutable_data<T>();
  for (int64_t p = 0; p < planes; ++p) {
    const T* xin = px.data() + p * inner;
    T* yout = py.data() + p * inner;
    const size_t c = static_cast<size_t>(p % channels);
    double sum = 0.0;
    for (int64_t i = 0; i < inner; ++i) sum += static_cast<double>(xin[i]);
    const double mean = sum / static_cast<double>(inner);
    double sq = 0.0;
    for (int64_t i = 0; i < inner; ++i) {
      const double d = static_cast<double>(xin[i]) - mean;
      sq += d * d;
    }
    const double mul = scale[c] / std::sqrt(sq / static_cast<double>(inner) + eps);
    for (int64_t i = 0; i < inner; ++i) {
      yout[i] = static_cast<T>((static_cast<double>(xin[i]) - mean) * mul + bias[c]);
    }
  }
}

template <typename T>
void run_lrn(KernelContext& ctx) {
  const Tensor& x = ctx.input(0);
  const int64_t size = ctx.attrs().get_int("size");
  const double alpha = ctx.attrs().get_float("alpha", 1e-4f);
  const double beta = ctx.attrs().get_float("beta", 0.75f);
  const double bias = ctx.attrs().get_float("bias", 1.0f);
  const int64_t batch = x.dim(0), channels = x.dim(1);
  const int64_t inner = batch * channels == 0 ? 0 : x.numel() / (batch * channels);
  // The window over channels is [c - floor((size-1)/2), c + ceil((size-1)/2)].
  const int64_t before = (size - 1) / 2, after = size - 1 - before;
  auto px = x.data<T>();
  auto py = ctx.output(0).mutable_data<T>();
  for (int64_t n = 0; n < batch; ++n) {
    const T* xn = px.data() + n * channels * inner;
    T* yn = py.data() + n * channels * inner;
    for (int64_t c = 0; c < channels; ++c) {
      const int64_t lo = std::max<int64_t>(0, c - before), hi = std::min(channels - 1, c + after);
      for (int64_t i = 0; i < inner; ++i) {
        double sq = 0.0;
        for (int64_t j = lo; j <= hi; ++j) {
          const double v = static_cast<double>(xn[j * inner + i]);
          sq += v * v;
        }
        const double x_v = static_cast<double>(xn[c * inner + i]);
        yn[c * inner + i] =
            static_cast<T>(x_v / std::pow(bias + alpha / static_cast<double>(size) * sq, beta));
      }
    }
  }
}

// Normalizes over `axes` (default N and spatial 2, 3), as the function body
// of MeanVarianceNormalization does: (X - E[X]) / (sqrt(E[X^2] - E[X]^2) + 1e-9).
template <typename T>
void run_mvn(KernelContext& ctx) {
  const Tensor& x = ctx.input(0);
  const int64_t rank = x.rank();
  std::vector<int64_t> axes = ctx.attrs().get_ints("axes", {0, 2, 3});
  std::vector<bool> reduced(static_cast<size_t>(rank), false);
  for (int64_t a : axes) {
    int64_t n = a < 0 ? a + rank : a;
    if (n < 0 || n >= rank)
      throw Error(ErrorCode::invalid_model, "axis " + std::to_string(a) + " is out of range");
    reduced[static_cast<size_t>(n)] = true;
  }
  // Kept-index of every element: its flat index over the axes not reduced.
  std::vector<int64_t> group_of(static_cast<size_t>(x.numel()));
  int64_t num_groups = 1;
  for (int64_t d = 0; d < rank; ++d) {
    if (!reduced[static_cast<size_t>(d)]) num_groups *= x.dim(d);
  }
  if (!group_of.empty()) {
    std::vector<int64_t> index(static_cast<size_t>(rank), 0);
    size_t pos = 0;
    do {
      int64_t g = 0;
      for (size_t d = 0; d < index.size(); ++d) {
        if (!reduced[d]) g = g * x.shape()[d] + index[d];
      }
      group_of[pos++] = g;
    } while (next_index(index, x.shape()));
  }
  auto px = x.data<T>();
  auto py = ctx.output(0).mutable_data<T>();
  std::vector<double> sum(static_cast<size_t>(num_groups), 0.0), sum_sq(sum), count(sum);
  for (size_t i = 0; i < group_of.size(); ++i) {
    const size_t g = static_cast<size_t>(group_of[i]);
    const double v = static_cast<double>(px[i]);
    sum[g] += v;
    sum_sq[g] += v * v;
    count[g] += 1.0;
  }
  for (size_t i = 0; i < group_of.size(); ++i) {
    const size_t g = static_cast<size_t>(group_of[i]);
    const double mean = sum[g] / count[g];
    const double var = std::max(0.0, sum_sq[g] / count[g] - mean * mean);
    py[i] = static_cast<T>((static_cast<double>(px[i]) - mean) / (std::sqrt(var) + 1e-9));
  }
}

std::optional<std::string> check_float(const ir::Node& /*node*/, std::span<const DType> dtypes) {
  return require_dtypes(dtypes, {DType::float32, DType::float64});
}

std::optional<std::string> check_layer_norm(const ir::Node& node, std::span<const DType> dtypes) {
  if (auto why = check_float(node, dtypes)) return why;
  const int64_t stash = node.attrs.get_int("stash_type", 1);
  if (stash != 1 && stash != 11) return "stash_type " + std::to_string(stash) + " is not supported";
  return std::nullopt;
}

template <void (*F_float)(KernelContext&), void (*F_double)(KernelContext&)>
void run_float(KernelContext& ctx) {
  if (ctx.input(0).dtype() == DType::float64) {
    F_double(ctx);
  } else {
    F_float(ctx);
  }
}

}  // namespace

void register_nn_norm_kernels(KernelRegistry& r) {
  r.add("BatchNormalization", run_float<run_batch_norm<float>, run_batch_norm<double>>, check_batch_norm);
  r.add("LayerNormalization", run_float<run_layer_norm<float>, run_layer_norm<double>>, check_layer_norm);
  r.add("InstanceNormalization", run_float<run_instance_norm<float>, run_instance_norm<double>>, check_float);
  r.add("LRN", run_float<run_lrn<float>, run_lrn<double>>, check_float);
  r.add("MeanVarianceNormalization", run_float<run_mvn<float>, run_mvn<double>>, check_float);
}

}  // namespace kiln::ref
