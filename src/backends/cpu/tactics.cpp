#include "backends/cpu/tactics.hpp"

#include <algorithm>
#include <cstring>
#include <memory>
#include <thread>

#include "util/log.hpp"

namespace kiln::cpu {

namespace {

constexpr double k_long_run_ms = 10.0;

// A reorder between two temporaries, run before or after the primitive.
struct TimedReorder {
  dnnl::primitive prim;
  dnnl::memory from, to;
};

struct TimerState {
  bool ready = false;
  dnnl::primitive prim;
  std::unordered_map<int, dnnl::memory> args;  // as the primitive reads them
  std::unordered_map<int, dnnl::memory> seen;  // as neighbours see them, where that differs
  std::vector<TimedReorder> before, after;
};

// A reorder from `from` into the candidate's argument `arg` (or, with
// `out`, from `arg` into `from`); none when the layouts already agree.
void add_move(TimerState& s, const std::optional<Md>& other, int arg, bool out, const dnnl::engine& engine) {
  dnnl::memory* mem = nullptr;
  if (auto seen = s.seen.find(arg); seen != s.seen.end()) {
    mem = &seen->second;
  } else if (auto own = s.args.find(arg); own != s.args.end()) {
    mem = &own->second;
  }
  if (!other || !mem || *other == mem->get_desc()) return;
  dnnl::memory extra = zeroed(*other, engine);
  if (out) {
    s.after.push_back({dnnl::reorder(*mem, extra), *mem, extra});
  } else {
    s.before.push_back({dnnl::reorder(extra, *mem), extra, *mem});
  }
}

}  // namespace

dnnl::memory zeroed(const Md& md, const dnnl::engine& engine) {
  Md local = md;
  local.data.offset0 = 0;
  dnnl::memory m(local, engine);
  if (local.get_size() > 0) std::memset(m.get_data_handle(), 0, local.get_size());
  return m;
}

std::function<double()> primitive_timer(InstanceBuilder& b, const dnnl::primitive_desc_base& pd,
                                        std::vector<TimedArg> args, LayoutMoves moves, AfterPrimitive after) {
  auto state = std::make_shared<TimerState>();
  const dnnl::engine& engine = b.engine();
  dnnl::stream& stream = b.stream();
  return [state, pd, args, moves, after, &engine, &stream]() {
    TimerState& s = *state;
    if (!s.ready) {
      s.prim = dnnl::primitive(pd.get());
      for (const TimedArg& a : args) {
        if (!a.seen_as) {
          s.args[a.arg] = zeroed(a.md, engine);
          continue;
        }
        s.seen[a.arg] = zeroed(*a.seen_as, engine);
        s.args[a.arg] = dnnl::memory(a.md, engine, s.seen[a.arg].get_data_handle());
      }
      Md scratch = pd.scratchpad_desc();
      if (scratch.get_size() > 0) s.args[DNNL_ARG_SCRATCHPAD] = zeroed(scratch, engine);
      add_move(s, moves.input, DNNL_ARG_SRC, false, engine);
      add_move(s, moves.residual, DNNL_ARG_DST, false, engine);
      add_move(s, moves.consumer, DNNL_ARG_DST, true, engine);
      s.ready = true;
    }
    auto once = [&] {
      for (TimedReorder& r : s.before) r.prim.execute(stream, {{DNNL_ARG_FROM, r.from}, {DNNL_ARG_TO, r.to}});
      s.prim.execute(stream, s.args);
      if (after) {
        stream.wait();
        after(s.args.at(DNNL_ARG_DST));
      }
      for (TimedReorder& r : s.after) r.prim.execute(stream, {{DNNL_ARG_FROM, r.from}, {DNNL_ARG_TO, r.to}});
      stream.wait();
    };
    // The better of two runs: on a loaded machine a run preempted mid-way is
    // noise, and noise only ever adds time. A long run is taken alone: a
    // preemption is then a small part of it, the search's median over runs
    // absorbs the rest, and at batch 100 a second run would double the build.
    double first = builder::time_call(once);
    if (first >= k_long_run_ms) return first;
    return std::min(first, builder::time_call(once));
  };
}

size_t choose_tactic(InstanceBuilder& b, const std::string& signature,
                     const std::vector<builder::TacticCandidate>& candidates, double* time_ms,
                     bool time_single) {
  TuningContext* t = b.tuning();
  const std::string key =
      builder::layer_key(t->fingerprint, timing_threads(*t->settings), signature, candidates);
  builder::TacticChoice choice =
      builder::search_tactics(key, candidates, *t->settings, t->cache, time_single);
  *time_ms = 0;
  for (const builder::TacticTiming& timing : choice.timings) {
    if (timing.tactic == choice.tactic) *time_ms = timing.time_ms;
  }
  if (t->settings->debug) {
    std::string line = "cpu: " + signature + ":";
    for (const builder::TacticTiming& timing : choice.timings) {
      line += " " + timing.tactic + "=" + std::to_string(timing.time_ms) + "ms";
    }
    log::info(line + " -> " + choice.tactic + (choice.from_cache ? " (timing cache)" : ""));
  }
  return choice.index;
}

int timing_threads(const CompileSettings& settings) {
  // The count CpuEngine gives OpenMP before timing (0: every core).
  return settings.num_threads > 0 ? settings.num_threads
                                  : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

bool bf16_enabled(InstanceBuilder& b) {
  TuningContext* t = b.tuning();
  return t && t->settings->enabled_precisions.count(Precision::bf16) != 0;
}

std::string dims_string(const Dims& dims) {
  std::string s;
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? "x" : "") + std::to_string(dims[i]);
  return s;
}

}  // namespace kiln::cpu
