// Internal to kiln_passes: the individual lowering passes that passes::lower
// runs in order on one GraphRewriter. Each keeps the refit invariant: every
// weight it creates carries a recipe whose evaluation on `sources` (the input
// graph's source weights) is bitwise the weight's initializer.
#pragma once

#include <optional>
#include <span>

#include "passes/graph_rewriter.hpp"

namespace kiln::passes {

// Readers of an Identity's output read its input instead (exporters alias
// identical initializers through Identity); an Identity feeding a graph
// output stays.
void forward_identities(GraphRewriter& rewriter);
// Readers of a Pad that pads nothing (all pad amounts known zeros) read its
// input instead; run after constant folding, which makes the amounts known.
void forward_noop_pads(GraphRewriter& rewriter);
// Readers of a Dropout that cannot drop (inference mode, or a known ratio of
// 0) and whose mask nobody reads, read its input instead.
void forward_noop_dropouts(GraphRewriter& rewriter);

// Evaluates nodes whose inputs are all structural constants (and nodes whose
// outputs static inference already knows); their outputs become constants.
void fold_constants(GraphRewriter& rewriter);

// Conv → BatchNormalization (and Gemm → BatchNormalization) into the Conv's
// weight and bias, through bn_fold_scale / bn_fold_bias recipes.
// With `defer_values`, the folded kernel is a placeholder (Value::placeholder).
void fold_batchnorm(GraphRewriter& rewriter, std::span<const Tensor> sources, bool defer_values);

// A tensor of the recipe's dtype and shape without computing it when that is
// free (a view of a source of the same size), else the recipe's value.
Tensor placeholder_for(const ir::WeightRecipe& recipe, std::span<const Tensor> sources);

// The Erf Gelu chain → Gelu; the decomposed LayerNorm chain → LayerNormalization.
void recognize_gelu(GraphRewriter& rewriter);
void recognize_layer_norm(GraphRewriter& rewriter);
// Pad (zeros, spatial) -> AveragePool → AveragePool with pads and count_include_pad.
void fold_pad_into_average_pool(GraphRewriter& rewriter);
// ReduceMean over H and W of a rank-4 float tensor → GlobalAveragePool (and
// a Flatten when the dims are not kept).
void recognize_spatial_mean(GraphRewriter& rewriter);

// A scalar (one element) float constant: an initializer that is not a
// refittable weight, or a value static inference computed. nullopt otherwise.
std::optional<double> scalar_constant(const ir::Graph& graph, ir::ValueId value);
// Initializer without a recipe, or an inferred value: fixed for the engine's life.
const Tensor* structural_value(const ir::Graph& graph, ir::ValueId value);

}  // namespace kiln::passes
