#include "backends/cpu/dnnl_util.hpp"

#include <algorithm>
#include <cfloat>
#include <cmath>

namespace kiln::cpu {

Dims to_dims(std::span<const int64_t> shape) {
  Dims d(shape.begin(), shape.end());
  if (d.empty()) d.push_back(1);
  return d;
}

Dims dense_strides(const Dims& dims) {
  Dims s(dims.size(), 1);
  for (size_t i = dims.size(); i-- > 1;) s[i - 1] = s[i] * std::max<int64_t>(dims[i], 1);
  return s;
}

Md plain_md(const Dims& dims, Dt dt) {
  Dims d = dims.empty() ? Dims{1} : dims;
  return Md(d, dt, dense_strides(d));
}

Md plain_md(std::span<const int64_t> shape, Dt dt) { return plain_md(to_dims(shape), dt); }

bool is_strided(const Md& md) {
  return md.data.format_kind == dnnl_blocked && md.data.format_desc.blocking.inner_nblks == 0 &&
         md.data.offset0 == 0;
}

bool is_plain(const Md& md) {
  if (!is_strided(md)) return false;
  Dims dims = md.dims();
  Dims want = dense_strides(dims);
  for (size_t i = 0; i < dims.size(); ++i) {
    // A stride of a size-1 dim never matters.
    if (dims[i] != 1 && md.data.format_desc.blocking.strides[i] != want[i]) return false;
  }
  return true;
}

Md with_data_type(const Md& md, Dt dt) {
  dnnl_memory_desc_t c = md.data;
  c.data_type = static_cast<dnnl_data_type_t>(dt);
  c.extra = dnnl_memory_extra_desc_t{};
  return Md(c);
}

namespace {

// Each logical dim's inner block (1 where it has none) and the product of
// all inner blocks: the elements one outer step of the last dim spans.
struct InnerBlocks {
  Dims per_dim;
  int64_t total = 1;
};

InnerBlocks inner_blocks(const dnnl_memory_desc_t& m) {
  const auto& blocking = m.format_desc.blocking;
  InnerBlocks b{Dims(static_cast<size_t>(m.ndims), 1)};
  for (int k = 0; k < blocking.inner_nblks; ++k) {
    b.per_dim[static_cast<size_t>(blocking.inner_idxs[k])] *= blocking.inner_blks[k];
    b.total *= blocking.inner_blks[k];
  }
  return b;
}

}  // namespace

std::optional<Md> layout_like(const Md& like, const Dims& dims) {
  const dnnl_memory_desc_t& l = like.data;
  if (l.format_kind != dnnl_blocked || l.offset0 != 0 || static_cast<size_t>(l.ndims) != dims.size())
    return std::nullopt;
  const size_t rank = dims.size();
  const InnerBlocks blocks = inner_blocks(l);
  const Dims& block = blocks.per_dim;
  const int64_t inner = blocks.total;
  const std::vector<size_t> order = stride_order(like);  // outermost first
  dnnl_memory_desc_t d = l;
  int64_t stride = inner;
  for (size_t i = rank; i-- > 0;) {
    const size_t dim = order[i];
    const int64_t padded = (dims[dim] + block[dim] - 1) / block[dim] * block[dim];
    d.dims[dim] = dims[dim];
    d.padded_dims[dim] = padded;
    d.padded_offsets[dim] = 0;
    d.format_desc.blocking.strides[dim] = stride;
    stride *= padded / block[dim];
  }
  return Md(d);
}

bool same_addressing(const Md& a, const Md& b) {
  const dnnl_memory_desc_t& x = a.data;
  const dnnl_memory_desc_t& y = b.data;
  if (x.format_kind != dnnl_blocked || y.format_kind != dnnl_blocked || x.ndims != y.ndims ||
      x.data_type != y.data_type || x.offset0 != y.offset0)
    return false;
  const auto& bx = x.format_desc.blocking;
  const auto& by = y.format_desc.blocking;
  if (bx.inner_nblks != by.inner_nblks) return false;
  for (int k = 0; k < bx.inner_nblks; ++k) {
    if (bx.inner_blks[k] != by.inner_blks[k] || bx.inner_idxs[k] != by.inner_idxs[k]) return false;
  }
  const Dims block = inner_blocks(x).per_dim;
  for (int d = 0; d < x.ndims; ++d) {
    if (x.dims[d] != y.dims[d] || x.padded_dims[d] != y.padded_dims[d] || x.padded_offsets[d] != 0 ||
        y.padded_offsets[d] != 0)
      return false;
    if (x.padded_dims[d] / block[static_cast<size_t>(d)] > 1 && bx.strides[d] != by.strides[d]) return false;
  }
  return true;
}

std::optional<DenseWindow> dense_window(const Md& whole, const Dims& dims, const Dims& offsets) {
  std::optional<Md> dense = layout_like(whole, dims);
  if (!dense) return std::nullopt;
  Md window;
  try {
    window = whole.submemory_desc(dims, offsets);
  } catch (const dnnl::error&) {
    return std::nullopt;  // not whole blocks
  }
  dnnl_memory_desc_t shifted = window.data;
  const size_t byte_offset =
      static_cast<size_t>(shifted.offset0) * dnnl::memory::data_type_size(whole.data_type());
  shifted.offset0 = 0;
  if (!same_addressing(Md(shifted), *dense)) return std::nullopt;
  return DenseWindow{*dense, byte_offset};
}

std::vector<size_t> stride_order(const Md& md) {
  const auto& blocking = md.data.format_desc.blocking;
  std::vector<size_t> order(static_cast<size_t>(md.data.ndims));
  for (size_t d = 0; d < order.size(); ++d) order[d] = d;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t x, size_t y) { return blocking.strides[x] > blocking.strides[y]; });
  return order;
}

