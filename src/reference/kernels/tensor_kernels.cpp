// Reference kernels for the tensor (data movement) ops: reshapes, slicing,
// gathering, concatenation, constants and shape queries. Spatial ones are in
// tensor_spatial_kernels.cpp, the scatters and GatherND in
// tensor_index_kernels.cpp.
#include "reference/kernels/tensor_kernels.hpp"

#include <cstring>

#include "ir/ops/tensor_params.hpp"
#include "reference/dispatch.hpp"

namespace kiln::ref {

std::vector<int64_t> row_strides(std::span<const int64_t> shape) {
  std::vector<int64_t> strides(shape.size(), 1);
  for (size_t i = shape.size(); i-- > 1;) strides[i - 1] = strides[i] * shape[i];
  return strides;
}

void strided_copy(const Tensor& src, std::span<const int64_t> src_strides, int64_t src_offset,
                  std::span<const int64_t> shape, Tensor& dst) {
  int64_t n = shape_numel(shape);
  if (n == 0) return;
  dispatch_by_size(src.dtype(), [&](auto tag) {
    using U = decltype(tag);
    const U* in = raw_data<U>(src);
    U* out = raw_mutable_data<U>(dst);
    size_t rank = shape.size();
    std::vector<int64_t> index(rank, 0);
    int64_t offset = src_offset;
    for (int64_t i = 0; i < n; ++i) {
      out[i] = in[offset];
      // Odometer step: bump the last axis, carrying into earlier ones.
      for (size_t a = rank; a-- > 0;) {
        if (++index[a] < shape[a]) {
          offset += src_strides[a];
          break;
        }
        offset -= src_strides[a] * (shape[a] - 1);
        index[a] = 0;
      }
    }
  });
}

std::vector<const Tensor*> input_values(const KernelContext& ctx) {
  std::vector<const Tensor*> values;
  for (size_t i = 0; i < ctx.num_inputs(); ++i) values.push_back(ctx.has_input(i) ? &ctx.input(i) : nullptr);
  return values;
}

namespace {

int64_t normalize(int64_t axis, int64_t rank) { return axis < 0 ? axis + rank : axis; }

// Flatten, Reshape, Squeeze, Unsqueeze: same bytes, the inferred shape.
void run_reshape(KernelContext& ctx) {
  ctx.set_output(0, ctx.input(0).reshaped(ctx.output_type(0).static_shape()));
}

// Shape, Size, Constant: the value that inference computed.
void run_inferred_value(KernelContext& ctx) {
  const Tensor* value = ctx.inferred_value(0);
  if (!value) throw Error(ErrorCode::internal, "inference gave no value");
  ctx.set_output(0, *value);
}

void run_transpose(KernelContext& ctx) {
  const Tensor& in = ctx.input(0);
  Tensor& out = ctx.output(0);
  int64_t rank = in.rank();
  std::vector<int64_t> perm = ctx.attrs().get_ints("perm", {});
  if (perm.empty()) {
    for (int64_t i = rank; i-- > 0;) perm.push_back(i);
  }
  std::vector<int64_t> in_strides = row_strides(in.shape());
  std::vector<int64_t> strides;
  strides.reserve(perm.size());
  for (int64_t p : perm) strides.push_back(in_strides[static_cast<size_t>(normalize(p, rank))]);
  strided_copy(in, strides, 0, out.shape(), out);
}

// Concat and Split move contiguous blocks: one per input (or output) per
// index of the dims before the axis.
void run_concat(KernelContext& ctx) {
  Tensor& out = ctx.output(0);
  int64_t axis = normalize(ctx.attrs().get_int("axis", ctx.opset() < 4 ? 1 : 0), out.rank());
  size_t esize = dtype_size(out.dtype());
  int64_t outer = shape_numel(std::span(out.shape()).subspan(0, static_cast<size_t>(axis)));
  int64_t inner = shape_numel(std::span(out.shape()).subspan(static_cast<size_t>(axis) + 1));
  std::byte* dst = out.mutable_bytes().data();
  for (int64_t o = 0; o < outer; ++o) {
    for (size_t i = 0; i < ctx.num_inputs(); ++i) {
      const Tensor& in = ctx.input(i);
      size_t block = static_cast<size_t>(in.dim(axis) * inner) * esize;
      if (block == 0) continue;
      std::memcpy(dst, in.bytes().data() + static_cast<size_t>(o) * block, block);
      dst += block;
    }
  }
}

void run_split(KernelContext& ctx) {
  const Tensor& in = ctx.input(0);
  int64_t axis = normalize(ctx.attrs().get_int("axis", 0), in.rank());
  size_t esize = dtype_size(in.dtype());
  int64_t outer = shape_numel(std::span(in.shape()).subspan(0, static_cast<size_t>(axis)));
  int64_t inner = shape_numel(std::span(in.shape()).subspan(static_cast<size_t>(axis) + 1));
  const std::byte* src = in.bytes().data();
  std::vector<Tensor*> outs;
  for (size_t i = 0; i < ctx.num_outputs(); ++i) outs.push_back(&ctx.output(i));
  for (int64_t o = 0; o < outer; ++o) {
    for (Tensor* out : outs) {
      size_t block = static_cast<size_t>(out->dim(axis) * inner) * esize;
      if (block == 0) continue;
      std::memcpy(out->mutable_bytes().data() + static_cast<size_t>(o) * block, src, block);
      src += block;
    }
  }
}

void run_slice(KernelContext& ctx) {
  const Tensor& in = ctx.input(0);
  Tensor& out = ctx.output(0);
  auto values = input_values(ctx);
  auto args = ir::slice_args(ctx.node(), values, in.rank());
  std::vector<int64_t> strides = row_strides(in.shape());
  std::vector<int64_t> src_strides = strides;
  int64_t offset = 0;
  for (size_t i = 0; i < args->axes.size(); ++i) {
    auto a = static_cast<size_t>(args->axes[i]);
    ir::SliceRange r = ir::clamp_slice(args->starts[i], args->ends[i], args->steps[i], in.shape()[a]);
    offset += r.start * strides[a];
    src_strides[a] = strides[a] * r.step;
  }
  strided_copy(in, src_strides, offset, out.shape(), out);
}

int64_t checked_index(int64_t index, int64_t dim) {
  int64_t i = index < 0 ? index + dim : index;
  if (i < 0 || i >= dim) {
    throw Error(ErrorCode::invalid_argument,
                "index " + std::to_string(index) + " is out of range for dim " + std::to_string(dim));
  }
  return i;
}

void run_gather(KernelContext& ctx) {
  const Tensor& data = ctx.input(0);
  const Tensor& indices = ctx.input(1);
  Tensor& out = ctx.output(0);
  int64_t axis = normalize(ctx.attrs().get_int("axis", 0), data.rank());
  int64_t outer = shape_numel(std::span(data.shape()).subspan(0, static_cast<size_t>(axis)));
  int64_t inner = shape_numel(std::span(data.shape()).subspan(static_cast<size_t>(axis) + 1));
  int64_t dim = data.dim(axis);
  size_t block = static_cast<size_t>(inner) * dtype_size(data.dtype());
  if (block == 0) return;
  std::vector<int64_t> idx = indices.to_int_vector();
  for (int64_t& i : idx) i = checked_index(i, dim);
  const std::byte* src = data.bytes().data();
  std::byte* dst = out.mutable_bytes().data();
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i : idx) {
      std::memcpy(dst, src + static_cast<size_t>(o * dim + i) * block, block);
      dst += block;
    }
  }
}

