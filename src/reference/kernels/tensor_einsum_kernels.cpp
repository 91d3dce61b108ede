// Reference kernel for Einsum: one loop over every combination of label
// values, accumulating products into the output. Plain and general
// (diagonals, broadcast ellipsis dims, any number of inputs); fine for the
// small contractions a reference backend meets.
#include "ir/ops/tensor_params.hpp"
#include "reference/dispatch.hpp"
#include "reference/kernels/tensor_kernels.hpp"

namespace kiln::ref {

namespace {

void run_einsum(KernelContext& ctx) {
  Tensor& out = ctx.output(0);
  std::vector<size_t> ranks;
  for (size_t i = 0; i < ctx.num_inputs(); ++i) ranks.push_back(static_cast<size_t>(ctx.input(i).rank()));
  ir::EinsumSpec spec = ir::parse_einsum(ctx.attrs().get_string("equation"), ranks);
  auto num_labels = static_cast<size_t>(spec.num_labels);
  std::vector<int64_t> sizes(num_labels, 1);
  // Each input's stride per label; a label repeated within one input (a
  // diagonal) adds its strides, a broadcast dim of 1 has stride 0.
  std::vector<std::vector<int64_t>> in_strides(ctx.num_inputs(), std::vector<int64_t>(num_labels, 0));
  for (size_t i = 0; i < ctx.num_inputs(); ++i) {
    const std::vector<int64_t>& shape = ctx.input(i).shape();
    std::vector<int64_t> strides = row_strides(shape);
    for (size_t k = 0; k < shape.size(); ++k) {
      auto l = static_cast<size_t>(spec.inputs[i][k]);
      if (shape[k] == 1) continue;
      sizes[l] = shape[k];
      in_strides[i][l] += strides[k];
    }
  }
  std::vector<int64_t> out_strides(num_labels, 0);
  std::vector<int64_t> out_row = row_strides(out.shape());
  for (size_t k = 0; k < spec.output.size(); ++k)
    out_strides[static_cast<size_t>(spec.output[k])] += out_row[k];
  int64_t total = 1;
  for (int64_t s : sizes) total *= s;
  if (total == 0) return;
  dispatch<float, double, int32_t, int64_t>(out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    std::vector<std::span<const T>> ins;
    for (size_t i = 0; i < ctx.num_inputs(); ++i) ins.push_back(ctx.input(i).data<T>());
    auto dst = out.mutable_data<T>();
    std::vector<int64_t> index(num_labels, 0);
    for (int64_t n = 0; n < total; ++n) {
      T product = 1;
      for (size_t i = 0; i < ins.size(); ++i) {
        int64_t offset = 0;
        for (size_t l = 0; l < num_labels; ++l) offset += index[l] * in_strides[i][l];
        product = static_cast<T>(product * ins[i][static_cast<size_t>(offset)]);
      }
      int64_t at = 0;
      for (size_t l = 0; l < num_labels; ++l) at += index[l] * out_strides[l];
      dst[static_cast<size_t>(at)] = static_cast<T>(dst[static_cast<size_t>(at)] + product);
      for (size_t l = num_labels; l-- > 0;) {
        if (++index[l] < sizes[l]) break;
        index[l] = 0;
      }
    }
  });
}

std::optional<std::string> check_einsum(const ir::Node&, std::span<const DType> dtypes) {
  return require_dtypes(dtypes, {DType::float32, DType::float64, DType::int32, DType::int64});
}

}  // namespace

void register_tensor_einsum_kernels(KernelRegistry& r) { r.add("Einsum", run_einsum, check_einsum); }

}  // namespace kiln::ref
