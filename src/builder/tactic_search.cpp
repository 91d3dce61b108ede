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
    case 0: return {0, 0, 0, 0, false};
    case 1: return {1, 3, 10, 1.0, true};
    case 2: return {1, 3, 20, 2.0, true};
    case 3: return {1, 3, 20, 10.0, true};  // the default: large layers need few reps to rank
    case 4: return {3, 10, 200, 25.0, true};
    default: return {5, 20, 1000, 100.0, true};
  }
}

double time_call(const std::function<void()>& fn) {
  auto start = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

double measure(const std::function<double()>& time_once, const TimingPlan& plan) {
  for (int i = 0; i < plan.warmup_runs; ++i) time_once();
  std::vector<double> runs;
  double total = 0;
  int max_runs = std::max({plan.max_runs, plan.min_runs, 1});
  while (static_cast<int>(runs.size()) < max_runs &&
         (static_cast<int>(runs.size()) < std::max(plan.min_runs, 1) || total < plan.min_total_ms)) {
    double ms = time_once();
    runs.push_back(ms);
    total += ms;
  }
  // Median, not mean: one run disturbed by another process should not decide.
  auto middle = runs.begin() + static_cast<std::ptrdiff_t>(runs.size() / 2);
  std::nth_element(runs.begin(), middle, runs.end());
  return *middle;
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

TacticChoice search_tactics(const std::string& layer_key,
                            const std::vector<TacticCandidate>& candidates,
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

  std::vector<TacticTiming> timings;
  std::vector<std::optional<double>> times(candidates.size());
  std::exception_ptr first_failure;
  bool measured_any = false;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const auto& candidate = candidates[i];
    if (cached) {
      if (const auto* hit = find_timing(*cached, candidate.name)) {
        times[i] = hit->time_ms;
        timings.push_back(*hit);
        continue;
      }
    }
    try {
      double ms = measure(candidate.time_once, plan);
      times[i] = ms;
      timings.push_back({candidate.name, ms});
      measured_any = true;
    } catch (const std::exception& e) {
      // A tactic that cannot run on this input (an unsupported layout, an
      // allocation failure) is just not a candidate.
      if (!first_failure) first_failure = std::current_exception();
      if (settings.debug)
        log::debug("layer '" + layer_key + "': " + candidate.name + " failed: " + e.what());
    }
  }

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
