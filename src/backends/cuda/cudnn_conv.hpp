// Convolutions on cuDNN's graph (backend) API: an operation graph of one
// convolution, optionally followed by the bias add, the residual add and a
// ReLU as pointwise nodes that cuDNN fuses into the same kernel when one of
// its engines supports the graph.
//
// A tactic is a CudnnEngineChoice: an engine's global index and its knob
// values. It is what the plan records: conv_plan() rebuilds an execution
// plan from it at any geometry without running heuristics or timing, which
// is how a plan loaded from the cache (or a run at another batch size of a
// dynamic range) gets its kernels.
//
// Thread-safety: a ConvPlan may run on one stream at a time.
#pragma once

#include <cudnn_graph.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backends/cuda/kernels/kernels.hpp"

namespace kiln::cuda {

// One cuDNN backend descriptor, destroyed with its owner.
class BackendDescriptor {
 public:
  explicit BackendDescriptor(cudnnBackendDescriptorType_t type);
  BackendDescriptor(const BackendDescriptor&) = delete;
  BackendDescriptor& operator=(const BackendDescriptor&) = delete;
  ~BackendDescriptor();

  cudnnBackendDescriptor_t get() const { return m_desc; }
  void set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count,
           const void* values);
  void set_int64(cudnnBackendAttributeName_t name, const std::vector<int64_t>& values);
  void set_descriptor(cudnnBackendAttributeName_t name, const BackendDescriptor& value);
  void finalize();

 private:
  cudnnBackendDescriptor_t m_desc = nullptr;
};
using SharedDescriptor = std::shared_ptr<BackendDescriptor>;

// Tensors of `type` (x, w, y, the bias and the residual alike), dims in
// NCHW order; the weight is [K, C / groups, R, S]. In memory they are packed
// NCHW (weight KCRS), or with `nhwc` channels-last: x, y and the residual
// NHWC and the weight KRSC (C innermost), the layout cuDNN's fast half
// kernels on sm_80+ read without converting. Whatever the type, the
// convolution and the fused pointwise nodes compute in fp32, and the
// intermediates between fused nodes are fp32: one rounding to `type`, when
// y is written.
struct ConvGeometry {
  std::array<int64_t, 4> x{}, w{}, y{};
  std::array<int64_t, 2> stride{1, 1}, dilation{1, 1}, pad_begin{0, 0}, pad_end{0, 0};
  ElemType type = ElemType::f32;
  bool nhwc = false;
};

// The pointwise nodes after the convolution in the operation graph.
struct ConvFusion {
  bool bias = false;      // + bias[k] (a [1, K, 1, 1] tensor)
  bool residual = false;  // + a tensor of y's shape
  bool relu = false;
  bool any() const { return bias || residual || relu; }
};

struct CudnnEngineChoice {
  int64_t engine = -1;
  std::vector<std::pair<int64_t, int64_t>> knobs;  // (knob type, value)
  std::string name() const;                        // "cudnn:e12/k3=1,k7=0"
};

struct ConvPointers {
  const void* x = nullptr;
  const void* w = nullptr;
  const void* bias = nullptr;
  const void* residual = nullptr;
  void* y = nullptr;
};

class ConvPlan {
 public:
  // `parts`: the tensors, operations and graph the plan was made from, kept
  // alive with it.
  ConvPlan(std::shared_ptr<const std::vector<SharedDescriptor>> parts, SharedDescriptor plan,
           ConvFusion fusion, size_t workspace);
  size_t workspace() const { return m_workspace; }
  const ConvFusion& fusion() const { return m_fusion; }
  // Enqueues the convolution on the handle's stream.
  void run(cudnnHandle_t handle, const ConvPointers& pointers, void* workspace) const;

 private:
  std::shared_ptr<const std::vector<SharedDescriptor>> m_parts;
  SharedDescriptor m_plan;
  ConvFusion m_fusion;
  size_t m_workspace = 0;
};

struct ConvCandidate {
  CudnnEngineChoice choice;
  ConvPlan plan;
};

// The engine configurations cuDNN's heuristics offer for the graph (mode A,
// then the fallback list), each finalized into a plan; at most `max_count`.
// For fp32 tensors, engines that compute on tensor cores (TF32) or
// down-convert inputs are left out unless allow_tf32; for fp16/bf16 tensors
// tensor cores are the point, and only engines that reduce in less than fp32
// are left out. Nondeterministic engines are always left out (a refitted
// engine equals a fresh build bitwise). Engines that compile their kernel
// when finalized (runtime fusion, seconds each) are offered only where no
// other engine takes the graph, and for a fused graph only when
// `compiling_fused` (a build offers the conv unfused instead). Empty when no
// engine supports the graph.
std::vector<ConvCandidate> conv_candidates(cudnnHandle_t handle, const ConvGeometry& geometry,
                                           ConvFusion fusion, size_t max_count, bool allow_tf32,
                                           bool compiling_fused = false);

// The plan of a recorded choice. Throws kiln::Error(invalid_model) when the
// engine does not support this geometry (a plan from another cuDNN).
ConvPlan conv_plan(cudnnHandle_t handle, const ConvGeometry& geometry, ConvFusion fusion,
                   const CudnnEngineChoice& choice);

}  // namespace kiln::cuda
