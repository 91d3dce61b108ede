// Parsing of the CLI's shared argument forms: NAME=VALUE pairs, shapes like
// 1x3x224x224, sizes like 5G, and the compile options that `kiln build` and
// `kiln run` share. Every parse error is a kiln::Error(invalid_argument)
// quoting the flag and the text.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ir/graph.hpp"
#include "kiln/settings.hpp"

namespace kiln::cli {

std::pair<std::string, std::string> split_assignment(const std::string& text, const char* flag);
std::vector<int64_t> parse_shape(const std::string& text, const char* flag);
// "1024", "500K", "64M", "5G" (powers of 1024).
uint64_t parse_size(const std::string& text, const char* flag);
// The graph input named `name`, or an error listing the inputs.
ir::ValueId find_input(const ir::Graph& graph, const std::string& name, const char* flag);
// NAME=SHAPE flags into a map, checking each NAME is a graph input.
std::map<std::string, std::vector<int64_t>> parse_shape_flags(const ir::Graph& graph,
                                                              const std::vector<std::string>& flags,
                                                              const char* flag);

struct CompileOptions {
  std::vector<std::string> shapes;  // NAME=SHAPE: a fixed shape
  std::vector<std::string> min, opt, max;
  std::string precision = "fp32";
  int optimization_level = 3;
  std::optional<std::string> cache_dir;  // given and empty is an error, never the default folder
  std::string cache_size;
  std::string cache;              // one cache: disk, ram[:SIZE], redis://..., unix://...
  std::string cache_tiers;        // ram,disk,redis://... fastest first
  std::string cache_secret_file;  // signs entries (never the secret itself on the command line)
  bool no_cache = false;          // neither save nor reuse engines
  bool no_reuse = false;          // build, save, but never reuse
  std::string timing_cache;
  int threads = 0;
  bool debug = false;
  // --cpu-fused-attention; KILN_CPU_FUSED_ATTENTION=1 in the environment
  // turns it on for scripts that set it, before the flag existed.
  bool cpu_fused_attention = false;
  std::string backend = "cpu";  // an engine backend: cpu or cuda
};

void add_compile_options(CLI::App* command, CompileOptions& options);
// --backend for commands that build engines: cpu, or cuda in a build with it.
std::string engine_backend_help();
CompileSettings to_settings(const CompileOptions& options);

// One spec per graph input. A dim comes from --min/--opt/--max when given
// (a missing bound defaults to --opt, and --opt to the fixed shape), else
// from --shape or `known_shapes` (the shapes of inputs already in hand), else
// from the model's static dims; a symbolic dim with nothing given is 1.
std::vector<InputSpec> to_specs(const ir::Graph& graph, const CompileOptions& options,
                                const std::map<std::string, std::vector<int64_t>>& known_shapes);

}  // namespace kiln::cli