std::optional<Dims> nested_dims(const Md& md, std::span<const size_t> order) {
  const dnnl_memory_desc_t& m = md.data;
  if (m.format_kind != dnnl_blocked || order.size() != static_cast<size_t>(m.ndims)) return std::nullopt;
  const auto& blocking = m.format_desc.blocking;
  const InnerBlocks blocks = inner_blocks(m);
  const Dims& block = blocks.per_dim;
  Dims outer(order.size());
  int64_t stride = blocks.total;
  for (size_t i = order.size(); i-- > 0;) {
    const size_t d = order[i];
    if (m.padded_dims[d] % block[d] != 0) return std::nullopt;
    outer[i] = m.padded_dims[d] / block[d];
    // A dim of one outer step never moves, whatever its stride says.
    if (outer[i] != 1 && blocking.strides[d] != stride) return std::nullopt;
    stride *= outer[i];
  }
  Dims nested = outer;
  for (int k = 0; k < blocking.inner_nblks; ++k) nested.push_back(blocking.inner_blks[k]);
  return nested;
}

std::string md_string(const Md& md) {
  std::string s;
  switch (md.data_type()) {
    case Dt::f32:
      s = "f32";
      break;
    case Dt::bf16:
      s = "bf16";
      break;
    case Dt::s32:
      s = "s32";
      break;
    default:
      s = "dt" + std::to_string(static_cast<int>(md.data_type()));
  }
  s += "[";
  Dims dims = md.dims();
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? "," : "") + std::to_string(dims[i]);
  s += "]";
  if (md.data.format_kind == dnnl_format_kind_any) return s + "{any}";
  if (md.data.format_kind != dnnl_blocked) return s + "{opaque}";
  const auto& b = md.data.format_desc.blocking;
  s += "{s:";
  for (int i = 0; i < md.data.ndims; ++i) s += (i ? "," : "") + std::to_string(b.strides[i]);
  if (b.inner_nblks > 0) {
    s += "|b:";
    for (int i = 0; i < b.inner_nblks; ++i) {
      s += (i ? "," : "") + std::to_string(b.inner_idxs[i]) + "x" + std::to_string(b.inner_blks[i]);
    }
  }
  return s + "}";
}

std::optional<Dt> to_dnnl(DType dtype) {
  switch (dtype) {
    case DType::float32:
      return Dt::f32;
    case DType::bfloat16:
      return Dt::bf16;
    case DType::int32:
      return Dt::s32;
    case DType::int8:
      return Dt::s8;
    case DType::uint8:
      return Dt::u8;
    default:
      return std::nullopt;
  }
}

namespace {

const Tensor* constant_of(const ir::Graph& graph, ir::ValueId v) {
  if (v == ir::k_no_value) return nullptr;
  const ir::Value& value = graph.value(v);
  if (value.initializer && !value.recipe) return &*value.initializer;
  return value.inferred_value ? &*value.inferred_value : nullptr;
}

}  // namespace

