// Lowering: turns an imported graph into the graph that engine builders
// consume, and keeps everything needed to refit it.
//
// The lowered graph still runs on the reference backend (it holds only ONNX
// ops), which is how every pass is tested: outputs before and after agree.
#pragma once

#include <optional>
#include <span>
#include <vector>

#include "ir/graph.hpp"

namespace kiln::passes {

// Whether initializer `value` is a refittable weight: a float tensor with
// more than one element used in a data position (a Conv/Gemm/MatMul weight
// or bias, a normalization scale/bias/mean/variance, an embedding table, an
// elementwise operand). Everything else is a structural constant: integer
// tensors, shape/axes/pads/scales inputs, and float scalars (Clip bounds, the
// 0.5/sqrt(2) of a Gelu pattern, attention's 1/sqrt(d)). Structural constants
// are part of the engine key by value; refittable weights never are.
bool is_refittable(const ir::Graph& graph, ir::ValueId value);

// Refittable weights in canonical order: order of first use, walking the
// nodes in topological order and each node's inputs in order. Names play no
// part, so two exports of one architecture agree.
std::vector<ir::ValueId> canonical_weights(const ir::Graph& graph);

// The tensors of canonical_weights(graph), in that order (shared, not copied).
std::vector<Tensor> source_weights(const ir::Graph& graph);

// Evaluates a recipe on source weights given in canonical order. Throws
// kiln::Error(invalid_argument) if an index is out of range or shapes or
// dtypes do not fit the recipe.
Tensor evaluate_recipe(const ir::WeightRecipe& recipe, std::span<const Tensor> sources);

// A bn_fold_scale recipe applied straight to a float32 source weight W, as
// W and one factor per slice of W's axis 0: evaluate_recipe's result is
// exactly static_cast<float>(double(W[i]) * factors[i / (numel / channels)]).
// Lets refit fold the scale into the reorder it does anyway instead of
// writing the folded weight first. Nullopt for any other recipe.
struct AxisScaledWeight {
  Tensor weight;
  std::vector<double> factors;
};
std::optional<AxisScaledWeight> split_axis_scale(const ir::WeightRecipe& recipe,
                                                 std::span<const Tensor> sources);

struct LoweringOptions {
  bool fold_constants = true;      // evaluate nodes whose inputs are all structural constants
  bool fold_batchnorm = true;      // BatchNormalization after Conv/Gemm into its weights (recipes)
  bool recognize_patterns = true;  // Erf-based Gelu → Gelu; decomposed LayerNorm → LayerNormalization
  // Large derived weights (BatchNorm-folded kernels) get placeholder values
  // (Value::placeholder) instead of being computed: a compile that hits the
  // engine cache refits from the sources and would compute them for nothing.
  // Call materialize_weights before anything reads weight values.
  bool defer_weight_values = false;
};

// Computes every placeholder weight of `lowered` from the source weights of
// the graph it was lowered from, on all cores. A no-op when there are none.
void materialize_weights(ir::Graph& lowered, std::span<const Tensor> sources);
bool has_placeholder_weights(const ir::Graph& lowered);

// Returns the lowered graph. In it, every refittable weight consumed by a
// node carries a recipe (a source weight keeps Op::source with its canonical
// index in the *input* graph), and derived weights hold the recipe's value
// for this model: evaluate_recipe(*v.recipe, source_weights(graph)) is
// bitwise v.initializer (once materialized, with defer_weight_values). In a lowered graph, "has a recipe" is
// what makes an initializer a refittable weight; every other initializer (folded constants included) is
// structural. Value and node ids are new; tensors share storage with `graph`, which is not modified. Throws
// kiln::Error only for a graph that static inference rejects.
ir::Graph lower(const ir::Graph& graph, const LoweringOptions& options = {});

// A group of nodes an engine may run as one kernel: an anchor (Conv, Gemm,
// MatMul) optionally followed by a bias Add (MatMul), a residual Add with
// another tensor, and one activation. Each intermediate value has exactly one
// user and is not a graph output, so removing it is safe. Produced by
// find_fusions on a lowered graph: one group per anchor (possibly the anchor
// alone), in the anchors' topological order. A residual is only taken when
// its shape and the anchor output's are fully known and equal (no broadcast)
// and it is computed before the anchor, so it is ready when the group runs.
struct FusionGroup {
  ir::NodeId anchor = ir::k_no_node;
  ir::NodeId bias_add = ir::k_no_node;      // MatMul + Add(bias): bias is a 1-D weight
  ir::NodeId residual_add = ir::k_no_node;  // Add(anchor result, other tensor)
  int residual_input = -1;                  // which input of residual_add is the other tensor
  ir::NodeId activation =
      ir::k_no_node;  // Relu, Clip, LeakyRelu, Sigmoid, Tanh, HardSwish, HardSigmoid, Gelu, Elu
  // SiLU / Swish: Mul(y, Sigmoid(y)) of the chain's value y, with
  // `activation` the Sigmoid; the pair is one swish post-op.
  ir::NodeId swish_mul = ir::k_no_node;
  ir::ValueId output = ir::k_no_value;  // the group's final value
  std::vector<ir::NodeId> nodes;        // anchor first, in topological order
};
std::vector<FusionGroup> find_fusions(const ir::Graph& lowered);

}  // namespace kiln::passes
