// The kiln CLI's subcommands. Each one registers its options on the app and
// runs through a function that returns a JSON report, so the same code serves
// the human output and `--json`.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <nlohmann/json.hpp>

#include <ostream>
#include "kiln/error.hpp"

namespace kiln::cli {

// Set by each subcommand's callback; main() runs it inside the error handler.
using Action = std::function<int()>;

void add_run_command(CLI::App& app, Action& action);
void add_build_command(CLI::App& app, Action& action);
void add_cache_command(CLI::App& app, Action& action);
void add_zoo_command(CLI::App& app, Action& action);
void add_inspect_command(CLI::App& app, Action& action);
void add_bench_command(CLI::App& app, Action& action);

// Shared by every subcommand: --json prints a single JSON object.
struct OutputMode {
  bool json = false;
};
void print_json(const nlohmann::json& report);

}  // namespace kiln::cli
