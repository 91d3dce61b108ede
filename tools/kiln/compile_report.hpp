// Rendering of a runtime::CompileReport for the CLI: as JSON (the `compile`
// object of --json output) and as a few human-readable lines.
#pragma once

#include <nlohmann/json.hpp>
#include <ostream>

#include "runtime/compiled_model.hpp"

namespace kiln::cli {

nlohmann::json compile_report_json(const runtime::CompileReport& report, bool with_layers);
void print_compile_report(std::ostream& out, const runtime::CompileReport& report, bool with_layers);

}  // namespace kiln::cli
