// ShuffleNet's channel shuffle as a gathered value: a Concat of rank-4 f32
// tensors along channels whose only reader is Reshape [N, g, C/g, H, W] ->
// Transpose [0, 2, 1, 3, 4] -> Reshape [N, C, H, W] writes nothing. The
// final Reshape's output becomes a map of the Concat inputs' channels
// (InstanceBuilder::define_gathered), the Slices of the next unit's channel
// split stay maps of it, and each tensor is written once, by kiln's gather
// pass, where a layer reads it (channel_gather.hpp). The Reshape and
// Transpose in between compute nothing.
#pragma once

#include "backends/cpu/instance_builder.hpp"

namespace kiln::cpu {

// Whether the Concat `layer` starts a channel shuffle; if so, it is now
// gathered and the Concat adds no step.
bool build_gathered_shuffle(InstanceBuilder& b, LayerDesc& layer);

// Whether the view layer computes a value a gathered shuffle made
// unnecessary or already defined (it then adds no step).
bool part_of_gathered_shuffle(InstanceBuilder& b, LayerDesc& layer);

// The window of gathered value `x` from `starts` every `steps` (a Slice or
// a Split's part), when it is along the channels only: `y` becomes a map of
// the channels it keeps. False (and nothing done) otherwise.
bool build_gathered_slice(InstanceBuilder& b, ir::ValueId x, ir::ValueId y, const Dims& starts,
                          const Dims& steps);

}  // namespace kiln::cpu
