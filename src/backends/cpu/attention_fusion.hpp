// Fuses the cpu partition's layers that together run one matched attention
// (passes/attention_pattern.hpp) into one LayerKind::attention layer
// (attention_layer.cpp).
//
// Stateless; thread-safe.
#pragma once

#include <vector>

#include "backends/cpu/plan.hpp"
#include "ir/graph.hpp"
#include "passes/attention_pattern.hpp"

namespace kiln::cpu {

using passes::attention_reader_counts;
using passes::AttentionMatch;
using passes::match_attention;
using passes::match_attention_layer;
using passes::ScaleFactor;

// Replaces, in a partition of `graph`, the layers that together run exactly
// one matched attention's nodes with one LayerKind::attention layer, at the
// place of the last of them (its operands are computed before it). Layers
// holding other nodes too (a fusion group reaching past the pattern) keep
// the attention unfused. Why a Softmax stays unfused is logged at debug
// level. Called only when CompileSettings::cpu_fused_attention is on:
// measured on the development machine (2 shared cores), the fused layer was
// slower than oneDNN's batched matmuls and softmax at BERT's and ViT's shapes
// (docs/architecture.md, "Fused attention"), so it is opt-in; the setting is
// part of the engine key, so engines built with and without it never share a
// cache entry.
void fuse_attention_layers(const ir::Graph& graph, std::vector<LayerDesc>& layers);

}  // namespace kiln::cpu
