// Conv and ConvTranspose reference kernels, for any number of spatial axes.
//
// Both precompute a table of input/output offsets per kernel position (see
// window_table), so the inner loops do no per-element index arithmetic: Conv
// gathers through it (im2col) and ConvTranspose scatters through it.
#include <algorithm>
#include <string>

#include "backends/ref/dispatch.hpp"
#include "backends/ref/kernels/nn_kernels.hpp"
#include "ir/ops/nn_geometry.hpp"

namespace kiln::ref {

namespace {

std::vector<int64_t> spatial_shape(const Tensor& t) { return {t.shape().begin() + 2, t.shape().end()}; }

template <typename T>
void run_conv(KernelContext& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& w = ctx.input(1);
  Tensor& y = ctx.output(0);
  const size_t rank = static_cast<size_t>(x.rank()) - 2;
  std::vector<int64_t> in_sp = spatial_shape(x);
  std::vector<int64_t> out_sp = spatial_shape(y);
  std::vector<int64_t> k_sp = spatial_shape(w);
  ir::nn::Window win = ir::nn::read_window(ctx.attrs(), rank, k_sp);
  std::vector<int64_t> pb(rank), pe(rank);
  for (size_t d = 0; d < rank; ++d) {
    ir::nn::WindowDim wd = ir::nn::window_dim(win, d, in_sp[d]);
    pb[d] = wd.pad_begin;
    pe[d] = wd.pad_end;
  }
  std::vector<int64_t> table = window_table(in_sp, out_sp, k_sp, win.strides, win.dilations, pb, pe);

  const int64_t batch = x.dim(0), in_c = x.dim(1), out_c = y.dim(1);
  const int64_t group = ctx.attrs().get_int("group", 1);
  const int64_t in_cg = in_c / group, out_cg = out_c / group;
  const int64_t num_in = shape_numel(in_sp), num_out = shape_numel(out_sp), num_k = shape_numel(k_sp);
  auto px = x.data<T>();
  auto pw = w.data<T>();
  auto py = y.mutable_data<T>();
  const T* bias = ctx.has_input(2) ? ctx.input(2).data<T>().data() : nullptr;
  // Gathers the inputs that each (input channel, kernel position) pair reads
  // into one contiguous row per pair (im2col), so the multiply-add loop below
  // runs over plain arrays.
  const int64_t rows = in_cg * num_k;
  std::vector<T> cols(static_cast<size_t>(rows * num_out));
  std::vector<double> acc(static_cast<size_t>(num_out));
  for (int64_t n = 0; n < batch; ++n) {
    for (int64_t g = 0; g < group; ++g) {
      for (int64_t ic = 0; ic < in_cg; ++ic) {
        const T* xin = px.data() + (n * in_c + g * in_cg + ic) * num_in;
        for (int64_t kp = 0; kp < num_k; ++kp) {
          const int64_t* src = table.data() + kp * num_out;
          T* dst = cols.data() + (ic * num_k + kp) * num_out;
          for (int64_t op = 0; op < num_out; ++op) dst[op] = src[op] >= 0 ? xin[src[op]] : T(0);
        }
      }
      for (int64_t m = g * out_cg; m < (g + 1) * out_cg; ++m) {
        std::fill(acc.begin(), acc.end(), bias ? static_cast<double>(bias[m]) : 0.0);
        // W is [C_out, C_in / group, kernel...]: row r of output channel m
        // pairs with row r of cols.
        const T* wm = pw.data() + m * rows;
        for (int64_t r = 0; r < rows; ++r) {
          const double wv = static_cast<double>(wm[r]);
          const T* src = cols.data() + r * num_out;
          for (int64_t op = 0; op < num_out; ++op)
            acc[static_cast<size_t>(op)] += wv * static_cast<double>(src[op]);
        }
        T* yout = py.data() + (n * out_c + m) * num_out;
        for (int64_t op = 0; op < num_out; ++op) yout[op] = static_cast<T>(acc[static_cast<size_t>(op)]);
      }
    }
  }
}

// ConvTranspose scatters: input position i with kernel position k writes
// output position i * stride + k * dilation - pad_begin.
template <typename T>
void run_conv_transpose(KernelContext& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& w = ctx.input(1);
  Tensor& y = ctx.output(0);
  const size_t rank = static_cast<size_t>(x.rank()) - 2;
  std::vector<int64_t> in_sp = spatial_shape(x);
  std::vector<int64_t> out_sp = spatial_shape(y);
  std::vector<int64_t> k_sp = spatial_shape(w);
  ir::nn::TransposeAttrs t = ir::nn::read_transpose_attrs(ctx.attrs(), rank, k_sp);
  std::vector<int64_t> pb(rank);
  for (size_t d = 0; d < rank; ++d) pb[d] = ir::nn::transpose_pad_begin(t, d, in_sp[d], out_sp[d]);

  const int64_t num_in = shape_numel(in_sp), num_out = shape_numel(out_sp), num_k = shape_numel(k_sp);
  // table[kp * num_in + ip]: flat output offset, or -1 outside the output.
  std::vector<int64_t> table(static_cast<size_t>(num_in * num_k), -1);
  if (num_in > 0 && num_k > 0) {
    std::vector<int64_t> k(rank, 0);
    size_t pos = 0;
    do {
      std::vector<int64_t> i(rank, 0);
      do {
        int64_t offset = 0;
        bool inside = true;
        for (size_t d = 0; d < rank; ++d) {
          int64_t c = i[d] * t.window.strides[d] + k[d] * t.window.dilations[d] - pb[d];
          inside = inside && c >= 0 && c < out_sp[d];
          offset = offset * out_sp[d] + c;
        }
        table[pos++] = inside ? offset : -1;
      } while (next_index(i, in_sp));
    } while (next_index(k, k_sp));
  }

  const int64_t batch = x.dim(0), in_c = x.dim(1), out_c = y.dim(1);
  const int64_t group = ctx.attrs().get_int("group", 1);
  const int64_t in_cg = in_c / group, out_cg = out_c / group;
  auto px = x.data<T>();
  auto pw = w.data<T>();
  auto py = y.mutable_data<T>();
  const T* bias = ctx.has_input(2) ? ctx.input(2).data<T>().data() : nullptr;
  std::vector<double> acc(static_cast<size_t>(num_out));
  for (int64_t n = 0; n < batch; ++n) {
    for (int64_t m = 0; m < out_c; ++m) {
      const int64_t g = m / out_cg;
      std::fill(acc.begin(), acc.end(), bias ? static_cast<double>(bias[m]) : 0.0);
      for (int64_t ic = 0; ic < in_cg; ++ic) {
        const int64_t c = g * in_cg + ic;
        const T* xin = px.data() + (n * in_c + c) * num_in;
        // W is [C_in, C_out / group, kernel...].
        const T* wk = pw.data() + (c * out_cg + (m - g * out_cg)) * num_k;
        for (int64_t kp = 0; kp < num_k; ++kp) {
          const double wv = static_cast<double>(wk[kp]);
          const int64_t* row = table.data() + kp * num_in;
          for (int64_t ip = 0; ip < num_in; ++ip) {
            if (row[ip] >= 0) acc[static_cast<size_t>(row[ip])] += wv * static_cast<double>(xin[ip]);
          }
        }
      }
      T* yout = py.data() + (n * out_c + m) * num_out;
      for (int64_t op = 0; op < num_out; ++op) yout[op] = static_cast<T>(acc[static_cast<size_t>(op)]);
    }
  }
}

std::optional<std::string> check_conv(const ir::Node& /*node*/, std::span<const DType> dtypes) {
  if (auto why = require_dtypes(dtypes, {DType::float32, DType::float64})) return why;
  for (DType d : dtypes) {
    if (d != DType::undefined && d != dtypes[0]) return std::string("inputs have mixed types");
  }
  return std::nullopt;
}

}  // namespace

// Per-axis coordinates of a window position: in[d] = o * stride - pad + k * dil.
// Returns, for every (kernel position, output position) pair, the flat input
// offset or a marker.
std::vector<int64_t> window_table(std::span<const int64_t> in, std::span<const int64_t> out,
                                  std::span<const int64_t> kernel, std::span<const int64_t> strides,
                                  std::span<const int64_t> dilations, std::span<const int64_t> pad_begin,
                                  std::span<const int64_t> pad_end) {
  const size_t rank = in.size();
  const int64_t num_out = shape_numel(out);
  const int64_t num_k = shape_numel(kernel);
  std::vector<int64_t> table(static_cast<size_t>(num_out * num_k));
  if (num_out == 0 || num_k == 0) return table;
  std::vector<int64_t> k(rank, 0);
  size_t pos = 0;
  do {
    std::vector<int64_t> o(rank, 0);
    do {
      int64_t offset = 0;
      int64_t status = 0;
      for (size_t d = 0; d < rank; ++d) {
        int64_t c = o[d] * strides[d] - pad_begin[d] + k[d] * dilations[d];
        if (c >= 0 && c < in[d]) {
          offset = offset * in[d] + c;
        } else if (c < in[d] + pad_end[d]) {
          status = std::min(status, k_in_padding);
        } else {
          status = k_past_padding;
        }
      }
      table[pos++] = status < 0 ? status : offset;
    } while (next_index(o, out));
  } while (next_index(k, kernel));
  return table;
}

bool next_index(std::vector<int64_t>& index, std::span<const int64_t> shape) {
  for (size_t d = index.size(); d-- > 0;) {
    if (++index[d] < shape[d]) return true;
    index[d] = 0;
  }
  return false;
}

void register_nn_conv_kernels(KernelRegistry& r) {
  r.add(
      "Conv",
      [](KernelContext& ctx) {
        dispatch<float, double>(ctx.input(0).dtype(), [&](auto tag) { run_conv<decltype(tag)>(ctx); });
      },
      check_conv);
  r.add(
      "ConvTranspose",
      [](KernelContext& ctx) {
        dispatch<float, double>(ctx.input(0).dtype(),
                                [&](auto tag) { run_conv_transpose<decltype(tag)>(ctx); });
      },
      check_conv);
}

}  // namespace kiln::ref
