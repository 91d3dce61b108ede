// Tactic search: picks the fastest of a layer's candidate implementations
// ("tactics") by timing each, consulting the TimingCache first.
//
// The search is backend-agnostic: a candidate is a name plus a callable that
// runs it once and returns that run's time in milliseconds (time_call() wraps
// a plain callable with steady_clock). The callee measures, so it can leave
// out per-run setup such as input reorders. Each candidate gets warmup runs,
// then timed runs until both a minimum count and a minimum total time are
// reached (capped by a maximum count); its time is the median of those runs.
// The candidates' runs are interleaved, round by round, so that a burst of
// load from elsewhere slows all of them rather than deciding between them.
// At levels 1-3 a candidate whose best run is over twice the fastest one's
// is timed no further (TimingPlan::drop_ratio).
//
// optimization_level (CompileSettings): 0 takes the first candidate without
// timing (so list the heuristic favourite first); 1-2 time briefly; 3 is the
// default; 4-5 time longer for steadier medians. A layer with a single
// candidate is never timed.
//
// Cache: on a hit the cached timings are reused and only candidates missing
// from the entry (new tactics) are timed; the merged timings are inserted
// back. A candidate whose callable throws is logged and skipped (and not
// cached); if every candidate throws, the first exception propagates.
//
// Thread-safety: search_tactics() is reentrant; the cache is thread-safe.
#pragma once

#include <cstddef>
#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "builder/timing_cache.hpp"
#include "kiln/settings.hpp"

namespace kiln::builder {

struct TacticCandidate {
  std::string name;                   // unique within the layer; the cache stores it
  std::function<double()> time_once;  // runs the candidate once, returns milliseconds
};

struct TimingPlan {
  int warmup_runs = 0;
  int min_runs = 0;
  int max_runs = 0;
  double min_total_ms = 0;  // keep timing until the runs add up to this
  bool time_candidates = true;
  // After the first round, a candidate whose best run is this many times the
  // fastest candidate's best run stops being timed (0: every candidate runs to
  // the end). Its time is then its median so far: enough to rank it last.
  double drop_ratio = 0;
};

// The timing effort for an optimization level (clamped to 0..5).
TimingPlan timing_plan(int optimization_level);

struct TacticChoice {
  size_t index = 0;  // into the candidate list
  std::string tactic;
  std::vector<TacticTiming> timings;  // every candidate measured or cached; empty if untimed
  bool from_cache = false;            // every timing came from the cache
};

// Called when candidate `index` throws; it is then left out of the search.
using FailureHandler = std::function<void(size_t index, const std::exception&)>;

// Times candidates[which[k]] for each k under `plan`: warmups for all, then
// round-robin rounds of one run per unfinished candidate. Returns each one's
// median in milliseconds, or nothing for a candidate that threw.
std::vector<std::optional<double>> measure_together(const std::vector<TacticCandidate>& candidates,
                                                    const std::vector<size_t>& which, const TimingPlan& plan,
                                                    const FailureHandler& on_failure);

// Runs `fn` once and returns its wall time in milliseconds.
double time_call(const std::function<void()>& fn);

// The timing-cache key of one layer's search. Timings are comparable only
// where all of these agree: the platform (backend, library version, ISA),
// the number of threads the candidates run on (a tactic timed on 2 threads
// is not the measurement it is on 1), the layer's signature (op, shapes,
// attributes, layouts) and the candidates offered, by name.
std::string layer_key(std::string_view platform, int threads, std::string_view signature,
                      const std::vector<TacticCandidate>& candidates);

// Chooses among `candidates` (non-empty) for the layer `layer_key`; `cache`
// may be null. Throws kiln::Error(invalid_argument) for an empty list.
// `time_single`: time even a lone candidate, for a caller that compares its
// time with another search's (a lone candidate is otherwise not timed).
TacticChoice search_tactics(const std::string& layer_key, const std::vector<TacticCandidate>& candidates,
                            const CompileSettings& settings, TimingCache* cache, bool time_single = false);

}  // namespace kiln::builder
