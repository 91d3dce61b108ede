// WeightRecipe: how one engine weight is computed from the model's source
// weights. Lowering passes that transform a weight (BatchNorm folding,
// transposes, reshapes) record a recipe instead of baking the result in, so an
// engine built for one set of weights can be refitted with another by
// replaying its recipes (passes::evaluate_recipe).
//
// Source weights are the refittable float initializers of the imported graph,
// referred to by canonical index (passes::canonical_weights), never by name:
// two exports of one architecture with different names share recipes.
//
// The Op values are part of kiln's persistent plan format: never renumber.
#pragma once

#include <cstdint>
#include <vector>

namespace kiln::ir {

struct WeightRecipe {
  enum class Op : uint8_t {
    source = 0,         // source weight `index`, unchanged
    bn_fold_scale = 1,  // args [W, gamma, var], floats [epsilon]:
                        //   W * gamma / sqrt(var + eps), per slice of W's axis 0
    bn_fold_bias = 2,   // args [gamma, beta, mean, var] or [.., bias], floats [epsilon]:
                        //   (bias - mean) * gamma / sqrt(var + eps) + beta
    transpose = 3,      // args [X], ints = permutation
    reshape = 4,        // args [X], ints = new shape (same element count)
    zeros = 5,          // ints = shape: a bias the model does not have
  };

  Op op = Op::source;
  int32_t index = -1;  // Op::source only
  std::vector<WeightRecipe> args;
  std::vector<int64_t> ints;
  std::vector<float> floats;

  static WeightRecipe from_source(int32_t canonical_index) {
    WeightRecipe r;
    r.index = canonical_index;
    return r;
  }
  bool operator==(const WeightRecipe&) const = default;
};

}  // namespace kiln::ir