std::optional<Eltwise> eltwise_for(const ir::Graph& graph, const ir::Node& node, std::string* why) {
  using A = dnnl::algorithm;
  auto fail = [&](const std::string& reason) -> std::optional<Eltwise> {
    if (why) *why = reason;
    return std::nullopt;
  };
  const std::string& op = node.op_type;
  const ir::Attributes& a = node.attrs;
  if (op == "Relu") return Eltwise{A::eltwise_relu, 0, 0};
  if (op == "LeakyRelu") return Eltwise{A::eltwise_relu, a.get_float("alpha", 0.01f), 0};
  if (op == "Sigmoid") return Eltwise{A::eltwise_logistic, 0, 0};
  if (op == "Tanh") return Eltwise{A::eltwise_tanh, 0, 0};
  if (op == "HardSwish") return Eltwise{A::eltwise_hardswish, 0, 0};
  if (op == "Elu") return Eltwise{A::eltwise_elu, a.get_float("alpha", 1.0f), 0};
  if (op == "Celu") {
    const float alpha = a.get_float("alpha", 1.0f);
    if (alpha == 0) return fail("Celu alpha 0");
    return Eltwise{A::eltwise_elu, 1.0f, 0, false, alpha, 1.0f / alpha};
  }
  if (op == "Selu")
    return Eltwise{A::eltwise_elu, a.get_float("alpha", 1.67326319217681884765625f), 0, false,
                   a.get_float("gamma", 1.05070102214813232421875f)};
  if (op == "Exp") return Eltwise{A::eltwise_exp, 0, 0};
  if (op == "Sqrt") return Eltwise{A::eltwise_sqrt, 0, 0};
  if (op == "Abs") return Eltwise{A::eltwise_abs, 0, 0};
  // Log stays on the reference kernel: oneDNN's approximation gives log(1) =
  // -1.4e-6, outside the ONNX suite's absolute tolerance.
  if (op == "Neg") return Eltwise{A::eltwise_linear, -1, 0};
  if (op == "Softplus") return Eltwise{A::eltwise_soft_relu, 0, 0};
  if (op == "HardSigmoid")
    return Eltwise{A::eltwise_linear, a.get_float("alpha", 0.2f), a.get_float("beta", 0.5f), true};
  if (op == "Gelu") {
    std::string approx = a.get_string("approximate", "none");
    if (approx == "none") return Eltwise{A::eltwise_gelu_erf, 0, 0};
    if (approx == "tanh") return Eltwise{A::eltwise_gelu_tanh, 0, 0};
    return fail("Gelu approximate='" + approx + "'");
  }
  if (op == "Clip") {
    float lo = -FLT_MAX;
    float hi = FLT_MAX;
    if (node.opset < 11) {
      lo = a.get_float("min", lo);
      hi = a.get_float("max", hi);
    } else {
      for (size_t i = 1; i < node.inputs.size() && i < 3; ++i) {
        if (node.inputs[i] == ir::k_no_value) continue;
        const Tensor* t = constant_of(graph, node.inputs[i]);
        if (!t || t->numel() != 1) return fail("Clip bound is not a constant scalar");
        (i == 1 ? lo : hi) = static_cast<float>(t->float_at(0));
      }
    }
    return Eltwise{A::eltwise_clip, lo, hi};
  }
  return fail("no oneDNN eltwise for " + op);
}

std::string eltwise_name(const Eltwise& e) {
  using A = dnnl::algorithm;
  switch (e.alg) {
    case A::eltwise_relu:
      return e.alpha == 0 ? "relu" : "leaky_relu";
    case A::eltwise_logistic:
      return "sigmoid";
    case A::eltwise_tanh:
      return "tanh";
    case A::eltwise_hardswish:
      return "hardswish";
    case A::eltwise_elu:
      return e.input_scale != 1 ? "celu" : e.scale != 1 ? "selu" : "elu";
    case A::eltwise_exp:
      return "exp";
    case A::eltwise_sqrt:
      return "sqrt";
    case A::eltwise_abs:
      return "abs";
    case A::eltwise_log:
      return "log";
    case A::eltwise_linear:
      return e.clip_unit ? "hardsigmoid" : "linear";
    case A::eltwise_soft_relu:
      return "softplus";
    case A::eltwise_gelu_erf:
      return "gelu_erf";
    case A::eltwise_gelu_tanh:
      return "gelu_tanh";
    case A::eltwise_clip:
      return "clip";
    default:
      return "eltwise";
  }
}

std::string dnnl_version_string() {
  const dnnl_version_t* v = dnnl::version();
  return "oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
         std::to_string(v->patch);
}

std::string isa_string() {
  using I = dnnl::cpu_isa;
  switch (dnnl::get_effective_cpu_isa()) {
    case I::sse41:
      return "sse41";
    case I::avx:
      return "avx";
    case I::avx2:
      return "avx2";
    case I::avx2_vnni:
      return "avx2_vnni";
    case I::avx512_mic:
      return "avx512_mic";
    case I::avx512_mic_4ops:
      return "avx512_mic_4ops";
    case I::avx512_core:
      return "avx512_core";
    case I::avx512_core_vnni:
      return "avx512_core_vnni";
    case I::avx512_core_bf16:
      return "avx512_core_bf16";
    case I::avx512_core_amx:
      return "avx512_core_amx";
    default:
      return "isa" + std::to_string(static_cast<int>(dnnl::get_effective_cpu_isa()));
  }
}

}  // namespace kiln::cpu
