#include "arguments.hpp"

#include <cstdlib>
#include <sstream>
#include <string_view>

#include "backends/registry/backend_registry.hpp"
#include "cache/open.hpp"
#include "util/byte_size.hpp"
#include "util/log.hpp"

namespace kiln::cli {

std::pair<std::string, std::string> split_assignment(const std::string& text, const char* flag) {
  auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == text.size()) {
    throw Error(ErrorCode::invalid_argument, std::string(flag) + " expects NAME=VALUE, got '" + text + "'");
  }
  return {text.substr(0, eq), text.substr(eq + 1)};
}

std::vector<int64_t> parse_shape(const std::string& text, const char* flag) {
  auto bad = [&] {
    return Error(ErrorCode::invalid_argument,
                 std::string(flag) + ": '" + text + "' is not a shape like 1x3x224x224");
  };
  if (text.empty() || text.back() == 'x') throw bad();
  std::vector<int64_t> dims;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, 'x')) {
    size_t used = 0;
    int64_t d = -1;
    try {
      d = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || d < 0) throw bad();
    dims.push_back(d);
  }
  return dims;
}

uint64_t parse_size(const std::string& text, const char* flag) {
  auto size = parse_byte_size(text);
  if (!size.ok()) throw Error(ErrorCode::invalid_argument, std::string(flag) + ": " + size.error);
  return size.bytes;
}

ir::ValueId find_input(const ir::Graph& graph, const std::string& name, const char* flag) {
  std::string names;
  for (ir::ValueId id : graph.inputs()) {
    if (graph.value(id).name == name) return id;
    names += (names.empty() ? "" : ", ") + graph.value(id).name;
  }
  throw Error(ErrorCode::invalid_argument, std::string(flag) + ": the model has no input '" + name +
                                               "' (inputs: " + (names.empty() ? "none" : names) + ")");
}

std::map<std::string, std::vector<int64_t>> parse_shape_flags(const ir::Graph& graph,
                                                              const std::vector<std::string>& flags,
                                                              const char* flag) {
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& f : flags) {
    auto [name, text] = split_assignment(f, flag);
    find_input(graph, name, flag);
    shapes[name] = parse_shape(text, flag);
  }
  return shapes;
}

void add_compile_options(CLI::App* cmd, CompileOptions& o) {
  cmd->add_option("--min", o.min, "NAME=SHAPE: smallest shape the engine must run");
  cmd->add_option("--opt", o.opt, "NAME=SHAPE: shape the tactics are timed at");
  cmd->add_option("--max", o.max, "NAME=SHAPE: largest shape the engine must run");
  cmd->add_option("--precision", o.precision,
                  "Kernel precisions allowed: fp32, fp32,bf16 or fp32,fp16 (fp16: cuda only)")
      ->capture_default_str();
  cmd->add_option("--optimization-level", o.optimization_level, "0 (no timing) to 5 (exhaustive)")
      ->capture_default_str();
  cmd->add_option("--cache-dir", o.cache_dir, "Engine cache folder (default: <tmp>/kiln_engine_cache)");
  cmd->add_option("--cache-size", o.cache_size, "Engine cache cap, e.g. 500M or 5G (default 5G)");
  cmd->add_option("--cache", o.cache,
                  "One engine cache: disk, ram[:SIZE], redis://host:port/db?..., unix:///sock");
  cmd->add_option("--cache-tiers", o.cache_tiers,
                  "Cache tiers, fastest first, e.g. ram,disk,redis://host:6379/0");
  cmd->add_option("--cache-secret-file", o.cache_secret_file,
                  "File with the secret that signs cache entries");
  cmd->add_flag("--no-cache", o.no_cache, "Neither save built engines nor reuse cached ones");
  cmd->add_flag("--no-reuse", o.no_reuse, "Build and save, but do not reuse cached engines");
  cmd->add_option("--timing-cache", o.timing_cache, "Timing cache file ('-' for none)");
  cmd->add_option("--threads", o.threads, "Threads for the engine (0: all cores)")->capture_default_str();
  cmd->add_flag("--debug", o.debug, "Log each layer's tactic candidates and timings");
  cmd->add_flag("--cpu-fused-attention", o.cpu_fused_attention,
                "cpu backend: run each matched attention as one fused layer (off: measured slower; "
                "default on when KILN_CPU_FUSED_ATTENTION=1)");
}

std::string engine_backend_help() {
  std::string names;
  for (const std::string& b : backend_names()) names += (names.empty() ? "" : ", ") + b;
  return "Engine backend: " + names + " (cpu: oneDNN; cuda: cuDNN and cuBLASLt on the GPU)";
}

