// A compile report's segments as JSON, shared by the CLI's --json and the C
// API's report (and so the Python package's).
//
// Stateless; thread-safe.
#pragma once

#include <nlohmann/json.hpp>

#include "runtime/compiled_model.hpp"

namespace kiln::runtime {

// One object per segment, in execution order: "kind" (engine or fallback),
// "nodes", "engine" (an index into the report's engines) or "reason", and
// "values_in", "bytes_in", "values_unsized" (what it reads from earlier
// segments at every run; SegmentRecord).
nlohmann::json segments_json(const CompileReport& report);

}  // namespace kiln::runtime
