// Instance: an engine plan made concrete for one set of input shapes.
//
// oneDNN primitives are shape-specific, so an engine keeps one Instance per
// recently seen shape set. An instance holds the primitives (created once),
// the memory slots every value lives in (one arena planned by lifetime, the
// caller's input buffers, constants, reference-kernel outputs), the weights
// reordered into each primitive's layout, and the ordered steps to execute.
// Running it allocates nothing except the returned output tensors.
//
// Creation (create_instance) walks the plan's layers in order; with a
// TuningContext it also chooses each layer's tactic by timing candidates at
// these shapes and writes the choice into the plan.
//
// Not thread-safe: one run at a time (the arena is shared scratch).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "backends/cpu/dnnl_util.hpp"
#include "backends/cpu/plan.hpp"
#include "builder/progress.hpp"
#include "builder/timing_cache.hpp"
#include "util/huge_page_buffer.hpp"

namespace kiln::cpu {

// Plain (row-major, logical dtype) weight tensors indexed by ValueId; an
// undefined tensor for values that are not weights.
using WeightStore = std::vector<Tensor>;
// By ValueId: empty, or the per-slice factors to apply to that weight while
// reordering it (the store then holds the unscaled source; see refit).
using WeightFactors = std::vector<std::vector<double>>;

// For each value, the layout its producer wrote and the one its first
// consumer read it as, recorded by one tuning pass and read by the next:
// where the two differed (a reorder between layers), the producer's
// candidates then also pay for reordering their output into the consumer's.
struct LayoutHandoff {
  dnnl::memory::desc produced, consumed;
};
using ConsumerLayouts = std::unordered_map<ir::ValueId, LayoutHandoff>;

struct TuningContext {
  const CompileSettings* settings = nullptr;
  builder::TimingCache* cache = nullptr;
  builder::BuildProgress* progress = nullptr;
  std::string fingerprint;                         // prefixes every timing-cache key
  const ConsumerLayouts* previous_pass = nullptr;  // null in the first pass
  ConsumerLayouts* record = nullptr;               // where this pass notes what consumers want
};

struct Slot {
  enum class Place : uint8_t { arena, input, external, owned };
  Md md;
  Place place = Place::arena;
  int root = -1;             // a view of another slot's storage; -1 for a root
  size_t byte_offset = 0;    // a view: where its storage starts in the root's (md's own offset aside)
  int input_index = -1;      // Place::input: which engine input
  void* external = nullptr;  // Place::external: constants, aux outputs
  size_t offset = 0;         // Place::arena: assigned by the memory plan
  int first = 0;             // lifetime in layer indices (roots in the arena)
  int last = 0;
  std::vector<ir::ValueId> values;  // values whose storage this root is
  dnnl::memory mem;                 // bound by materialize()
};

// The floats of f32 memory `m` from its first element (its descriptor's
// offset applied), padding included, for kiln's own kernels.
inline std::span<float> memory_floats(const dnnl::memory& m) {
  const Md md = m.get_desc();
  return {static_cast<float*>(m.get_data_handle()) + md.data.offset0, md.get_size() / sizeof(float)};
}
inline float* slot_floats(const Slot& s) { return memory_floats(s.mem).data(); }
// The first element of slot `s`'s memory (its offset applied), any type.
inline std::byte* slot_bytes(const Slot& s) {
  const Md md = s.mem.get_desc();
  return static_cast<std::byte*>(s.mem.get_data_handle()) +
         md.data.offset0 * static_cast<int64_t>(dnnl::memory::data_type_size(md.data_type()));
}

struct RunContext {
  std::span<const Tensor> inputs;
  const WeightStore* weights = nullptr;
  dnnl::stream* stream = nullptr;
};

struct Step {
  dnnl::primitive_desc_base pd;  // empty for function steps
  dnnl::primitive prim;
  std::vector<std::pair<int, int>> arg_slots;  // (DNNL_ARG_*, slot)
  std::unordered_map<int, dnnl::memory> args;
  std::function<void(RunContext&)> fn;
  int layer = 0;
  // A function step that is kiln's own kernel, as the profile names it
  // (empty: named after its layer).
  std::string op, tactic;
};

// A weight (or float constant) reordered from its plain tensor, seen through
// `view`, into an owned slot in the primitive's layout.
struct WeightPrep {
  ir::ValueId value = ir::k_no_value;
  Md view;
  int slot = -1;
};

// gathered: not written yet; its channels are other values' channels
// (ValueState::gathered_from), written where a layer reads it. elided: a
// step between such a value and its sources that nothing else reads.
enum class ValueKind : uint8_t { unset, input, weight, constant, aux_tensor, slot, gathered, elided };

// Channel `channel` of value `value` (a rank-4 [N, C, H, W] f32 value).
struct ChannelSource {
  ir::ValueId value = ir::k_no_value;
  int64_t channel = 0;
  bool operator==(const ChannelSource&) const = default;
};

struct ValueState {
  ValueKind kind = ValueKind::unset;
  int slot = -1;                                // ValueKind::slot, or the lazily made slot of another kind
  int input_index = -1;                         // ValueKind::input
  Tensor tensor;                                // constant / shape-only / aux output
  std::vector<std::pair<Md, int>> conversions;  // the value in other layouts
  // An aux output that only the caller reads: each run writes a fresh tensor
  // and hands that one out, rather than a copy of one the instance keeps.
  bool handed_out = false;
  std::vector<ChannelSource> gathered_from;  // ValueKind::gathered: per channel
};

struct Instance {
  std::vector<std::vector<int64_t>> input_shapes;
  std::vector<ir::ValueType> types;  // concrete, per value
  std::vector<ValueState> values;
  std::vector<Slot> slots;
  std::vector<Step> steps;
  std::vector<WeightPrep> weight_preps;
  struct OutputReorder {
    ir::ValueId value = ir::k_no_value;
    dnnl::primitive_desc_base pd;  // the value's slot → a plain tensor
    dnnl::primitive prim;
    // The slot is already in the returned layout (a classifier's logits): a
    // copy, without a reorder primitive's parallel region around it.
    bool copy = false;
  };
  std::vector<OutputReorder> output_reorders;
  size_t arena_bytes = 0;
  size_t aux_bytes = 0;  // reference-kernel outputs held outside the arena
  size_t weight_bytes = 0;
  uint64_t weight_generation = 0;  // 0: weights never prepared
  bool materialized = false;