void run_gather_elements(KernelContext& ctx) {
  const Tensor& data = ctx.input(0);
  const Tensor& indices = ctx.input(1);
  Tensor& out = ctx.output(0);
  auto axis = static_cast<size_t>(normalize(ctx.attrs().get_int("axis", 0), data.rank()));
  std::vector<int64_t> strides = row_strides(data.shape());
  const std::vector<int64_t>& shape = indices.shape();
  int64_t dim = data.shape()[axis];
  dispatch_by_size(data.dtype(), [&](auto tag) {
    using U = decltype(tag);
    const U* in = raw_data<U>(data);
    U* dst = raw_mutable_data<U>(out);
    std::vector<int64_t> index(shape.size(), 0);
    for (int64_t n = 0; n < indices.numel(); ++n) {
      int64_t offset = 0;
      for (size_t a = 0; a < shape.size(); ++a) {
        int64_t i = a == axis ? checked_index(indices.int_at(n), dim) : index[a];
        offset += i * strides[a];
      }
      dst[n] = in[offset];
      for (size_t a = shape.size(); a-- > 0;) {
        if (++index[a] < shape[a]) break;
        index[a] = 0;
      }
    }
  });
}

void run_expand(KernelContext& ctx) {
  const Tensor& in = ctx.input(0);
  Tensor& out = ctx.output(0);
  size_t rank = out.shape().size();
  size_t pad = rank - in.shape().size();
  std::vector<int64_t> in_strides = row_strides(in.shape());
  std::vector<int64_t> strides(rank, 0);
  for (size_t a = pad; a < rank; ++a) {
    // A dim of 1 repeats: stride 0.
    if (in.shape()[a - pad] != 1) strides[a] = in_strides[a - pad];
  }
  strided_copy(in, strides, 0, out.shape(), out);
}

