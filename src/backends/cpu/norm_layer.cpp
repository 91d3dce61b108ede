// Softmax, LayerNormalization and BatchNormalization layers. The first two
// read a plain (row-major) tensor: LayerNormalization over trailing axes
// becomes oneDNN's last-axis normalization of a [outer, inner] view, with
// scale and shift as weights; its optional Mean and InvStdDev outputs come
// from the statistics oneDNN computes (InvStdDev from the variance).
// InstanceNormalization is a layer normalization over the spatial dims
// followed by a per-channel affine binary. BatchNormalization normalizes over
// channels in the producer's layout, with a following Relu fused.
#include <array>
#include <cmath>
#include <optional>
#include <span>
#include <string>
#include <tuple>

#include "backends/cpu/instance_builder.hpp"

namespace kiln::cpu {

using ir::ValueId;

namespace {

// The value's data type if it is already f32 or bf16 (bf16 chains stay bf16).
Dt keep_dt(InstanceBuilder& b, ValueId v) { return b.md_of(v).data_type() == Dt::bf16 ? Dt::bf16 : Dt::f32; }

}  // namespace

void build_softmax_layer(InstanceBuilder& b, LayerDesc& layer) {
  const ir::Node& n = b.node(layer.anchor());
  const ValueId x = n.inputs[0];
  const ValueId y = n.outputs[0];
  const int64_t rank = static_cast<int64_t>(b.shape(x).size());
  int64_t axis = n.attrs.get_int("axis", n.opset >= 13 ? -1 : 1);
  if (axis < 0) axis += rank;
  if (axis < 0 || axis >= rank) throw Error(ErrorCode::invalid_model, "Softmax axis out of range");
  Dt dt = keep_dt(b, x);
  std::optional<dnnl::softmax_forward::primitive_desc> pd;
  int src = -1;
  for (Dt attempt : {dt, Dt::f32}) {
    try {
      src = b.use_plain(x, attempt);
      dnnl::softmax_forward::desc desc(dnnl::prop_kind::forward_inference, b.slot(src).md,
                                       static_cast<int>(axis));
      pd = dnnl::softmax_forward::primitive_desc(desc, b.attr(), b.engine());
      break;
    } catch (const dnnl::error&) {
      if (attempt == Dt::f32) throw;
    }
  }
  layer.tactic.name = "softmax";
  int dst = b.try_inplace(x, y, pd->dst_desc());
  if (dst < 0) dst = b.define(y, pd->dst_desc());
  b.add_primitive(*pd, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}});
}

