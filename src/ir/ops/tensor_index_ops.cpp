// Shape inference for the indexed data-movement ops that write or read
// through an index tensor: ScatterND, ScatterElements (and its pre-opset-11
// name Scatter) and GatherND.
//
// These ops come from PyTorch's index_put / masked assignment and advanced
// indexing, so exported transformers (Swin's shifted-window mask) depend on
// them. The output always has the data's type; the index tensor fixes the
// rest of the shape, and every constraint that static dims can show is
// checked here so a malformed model fails at import, not in the kernel.
#include <string>

#include "ir/op_schema.hpp"
#include "ir/ops/tensor_ops_internal.hpp"

namespace kiln::ir {

namespace {

void require_index_dtype(const InferContext& ctx, size_t i) {
  DType d = ctx.input_dtype(i);
  if (d != DType::int32 && d != DType::int64) ctx.fail("indices must be int32 or int64");
}

void require_same_dtype(const InferContext& ctx, size_t data, size_t updates) {
  DType a = ctx.input_dtype(data);
  DType b = ctx.input_dtype(updates);
  if (a != DType::undefined && b != DType::undefined && a != b)
    ctx.fail("updates (" + std::string(dtype_name(b)) + ") and data (" + std::string(dtype_name(a)) +
             ") have different types");
}

// Two dims that must be equal: fails when both are static and differ.
void require_equal_dim(const InferContext& ctx, const Dim& a, const Dim& b, const std::string& what) {
  if (a.is_static() && b.is_static() && a.value() != b.value())
    ctx.fail(what + ": " + a.to_string() + " vs " + b.to_string());
}

// The reduction attribute of ScatterND / ScatterElements, checked against
// the opset that introduced each value (add and mul in 16, max and min in 18).
void check_reduction(const InferContext& ctx) {
  if (!ctx.attrs().has("reduction")) return;
  std::string r = ctx.attrs().get_string("reduction");
  if (ctx.opset() < 16) ctx.fail("reduction needs opset 16");
  if (r == "none" || r == "add" || r == "mul") return;
  if ((r == "max" || r == "min") && ctx.opset() >= 18) return;
  ctx.fail("reduction '" + r + "' is not valid at opset " + std::to_string(ctx.opset()));
}

void infer_scatter_nd(InferContext& ctx) {
  const ValueType& data = ctx.input(0);
  const ValueType& indices = ctx.input(1);
  const ValueType& updates = ctx.input(2);
  require_index_dtype(ctx, 1);
  require_same_dtype(ctx, 0, 2);
  check_reduction(ctx);
  if (data.shape && indices.shape) {
    if (indices.shape->empty()) ctx.fail("indices must have rank 1 or more");
    const Dim& last = indices.shape->back();
    auto r = static_cast<int64_t>(data.shape->size());
    if (last.is_static() && last.value() > r)
      ctx.fail("index tuples of length " + std::to_string(last.value()) + " for data of rank " +
               std::to_string(r));
    if (last.is_static() && updates.shape) {
      // updates = indices.shape[:-1] + data.shape[k:]
      Dims want(indices.shape->begin(), indices.shape->end() - 1);
      want.insert(want.end(), data.shape->begin() + last.value(), data.shape->end());
      if (updates.shape->size() != want.size())
        ctx.fail("updates have rank " + std::to_string(updates.shape->size()) + ", expected " +
                 std::to_string(want.size()));
      for (size_t i = 0; i < want.size(); ++i)
        require_equal_dim(ctx, (*updates.shape)[i], want[i], "updates dim " + std::to_string(i));
    }
  }
  ctx.set_output(0, data);
}

void infer_scatter_elements(InferContext& ctx) {
  const ValueType& data = ctx.input(0);
  const ValueType& indices = ctx.input(1);
  const ValueType& updates = ctx.input(2);
  require_index_dtype(ctx, 1);
  require_same_dtype(ctx, 0, 2);
  if (ctx.node().op_type == "ScatterElements") check_reduction(ctx);
  if (indices.shape && updates.shape) {
    if (indices.shape->size() != updates.shape->size()) ctx.fail("indices and updates differ in rank");
    for (size_t i = 0; i < indices.shape->size(); ++i)
      require_equal_dim(ctx, (*indices.shape)[i], (*updates.shape)[i],
                        "indices and updates differ in dim " + std::to_string(i));
  }
  if (data.shape && indices.shape) {
    auto rank = static_cast<int64_t>(data.shape->size());
    if (indices.shape->size() != data.shape->size()) ctx.fail("data and indices differ in rank");
    int64_t axis = ctx.normalize_axis(ctx.attrs().get_int("axis", 0), rank);
    // Along every other axis an index position is also the data position.
    for (int64_t a = 0; a < rank; ++a) {
      const Dim& i = (*indices.shape)[static_cast<size_t>(a)];
      const Dim& d = (*data.shape)[static_cast<size_t>(a)];
      if (a != axis && i.is_static() && d.is_static() && i.value() > d.value())
        ctx.fail("indices dim " + std::to_string(a) + " (" + i.to_string() + ") exceeds the data's (" +
                 d.to_string() + ")");
    }
  }
  ctx.set_output(0, data);
}

void infer_gather_nd(InferContext& ctx) {
  const ValueType& data = ctx.input(0);
  const ValueType& indices = ctx.input(1);
  require_index_dtype(ctx, 1);
  int64_t b = ctx.opset() >= 12 ? ctx.attrs().get_int("batch_dims", 0) : 0;
  if (b < 0) ctx.fail("batch_dims must not be negative");
  if (!data.shape || !indices.shape || !indices.shape->back().is_static()) {
    ctx.set_output(0, ValueType::unknown_shape(data.dtype));
    return;
  }
  auto r = static_cast<int64_t>(data.shape->size());
  auto q = static_cast<int64_t>(indices.shape->size());
  if (q < 1) ctx.fail("indices must have rank 1 or more");
  if (b >= std::min(q, r))
    ctx.fail("batch_dims " + std::to_string(b) + " must be less than the ranks of data (" +
             std::to_string(r) + ") and indices (" + std::to_string(q) + ")");
  int64_t k = indices.shape->back().value();
  if (k < 1 || k > r - b)
    ctx.fail("index tuples of length " + std::to_string(k) + " for data of rank " + std::to_string(r) +
             " with " + std::to_string(b) + " batch dims");
  // Output: indices.shape[:-1] + data.shape[b + k:], batch dims shared.
  Dims out(indices.shape->begin(), indices.shape->end() - 1);
  for (int64_t i = 0; i < b; ++i) {
    const Dim& d = (*data.shape)[static_cast<size_t>(i)];
    Dim& o = out[static_cast<size_t>(i)];
    require_equal_dim(ctx, o, d, "batch dim " + std::to_string(i) + " differs between data and indices");
    if (!o.is_static() && d.is_static()) o = d;
  }
  out.insert(out.end(), data.shape->begin() + b + k, data.shape->end());
  ctx.set_output(0, {data.dtype, out});
}

}  // namespace

void register_tensor_index_ops(OpRegistry& r) {
  r.add("ScatterND", infer_scatter_nd);
  r.add("ScatterElements", infer_scatter_elements);
  r.add("Scatter", infer_scatter_elements);  // ScatterElements' name before opset 11
  r.add("GatherND", infer_gather_nd);
}

}  // namespace kiln::ir
