// Tactic selection support for the layer builders: timing closures for a
// candidate primitive (including the reorder its input layout needs from the
// producer's layout), and the search over candidates through
// builder::search_tactics with the TimingCache.
//
// A candidate's cost is its primitive plus the reorder of its input from the
// layout the producing layer already chose: layers are tuned greedily in
// execution order, each against its producers' final choices. That keeps
// activations in one blocked layout through a conv stack unless another
// layout pays for the reorder.
//
// Used from one thread during a build.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "backends/cpu/instance_builder.hpp"
#include "builder/tactic_search.hpp"

namespace kiln::cpu {

struct TimedArg {
  int arg;  // DNNL_ARG_*
  Md md;
  // The layout the neighbouring layers see when `md` is the primitive's own
  // view of it (a GEMM reads nhwc activations as a matrix): the buffer is
  // allocated, and reordered to and from, as this.
  std::optional<Md> seen_as = std::nullopt;
};

// The layout reorders a candidate brings with it, timed with its primitive:
// from `input` (the producer's layout) into its DNNL_ARG_SRC, from
// `residual` (the tensor a sum post-op adds) into its DNNL_ARG_DST, and
// from its DNNL_ARG_DST into `consumer` (the layout the next layer read the
// output as in the previous tuning pass). Each is timed only where the
// layouts differ.
struct LayoutMoves {
  std::optional<Md> input;
  std::optional<Md> residual;
  std::optional<Md> consumer;
};

// A zero-filled temporary laid out as `md`, for timing. A window's
// descriptor (a Slice's view) keeps its offset into the tensor it views,
// which a temporary of the window's size does not hold: the temporary starts
// at the window (a copy's cost does not depend on where it starts).
dnnl::memory zeroed(const Md& md, const dnnl::engine& engine);

// Work a candidate runs after its primitive, on its destination's memory
// (kiln's swish pass), timed with it.
using AfterPrimitive = std::function<void(dnnl::memory& dst)>;

// A closure that runs `pd` once on zero-filled temporaries, with the
// reorders `moves` implies (and `after`), and returns the milliseconds
// taken. Resources are made on first call.
std::function<double()> primitive_timer(InstanceBuilder& b, const dnnl::primitive_desc_base& pd,
                                        std::vector<TimedArg> args, LayoutMoves moves,
                                        AfterPrimitive after = {});

// Picks among `candidates` (the heuristic favourite first) and returns its
// index; sets `time_ms` to its time (0 when untimed). `signature` names the
// layer's problem: op, shapes, attributes, post-ops, input layout; the
// timing-cache key adds the fingerprint, the thread count and the candidate
// names (builder::layer_key).
// With `time_single`, a lone candidate is timed too (see search_tactics).
size_t choose_tactic(InstanceBuilder& b, const std::string& signature,
                     const std::vector<builder::TacticCandidate>& candidates, double* time_ms,
                     bool time_single = false);

bool bf16_enabled(InstanceBuilder& b);

// The number of threads a build times candidates with: settings.num_threads,
// or every core for 0. Part of every timing-cache key.
int timing_threads(const CompileSettings& settings);

// "1x64x56x56"
std::string dims_string(const Dims& dims);

}  // namespace kiln::cpu