CompileSettings to_settings(const CompileOptions& o) {
  CompileSettings s;
  s.backend = o.backend;
  s.enabled_precisions.clear();
  std::stringstream ss(o.precision);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item == "fp32")
      s.enabled_precisions.insert(Precision::fp32);
    else if (item == "bf16")
      s.enabled_precisions.insert(Precision::bf16);
    else if (item == "fp16")
      s.enabled_precisions.insert(Precision::fp16);
    else
      throw Error(ErrorCode::invalid_argument,
                  "--precision: unknown precision '" + item + "' (fp32, fp16, bf16)");
  }
  if (!s.enabled_precisions.count(Precision::fp32)) {
    throw Error(ErrorCode::invalid_argument,
                "--precision must include fp32 (layers without half kernels use it)");
  }
  if (o.optimization_level < 0 || o.optimization_level > 5) {
    throw Error(ErrorCode::invalid_argument, "--optimization-level must be 0 to 5");
  }
  s.optimization_level = o.optimization_level;
  if (o.cache_dir) {
    if (o.cache_dir->empty())
      throw Error(ErrorCode::invalid_argument,
                  "--cache-dir is empty; name a folder, or leave it out for the default");
    s.engine_cache_dir = *o.cache_dir;
  }
  if (!o.cache_size.empty()) s.engine_cache_size = parse_size(o.cache_size, "--cache-size");
  if (!o.cache.empty() && !o.cache_tiers.empty()) {
    throw Error(ErrorCode::invalid_argument, "give --cache or --cache-tiers, not both");
  }
  if (!o.cache.empty()) s.engine_cache_tiers = {o.cache};
  if (!o.cache_tiers.empty()) s.engine_cache_tiers = cache::split_tier_list(o.cache_tiers);
  if (!o.cache_secret_file.empty()) s.engine_cache_secret_file = o.cache_secret_file;
  s.cache_built_engines = !o.no_cache;
  s.reuse_cached_engines = !o.no_cache && !o.no_reuse;
  if (!o.timing_cache.empty()) s.timing_cache_path = o.timing_cache;
  if (o.threads < 0) throw Error(ErrorCode::invalid_argument, "--threads must be 0 or more");
  s.num_threads = o.threads;
  s.debug = o.debug;
  const char* fused = std::getenv("KILN_CPU_FUSED_ATTENTION");
  s.cpu_fused_attention = o.cpu_fused_attention || (fused && std::string_view(fused) == "1");
  // The per-layer candidate timings are info-level lines; the CLI is quiet
  // (warnings only) unless asked.
  if (o.debug) log::set_level(log::Level::info);
  return s;
}

std::vector<InputSpec> to_specs(const ir::Graph& graph, const CompileOptions& o,
                                const std::map<std::string, std::vector<int64_t>>& known_shapes) {
  auto fixed = parse_shape_flags(graph, o.shapes, "--shape");
  for (const auto& [name, shape] : known_shapes) fixed.emplace(name, shape);
  auto mins = parse_shape_flags(graph, o.min, "--min");
  auto opts = parse_shape_flags(graph, o.opt, "--opt");
  auto maxs = parse_shape_flags(graph, o.max, "--max");

  std::vector<InputSpec> specs;
  for (ir::ValueId id : graph.inputs()) {
    const ir::Value& v = graph.value(id);
    InputSpec spec;
    spec.name = v.name;
    spec.dtype = v.type.dtype;
    std::vector<int64_t> base;
    if (auto it = opts.find(v.name); it != opts.end()) {
      base = it->second;
    } else if (auto f = fixed.find(v.name); f != fixed.end()) {
      base = f->second;
    } else if (v.type.shape) {
      for (const ir::Dim& d : *v.type.shape) base.push_back(d.is_static() ? d.value() : 1);
    } else {
      throw Error(ErrorCode::invalid_argument,
                  "input '" + v.name + "' has no declared shape: pass --shape or --opt " + v.name + "=...");
    }
    spec.opt = base;
    spec.min = mins.count(v.name) ? mins[v.name] : base;
    spec.max = maxs.count(v.name) ? maxs[v.name] : base;
    if (spec.min.size() != base.size() || spec.max.size() != base.size()) {
      throw Error(ErrorCode::invalid_argument,
                  "input '" + v.name + "': --min, --opt and --max need the same rank");
    }
    for (size_t d = 0; d < base.size(); ++d) {
      if (spec.min[d] > spec.opt[d] || spec.opt[d] > spec.max[d]) {
        throw Error(ErrorCode::invalid_argument,
                    "input '" + v.name + "' dim " + std::to_string(d) + ": need min <= opt <= max, got " +
                        std::to_string(spec.min[d]) + " / " + std::to_string(spec.opt[d]) + " / " +
                        std::to_string(spec.max[d]));
      }
      if (v.type.shape && d < v.type.shape->size() && (*v.type.shape)[d].is_static() &&
          (spec.min[d] != (*v.type.shape)[d].value() || spec.max[d] != (*v.type.shape)[d].value())) {
        throw Error(ErrorCode::invalid_argument,
                    "input '" + v.name + "' dim " + std::to_string(d) + " is fixed at " +
                        std::to_string((*v.type.shape)[d].value()) + " by the model");
      }
    }
    specs.push_back(std::move(spec));
  }
  return specs;
}

}  // namespace kiln::cli