  // Reorders every weight from `weights` into its slot, on up to
  // `num_threads` threads (0: all cores).
  void prepare_weights(const WeightStore& weights, const WeightFactors& factors, const dnnl::engine& engine,
                       dnnl::stream& stream, int num_threads);
  // With `step_ms`, waits for the stream after every step and writes each
  // step's time, then the output reorders' as one more entry (steps.size() + 1
  // in all): the profiling mode. Without it the steps run unsynchronised.
  std::vector<Tensor> run(const ir::Graph& graph, std::span<const Tensor> inputs, const WeightStore& weights,
                          const dnnl::engine& engine, dnnl::stream& stream,
                          std::vector<double>* step_ms = nullptr);

 private:
  const Tensor* weight_tensor(const WeightStore& weights, const WeightPrep& p) const;
  HugePageBuffer m_arena;  // activations
  HugePageBuffer m_owned;  // weights and other slots the instance owns, one after another
  friend void materialize(Instance& inst, const dnnl::engine& engine);
};

// Creates the instance of `plan` for `input_shapes`. With `tuning`, chooses
// tactics by timing and stores them in plan.layers; without, uses the stored
// tactics. `materialize` false plans only (shapes, layouts, arena size).
std::unique_ptr<Instance> create_instance(EnginePlan& plan,
                                          const std::vector<std::vector<int64_t>>& input_shapes,
                                          const dnnl::engine& engine, dnnl::stream& stream,
                                          TuningContext* tuning, bool materialize);

// Creates primitives, allocates the arena and binds every slot's memory.
void materialize(Instance& inst, const dnnl::engine& engine);

}  // namespace kiln::cpu
