// Loss reference kernels: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss
// (which is NLL over the log-softmax of its scores along the class axis).
//
// Scores are viewed as [N, C, D] with D the product of the trailing dims, and
// labels as [N, D]. A label equal to ignore_index contributes nothing, not
// even to the weight total that "mean" divides by.
#include <algorithm>
#include <cmath>
#include <optional>
#include <string>

#include "reference/dispatch.hpp"
#include "reference/kernel.hpp"
#include "reference/kernels/reduction_kernels.hpp"

namespace kiln::ref {

namespace {

struct LossView {
  int64_t n = 0;
  int64_t c = 0;
  int64_t d = 1;
};

LossView loss_view(const Tensor& scores) {
  LossView v;
  v.n = scores.dim(0);
  v.c = scores.dim(1);
  for (int64_t i = 2; i < scores.rank(); ++i) v.d *= scores.dim(i);
  return v;
}

// Writes the loss of `log_prob` ([N, C, D] log-probabilities) into output 0.
template <typename T>
void nll(KernelContext& ctx, std::span<const T> log_prob, const LossView& v) {
  const Tensor& labels = ctx.input(1);
  const bool weighted = ctx.has_input(2);
  std::span<const T> weight;
  if (weighted) weight = ctx.input(2).data<T>();
  std::optional<int64_t> ignore;
  if (ctx.attrs().has("ignore_index")) ignore = ctx.attrs().get_int("ignore_index");
  const std::string reduction = ctx.attrs().get_string("reduction", "mean");

  auto dst = ctx.output(0).mutable_data<T>();
  double total = 0.0;
  double weight_total = 0.0;
  for (int64_t n = 0; n < v.n; ++n) {
    for (int64_t d = 0; d < v.d; ++d) {
      const int64_t flat = n * v.d + d;
      const int64_t label = labels.int_at(flat);
      double loss = 0.0;
      double w = 0.0;
      if (!ignore || label != *ignore) {
        if (label < 0 || label >= v.c) {
          throw Error(ErrorCode::invalid_model, "label " + std::to_string(label) + " is out of range for " +
                                                    std::to_string(v.c) + " classes");
        }
        w = weighted ? static_cast<double>(weight[static_cast<size_t>(label)]) : 1.0;
        loss = -w * static_cast<double>(log_prob[static_cast<size_t>((n * v.c + label) * v.d + d)]);
      }
      if (reduction == "none") dst[static_cast<size_t>(flat)] = static_cast<T>(loss);
      total += loss;
      weight_total += w;
    }
  }
  if (reduction == "sum") dst[0] = static_cast<T>(total);
  if (reduction == "mean") dst[0] = static_cast<T>(total / weight_total);
}

template <typename T>
void negative_log_likelihood(KernelContext& ctx) {
  const Tensor& scores = ctx.input(0);
  nll<T>(ctx, scores.data<T>(), loss_view(scores));
}

template <typename T>
void softmax_cross_entropy(KernelContext& ctx) {
  const Tensor& scores = ctx.input(0);
  const LossView v = loss_view(scores);
  auto src = scores.data<T>();
  // Log-softmax over the class axis, shifted by the maximum for stability.
  Tensor log_prob = Tensor::zeros(scores.dtype(), scores.shape());
  auto lp = log_prob.mutable_data<T>();
  auto at = [&](int64_t n, int64_t c, int64_t d) { return static_cast<size_t>((n * v.c + c) * v.d + d); };
  for (int64_t n = 0; n < v.n; ++n) {
    for (int64_t d = 0; d < v.d; ++d) {
      if (v.c == 0) continue;
      double max = static_cast<double>(src[at(n, 0, d)]);
      for (int64_t c = 1; c < v.c; ++c) max = std::max(max, static_cast<double>(src[at(n, c, d)]));
      double sum = 0.0;
      for (int64_t c = 0; c < v.c; ++c) sum += std::exp(static_cast<double>(src[at(n, c, d)]) - max);
      const double log_sum = std::log(sum);
      for (int64_t c = 0; c < v.c; ++c) {
        lp[at(n, c, d)] = static_cast<T>(static_cast<double>(src[at(n, c, d)]) - max - log_sum);
      }
    }
  }
  nll<T>(ctx, std::span<const T>(lp.data(), lp.size()), v);
  if (ctx.num_outputs() > 1) ctx.set_output(1, log_prob);
}

std::optional<std::string> check_loss(const ir::Node&, std::span<const DType> dtypes) {
  if (auto reason = require_dtypes(dtypes.first(1), {DType::float32, DType::float64})) return reason;
  if (dtypes.size() > 2 && dtypes[2] != DType::undefined && dtypes[2] != dtypes[0]) {
    return std::string("weights must have the scores' type");
  }
  return std::nullopt;
}

}  // namespace

void register_reduction_loss_kernels(KernelRegistry& r) {
  r.add(
      "NegativeLogLikelihoodLoss",
      [](KernelContext& ctx) {
        dispatch<float, double>(ctx.input(0).dtype(),
                                [&](auto tag) { negative_log_likelihood<decltype(tag)>(ctx); });
      },
      check_loss);
  r.add(
      "SoftmaxCrossEntropyLoss",
      [](KernelContext& ctx) {
        dispatch<float, double>(ctx.input(0).dtype(),
                                [&](auto tag) { softmax_cross_entropy<decltype(tag)>(ctx); });
      },
      check_loss);
}

}  // namespace kiln::ref
