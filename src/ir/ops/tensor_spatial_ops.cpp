// Shape inference for the spatial and index-producing tensor ops: Pad,
// Resize, Upsample, DepthToSpace, SpaceToDepth, OneHot, NonZero, CumSum, Trilu
// and Einsum.
#include <string>

#include "ir/op_schema.hpp"
#include "ir/ops/tensor_ops_internal.hpp"
#include "ir/ops/tensor_params.hpp"

namespace kiln::ir {

namespace {

void infer_pad(InferContext& ctx) {
  const ValueType& in = ctx.input(0);
  std::string mode = ctx.attrs().get_string("mode", "constant");
  if (mode != "constant" && mode != "reflect" && mode != "edge" && mode != "wrap") {
    ctx.fail("unknown mode '" + mode + "'");
  }
  if (!in.shape) {
    ctx.set_output(0, ValueType::unknown_shape(in.dtype));
    return;
  }
  auto rank = static_cast<int64_t>(in.shape->size());
  auto values = known_values(ctx);
  auto pads = pad_amounts(ctx.node(), values, rank);
  if (!pads) {
    ctx.set_output(0, ValueType::of_rank(in.dtype, in.shape->size()));
    return;
  }
  Dims out = *in.shape;
  for (int64_t i = 0; i < rank; ++i) {
    Dim& d = out[static_cast<size_t>(i)];
    int64_t added = (*pads)[static_cast<size_t>(i)] + (*pads)[static_cast<size_t>(i + rank)];
    if (d.is_static()) {
      if (d.value() + added < 0) ctx.fail("pads crop more than dim " + std::to_string(i) + " holds");
      d = d.value() + added;
    } else if (added != 0) {
      d = Dim();
    }
  }
  ctx.set_output(0, {in.dtype, out});
}

void infer_resize(InferContext& ctx) {
  const ValueType& in = ctx.input(0);
  auto values = known_values(ctx);
  if (auto sizes = resize_sizes(ctx.node(), values)) {
    if (in.shape && sizes->size() != in.shape->size()) ctx.fail("sizes does not match the input rank");
    ctx.set_output(0, ValueType::of_static(in.dtype, *sizes));
    return;
  }
  if (in.shape) {
    // Symbolic dims stand in as 1 here; they keep their symbol where the
    // scale is 1 ([batch,C,H,W] by [1,1,2,2]) and are unknown otherwise.
    std::vector<int64_t> in_shape;
    for (const Dim& d : *in.shape) in_shape.push_back(d.is_static() ? d.value() : 1);
    if (auto args = resize_args(ctx.node(), values, in_shape)) {
      Dims out;
      for (size_t i = 0; i < in_shape.size(); ++i) {
        const Dim& d = (*in.shape)[i];
        if (d.is_static())
          out.push_back(args->out_shape[i]);
        else
          out.push_back(args->scales[i] == 1.0 ? d : Dim());
      }
      ctx.set_output(0, {in.dtype, out});
      return;
    }
  }
  ctx.set_output(
      0, in.shape ? ValueType::of_rank(in.dtype, in.shape->size()) : ValueType::unknown_shape(in.dtype));
}

// DepthToSpace (to_space) and SpaceToDepth on NCHW.
void infer_depth_space(InferContext& ctx, bool to_space) {
  const ValueType& in = ctx.input(0);
  int64_t b = ctx.attrs().get_int("blocksize");
  if (b <= 0) ctx.fail("blocksize must be positive");
  if (!in.shape) {
    ctx.set_output(0, ValueType::of_rank(in.dtype, 4));
    return;
  }
  if (in.shape->size() != 4) ctx.fail("input must be 4-D, got " + in.to_string());
  Dims out = *in.shape;
  auto scale = [&](const Dim& d, bool up, int64_t f) -> Dim {
    if (!d.is_static()) return Dim();
    if (up) return d.value() * f;
    if (d.value() % f != 0) ctx.fail("dim " + d.to_string() + " is not divisible by " + std::to_string(f));
    return d.value() / f;
  };
  out[1] = scale(out[1], !to_space, b * b);
  out[2] = scale(out[2], to_space, b);
  out[3] = scale(out[3], to_space, b);
  ctx.set_output(0, {in.dtype, out});
}

void infer_one_hot(InferContext& ctx) {
  const ValueType& indices = ctx.input(0);
  const ValueType& values = ctx.input(2);
  const Tensor* depth = ctx.input_value(1);
  if (!indices.shape) {
    ctx.set_output(0, ValueType::unknown_shape(values.dtype));
    return;
  }
  auto out_rank = static_cast<int64_t>(indices.shape->size()) + 1;
  auto axis = static_cast<size_t>(ctx.normalize_axis(ctx.attrs().get_int("axis", -1), out_rank));
  Dim depth_dim;
  if (depth) {
    if (depth->numel() != 1) ctx.fail("depth must be a scalar");
    auto d = static_cast<int64_t>(depth->float_at(0));
    if (d <= 0) ctx.fail("depth must be positive");
    depth_dim = d;
  }
  Dims out = *indices.shape;
  out.insert(out.begin() + static_cast<std::ptrdiff_t>(axis), depth_dim);
  ctx.set_output(0, {values.dtype, out});
}

void infer_non_zero(InferContext& ctx) {
  const ValueType& in = ctx.input(0);
  const Tensor* value = ctx.input_value(0);
  Dim rank = in.shape ? Dim(static_cast<int64_t>(in.shape->size())) : Dim();
  if (!value) {
    ctx.set_output(0, {DType::int64, Dims{rank, Dim()}});
    return;
  }
  int64_t count = 0;
  for (int64_t i = 0; i < value->numel(); ++i) count += element_nonzero(*value, i) ? 1 : 0;
  ctx.set_output(0, {DType::int64, Dims{rank, Dim(count)}});
}

void infer_einsum(InferContext& ctx) {
  DType dtype = ctx.input_dtype(0);
  std::vector<size_t> ranks;
  for (size_t i = 0; i < ctx.num_inputs(); ++i) {
    const ValueType& t = ctx.input(i);
    if (t.dtype != dtype) ctx.fail("inputs have different types");
    if (!t.shape) {
      ctx.set_output(0, ValueType::unknown_shape(dtype));
      return;
    }
    ranks.push_back(t.shape->size());
  }
  EinsumSpec spec = parse_einsum(ctx.attrs().get_string("equation"), ranks);
  // A label's size: any input's, where a static 1 yields to a broadcast.
  std::vector<std::optional<Dim>> sizes(static_cast<size_t>(spec.num_labels));
  for (size_t i = 0; i < ranks.size(); ++i) {
    for (size_t k = 0; k < ranks[i]; ++k) {
      const Dim& d = (*ctx.input(i).shape)[k];
      auto& cur = sizes[static_cast<size_t>(spec.inputs[i][k])];
      if (!cur || *cur == Dim(1) || (!cur->is_static() && d.is_static() && d != Dim(1))) {
        cur = d;
      } else if (d.is_static() && cur->is_static() && d != Dim(1) && d != *cur) {
        ctx.fail("Einsum label sizes differ: " + d.to_string() + " and " + cur->to_string());
      }
    }
  }
  Dims out;
  for (int l : spec.output) out.push_back(*sizes[static_cast<size_t>(l)]);
  ctx.set_output(0, {dtype, out});
}

}  // namespace

void register_tensor_spatial_ops(OpRegistry& r) {
  r.add("Pad", infer_pad);
  r.add("Resize", infer_resize);
  r.add("Upsample", infer_resize);
  r.add("DepthToSpace", [](InferContext& ctx) { infer_depth_space(ctx, true); });
  r.add("SpaceToDepth", [](InferContext& ctx) { infer_depth_space(ctx, false); });
  r.add("OneHot", infer_one_hot);
  r.add("NonZero", infer_non_zero);
  r.add("CumSum", [](InferContext& ctx) { ctx.set_output(0, ctx.input(0)); });
  r.add("Einsum", infer_einsum);
  r.add("Trilu", [](InferContext& ctx) { ctx.set_output(0, ctx.input(0)); });
}

}  // namespace kiln::ir
