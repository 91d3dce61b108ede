#include "backends/cpu/tactics.hpp"

#include <algorithm>
#include <cstring>
#include <memory>
#include <thread>

#include "util/log.hpp"

namespace kiln::cpu {

namespace {

dnnl::memory zeroed(const Md& md, const dnnl::engine& engine) {
  dnnl::memory m(md, engine);
  if (md.get_size() > 0) std::memset(m.get_data_handle(), 0, md.get_size());
  return m;
}

struct TimerState {
  bool ready = false;
  dnnl::primitive prim;
  std::unordered_map<int, dnnl::memory> args;
  dnnl::primitive reorder;
  dnnl::memory reorder_src;
};

}  // namespace

std::function<double()> primitive_timer(InstanceBuilder& b, const dnnl::primitive_desc_base& pd,
                                        std::vector<TimedArg> args, std::optional<Md> from) {
  auto state = std::make_shared<TimerState>();
  const dnnl::engine& engine = b.engine();
  dnnl::stream& stream = b.stream();
  return [state, pd, args, from, &engine, &stream]() {
    TimerState& s = *state;
    if (!s.ready) {
      s.prim = dnnl::primitive(pd.get());
      for (const TimedArg& a : args) s.args[a.arg] = zeroed(a.md, engine);
      Md scratch = pd.scratchpad_desc();
      if (scratch.get_size() > 0) s.args[DNNL_ARG_SCRATCHPAD] = zeroed(scratch, engine);
      auto src = s.args.find(DNNL_ARG_SRC);
      if (from && src != s.args.end() && !(*from == src->second.get_desc())) {
        s.reorder_src = zeroed(*from, engine);
        s.reorder = dnnl::reorder(s.reorder_src, src->second);
      }
      s.ready = true;
    }
    auto once = [&] {
      if (s.reorder) s.reorder.execute(stream, {{DNNL_ARG_FROM, s.reorder_src}, {DNNL_ARG_TO, s.args.at(DNNL_ARG_SRC)}});
      s.prim.execute(stream, s.args);
      stream.wait();
    };
    // The better of two runs: on a loaded machine a run preempted mid-way is
    // noise, and noise only ever adds time.
    return std::min(builder::time_call(once), builder::time_call(once));
  };
}

size_t choose_tactic(InstanceBuilder& b, const std::string& signature,
                     const std::vector<builder::TacticCandidate>& candidates, double* time_ms) {
  TuningContext* t = b.tuning();
  const std::string key = builder::layer_key(t->fingerprint, timing_threads(*t->settings), signature, candidates);
  builder::TacticChoice choice = builder::search_tactics(key, candidates, *t->settings, t->cache);
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
