// Hit time through each cache tier (RAM, disk, Redis) against a cold
// compile, in one process, for one model. bench/fleet/run builds and drives
// it; it prints one JSON object.
//
//   fleet_bench MODEL.onnx REDIS_URI CACHE_DIR REPEATS NAME=SHAPE...
//
// The cold compile saves into all three tiers (--no-reuse semantics); each
// hit then compiles with one tier alone, so the tier is the only source.
// "fetch_ms" is the tier's load() alone (bytes in hand, nothing parsed);
// "hit_ms" is the whole compile: import, lower, key, fetch, envelope,
// deserialize, refit.
#include <algorithm>
#include <chrono>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "cache/open.hpp"
#include "kiln/compile.hpp"
#include "kiln/engine_cache.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

std::vector<int64_t> parse_shape(const std::string& text) {
  std::vector<int64_t> dims;
  std::stringstream ss(text);
  std::string d;
  while (std::getline(ss, d, 'x')) dims.push_back(std::stoll(d));
  return dims;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) {
    std::cerr << "usage: fleet_bench MODEL.onnx REDIS_URI CACHE_DIR REPEATS NAME=SHAPE...\n";
    return 1;
  }
  std::string model = argv[1];
  std::string redis = argv[2];
  std::string cache_dir = argv[3];
  int repeats = std::stoi(argv[4]);
  std::vector<kiln::InputSpec> specs;
  for (int i = 5; i < argc; ++i) {
    std::string a = argv[i];
    auto eq = a.find('=');
    specs.push_back(
        kiln::InputSpec::fixed(a.substr(0, eq), kiln::DType::float32, parse_shape(a.substr(eq + 1))));
  }
  // Integer inputs (BERT's ids and mask) are int64.
  for (auto& s : specs) {
    if (s.name == "input_ids" || s.name == "attention_mask" || s.name == "token_type_ids")
      s.dtype = kiln::DType::int64;
  }

  kiln::CompileSettings base;
  base.engine_cache_dir = cache_dir;
  base.timing_cache_path = "-";
  const std::string ram = "ram:4G";

  kiln::CompileSettings cold = base;
  cold.engine_cache_tiers = {ram, "disk", redis};
  cold.reuse_cached_engines = false;
  auto start = Clock::now();
  auto built = kiln::compile(model, specs, cold);
  double cold_ms = ms_since(start);
  // A partitioned model has several engines: sum over them.
  std::vector<std::string> keys;
  double build_ms = 0;
  for (const auto& e : built.engines()) {
    keys.push_back(e.key);
    build_ms += e.build_ms;
  }

  std::ostringstream json;
  json << "{\"model\": \"" << model << "\", \"cold_compile_ms\": " << cold_ms
       << ", \"build_ms\": " << build_ms << ", \"engines\": " << keys.size() << ", \"tiers\": {";
  bool first = true;
  for (const std::string& tier : {ram, std::string("disk"), redis}) {
    kiln::CompileSettings s = base;
    s.engine_cache_tiers = {tier};
    auto cache = kiln::cache::open(s);
    std::vector<double> fetch, hit, load, refit;
    size_t blob_bytes = 0;
    std::string status;
    for (int r = 0; r < repeats; ++r) {
      start = Clock::now();
      blob_bytes = 0;
      for (const auto& key : keys) {
        auto blob = cache->load(key);
        blob_bytes += blob ? blob->size() : 0;
      }
      fetch.push_back(ms_since(start));
      start = Clock::now();
      auto compiled = kiln::compile(model, specs, s);
      hit.push_back(ms_since(start));
      int hits = 0;
      double load_ms = 0, refit_ms = 0;
      for (const auto& e : compiled.engines()) {
        hits += e.status == "hit";
        load_ms += e.load_ms;
        refit_ms += e.refit_ms;
      }
      status = std::to_string(hits) + "/" + std::to_string(compiled.engines().size()) + " hit";
      load.push_back(load_ms);
      refit.push_back(refit_ms);
    }
    json << (first ? "" : ", ") << "\""
         << (tier == ram      ? "ram"
             : tier == "disk" ? "disk"
                              : "redis")
         << "\": {"
         << "\"status\": \"" << status << "\", \"blob_bytes\": " << blob_bytes
         << ", \"fetch_ms\": " << median(fetch) << ", \"load_ms\": " << median(load)
         << ", \"refit_ms\": " << median(refit) << ", \"hit_ms\": " << median(hit) << "}";
    first = false;
  }
  json << "}}";
  std::cout << json.str() << "\n";
  return 0;
}
