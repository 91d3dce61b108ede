// `kiln cache explain`: what a compile would find in the disk cache, and why
// it would miss (cache/miss_explainer.hpp explains the miss from the entries
// of every tier the settings name).
#pragma once

#include <string>

#include <span>

#include "key/engine_key.hpp"
#include "kiln/settings.hpp"
#include "runtime/compiled_model.hpp"

namespace kiln::runtime {

// What a compile of `graph` with these specs and settings would find in the
// disk cache, without building anything (`kiln cache explain`).
struct Explanation {
  std::string key;
  key::KeyParts parts;
  bool would_hit = false;
  std::string detail;  // "entry present and valid" or why it would miss
};
Explanation explain_compile(const ir::Graph& graph, std::span<const InputSpec> specs,
                            const CompileSettings& settings);

}  // namespace kiln::runtime
