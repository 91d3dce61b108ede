// BatchNormalization folding: an inference-mode BN that is the only reader of
// a Conv (or Gemm) result is absorbed into that node's weight and bias:
//   W' = W * gamma / sqrt(var + eps)            per output channel
//   B' = (B - mean) * gamma / sqrt(var + eps) + beta
// Both are recorded as recipes over the source weights, so a refit replays
// the fold on the new weights.
#include "passes/lowering_passes.hpp"
#include "passes/passes.hpp"

namespace kiln::passes {

using ir::k_no_node;
using ir::k_no_value;
using ir::NodeId;
using ir::ValueId;
using ir::WeightRecipe;

namespace {

// The recipe of a weight that can take part in a fold: an initializer with a
// recipe (a refittable weight) of `numel` elements (any count when < 0).
const WeightRecipe* weight_recipe(const ir::Graph& graph, ValueId id, int64_t numel) {
  if (id == k_no_value) return nullptr;
  const ir::Value& v = graph.value(id);
  if (!v.initializer || !v.recipe) return nullptr;
  if (numel >= 0 && v.initializer->numel() != numel) return nullptr;
  return &*v.recipe;
}

bool only_first_output_used(const GraphRewriter& rewriter, const ir::Node& node) {
  for (size_t i = 1; i < node.outputs.size(); ++i) {
    ValueId out = node.outputs[i];
    if (out != k_no_value && (!rewriter.users(out).empty() || rewriter.is_graph_output(out))) return false;
  }
  return true;
}

struct FoldSite {
  NodeId producer = k_no_node;
  const WeightRecipe* weight = nullptr;
  const WeightRecipe* bias = nullptr;  // null: the producer has none
  bool transpose_weight = false;       // Gemm with transB = 0
};

// Whether BN's input comes from a Conv/Gemm that the BN can be folded into.
std::optional<FoldSite> fold_site(const GraphRewriter& rewriter, const ir::Node& bn, int64_t channels) {
  const ir::Graph& graph = rewriter.graph();
  ValueId x = bn.inputs[0];
  NodeId p = rewriter.producer(x);
  if (p == k_no_node || rewriter.sole_user(x) == k_no_node) return std::nullopt;
  const ir::Node& node = graph.node(p);
  if (!(node.domain.empty() || node.domain == "ai.onnx") || node.outputs.size() != 1) return std::nullopt;
  FoldSite site;
  site.producer = p;
  if (node.op_type == "Conv") {
    if (node.inputs.size() < 2) return std::nullopt;
    const ir::Value& w = graph.value(node.inputs[1]);
    if (!w.initializer || w.initializer->rank() < 1 || w.initializer->shape()[0] != channels)
      return std::nullopt;
    site.weight = weight_recipe(graph, node.inputs[1], -1);
  } else if (node.op_type == "Gemm") {
    // Y = A·op(B) + C with BN over Y's columns: only the plain form.
    if (node.attrs.get_float("alpha", 1.0f) != 1.0f || node.inputs.size() < 2) return std::nullopt;
    if (node.inputs.size() > 2 && node.inputs[2] != k_no_value &&
        node.attrs.get_float("beta", 1.0f) != 1.0f) {
      return std::nullopt;
    }
    const ir::Value& w = graph.value(node.inputs[1]);
    if (!w.initializer || w.initializer->rank() != 2) return std::nullopt;
    site.transpose_weight = node.attrs.get_int("transB", 0) == 0;
    if (w.initializer->shape()[site.transpose_weight ? 1 : 0] != channels) return std::nullopt;
    const ir::ValueType& y = graph.value(x).type;
    if (!y.shape || y.shape->size() != 2) return std::nullopt;
    site.weight = weight_recipe(graph, node.inputs[1], -1);
  } else {
    return std::nullopt;
  }
  if (!site.weight) return std::nullopt;
  if (node.inputs.size() > 2 && node.inputs[2] != k_no_value) {
    site.bias = weight_recipe(graph, node.inputs[2], channels);
    const ir::Value& b = graph.value(node.inputs[2]);
    if (!site.bias || b.initializer->rank() != 1) return std::nullopt;
  }
  return site;
}

void fold_one(GraphRewriter& rewriter, NodeId bn_id, std::span<const Tensor> sources, bool defer_values) {
  ir::Graph& graph = rewriter.graph();
  const ir::Node bn = graph.node(bn_id);
  if (bn.inputs.size() != 5 || bn.outputs.empty() || bn.outputs[0] == k_no_value) return;
  if (bn.attrs.get_int("training_mode", 0) != 0 || bn.attrs.get_int("spatial", 1) != 1) return;
  if (!only_first_output_used(rewriter, bn)) return;
  const ir::Value& gamma_v = graph.value(bn.inputs[1]);
  if (!gamma_v.initializer) return;
  const int64_t channels = gamma_v.initializer->numel();
  std::vector<const WeightRecipe*> stats;
  for (size_t i = 1; i <= 4; ++i) stats.push_back(weight_recipe(graph, bn.inputs[i], channels));
  for (const WeightRecipe* r : stats) {
    if (!r) return;
  }
  auto site = fold_site(rewriter, bn, channels);
  if (!site) return;
  const float eps = bn.attrs.get_float("epsilon", 1e-5f);

  WeightRecipe weight = *site->weight;
  if (site->transpose_weight) {
    WeightRecipe t;
    t.op = WeightRecipe::Op::transpose;
    t.args = {weight};
    t.ints = {1, 0};
    weight = std::move(t);
  }
  WeightRecipe scale;
  scale.op = WeightRecipe::Op::bn_fold_scale;
  scale.args = {weight, *stats[0], *stats[3]};
  scale.floats = {eps};
  WeightRecipe bias;
  bias.op = WeightRecipe::Op::bn_fold_bias;
  bias.args = {*stats[0], *stats[1], *stats[2], *stats[3]};
  if (site->bias) bias.args.push_back(*site->bias);
  bias.floats = {eps};

  const ir::Node& producer = graph.node(site->producer);
  const std::string base = producer.name.empty() ? bn.name : producer.name;
  ValueId new_weight =
      rewriter.add_initializer(base + ".folded_weight", defer_values ? placeholder_for(scale, sources)
                                                                     : evaluate_recipe(scale, sources));
  graph.value(new_weight).placeholder = defer_values;
  graph.value(new_weight).recipe = std::move(scale);
  ValueId new_bias = rewriter.add_initializer(base + ".folded_bias", evaluate_recipe(bias, sources));
  graph.value(new_bias).recipe = std::move(bias);

  rewriter.set_input(site->producer, 1, new_weight);
  rewriter.set_input(site->producer, 2, new_bias);
  if (site->transpose_weight) graph.node(site->producer).attrs.set("transB", int64_t{1});
  rewriter.set_output(site->producer, 0, bn.outputs[0]);
  rewriter.remove_node(bn_id);
}

}  // namespace

void fold_batchnorm(GraphRewriter& rewriter, std::span<const Tensor> sources, bool defer_values) {
  for (NodeId n : rewriter.live_order()) {
    const ir::Node& node = rewriter.graph().node(n);
    if (node.op_type == "BatchNormalization" && (node.domain.empty() || node.domain == "ai.onnx")) {
      fold_one(rewriter, n, sources, defer_values);
    }
  }
}

}  // namespace kiln::passes
