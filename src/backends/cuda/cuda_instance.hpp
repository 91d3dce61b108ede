// A cuda engine's instance: what running its plan at one set of input
// shapes needs, made once per shape set and kept (CudaEngine bounds how
// many). Its activations live in one device arena planned by lifetime at
// those shapes: views share their input's bytes, and layout copies
// (activation_layout.hpp) are values of their own. Each conv and matmul
// layer keeps its cuDNN plan or cuBLASLt algorithm for those shapes,
// rebuilt from the plan's recorded choice, never from heuristics or timing,
// except where that choice does not fit the shapes; every other layer keeps
// what layer_parts.hpp works out for it.
//
// Not thread-safe: an instance belongs to one engine, run by one caller.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "backends/cuda/activation_layout.hpp"
#include "backends/cuda/cuda_plan.hpp"
#include "backends/cuda/cudnn_conv.hpp"
#include "backends/cuda/device.hpp"
#include "backends/cuda/device_io.hpp"
#include "backends/cuda/host_shapes.hpp"
#include "backends/cuda/layer_parts.hpp"
#include "backends/cuda/lt_matmul.hpp"

namespace kiln::cuda {

// The most workspace a cuBLASLt algorithm may ask for, when one is chosen.
constexpr size_t k_max_matmul_workspace = size_t{32} << 20;

// One layer at one instance's shapes: only the members of its kind are set.
struct LayerExec {
  std::optional<ConvPlan> conv;
  std::unique_ptr<LtMatmul> matmul;
  MatmulParts matmul_parts;             // worked out once per instance, not per run
  SliceParts slice;                     // likewise: its arguments may be shape values of the instance
  std::vector<int64_t> expand_strides;  // an expand layer's walk over its input
  GatherParts gather;
  std::optional<AttentionExec> attention;
};

struct Instance {
  std::vector<std::vector<int64_t>> input_shapes;
  // The engine's activation layouts. The tables below are by value: the
  // graph's values, then the layout copies (ActivationLayouts::num_values).
  const ActivationLayouts* layouts = nullptr;
  std::vector<std::optional<std::vector<int64_t>>> shapes;  // by value
  std::vector<ir::ValueId> root;                            // by value: the value whose memory it is
  std::vector<int64_t> offset;                              // by root value: arena offset, -1 if none
  DeviceBuffer arena;
  size_t arena_bytes = 0;
  DeviceBuffer workspace;
  size_t workspace_bytes = 0;
  // fp16/bf16 engines: where an fp32 input lands before its cast into the
  // arena, and an output is cast to before it is copied out (the largest
  // of them; the stream orders its reuse).
  DeviceBuffer boundary;
  std::vector<LayerExec> layers;
  // Device runs: the launches of every layer as one CUDA graph, captured on
  // the second run (the first loads every kernel module and cuDNN engine
  // lazily, which a capture must not see); `graph_failed` after a capture
  // failed once, so later runs do not retry it.
  CapturedGraph graph;
  int device_runs = 0;
  bool graph_failed = false;

  const std::vector<int64_t>& shape(ir::ValueId v) const {
    const auto& s = shapes[static_cast<size_t>(v)];
    if (!s) throw Error(ErrorCode::internal, "cuda engine: a value without a shape at these input shapes");
    return *s;
  }
};

// The instance of `plan` at `input_shapes` (one per graph input), with its
// arena, workspace and every layer's exec data, on `device`'s handles.
// `layouts` must outlive it. Throws kiln::Error(unsupported) naming the
// layer or value when the plan cannot run at these shapes.
std::unique_ptr<Instance> create_instance(const Plan& plan, const ActivationLayouts& layouts,
                                          const DeviceContext& device,
                                          const std::vector<std::vector<int64_t>>& input_shapes);

constexpr size_t k_no_layer = static_cast<size_t>(-1);

// Where a step of an instance finds its tensors: activations in the arena,
// constants in the engine's device copies.
struct InstanceTensors {
  const ir::Graph& graph;
  const Instance& inst;
  std::function<const void*(ir::ValueId)> constant;
  // The layer whose inputs in() reads: in its layout, a value or the value's
  // layout copy. k_no_layer: values as stored.
  size_t layer = k_no_layer;

  void* ptr(ir::ValueId v) const;
  // Elements of the plan's storage precision.
  const void* in(ir::ValueId v) const { return ptr(layer == k_no_layer ? v : inst.layouts->read(layer, v)); }
  void* out(ir::ValueId v) const { return ptr(v); }
};

}  // namespace kiln::cuda