namespace {

// InstanceNormalization: statistics per (n, c) over the spatial dims. oneDNN's
// layer normalization of the [N * C, spatial] view without scale and shift,
// then in place one binary multiply by the per-channel scale with the
// per-channel bias added as its binary post-op.
void build_instance_norm(InstanceBuilder& b, LayerDesc& layer) {
  const ir::Node& n = b.node(layer.anchor());
  if (n.inputs.size() != 3)
    throw Error(ErrorCode::invalid_model, n.describe() + ": needs input, scale and B");
  const ValueId x = n.inputs[0];
  const ValueId y = n.outputs[0];
  const auto& shape = b.shape(x);
  if (shape.size() < 3) throw Error(ErrorCode::invalid_model, n.describe() + ": input of rank < 3");
  const int64_t batch = shape[0], channels = shape[1];
  int64_t inner = 1;
  for (size_t i = 2; i < shape.size(); ++i) inner *= shape[i];
  for (size_t i = 1; i < 3; ++i) {
    const auto& s = b.shape(n.inputs[i]);
    if (s.size() != 1 || s[0] != channels) {
      throw Error(ErrorCode::invalid_model, n.describe() + ": scale or B does not match the channels");
    }
  }
  const float epsilon = n.attrs.get_float("epsilon", 1e-5f);
  const int src = b.view(b.use_plain(x, Dt::f32), plain_md(Dims{batch * channels, inner}, Dt::f32));
  dnnl::layer_normalization_forward::desc desc(dnnl::prop_kind::forward_inference, b.slot(src).md, epsilon,
                                               dnnl::normalization_flags::none);
  dnnl::layer_normalization_forward::primitive_desc pd(desc, b.attr(), b.engine());
  const int out = b.define(y, plain_md(shape, Dt::f32));
  b.add_primitive(pd, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, b.view(out, pd.dst_desc())}});

  const Md rows = plain_md(Dims{batch, channels, inner}, Dt::f32);
  const Md per_channel = plain_md(Dims{1, channels, 1}, Dt::f32);
  dnnl::post_ops po;
  po.append_binary(dnnl::algorithm::binary_add, per_channel);
  dnnl::primitive_attr attr = b.attr();
  attr.set_post_ops(po);
  dnnl::binary::desc affine(dnnl::algorithm::binary_mul, rows, per_channel, rows);
  dnnl::binary::primitive_desc affine_pd(affine, attr, b.engine());
  const int io = b.view(out, rows);
  b.add_primitive(affine_pd, {{DNNL_ARG_SRC_0, io},
                              {DNNL_ARG_SRC_1, b.weight_slot(n.inputs[1], per_channel, per_channel)},
                              {DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1,
                               b.weight_slot(n.inputs[2], per_channel, per_channel)},
                              {DNNL_ARG_DST, io}});
  layer.tactic.name = "instance_norm";
}

}  // namespace

void build_layer_norm_layer(InstanceBuilder& b, LayerDesc& layer) {
  const ir::Node& n = b.node(layer.anchor());
  if (n.op_type == "InstanceNormalization") {
    build_instance_norm(b, layer);
    return;
  }
  const ValueId x = n.inputs[0];
  const ValueId scale = n.inputs[1];
  const ValueId shift = n.inputs.size() > 2 ? n.inputs[2] : ir::k_no_value;
  const ValueId y = n.outputs[0];
  // The optional Mean and InvStdDev outputs (shape [outer dims, 1 ...]).
  const ValueId mean = n.outputs.size() > 1 ? n.outputs[1] : ir::k_no_value;
  const ValueId inv_std = n.outputs.size() > 2 ? n.outputs[2] : ir::k_no_value;
  const bool statistics = mean != ir::k_no_value || inv_std != ir::k_no_value;
  const auto& shape = b.shape(x);
  const int64_t rank = static_cast<int64_t>(shape.size());
  int64_t axis = n.attrs.get_int("axis", -1);
  if (axis < 0) axis += rank;
  if (axis < 0 || axis >= rank) throw Error(ErrorCode::invalid_model, "LayerNormalization axis out of range");
  int64_t outer = 1;
  int64_t inner = 1;
  for (int64_t i = 0; i < rank; ++i) (i < axis ? outer : inner) *= shape[static_cast<size_t>(i)];
  const float epsilon = n.attrs.get_float("epsilon", 1e-5f);
  auto flags = dnnl::normalization_flags::use_scale;
  if (shift != ir::k_no_value) flags = flags | dnnl::normalization_flags::use_shift;
  // Training propagation is the one that writes the statistics it computed.
  const auto prop = statistics ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;

  std::optional<dnnl::layer_normalization_forward::primitive_desc> pd;
  int src = -1;
  for (Dt attempt : {statistics ? Dt::f32 : keep_dt(b, x), Dt::f32}) {
    try {
      src = b.view(b.use_plain(x, attempt), plain_md(Dims{outer, inner}, attempt));
      dnnl::layer_normalization_forward::desc desc(prop, b.slot(src).md, epsilon, flags);
      pd = dnnl::layer_normalization_forward::primitive_desc(desc, b.attr(), b.engine());
      break;
    } catch (const dnnl::error&) {
      if (attempt == Dt::f32) throw;
    }
  }
  layer.tactic.name = statistics ? "layer_norm+stats" : "layer_norm";
  const Md full = plain_md(shape, pd->dst_desc().data_type());
  const int dst = b.view(b.define(y, full), pd->dst_desc());
  const Md vec = plain_md(Dims{inner}, Dt::f32);
  std::vector<std::pair<int, int>> args = {
      {DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}, {DNNL_ARG_SCALE, b.weight_slot(scale, vec, vec)}};
  if (shift != ir::k_no_value) args.emplace_back(DNNL_ARG_SHIFT, b.weight_slot(shift, vec, vec));
  int variance = -1;
  if (statistics) {
    // One value per normalized row: the outputs' [outer dims, 1 ...] are
    // read as [outer]. The variance is written where InvStdDev goes and
    // turned into it in place.
    const Md row = plain_md(Dims{outer}, Dt::f32);
    auto stat_slot = [&](ValueId v) { return b.view(b.define(v, plain_md(b.shape(v), Dt::f32)), row); };
    args.emplace_back(DNNL_ARG_MEAN, mean != ir::k_no_value ? stat_slot(mean) : b.temp(row));
    variance = inv_std != ir::k_no_value ? stat_slot(inv_std) : b.temp(row);
    args.emplace_back(DNNL_ARG_VARIANCE, variance);
  }
  b.add_primitive(*pd, std::move(args));
  if (inv_std != ir::k_no_value) {
    // InvStdDev = (variance + epsilon) ^ -0.5: a linear and a power
    // eltwise over the [outer] vector, in place.
    const Md row = b.slot(variance).md;
    for (auto [alg, alpha, beta] : {std::tuple{dnnl::algorithm::eltwise_linear, 1.0f, epsilon},
                                    std::tuple{dnnl::algorithm::eltwise_pow, 1.0f, -0.5f}}) {
      dnnl::eltwise_forward::desc desc(dnnl::prop_kind::forward_inference, alg, row, alpha, beta);
      dnnl::eltwise_forward::primitive_desc epd(desc, b.attr(), b.engine());
      b.add_primitive(epd, {{DNNL_ARG_SRC, variance}, {DNNL_ARG_DST, variance}});
    }
  }
}

}  // namespace kiln::cpu

