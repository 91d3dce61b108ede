// Shape inference for neural-network ops: convolutions, pooling, Gemm and
// MatMul, and the normalizations.
//
// Spatial output sizes are only known when the input size is static; the
// batch dim is passed through as is, so a symbolic batch survives the whole
// network.
#include "ir/op_schema.hpp"
#include "ir/ops/nn_geometry.hpp"

namespace kiln::ir {

namespace {

// The input's rank, failing if it is known and below `min_rank`; nullopt if
// the rank is unknown.
std::optional<size_t> rank_of(const InferContext& ctx, size_t i, size_t min_rank) {
  const ValueType& t = ctx.input(i);
  if (!t.shape) return std::nullopt;
  if (t.shape->size() < min_rank) {
    ctx.fail("input " + std::to_string(i) + " must have rank >= " + std::to_string(min_rank) + ", got " +
             t.to_string());
  }
  return t.shape->size();
}

// Static dims [from, end) of input i, or empty if any of them is not static.
std::vector<int64_t> static_tail(const ValueType& t, size_t from) {
  std::vector<int64_t> dims;
  if (!t.shape) return {};
  for (size_t i = from; i < t.shape->size(); ++i) {
    if (!(*t.shape)[i].is_static()) return {};
    dims.push_back((*t.shape)[i].value());
  }
  return dims;
}

void require_float(const InferContext& ctx, size_t i) {
  DType d = ctx.input_dtype(i);
  if (!is_floating(d))
    ctx.fail("input " + std::to_string(i) + " must be a float type, got " + std::string(dtype_name(d)));
}

// Rank of the spatial part for an [N, C, spatial...] op, from X or else W.
std::optional<size_t> spatial_rank(const InferContext& ctx, bool has_weights) {
  if (auto r = rank_of(ctx, 0, 2)) return *r - 2;
  if (has_weights) {
    if (auto r = rank_of(ctx, 1, 2)) return *r - 2;
  }
  return std::nullopt;
}

std::string ints_to_string(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}

void infer_conv(InferContext& ctx) {
  require_float(ctx, 0);
  auto sp = spatial_rank(ctx, true);
  if (!sp) return ctx.set_output(0, ValueType::unknown_shape(ctx.input_dtype(0)));
  const ValueType& x = ctx.input(0);
  const ValueType& w = ctx.input(1);
  if (w.shape && w.shape->size() != *sp + 2)
    ctx.fail("X and W ranks differ: " + x.to_string() + ", " + w.to_string());
  nn::Window win = nn::read_window(ctx.attrs(), *sp, static_tail(w, 2));
  if (w.shape && !win.kernel.empty() && !static_tail(w, 2).empty() && static_tail(w, 2) != win.kernel) {
    ctx.fail("kernel_shape " + ints_to_string(win.kernel) + " does not match W " + w.to_string());
  }
  int64_t group = ctx.attrs().get_int("group", 1);
  if (group < 1) ctx.fail("group must be >= 1");
  Dims out(*sp + 2);
  if (x.shape) out[0] = (*x.shape)[0];
  if (w.shape) {
    const Dim& m = (*w.shape)[0];
    out[1] = m;
    if (m.is_static() && m.value() % group != 0) ctx.fail("output channels are not divisible by group");
    const Dim& wc = (*w.shape)[1];
    // Divided, not multiplied: hostile dims must not overflow int64.
    if (x.shape && (*x.shape)[1].is_static() && wc.is_static() &&
        ((*x.shape)[1].value() % group != 0 || (*x.shape)[1].value() / group != wc.value())) {
      ctx.fail("input channels " + (*x.shape)[1].to_string() + " do not match W " + w.to_string() +
               " with group " + std::to_string(group));
    }
  }
  if (ctx.has_input(2) && ctx.input(2).shape && ctx.input(2).shape->size() != 1) ctx.fail("B must be 1-D");
  for (size_t i = 0; i < *sp; ++i) {
    if (!x.shape || win.kernel.empty() || !(*x.shape)[i + 2].is_static()) continue;
    out[i + 2] = nn::window_dim(win, i, (*x.shape)[i + 2].value()).out;
  }
  ctx.set_output(0, {ctx.input_dtype(0), out});
}

void infer_conv_transpose(InferContext& ctx) {
  require_float(ctx, 0);
  auto sp = spatial_rank(ctx, true);
  if (!sp) return ctx.set_output(0, ValueType::unknown_shape(ctx.input_dtype(0)));
  const ValueType& x = ctx.input(0);
  const ValueType& w = ctx.input(1);
  if (w.shape && w.shape->size() != *sp + 2)
    ctx.fail("X and W ranks differ: " + x.to_string() + ", " + w.to_string());
  nn::TransposeAttrs t = nn::read_transpose_attrs(ctx.attrs(), *sp, static_tail(w, 2));
  int64_t group = ctx.attrs().get_int("group", 1);
  if (group < 1) ctx.fail("group must be >= 1");
  Dims out(*sp + 2);
  if (x.shape) out[0] = (*x.shape)[0];
  if (w.shape) {
    const Dim& m = (*w.shape)[1];
    int64_t channels = 0;
    if (m.is_static() && __builtin_mul_overflow(m.value(), group, &channels))
      ctx.fail("output channels overflow int64");
    if (m.is_static()) out[1] = channels;
    const Dim& wc = (*w.shape)[0];
    if (x.shape && (*x.shape)[1].is_static() && wc.is_static() && (*x.shape)[1].value() != wc.value()) {
      ctx.fail("input channels " + (*x.shape)[1].to_string() + " do not match W " + w.to_string());
    }
  }
  for (size_t i = 0; i < *sp; ++i) {
    if (!t.output_shape.empty()) {
      out[i + 2] = t.output_shape[i];
      continue;
    }
    if (!x.shape || t.window.kernel.empty() || !(*x.shape)[i + 2].is_static()) continue;
    int64_t o = nn::transpose_out_dim(t, i, (*x.shape)[i + 2].value());
    if (o < 0) ctx.fail("negative output size");
    out[i + 2] = o;
  }
  ctx.set_output(0, {ctx.input_dtype(0), out});
}

// MaxPool, AveragePool, LpPool.
void infer_pool(InferContext& ctx) {
  auto sp = spatial_rank(ctx, false);
  DType dt = ctx.input_dtype(0);
  if (!sp) {
    ctx.set_output(0, ValueType::unknown_shape(dt));
    ctx.set_output(1, ValueType::unknown_shape(DType::int64));
    return;
  }
  if (!ctx.attrs().has("kernel_shape")) ctx.fail("missing required attribute 'kernel_shape'");
  nn::Window win = nn::read_window(ctx.attrs(), *sp, {});
  const Dims& x = *ctx.input(0).shape;
  Dims out(x.begin(), x.begin() + 2);
  for (size_t i = 0; i < *sp; ++i) {
    out.push_back(x[i + 2].is_static() ? Dim(nn::window_dim(win, i, x[i + 2].value()).out) : Dim());
  }
  ctx.set_output(0, {dt, out});
  ctx.set_output(1, {DType::int64, out});
}

void infer_global_pool(InferContext& ctx) {
  auto r = rank_of(ctx, 0, 2);
  if (!r) return ctx.set_output(0, ValueType::unknown_shape(ctx.input_dtype(0)));
  const Dims& x = *ctx.input(0).shape;
  Dims out(x.begin(), x.begin() + 2);
  out.resize(*r, Dim(1));
  ctx.set_output(0, {ctx.input_dtype(0), out});
}

void infer_gemm(InferContext& ctx) {
  const ValueType& a = ctx.input(0);
  const ValueType& b = ctx.input(1);
  if (a.dtype != b.dtype) ctx.fail("A and B have different types");
  bool trans_a = ctx.attrs().get_int("transA", 0) != 0;
  bool trans_b = ctx.attrs().get_int("transB", 0) != 0;
  Dim m, n;
  if (a.shape) {
    if (a.shape->size() != 2) ctx.fail("A must be 2-D, got " + a.to_string());
    m = (*a.shape)[trans_a ? 1 : 0];
  }
  if (b.shape) {
    if (b.shape->size() != 2) ctx.fail("B must be 2-D, got " + b.to_string());
    n = (*b.shape)[trans_b ? 0 : 1];
  }
  if (a.shape && b.shape) {
    const Dim& ka = (*a.shape)[trans_a ? 0 : 1];
    const Dim& kb = (*b.shape)[trans_b ? 1 : 0];
    if (ka.is_static() && kb.is_static() && ka.value() != kb.value()) {
      ctx.fail("inner dimensions differ: " + a.to_string() + " x " + b.to_string());
    }
  }
  Dims out{m, n};
  if (ctx.has_input(2) && ctx.input(2).shape) {
    const Dims& c = *ctx.input(2).shape;
    if (c.size() > 2) ctx.fail("C must have rank <= 2");
    auto bc = broadcast_dims(out, c);
    if (!bc) ctx.fail("C " + ctx.input(2).to_string() + " does not broadcast to [M, N]");
    // C broadcasts one way only; a 1 in [M, N] that C widens is an error,
    // but an unknown dim may be resolved by C.
    for (size_t i = 0; i < 2; ++i) {
      if (!(*bc)[i].is_static()) continue;
      if (out[i].is_static() && out[i].value() != (*bc)[i].value()) {
        ctx.fail("C " + ctx.input(2).to_string() + " does not broadcast to [M, N]");
      }
      if (out[i].is_unknown() && (*bc)[i].value() != 1) out[i] = (*bc)[i];
    }
  }
  ctx.set_output(0, {a.dtype, out});
}

void infer_matmul(InferContext& ctx) {
  const ValueType& a = ctx.input(0);
  const ValueType& b = ctx.input(1);
  if (a.dtype != b.dtype) ctx.fail("A and B have different types");
  if (!a.shape || !b.shape) return ctx.set_output(0, ValueType::unknown_shape(a.dtype));
  Dims sa = *a.shape;
  Dims sb = *b.shape;
  if (sa.empty() || sb.empty()) ctx.fail("MatMul inputs must have rank >= 1");
  bool vec_a = sa.size() == 1;
  bool vec_b = sb.size() == 1;
  if (vec_a) sa.insert(sa.begin(), Dim(1));
  if (vec_b) sb.push_back(Dim(1));
  const Dim& ka = sa[sa.size() - 1];
  const Dim& kb = sb[sb.size() - 2];
  if (ka.is_static() && kb.is_static() && ka.value() != kb.value()) {
    ctx.fail("inner dimensions differ: " + a.to_string() + " x " + b.to_string());
  }
  Dims batch_a(sa.begin(), sa.end() - 2);
  Dims batch_b(sb.begin(), sb.end() - 2);
  auto batch = broadcast_dims(batch_a, batch_b);
  if (!batch) ctx.fail("batch dimensions do not broadcast: " + a.to_string() + " x " + b.to_string());
  Dims out = *batch;
  if (!vec_a) out.push_back(sa[sa.size() - 2]);
  if (!vec_b) out.push_back(sb[sb.size() - 1]);
  ctx.set_output(0, {a.dtype, out});
}

// True when optional output i is present in the model.
bool output_used(const InferContext& ctx, size_t i) {
  return i < ctx.num_outputs() && ctx.node().outputs[i] != k_no_value;
}

void infer_batch_norm(InferContext& ctx) {
  require_float(ctx, 0);
  rank_of(ctx, 0, 1);
  ctx.set_output(0, ctx.input(0));
  // Running and saved statistics (training mode): per channel.
  Dims c{Dim()};
  if (ctx.input(0).shape && ctx.input(0).shape->size() >= 2) c = {(*ctx.input(0).shape)[1]};
  for (size_t i = 1; i < ctx.num_outputs(); ++i) {
    if (output_used(ctx, i)) ctx.set_output(i, {ctx.input_dtype(i < 3 ? 3 : 0), c});
  }
}

void infer_layer_norm(InferContext& ctx) {
  require_float(ctx, 0);
  const ValueType& x = ctx.input(0);
  ctx.set_output(0, x);
  int64_t stash = ctx.attrs().get_int("stash_type", 1);
  DType stash_dt = dtype_from_onnx(static_cast<int32_t>(stash)).value_or(DType::undefined);
  if (!is_floating(stash_dt)) ctx.fail("stash_type must be a float type");
  if (!x.shape) {
    ctx.set_output(1, ValueType::unknown_shape(stash_dt));
    ctx.set_output(2, ValueType::unknown_shape(stash_dt));
    return;
  }
  int64_t rank = static_cast<int64_t>(x.shape->size());
  int64_t axis = ctx.normalize_axis(ctx.attrs().get_int("axis", -1), rank);
  Dims stat(x.shape->begin(), x.shape->begin() + axis);
  stat.resize(static_cast<size_t>(rank), Dim(1));
  ctx.set_output(1, {stash_dt, stat});
  ctx.set_output(2, {stash_dt, stat});
}

void infer_same_float(InferContext& ctx) {
  require_float(ctx, 0);
  ctx.set_output(0, ctx.input(0));
}

// InstanceNormalization, LRN: [N, C, ...] in, the same shape out.
void infer_channels_same(InferContext& ctx) {
  require_float(ctx, 0);
  rank_of(ctx, 0, 2);
  ctx.set_output(0, ctx.input(0));
}

}  // namespace

void register_nn_ops(OpRegistry& r) {
  r.add("Conv", infer_conv);
  r.add("ConvTranspose", infer_conv_transpose);
  for (const char* op : {"MaxPool", "AveragePool", "LpPool"}) r.add(op, infer_pool);
  for (const char* op : {"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"}) r.add(op, infer_global_pool);
  r.add("Gemm", infer_gemm);
  r.add("MatMul", infer_matmul);
  r.add("BatchNormalization", infer_batch_norm);
  r.add("LayerNormalization", infer_layer_norm);
  r.add("InstanceNormalization", infer_channels_same);
  r.add("LRN", infer_channels_same);
  r.add("MeanVarianceNormalization", infer_same_float);
}

}  // namespace kiln::ir