void run_tile(KernelContext& ctx) {
  const Tensor& in = ctx.input(0);
  Tensor& out = ctx.output(0);
  const std::vector<int64_t>& in_shape = in.shape();
  const std::vector<int64_t>& shape = out.shape();
  std::vector<int64_t> strides = row_strides(in_shape);
  dispatch_by_size(in.dtype(), [&](auto tag) {
    using U = decltype(tag);
    const U* src = raw_data<U>(in);
    U* dst = raw_mutable_data<U>(out);
    std::vector<int64_t> index(shape.size(), 0);
    for (int64_t n = 0; n < out.numel(); ++n) {
      int64_t offset = 0;
      for (size_t a = 0; a < shape.size(); ++a) offset += (index[a] % in_shape[a]) * strides[a];
      dst[n] = src[offset];
      for (size_t a = shape.size(); a-- > 0;) {
        if (++index[a] < shape[a]) break;
        index[a] = 0;
      }
    }
  });
}

void run_constant_of_shape(KernelContext& ctx) {
  Tensor& out = ctx.output(0);
  if (!ctx.attrs().has("value")) return;  // float 0: already zero-filled
  const Tensor& value = ctx.attrs().get_tensor("value");
  size_t esize = dtype_size(value.dtype());
  std::byte* dst = out.mutable_bytes().data();
  for (int64_t i = 0; i < out.numel(); ++i)
    std::memcpy(dst + static_cast<size_t>(i) * esize, value.bytes().data(), esize);
}

void run_range(KernelContext& ctx) {
  Tensor& out = ctx.output(0);
  dispatch<float, double, int16_t, int32_t, int64_t>(out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T start = ctx.input(0).data<T>()[0];
    T delta = ctx.input(2).data<T>()[0];
    auto dst = out.mutable_data<T>();
    for (size_t i = 0; i < dst.size(); ++i) dst[i] = static_cast<T>(start + static_cast<T>(i) * delta);
  });
}

void run_dropout(KernelContext& ctx) {
  const Tensor& in = ctx.input(0);
  ctx.set_output(0, in);
  if (ctx.num_outputs() < 2 || ctx.node().outputs[1] == ir::k_no_value) return;
  Tensor& mask = ctx.output(1);
  // Inference keeps every element: the mask is all ones (true).
  dispatch<float, double, uint8_t>(mask.dtype() == DType::boolean ? DType::uint8 : mask.dtype(),
                                   [&](auto tag) {
                                     using T = decltype(tag);
                                     T* dst = raw_mutable_data<T>(mask);
                                     for (int64_t i = 0; i < mask.numel(); ++i) dst[i] = T(1);
                                   });
}

std::optional<std::string> check_range(const ir::Node&, std::span<const DType> dtypes) {
  return require_dtypes(dtypes, {DType::float32, DType::float64, DType::int16, DType::int32, DType::int64});
}

std::optional<std::string> check_dropout(const ir::Node& node, std::span<const DType> dtypes) {
  // The old mask has the data's type; only float types are filled with 1.
  if (node.opset < 10 && node.outputs.size() > 1 && node.outputs[1] != ir::k_no_value && !dtypes.empty() &&
      dtypes[0] != DType::float32 && dtypes[0] != DType::float64) {
    return "mask of type " + std::string(dtype_name(dtypes[0])) + " is not supported";
  }
  return std::nullopt;
}

std::optional<std::string> check_constant(const ir::Node& node, std::span<const DType>) {
  const ir::Attributes& a = node.attrs;
  if (a.has("value_string") || a.has("value_strings") || a.has("sparse_value")) {
    return "string and sparse constants are not supported";
  }
  return std::nullopt;
}

}  // namespace

void register_tensor_kernels(KernelRegistry& r) {
  for (const char* op : {"Flatten", "Reshape", "Squeeze", "Unsqueeze"}) r.add(op, run_reshape);
  for (const char* op : {"Shape", "Size"}) r.add(op, run_inferred_value);
  r.add("Constant", run_inferred_value, check_constant);
  r.add("Identity", [](KernelContext& ctx) { ctx.set_output(0, ctx.input(0)); });
  r.add("Transpose", run_transpose);
  r.add("Concat", run_concat);
  r.add("Split", run_split);
  r.add("Slice", run_slice);
  r.add("Gather", run_gather);
  r.add("GatherElements", run_gather_elements);
  r.add("Expand", run_expand);
  r.add("Tile", run_tile);
  r.add("ConstantOfShape", run_constant_of_shape);
  r.add("Range", run_range, check_range);
  r.add("Dropout", run_dropout, check_dropout);
  register_tensor_spatial_kernels(r);
  register_tensor_einsum_kernels(r);
  register_tensor_index_kernels(r);
}

}  // namespace kiln::ref
