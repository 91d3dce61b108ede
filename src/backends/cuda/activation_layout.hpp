// The memory layout of each 4-D activation of a cuda engine: NCHW, or
// channels-last (NHWC, the dims stay [N, C, H, W] and C is innermost in
// memory).
//
// Why: cuDNN's fast fp16/bf16 convolution kernels on sm_80+ are
// channels-last; given NCHW tensors, cuDNN converts x to NHWC and y back
// around every conv with kernels of its own (0.44 of 1.26 GPU ms of a
// ResNet-18 at batch 32 in fp16 on an H100). A half engine keeps the
// activations between convs NHWC instead, and converts explicitly only where
// an NHWC value meets a reader that works in NCHW (or a graph input meets a
// conv).
//
// The rule (docs/cuda.md, "Channels-last activations"), per layer in
// execution order; fp32 engines keep everything NCHW:
//   - conv: NHWC (x, y, the residual and the weight, stored KRSC), unless its
//     residual is a constant (a constant is stored NCHW).
//   - pool, GlobalAverage/MaxPool, unary: the layout of their input; a global
//     pool's [N, C, 1, 1] output is the same bytes in both layouts and counts
//     as NCHW.
//   - binary with a 4-D output: NHWC when at least one operand is an NHWC
//     value and every other operand is NHWC or layout-free (below).
//   - every other layer (views, Concat, Slice, Transpose, MatMul, Softmax,
//     ...): NCHW.
// A value's layout is its producer layer's; graph inputs are NCHW. A layer
// reads a 4-D value as it is when the layouts agree or the value is
// layout-free (static C == 1, or static H == W == 1: both layouts are the
// same bytes); otherwise it reads a converted copy, made once per value and
// layout right after the value's producer (graph inputs: before the first
// GPU layer). Graph outputs are read in NCHW, the engine's boundary.
//
// Derived from the plan's graph, layers and precision only, so a plan loaded
// from the cache gets the layouts its build had without recording them.
//
// Plain data after construction; thread-safe to read.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "backends/cuda/cuda_plan.hpp"

namespace kiln::cuda {

enum class Layout : uint8_t { nchw = 0, nhwc = 1 };

const char* layout_name(Layout layout);

// One explicit conversion of an instance: `copy` (an id past the graph's
// values) holds `from` in layout `to`. It runs before or after layer
// `layer`'s own work, and lives from that layer on.
struct LayoutConversion {
  ir::ValueId from = ir::k_no_value;
  Layout to = Layout::nchw;
  ir::ValueId copy = ir::k_no_value;
  size_t layer = 0;
  bool before = false;
};

class ActivationLayouts {
 public:
  // Every value NCHW, nothing to convert.
  ActivationLayouts() = default;
  static ActivationLayouts assign(const ir::Graph& graph, std::span<const Layer> layers, ElemType precision);

  // The layout a value is stored in as its producer wrote it (NCHW for
  // graph inputs, constants, and values of any rank other than 4).
  Layout of_value(ir::ValueId v) const;
  // The layout a layer computes in: how it reads its 4-D activation inputs
  // and writes its output (a global pool writes layout-free [N, C, 1, 1]).
  Layout of_layer(size_t layer) const;
  // Whether both layouts of `v` are the same bytes.
  bool layout_free(ir::ValueId v) const;

  // The value whose memory layer `layer` reads for its input `v`: `v`, or
  // the copy of `v` in the layer's layout.
  ir::ValueId read(size_t layer, ir::ValueId v) const;
  // The value whose memory holds graph output `v` in NCHW.
  ir::ValueId output(ir::ValueId v) const;

  const std::vector<LayoutConversion>& conversions() const { return m_conversions; }
  // Indices into conversions() that run before / after layer `layer`.
  const std::vector<size_t>& before(size_t layer) const;
  const std::vector<size_t>& after(size_t layer) const;

  // The graph's values and the copies: the size of an instance's per-value
  // tables.
  size_t num_values() const { return m_graph_values + m_conversions.size(); }
  size_t nhwc_values() const;
  // "12 of 20 4-D activations NHWC; 2 conversions: 'input' to NHWC, ..."
  std::string summary(const ir::Graph& graph) const;

 private:
  size_t m_graph_values = 0;
  std::vector<Layout> m_value;                     // by graph value
  std::vector<bool> m_free;                        // by graph value: layout_free
  std::vector<bool> m_four_d;                      // by graph value: a 4-D activation (not a constant)
  std::vector<Layout> m_layer;                     // by layer
  std::vector<std::array<ir::ValueId, 2>> m_copy;  // by graph value and target layout
  std::vector<LayoutConversion> m_conversions;
  std::vector<std::vector<size_t>> m_before, m_after;  // by layer
};

}  // namespace kiln::cuda
