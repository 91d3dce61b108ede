// passes::lower: runs the lowering passes in order on a copy of the graph.
#include "passes/lowering_passes.hpp"
#include "passes/passes.hpp"
#include "passes/weight_uses.hpp"

namespace kiln::passes {

const Tensor* structural_value(const ir::Graph& graph, ir::ValueId value) {
  if (value == ir::k_no_value) return nullptr;
  const ir::Value& v = graph.value(value);
  if (v.initializer) return v.recipe ? nullptr : &*v.initializer;
  return v.inferred_value ? &*v.inferred_value : nullptr;
}

std::optional<double> scalar_constant(const ir::Graph& graph, ir::ValueId value) {
  const Tensor* t = structural_value(graph, value);
  if (!t || t->numel() != 1 || !is_floating(t->dtype())) return std::nullopt;
  return float_element(*t, 0);
}

ir::Graph lower(const ir::Graph& graph, const LoweringOptions& options) {
  const std::vector<ir::ValueId> canonical = canonical_weights(graph);
  std::vector<Tensor> sources;
  sources.reserve(canonical.size());
  for (ir::ValueId id : canonical) sources.push_back(*graph.value(id).initializer);

  GraphRewriter rewriter(graph);
  for (size_t v = 0; v < rewriter.graph().num_values(); ++v) {
    rewriter.graph().value(static_cast<ir::ValueId>(v)).recipe.reset();
  }
  for (size_t i = 0; i < canonical.size(); ++i) {
    rewriter.graph().value(canonical[i]).recipe = ir::WeightRecipe::from_source(static_cast<int32_t>(i));
  }
  forward_identities(rewriter);
  if (options.fold_constants) fold_constants(rewriter);
  forward_noop_pads(rewriter);
  forward_noop_dropouts(rewriter);
  if (options.fold_batchnorm) fold_batchnorm(rewriter, sources, options.defer_weight_values);
  if (options.recognize_patterns) {
    recognize_gelu(rewriter);
    recognize_layer_norm(rewriter);
    recognize_spatial_mean(rewriter);
    fold_pad_into_average_pool(rewriter);
  }
  return rewriter.finish();
}

}  // namespace kiln::passes