namespace kiln::cpu {

void build_batch_norm_layer(InstanceBuilder& b, LayerDesc& layer) {
  const ir::Node& n = b.node(layer.anchor());
  if (n.op_type != "BatchNormalization" || n.inputs.size() != 5) {
    throw Error(ErrorCode::invalid_model, "a batch_norm layer whose node is not a BatchNormalization");
  }
  const ValueId x = n.inputs[0];
  const ValueId y = layer.output;
  const bool relu = layer.activation != ir::k_no_node;
  if (relu) {
    const ir::Node& act = b.node(layer.activation);
    if (act.op_type != "Relu" || act.inputs.empty() || act.inputs[0] != n.outputs[0]) {
      throw Error(ErrorCode::invalid_model, "a batch_norm layer's activation is not a Relu of it");
    }
  }
  const auto& shape = b.shape(x);
  if (shape.size() < 2) throw Error(ErrorCode::invalid_model, "BatchNormalization of a rank < 2 tensor");
  const int64_t channels = shape[1];
  for (size_t i = 1; i < 5; ++i) {
    const auto& s = b.shape(n.inputs[i]);
    if (s.size() != 1 || s[0] != channels) {
      throw Error(ErrorCode::invalid_model, "BatchNormalization statistics do not match the channels");
    }
  }
  const float epsilon = n.attrs.get_float("epsilon", 1e-5f);
  const Md vec = plain_md(Dims{channels}, Dt::f32);
  if (b.gathered(x) && shape.size() == 4) {
    // A Concat kept as a map of its inputs' channels (DenseNet's features at
    // batch > 1, concat_layer.cpp): the gather pass normalizes each channel
    // as it copies it, so the concatenated features are never written. In
    // 16-channel blocks, the layout the Concat itself would have had.
    const std::array<int, 4> stats = {
        b.weight_slot(n.inputs[1], vec, vec), b.weight_slot(n.inputs[2], vec, vec),
        b.weight_slot(n.inputs[3], vec, vec), b.weight_slot(n.inputs[4], vec, vec)};
    Instance* inst = &b.instance();
    const auto fill = [inst, stats, epsilon, channels](std::span<float> scale, std::span<float> shift) {
      const float* gamma = slot_floats(inst->slots[static_cast<size_t>(stats[0])]);
      const float* beta = slot_floats(inst->slots[static_cast<size_t>(stats[1])]);
      const float* mean = slot_floats(inst->slots[static_cast<size_t>(stats[2])]);
      const float* var = slot_floats(inst->slots[static_cast<size_t>(stats[3])]);
      for (size_t c = 0; c < static_cast<size_t>(channels); ++c) {
        scale[c] = gamma[c] / std::sqrt(var[c] + epsilon);
        shift[c] = beta[c] - mean[c] * scale[c];
      }
    };
    b.gather_affine(x, y, Md(to_dims(shape), Dt::f32, dnnl::memory::format_tag::nChw16c), fill, relu);
    layer.tactic.name = std::string("native:channel_gather+batch_norm") + (relu ? "+relu" : "");
    return;
  }
  auto flags = dnnl::normalization_flags::use_global_stats | dnnl::normalization_flags::use_scale |
               dnnl::normalization_flags::use_shift;
  if (relu) flags = flags | dnnl::normalization_flags::fuse_norm_relu;
  // The producer's layout (blocked included) and data type: oneDNN
  // normalizes over channels in any of them, in f32 inside, so no reorder.
  // A bf16 input stays bf16 (DenseNet's BN -> ReLU -> Conv after each
  // Concat: converting to f32 and back cost more than the normalization).
  // Other types, or a layout the primitive does not take, become plain f32.
  int src = b.use_current(x);
  const Dt dt = b.slot(src).md.data_type();
  if (dt != Dt::f32 && dt != Dt::bf16) src = b.use_plain(x, Dt::f32);
  std::optional<dnnl::batch_normalization_forward::primitive_desc> pd;
  for (int attempt = 0; attempt < 2 && !pd; ++attempt) {
    try {
      dnnl::batch_normalization_forward::desc desc(dnnl::prop_kind::forward_inference, b.slot(src).md,
                                                   epsilon, flags);
      pd = dnnl::batch_normalization_forward::primitive_desc(desc, b.attr(), b.engine());
      if (std::string(pd->impl_info_str()).rfind("ref", 0) == 0 && attempt == 0 &&
          b.slot(src).md.data_type() != Dt::f32) {
        pd.reset();  // oneDNN's reference kernel for bf16: f32 is faster
        src = b.use_plain(x, Dt::f32);
      }
    } catch (const dnnl::error&) {
      if (attempt == 1) throw;
      src = b.use_plain(x, Dt::f32);  // a layout this primitive does not take
    }
  }
  layer.tactic.name = std::string("batch_norm") + (relu ? "+relu" : "") +
                      (pd->src_desc().data_type() == Dt::bf16 ? "/bf16" : "");
  int dst = b.try_inplace(x, y, pd->dst_desc());
  if (dst < 0) dst = b.define(y, pd->dst_desc());
  b.add_primitive(*pd, {{DNNL_ARG_SRC, src},
                        {DNNL_ARG_DST, dst},
                        {DNNL_ARG_SCALE, b.weight_slot(n.inputs[1], vec, vec)},
                        {DNNL_ARG_SHIFT, b.weight_slot(n.inputs[2], vec, vec)},
                        {DNNL_ARG_MEAN, b.weight_slot(n.inputs[3], vec, vec)},
                        {DNNL_ARG_VARIANCE, b.weight_slot(n.inputs[4], vec, vec)}});
}

}  // namespace kiln::cpu
