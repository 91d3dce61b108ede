// Shape inference for the tensor (data movement) ops: reshapes, slicing,
// gathering, concatenation, constants and shape queries. The spatial ones
// (Pad, Resize, DepthToSpace, ...) are in tensor_spatial_ops.cpp, the scatters
// and GatherND in tensor_index_ops.cpp.
//
// Many of these ops take their output shape from another input's value (a
// Reshape target, Slice starts, Expand's shape). Static inference sees those
// values only for constants; otherwise it keeps what it can (usually the
// rank) and leaves the dims unknown.
#include <algorithm>
#include <cmath>

#include "ir/op_schema.hpp"
#include "ir/ops/tensor_ops_internal.hpp"
#include "ir/ops/tensor_params.hpp"

namespace kiln::ir {

std::vector<const Tensor*> known_values(const InferContext& ctx) {
  std::vector<const Tensor*> values;
  for (size_t i = 0; i < ctx.num_inputs(); ++i) values.push_back(ctx.input_value(i));
  return values;
}

std::optional<int64_t> static_length(const InferContext& ctx, size_t i) {
  if (!ctx.has_input(i)) return std::nullopt;
  const ValueType& t = ctx.input(i);
  if (!t.shape || t.shape->size() != 1 || !(*t.shape)[0].is_static()) return std::nullopt;
  // Every caller makes a rank of it: a hostile length must not allocate gigabytes of dims.
  constexpr int64_t k_max_rank = 4096;
  if ((*t.shape)[0].value() > k_max_rank) ctx.fail("a shape of more than 4096 dims");
  return (*t.shape)[0].value();
}

namespace {

int64_t rank_of(const ValueType& t) { return static_cast<int64_t>(t.shape->size()); }

// The product of dims, keeping a lone symbol: [batch, 1, 1] is batch.
Dim symbolic_product(std::span<const Dim> dims) {
  std::optional<Dim> single;
  for (const Dim& d : dims) {
    if (d == Dim(1)) continue;
    if (single) return dims_product(dims);
    single = d;
  }
  return single ? *single : Dim(1);
}

void infer_flatten(InferContext& ctx) {
  const ValueType& in = ctx.input(0);
  if (!in.shape) {
    ctx.set_output(0, ValueType::of_rank(in.dtype, 2));
    return;
  }
  int64_t rank = rank_of(in);
  int64_t axis = ctx.attrs().get_int("axis", 1);
  if (axis < 0) axis += rank;
  if (axis < 0 || axis > rank) ctx.fail("axis is out of range for rank " + std::to_string(rank));
  std::span<const Dim> dims(*in.shape);
  auto split = static_cast<size_t>(axis);
  ctx.set_output(
      0, {in.dtype, Dims{symbolic_product(dims.subspan(0, split)), symbolic_product(dims.subspan(split))}});
}

void infer_reshape(InferContext& ctx) {
  const ValueType& in = ctx.input(0);
  std::vector<int64_t> target;
  if (ctx.opset() < 5) {
    target = ctx.attrs().get_ints("shape");
  } else if (const Tensor* t = ctx.input_value(1)) {
    target = t->to_int_vector();
  } else {
    auto n = static_length(ctx, 1);
    ctx.set_output(
        0, n ? ValueType::of_rank(in.dtype, static_cast<size_t>(*n)) : ValueType::unknown_shape(in.dtype));
    return;
  }
  bool allow_zero = ctx.opset() >= 14 && ctx.attrs().get_int("allowzero", 0) != 0;
  Dims out(target.size());
  std::vector<bool> copied(target.size(), false);
  std::optional<size_t> inferred_at;
  for (size_t i = 0; i < target.size(); ++i) {
    int64_t v = target[i];
    if (v == 0 && !allow_zero) {
      if (in.shape && i >= in.shape->size())
        ctx.fail("shape copies dim " + std::to_string(i) + " of a lower-rank input");
      out[i] = in.shape ? (*in.shape)[i] : Dim();
      copied[i] = true;
    } else if (v == -1) {
      if (inferred_at) ctx.fail("shape has more than one -1");
      inferred_at = i;
    } else if (v < 0) {
      ctx.fail("shape has invalid dim " + std::to_string(v));
    } else {
      out[i] = v;
    }
  }
  if (inferred_at && allow_zero && std::count(target.begin(), target.end(), 0) > 0) {
    ctx.fail("shape has both -1 and 0 with allowzero");
  }
  if (inferred_at && in.shape) {
    // Dims copied by 0 cancel on both sides, so a symbolic batch copied
    // through still lets -1 be solved: [batch,3,4] -> [0,-1] is [batch,12].
    // A single symbol left over is what -1 stands for when the static
    // parts match: [batch,64,1,1] -> [-1,64] is [batch,64].
    int64_t in_product = 1;
    int64_t out_product = 1;
    Dims symbols;
    for (size_t i = 0; i < in.shape->size(); ++i) {
      if (i < copied.size() && copied[i]) continue;
      const Dim& d = (*in.shape)[i];
      if (!d.is_static())
        symbols.push_back(d);
      else
        in_product *= d.value();
    }
    for (size_t i = 0; i < out.size(); ++i) {
      if (copied[i] || i == *inferred_at) continue;
      out_product *= out[i].value();
    }
    if (symbols.size() == 1 && symbols[0].is_symbolic() && in_product == out_product) {
      out[*inferred_at] = symbols[0];
    } else if (symbols.empty()) {
      if (out_product == 0 || in_product % out_product != 0) {
        ctx.fail("cannot reshape " + in.to_string() + " to " + shape_to_string(target));
      }
      out[*inferred_at] = in_product / out_product;
    }
  }
  ValueType result{in.dtype, out};
  if (in.is_static() && result.is_static() &&
      shape_numel(in.static_shape()) != shape_numel(result.static_shape())) {
    ctx.fail("cannot reshape " + in.to_string() + " to " + result.to_string());
  }
  ctx.set_output(0, std::move(result));
}

void infer_transpose(InferContext& ctx) {
  const ValueType& in = ctx.input(0);
  auto perm = ctx.attrs().find_ints("perm");
  if (!in.shape) {
    ctx.set_output(0, perm ? ValueType::of_rank(in.dtype, perm->size()) : ValueType::unknown_shape(in.dtype));
    return;
  }
  size_t rank = in.shape->size();
  if (!perm) {
    perm.emplace();
    for (size_t i = rank; i-- > 0;) perm->push_back(static_cast<int64_t>(i));
  }
  if (perm->size() != rank)
    ctx.fail("perm has " + std::to_string(perm->size()) + " entries for rank " + std::to_string(rank));
  std::vector<bool> seen(rank, false);
  Dims out;
  for (int64_t p : *perm) {
    int64_t a = ctx.normalize_axis(p, static_cast<int64_t>(rank));
    if (seen[static_cast<size_t>(a)]) ctx.fail("perm is not a permutation");
    seen[static_cast<size_t>(a)] = true;
    out.push_back((*in.shape)[static_cast<size_t>(a)]);
  }
  ctx.set_output(0, {in.dtype, out});
}

void infer_concat(InferContext& ctx) {
  DType dtype = ctx.input_dtype(0);
  std::optional<Dims> out;
  for (size_t i = 0; i < ctx.num_inputs(); ++i) {
    const ValueType& t = ctx.input(i);
    if (t.dtype != dtype) ctx.fail("inputs have different types");
    if (t.shape && !out) out = *t.shape;
  }
  if (!out) {
    ctx.set_output(0, ValueType::unknown_shape(dtype));
    return;
  }
  auto rank = static_cast<int64_t>(out->size());
  int64_t axis = ctx.normalize_axis(ctx.attrs().get_int("axis", ctx.opset() < 4 ? 1 : 0), rank);
  int64_t total = 0;
  bool total_known = true;
  for (size_t i = 0; i < ctx.num_inputs(); ++i) {
    const ValueType& t = ctx.input(i);
    if (!t.shape) {
      total_known = false;
      continue;
    }
    if (rank_of(t) != rank) ctx.fail("inputs have different ranks");
    for (int64_t d = 0; d < rank; ++d) {
      const Dim& dim = (*t.shape)[static_cast<size_t>(d)];
      Dim& o = (*out)[static_cast<size_t>(d)];
      if (d == axis) {
        if (dim.is_static())
          total += dim.value();
        else
          total_known = false;
      } else if (dim.is_static() && o.is_static() && dim.value() != o.value()) {
        ctx.fail("inputs differ in dim " + std::to_string(d));
      } else if (!o.is_static() && dim.is_static()) {
        o = dim;
      }
    }
  }
  (*out)[static_cast<size_t>(axis)] = total_known ? Dim(total) : Dim();
  ctx.set_output(0, {dtype, out});
}

void infer_split(InferContext& ctx) {
  const ValueType& in = ctx.input(0);
  size_t n = ctx.num_outputs();
  if (!in.shape) {
    for (size_t i = 0; i < n; ++i) ctx.set_output(i, ValueType::unknown_shape(in.dtype));
    return;
  }
  int64_t axis = ctx.normalize_axis(ctx.attrs().get_int("axis", 0), rank_of(in));
  const Dim& dim = (*in.shape)[static_cast<size_t>(axis)];
  std::optional<std::vector<int64_t>> sizes;
  bool sizes_unknown = false;
  if (ctx.opset() >= 18 && ctx.attrs().has("num_outputs")) {
    if (ctx.has_input(1)) ctx.fail("split sizes and num_outputs are given together");
    if (ctx.attrs().get_int("num_outputs") < 1) ctx.fail("num_outputs must be positive");
  }
  if (ctx.opset() < 13) {
    sizes = ctx.attrs().find_ints("split");
  } else if (ctx.has_input(1)) {
    if (const Tensor* t = ctx.input_value(1))
      sizes = t->to_int_vector();
    else
      sizes_unknown = true;
  }
  if (sizes && sizes->empty()) sizes.reset();
  if (!sizes && !sizes_unknown && dim.is_static()) {
    int64_t d = dim.value();
    auto parts = static_cast<int64_t>(n);
    if (ctx.opset() >= 18 && ctx.attrs().has("num_outputs")) {
      parts = ctx.attrs().get_int("num_outputs");
      if (parts != static_cast<int64_t>(n)) ctx.fail("num_outputs does not match the outputs");
      // The last part takes the remainder of a ceil-sized split.
      int64_t chunk = (d + parts - 1) / parts;
      sizes.emplace();
      for (int64_t i = 0; i < parts; ++i) sizes->push_back(std::clamp<int64_t>(d - i * chunk, 0, chunk));
    } else {
      if (parts == 0 || d % parts != 0)
        ctx.fail("dim " + std::to_string(d) + " does not split evenly into " + std::to_string(parts));
      sizes = std::vector<int64_t>(n, d / parts);
    }
  }
  if (sizes) {
    if (sizes->size() != n)
      ctx.fail("split has " + std::to_string(sizes->size()) + " sizes for " + std::to_string(n) + " outputs");
    int64_t total = 0;
    for (int64_t s : *sizes) {
      if (s < 0) ctx.fail("negative split size");
      total += s;
    }
    if (dim.is_static() && total != dim.value()) ctx.fail("split sizes do not add up to the dim");
  }
  for (size_t i = 0; i < n; ++i) {
    Dims out = *in.shape;
    out[static_cast<size_t>(axis)] = sizes ? Dim((*sizes)[i]) : Dim();
    ctx.set_output(i, {in.dtype, out});
  }
}

void infer_slice(InferContext& ctx) {
  const ValueType& in = ctx.input(0);
  if (!in.shape) {
    ctx.set_output(0, ValueType::unknown_shape(in.dtype));
    return;
  }
  auto values = known_values(ctx);
  auto args = slice_args(ctx.node(), values, rank_of(in));
  Dims out = *in.shape;
  if (!args) {
    // Unknown axes could touch any dim; known axes spare the others.
    bool axes_known = ctx.opset() >= 10 && ctx.has_input(3) ? ctx.input_value(3) != nullptr : true;
    std::vector<int64_t> axes;
    if (axes_known && ctx.has_input(3))
      axes = ctx.input_value(3)->to_int_vector();
    else if (axes_known) {
      auto n = static_length(ctx, 1);
      if (!n) axes_known = false;
      for (int64_t i = 0; axes_known && i < *n; ++i) axes.push_back(i);
    }
    if (!axes_known) {
      ctx.set_output(0, ValueType::of_rank(in.dtype, out.size()));
      return;
    }
    for (int64_t a : axes) out[static_cast<size_t>(ctx.normalize_axis(a, rank_of(in)))] = Dim();
    ctx.set_output(0, {in.dtype, out});
    return;
  }
  for (size_t i = 0; i < args->axes.size(); ++i) {
    Dim& d = out[static_cast<size_t>(args->axes[i])];
    if (!d.is_static()) {
      d = Dim();
      continue;
    }
    d = clamp_slice(args->starts[i], args->ends[i], args->steps[i], d.value()).count;
  }
  ctx.set_output(0, {in.dtype, out});
}

void infer_gather(InferContext& ctx) {
  const ValueType& data = ctx.input(0);
  const ValueType& indices = ctx.input(1);
  if (indices.dtype != DType::int32 && indices.dtype != DType::int64)
    ctx.fail("indices must be int32 or int64");
  if (!data.shape || !indices.shape) {
    ctx.set_output(0, ValueType::unknown_shape(data.dtype));
    return;
  }
  auto axis = static_cast<size_t>(ctx.normalize_axis(ctx.attrs().get_int("axis", 0), rank_of(data)));
  Dims out(data.shape->begin(), data.shape->begin() + static_cast<std::ptrdiff_t>(axis));
  out.insert(out.end(), indices.shape->begin(), indices.shape->end());
  out.insert(out.end(), data.shape->begin() + static_cast<std::ptrdiff_t>(axis) + 1, data.shape->end());
  ctx.set_output(0, {data.dtype, out});
}

void infer_gather_elements(InferContext& ctx) {
  const ValueType& data = ctx.input(0);
  const ValueType& indices = ctx.input(1);
  if (indices.dtype != DType::int32 && indices.dtype != DType::int64)
    ctx.fail("indices must be int32 or int64");
  if (data.shape && indices.shape) {
    if (data.shape->size() != indices.shape->size()) ctx.fail("data and indices differ in rank");
    ctx.normalize_axis(ctx.attrs().get_int("axis", 0), rank_of(data));
  }
  ctx.set_output(0, {data.dtype, indices.shape});
}

// Squeeze/Unsqueeze axes: an attribute before opset 13, an input after.
// Returns nullopt with `absent` set when none are given.
std::optional<std::vector<int64_t>> squeeze_axes(InferContext& ctx, bool& absent) {
  absent = false;
  if (ctx.opset() < 13) {
    auto axes = ctx.attrs().find_ints("axes");
    absent = !axes;
    return axes;
  }
  if (!ctx.has_input(1)) {
    absent = true;
    return std::nullopt;
  }
  if (const Tensor* t = ctx.input_value(1)) return t->to_int_vector();
  return std::nullopt;
}

void infer_unsqueeze(InferContext& ctx) {
  const ValueType& in = ctx.input(0);
  bool absent = false;
  auto axes = squeeze_axes(ctx, absent);
  if (absent) ctx.fail("Unsqueeze needs axes");
  if (!in.shape || !axes) {
    auto n = ctx.opset() < 13 ? std::nullopt : static_length(ctx, 1);
    ctx.set_output(0, in.shape && n ? ValueType::of_rank(in.dtype, in.shape->size() + static_cast<size_t>(*n))
                                    : ValueType::unknown_shape(in.dtype));
    return;
  }
  auto out_rank = static_cast<int64_t>(in.shape->size() + axes->size());
  std::vector<bool> inserted(static_cast<size_t>(out_rank), false);
  for (int64_t a : *axes) {
    auto n = static_cast<size_t>(ctx.normalize_axis(a, out_rank));
    if (inserted[n]) ctx.fail("axis " + std::to_string(a) + " repeats");
    inserted[n] = true;
  }
  Dims out;
  size_t next = 0;
  for (size_t i = 0; i < inserted.size(); ++i) out.push_back(inserted[i] ? Dim(1) : (*in.shape)[next++]);
  ctx.set_output(0, {in.dtype, out});
}

void infer_squeeze(InferContext& ctx) {
  const ValueType& in = ctx.input(0);
  bool absent = false;
  auto axes = squeeze_axes(ctx, absent);
  if (!in.shape) {
    ctx.set_output(0, ValueType::unknown_shape(in.dtype));
    return;
  }
  if (!axes && !absent) {
    auto n = static_length(ctx, 1);
    if (n && static_cast<size_t>(*n) > in.shape->size()) ctx.fail("more axes than the input has dims");
    ctx.set_output(0, n ? ValueType::of_rank(in.dtype, in.shape->size() - static_cast<size_t>(*n))
                        : ValueType::unknown_shape(in.dtype));
    return;
  }
  std::vector<bool> removed(in.shape->size(), false);
  if (axes) {
    for (int64_t a : *axes) {
      auto n = static_cast<size_t>(ctx.normalize_axis(a, rank_of(in)));
      const Dim& d = (*in.shape)[n];
      if (d.is_static() && d.value() != 1)
        ctx.fail("cannot squeeze dim " + std::to_string(a) + " of size " + d.to_string());
      removed[n] = true;
    }
  } else {
    for (size_t i = 0; i < removed.size(); ++i) {
      const Dim& d = (*in.shape)[i];
      // A symbolic dim might be 1 at run time, so the rank is unknown.
      if (!d.is_static()) {
        ctx.set_output(0, ValueType::unknown_shape(in.dtype));
        return;
      }
      removed[i] = d.value() == 1;
    }
  }
  Dims out;
  for (size_t i = 0; i < removed.size(); ++i) {
    if (!removed[i]) out.push_back((*in.shape)[i]);
  }
  ctx.set_output(0, {in.dtype, out});
}

void infer_expand(InferContext& ctx) {
  const ValueType& in = ctx.input(0);
  const Tensor* shape = ctx.input_value(1);
  if (!shape || !in.shape) {
    auto n = static_length(ctx, 1);
    if (n && in.shape)
      ctx.set_output(0, ValueType::of_rank(in.dtype, std::max(in.shape->size(), static_cast<size_t>(*n))));
    else
      ctx.set_output(0, ValueType::unknown_shape(in.dtype));
    return;
  }
  std::vector<int64_t> target = shape->to_int_vector();
  Dims target_dims(target.begin(), target.end());
  auto out = broadcast_dims(*in.shape, target_dims);
  if (!out) ctx.fail("cannot expand " + in.to_string() + " to " + shape_to_string(target));
  ctx.set_output(0, {in.dtype, out});
}

void infer_tile(InferContext& ctx) {
  const ValueType& in = ctx.input(0);
  const Tensor* repeats = ctx.input_value(1);
  if (!in.shape || !repeats) {
    ctx.set_output(
        0, in.shape ? ValueType::of_rank(in.dtype, in.shape->size()) : ValueType::unknown_shape(in.dtype));
    return;
  }
  std::vector<int64_t> reps = repeats->to_int_vector();
  if (reps.size() != in.shape->size())
    ctx.fail("repeats has " + std::to_string(reps.size()) + " values for rank " +
             std::to_string(in.shape->size()));
  Dims out = *in.shape;
  for (size_t i = 0; i < out.size(); ++i) {
    if (reps[i] < 0) ctx.fail("negative repeat");
    if (out[i].is_static())
      out[i] = out[i].value() * reps[i];
    else if (reps[i] != 1)
      out[i] = Dim();
  }
  ctx.set_output(0, {in.dtype, out});
}

void infer_shape(InferContext& ctx) {
  const ValueType& in = ctx.input(0);
  if (!in.shape) {
    ctx.set_output(0, ValueType::of_rank(DType::int64, 1));
    return;
  }
  auto [start, end] = shape_range(ctx.node(), rank_of(in));
  std::vector<int64_t> dims;
  for (int64_t i = start; i < end; ++i) {
    const Dim& d = (*in.shape)[static_cast<size_t>(i)];
    if (!d.is_static()) {
      ctx.set_output(0, {DType::int64, Dims{Dim(end - start)}});
      return;
    }
    dims.push_back(d.value());
  }
  ctx.set_output_value(0, Tensor::from_values<int64_t>({end - start}, dims));
}

void infer_size(InferContext& ctx) {
  const ValueType& in = ctx.input(0);
  if (in.is_static())
    ctx.set_output_value(0, Tensor::scalar<int64_t>(shape_numel(in.static_shape())));
  else
    ctx.set_output(0, {DType::int64, Dims{}});
}

void infer_constant(InferContext& ctx) {
  const Attributes& a = ctx.attrs();
  if (a.has("value")) {
    ctx.set_output_value(0, a.get_tensor("value"));
  } else if (a.has("value_float")) {
    ctx.set_output_value(0, Tensor::scalar<float>(a.get_float("value_float")));
  } else if (a.has("value_floats")) {
    std::vector<float> v = a.get_floats("value_floats");
    ctx.set_output_value(0, Tensor::from_values<float>({static_cast<int64_t>(v.size())}, v));
  } else if (a.has("value_int")) {
    ctx.set_output_value(0, Tensor::scalar<int64_t>(a.get_int("value_int")));
  } else if (a.has("value_ints")) {
    std::vector<int64_t> v = a.get_ints("value_ints");
    ctx.set_output_value(0, Tensor::from_values<int64_t>({static_cast<int64_t>(v.size())}, v));
  } else if (a.has("value_string") || a.has("value_strings") || a.has("sparse_value")) {
    ctx.unsupported("string and sparse constants are not supported");
  } else {
    ctx.fail("Constant has no value");
  }
}

void infer_constant_of_shape(InferContext& ctx) {
  DType dtype = ctx.attrs().has("value") ? ctx.attrs().get_tensor("value").dtype() : DType::float32;
  if (ctx.attrs().has("value") && ctx.attrs().get_tensor("value").numel() != 1)
    ctx.fail("value must hold one element");
  const Tensor* shape = ctx.input_value(0);
  if (!shape) {
    auto n = static_length(ctx, 0);
    ctx.set_output(0,
                   n ? ValueType::of_rank(dtype, static_cast<size_t>(*n)) : ValueType::unknown_shape(dtype));
    return;
  }
  std::vector<int64_t> dims = shape->to_int_vector();
  for (int64_t d : dims) {
    if (d < 0) ctx.fail("negative dim in shape");
  }
  ctx.set_output(0, ValueType::of_static(dtype, dims));
}

void infer_range(InferContext& ctx) {
  DType dtype = ctx.input_dtype(0);
  const Tensor* start = ctx.input_value(0);
  const Tensor* limit = ctx.input_value(1);
  const Tensor* delta = ctx.input_value(2);
  if (!start || !limit || !delta) {
    ctx.set_output(0, ValueType::of_rank(dtype, 1));
    return;
  }
  if (start->numel() != 1 || limit->numel() != 1 || delta->numel() != 1)
    ctx.fail("start, limit and delta must be scalars");
  int64_t n = 0;
  if (is_floating(dtype)) {
    double d = delta->float_at(0);
    if (d == 0) ctx.fail("delta is 0");
    n = static_cast<int64_t>(std::max(std::ceil((limit->float_at(0) - start->float_at(0)) / d), 0.0));
  } else {
    int64_t d = delta->int_at(0);
    if (d == 0) ctx.fail("delta is 0");
    int64_t span = limit->int_at(0) - start->int_at(0);
    // Ceil division that rounds toward +infinity for either sign.
    int64_t q = span / d;
    if (q * d != span && ((span > 0) == (d > 0))) ++q;
    n = std::max<int64_t>(q, 0);
  }
  ctx.set_output(0, ValueType::of_static(dtype, std::vector<int64_t>{n}));
}

void infer_dropout(InferContext& ctx) {
  const ValueType& in = ctx.input(0);
  if (ctx.opset() >= 12 && ctx.has_input(2)) {
    const Tensor* training = ctx.input_value(2);
    if (training && training->int_at(0) != 0) {
      const Tensor* ratio = ctx.has_input(1) ? ctx.input_value(1) : nullptr;
      double r = ctx.has_input(1) ? (ratio ? ratio->float_at(0) : -1.0) : 0.5;
      if (r != 0) ctx.unsupported("training-mode Dropout is random");
    }
  }
  ctx.set_output(0, in);
  // Before opset 10 the mask had the data's type.
  ctx.set_output(1, {ctx.opset() < 10 ? in.dtype : DType::boolean, in.shape});
}

}  // namespace

void register_tensor_ops(OpRegistry& r) {
  r.add("Flatten", infer_flatten);
  r.add("Reshape", infer_reshape);
  r.add("Transpose", infer_transpose);
  r.add("Concat", infer_concat);
  r.add("Split", infer_split);
  r.add("Slice", infer_slice);
  r.add("Gather", infer_gather);
  r.add("GatherElements", infer_gather_elements);
  r.add("Unsqueeze", infer_unsqueeze);
  r.add("Squeeze", infer_squeeze);
  r.add("Expand", infer_expand);
  r.add("Tile", infer_tile);
  r.add("Shape", infer_shape);
  r.add("Size", infer_size);
  r.add("Constant", infer_constant);
  r.add("ConstantOfShape", infer_constant_of_shape);
  r.add("Range", infer_range);
  r.add("Identity", [](InferContext& ctx) { ctx.set_output(0, ctx.input(0)); });
  r.add("Dropout", infer_dropout);
  register_tensor_spatial_ops(r);
  register_tensor_index_ops(r);
}

}  // namespace kiln::ir
