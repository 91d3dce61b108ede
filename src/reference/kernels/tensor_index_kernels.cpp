// Reference kernels for the indexed data-movement ops: ScatterND,
// ScatterElements (and Scatter, its name before opset 11) and GatherND.
//
// Each kernel resolves the index tensor once into flat element offsets,
// checking every index against its dim (negative ones count from the end),
// and then moves or combines contiguous runs with plain typed loops: the
// work is linear in indices + updates and the inner loops vectorise. A bad
// index is a kiln::Error(invalid_argument) that the executor prefixes with
// the node and op, never a write out of bounds.
#include <algorithm>
#include <cstring>

#include "reference/dispatch.hpp"
#include "reference/kernels/tensor_kernels.hpp"

namespace kiln::ref {

namespace {

enum class Reduction { none, add, mul, max, min };

Reduction reduction_of(const ir::Node& node) {
  std::string r = node.attrs.get_string("reduction", "none");
  if (r == "add") return Reduction::add;
  if (r == "mul") return Reduction::mul;
  if (r == "max") return Reduction::max;
  if (r == "min") return Reduction::min;
  return Reduction::none;  // inference refuses anything else
}

[[noreturn]] void out_of_range(int64_t index, int64_t position, int64_t axis, int64_t dim) {
  throw Error(ErrorCode::invalid_argument, "index " + std::to_string(index) + " (element " +
                                               std::to_string(position) +
                                               " of indices) is out of range for axis " +
                                               std::to_string(axis) + " of size " + std::to_string(dim));
}

// `index` in [-dim, dim) as a position in [0, dim).
inline int64_t checked(int64_t index, int64_t dim, int64_t position, int64_t axis) {
  int64_t i = index < 0 ? index + dim : index;
  if (i < 0 || i >= dim) out_of_range(index, position, axis, dim);
  return i;
}

// Calls `fn` with the indices as a span of their own type (int32 or int64),
// so that neither is copied or widened element by element through a getter.
template <typename Fn>
void with_indices(const Tensor& indices, Fn&& fn) {
  if (indices.dtype() == DType::int32)
    fn(indices.data<int32_t>());
  else if (indices.dtype() == DType::int64)
    fn(indices.data<int64_t>());
  else
    throw Error(ErrorCode::invalid_model, "indices must be int32 or int64");
}

// Calls `fn` with the reduction as a function object on one element, so
// that the loops that use it are compiled once per reduction and carry no
// branch on it.
template <typename T, typename Fn>
void with_reduction(Reduction r, Fn&& fn) {
  switch (r) {
    case Reduction::none:
      fn([](T& d, T s) { d = s; });
      break;
    case Reduction::add:
      fn([](T& d, T s) { d = static_cast<T>(d + s); });
      break;
    case Reduction::mul:
      fn([](T& d, T s) { d = static_cast<T>(d * s); });
      break;
    case Reduction::max:
      fn([](T& d, T s) { d = std::max(d, s); });
      break;
    case Reduction::min:
      fn([](T& d, T s) { d = std::min(d, s); });
      break;
  }
}

// Runs `fn` with a tag of the element type the reduction computes in: raw
// storage by size when it only copies (every dtype), the arithmetic type
// otherwise (the support check refuses the rest).
template <typename Fn>
void dispatch_reduction(DType dtype, Reduction r, Fn&& fn) {
  if (r == Reduction::none) {
    dispatch_by_size(dtype, fn);
  } else {
    dispatch<float, double, int8_t, uint8_t, int16_t, uint16_t, int32_t, uint32_t, int64_t, uint64_t>(dtype,
                                                                                                      fn);
  }
}

// The output starts as a copy of the data.
Tensor& copy_of_data(KernelContext& ctx) {
  Tensor& out = ctx.output(0);
  const Tensor& data = ctx.input(0);
  if (data.byte_size() > 0) std::memcpy(out.mutable_bytes().data(), data.bytes().data(), data.byte_size());
  return out;
}

void run_scatter_nd(KernelContext& ctx) {
  const Tensor& data = ctx.input(0);
  const Tensor& indices = ctx.input(1);
  const Tensor& updates = ctx.input(2);
  Tensor& out = copy_of_data(ctx);
  const std::vector<int64_t>& shape = data.shape();
  auto k = static_cast<size_t>(indices.shape().back());
  int64_t tuples = shape_numel(std::span(indices.shape()).first(indices.shape().size() - 1));
  int64_t slice = shape_numel(std::span(shape).subspan(k));
  std::vector<int64_t> strides = row_strides(shape);

  // Every tuple's offset, all checked before the first write.
  std::vector<int64_t> offsets(static_cast<size_t>(tuples));
  with_indices(indices, [&](auto idx) {
    for (int64_t t = 0; t < tuples; ++t) {
      int64_t offset = 0;
      for (size_t j = 0; j < k; ++j) {
        auto p = static_cast<int64_t>(static_cast<size_t>(t) * k + j);
        offset += checked(idx[static_cast<size_t>(p)], shape[j], p, static_cast<int64_t>(j)) * strides[j];
      }
      offsets[static_cast<size_t>(t)] = offset;
    }
  });
  if (slice == 0) return;
  Reduction r = reduction_of(ctx.node());
  dispatch_reduction(data.dtype(), r, [&](auto tag) {
    using T = decltype(tag);
    const T* src = raw_data<T>(updates);
    T* dst = raw_mutable_data<T>(out);
    with_reduction<T>(r, [&](auto op) {
      // In index order, so duplicates without a reduction keep the last update.
      for (int64_t t = 0; t < tuples; ++t) {
        T* d = dst + offsets[static_cast<size_t>(t)];
        const T* s = src + t * slice;
        for (int64_t e = 0; e < slice; ++e) op(d[e], s[e]);
      }
    });
  });
}

void run_scatter_elements(KernelContext& ctx) {
  const Tensor& data = ctx.input(0);
  const Tensor& indices = ctx.input(1);
  const Tensor& updates = ctx.input(2);
  Tensor& out = copy_of_data(ctx);
  if (indices.numel() == 0) return;
  const std::vector<int64_t>& ishape = indices.shape();
  const auto rank = static_cast<size_t>(data.rank());
  const int64_t axis_attr = ctx.attrs().get_int("axis", 0);
  const auto axis = static_cast<size_t>(axis_attr < 0 ? axis_attr + data.rank() : axis_attr);
  const int64_t dim = data.shape()[axis];
  std::vector<int64_t> dstrides = row_strides(data.shape());
  const int64_t axis_stride = dstrides[axis];
  // Rows: every index position but the last axis, walked as an odometer
  // that keeps the data offset of the row's first element without the
  // scattered axis; the last axis is the contiguous inner loop.
  const int64_t row_len = ishape[rank - 1];
  const int64_t rows = indices.numel() / row_len;
  const bool along_row = axis == rank - 1;
  Reduction r = reduction_of(ctx.node());
  with_indices(indices, [&](auto idx) {
    dispatch_reduction(data.dtype(), r, [&](auto tag) {
      using T = decltype(tag);
      const T* src = raw_data<T>(updates);
      T* dst = raw_mutable_data<T>(out);
      with_reduction<T>(r, [&](auto op) {
        std::vector<int64_t> coord(rank, 0);
        int64_t base = 0;
        for (int64_t row = 0; row < rows; ++row) {
          const int64_t first = row * row_len;
          for (int64_t j = 0; j < row_len; ++j) {
            int64_t i =
                checked(idx[static_cast<size_t>(first + j)], dim, first + j, static_cast<int64_t>(axis));
            op(dst[base + i * axis_stride + (along_row ? 0 : j)], src[first + j]);
          }
          for (size_t a = rank - 1; a-- > 0;) {
            int64_t step = a == axis ? 0 : dstrides[a];
            if (++coord[a] < ishape[a]) {
              base += step;
              break;
            }
            base -= step * (ishape[a] - 1);
            coord[a] = 0;
          }
        }
      });
    });
  });
}

void run_gather_nd(KernelContext& ctx) {
  const Tensor& data = ctx.input(0);
  const Tensor& indices = ctx.input(1);
  Tensor& out = ctx.output(0);
  const std::vector<int64_t>& shape = data.shape();
  const std::vector<int64_t>& ishape = indices.shape();
  auto b = static_cast<size_t>(ctx.opset() >= 12 ? ctx.attrs().get_int("batch_dims", 0) : 0);
  auto k = static_cast<size_t>(ishape.back());
  int64_t batches = shape_numel(std::span(shape).first(b));
  int64_t per_batch = shape_numel(std::span(ishape).subspan(b, ishape.size() - 1 - b));
  int64_t batch_stride = shape_numel(std::span(shape).subspan(b));
  int64_t slice = shape_numel(std::span(shape).subspan(b + k));
  std::vector<int64_t> strides = row_strides(shape);
  const size_t block = static_cast<size_t>(slice) * dtype_size(data.dtype());
  const std::byte* src = data.bytes().data();
  std::byte* dst = out.mutable_bytes().data();
  with_indices(indices, [&](auto idx) {
    for (int64_t batch = 0; batch < batches; ++batch) {
      for (int64_t t = 0; t < per_batch; ++t) {
        const auto tuple = static_cast<size_t>(batch * per_batch + t);
        int64_t offset = batch * batch_stride;
        for (size_t j = 0; j < k; ++j) {
          auto p = static_cast<int64_t>(tuple * k + j);
          offset += checked(idx[static_cast<size_t>(p)], shape[b + j], p, static_cast<int64_t>(b + j)) *
                    strides[b + j];
        }
        if (block == 0) continue;
        std::memcpy(dst, src + static_cast<size_t>(offset) * dtype_size(data.dtype()), block);
        dst += block;
      }
    }
  });
}

// Reductions compute in the element's own arithmetic type; bool and the
// 16-bit floats have none here.
std::optional<std::string> check_scatter(const ir::Node& node, std::span<const DType> dtypes) {
  if (reduction_of(node) == Reduction::none || dtypes.empty()) return std::nullopt;
  DType d = dtypes[0];
  if (d == DType::boolean || d == DType::float16 || d == DType::bfloat16) {
    return "reduction '" + node.attrs.get_string("reduction") + "' of " + std::string(dtype_name(d)) +
           " is not supported";
  }
  return std::nullopt;
}

}  // namespace

void register_tensor_index_kernels(KernelRegistry& r) {
  r.add("ScatterND", run_scatter_nd, check_scatter);
  r.add("ScatterElements", run_scatter_elements, check_scatter);
  r.add("Scatter", run_scatter_elements);
  r.add("GatherND", run_gather_nd);
}

}  // namespace kiln::ref
