#include "builder/tactic_search.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <optional>

#include "kiln/error.hpp"
#include "util/log.hpp"

namespace kiln::builder {

namespace {

std::string format_ms(double ms) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.4f ms", ms);
  return buffer;
}

const TacticTiming* find_timing(const std::vector<TacticTiming>& timings, const std::string& name) {
  for (const auto& timing : timings)
    if (timing.tactic == name) return &timing;
  return nullptr;
}

}  // namespace

TimingPlan timing_plan(int optimization_level) {
  switch (std::clamp(optimization_level, 0, 5)) {
    case 0:
      return {0, 0, 0, 0, false};
    // Levels 1-3 stop timing a candidate that is already twice as slow as the
    // best after one run: it cannot win, and at a large batch each of its runs
    // costs a tenth of a second or more. Levels 4-5 time everything fully.
    case 1:
      return {1, 3, 10, 1.0, true, 2.0};
    case 2:
      return {1, 3, 20, 2.0, true, 2.0};
    case 3:
      return {1, 3, 20, 10.0, true, 2.0};  // the default: large layers need few reps to rank
    case 4:
      return {3, 10, 200, 25.0, true, 0};
    default:
      return {5, 20, 1000, 100.0, true, 0};
  }
}

double time_call(const std::function<void()>& fn) {
  auto start = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

std::vector<std::optional<double>> measure_together(const std::vector<TacticCandidate>& candidates,
                                                    const std::vector<size_t>& which, const TimingPlan& plan,
                                                    const FailureHandler& on_failure) {
  struct Runs {
    size_t index;
    std::vector<double> ms;
    double total = 0;
    bool failed = false;
    bool dropped = false;  // too slow to win: timed no further
  };
  std::vector<Runs> runs;
  for (size_t index : which) runs.push_back({index, {}, 0, false});

  // Runs one candidate once; a throw drops it from the search.
  auto run = [&](Runs& r) -> std::optional<double> {
    try {
      return candidates[r.index].time_once();
    } catch (const std::exception& e) {
      r.failed = true;
      on_failure(r.index, e);
      return std::nullopt;
    }
  };
  const int min_runs = std::max(plan.min_runs, 1);
  const int max_runs = std::max({plan.max_runs, plan.min_runs, 1});
  auto done = [&](const Runs& r) {
    int n = static_cast<int>(r.ms.size());
    return r.failed || r.dropped || n >= max_runs || (n >= min_runs && r.total >= plan.min_total_ms);
  };
  auto drop_the_hopeless = [&] {
    std::optional<double> fastest;
    for (const Runs& r : runs)
      if (!r.failed && !r.ms.empty()) {
        double best = *std::min_element(r.ms.begin(), r.ms.end());
        if (!fastest || best < *fastest) fastest = best;
      }
    if (!fastest) return;
    for (Runs& r : runs)
      if (!r.failed && !r.ms.empty() &&
          *std::min_element(r.ms.begin(), r.ms.end()) > plan.drop_ratio * *fastest)
        r.dropped = true;
  };

  for (int i = 0; i < plan.warmup_runs; ++i)
    for (Runs& r : runs)
      if (!r.failed) run(r);
  // Round-robin, one run per unfinished candidate per round: a disturbance
  // (another process, a frequency change) then lands on every candidate
  // timed in that window, not on whichever one happened to be running, and
  // the medians below discount it for all of them alike.
  for (bool any = true; any;) {
    any = false;
    for (Runs& r : runs) {
      if (done(r)) continue;
      if (auto ms = run(r)) {
        r.ms.push_back(*ms);
        r.total += *ms;
        any = true;
      }
    }
    if (plan.drop_ratio > 0) drop_the_hopeless();
  }

  std::vector<std::optional<double>> medians;
  for (Runs& r : runs) {
    if (r.failed || r.ms.empty()) {
      medians.emplace_back();
      continue;
    }
    auto middle = r.ms.begin() + static_cast<std::ptrdiff_t>(r.ms.size() / 2);
    std::nth_element(r.ms.begin(), middle, r.ms.end());
    medians.emplace_back(*middle);
  }
  return medians;
}

std::string layer_key(std::string_view platform, int threads, std::string_view signature,
                      const std::vector<TacticCandidate>& candidates) {
  std::string key(platform);
  key += "|threads=" + std::to_string(threads) + "|";
  key += signature;
  key += "|cands=";
  for (size_t i = 0; i < candidates.size(); ++i) key += (i ? "," : "") + candidates[i].name;
  return key;
}

TacticChoice search_tactics(const std::string& layer_key, const std::vector<TacticCandidate>& candidates,
                            const CompileSettings& settings, TimingCache* cache, bool time_single) {
  if (candidates.empty())
    throw Error(ErrorCode::invalid_argument, "layer '" + layer_key + "': no tactic candidates");

  TimingPlan plan = timing_plan(settings.optimization_level);
  if (!plan.time_candidates || (candidates.size() == 1 && !time_single)) {
    if (settings.debug)
      log::debug("layer '" + layer_key + "': " + candidates.front().name + " (" +
                 (candidates.size() == 1 ? "only candidate" : "optimization level 0, untimed") + ")");
    return {0, candidates.front().name, {}, false};
  }

  std::optional<std::vector<TacticTiming>> cached;
  if (cache) cached = cache->find(layer_key);

  std::vector<std::optional<double>> times(candidates.size());
  std::vector<size_t> to_measure;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const TacticTiming* hit = cached ? find_timing(*cached, candidates[i].name) : nullptr;
    if (hit) {
      times[i] = hit->time_ms;
    } else {
      to_measure.push_back(i);
    }
  }

  std::exception_ptr first_failure;
  auto on_failure = [&](size_t index, const std::exception& e) {
    // A tactic that cannot run on this input (an unsupported layout, an
    // allocation failure) is just not a candidate.
    if (!first_failure) first_failure = std::current_exception();
    if (settings.debug)
      log::debug("layer '" + layer_key + "': " + candidates[index].name + " failed: " + e.what());
  };
  std::vector<std::optional<double>> measured = measure_together(candidates, to_measure, plan, on_failure);
  bool measured_any = false;
  for (size_t k = 0; k < to_measure.size(); ++k) {
    times[to_measure[k]] = measured[k];
    measured_any = measured_any || measured[k].has_value();
  }

  std::vector<TacticTiming> timings;  // in candidate order, failures left out
  for (size_t i = 0; i < candidates.size(); ++i)
    if (times[i]) timings.push_back({candidates[i].name, *times[i]});

  std::optional<size_t> best;
  for (size_t i = 0; i < candidates.size(); ++i)
    if (times[i] && (!best || *times[i] < *times[*best])) best = i;
  if (!best) std::rethrow_exception(first_failure);

  if (cache && measured_any) {
    // Keeps cached timings of tactics this build did not offer, so a cache
    // shared by builds with different candidate sets loses nothing.
    std::vector<TacticTiming> merged = timings;
    if (cached)
      for (const auto& old : *cached)
        if (!find_timing(merged, old.tactic)) merged.push_back(old);
    cache->insert(layer_key, std::move(merged));
  }

  if (settings.debug) {
    std::string line = "layer '" + layer_key + "'" + (measured_any ? "" : " (timing cache)") + ":";
    for (size_t i = 0; i < candidates.size(); ++i)
      line += " " + candidates[i].name + "=" + (times[i] ? format_ms(*times[i]) : "failed");
    line += " -> " + candidates[*best].name;
    log::debug(line);
  }
  return {*best, candidates[*best].name, std::move(timings), !measured_any};
}

}  // namespace kiln::builder
