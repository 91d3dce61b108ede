// The ONNX op versions that came after the ONNX library kiln builds against.
//
// Debian's libonnx (1.12) knows the default domain up to opset 17 and IR
// version 8; its schemas and checker cover everything up to there. This table
// lists every op version that opsets 18 to 21 introduced (from ONNX's
// changelog), with what a node needs to be well formed (input and output
// counts, attribute names) and whether kiln computes that version.
//
// Both the importer (to validate what the old checker cannot) and the
// backends (to refuse a version kiln does not compute, rather than run it
// with an older version's semantics) read it, so they cannot disagree.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ir/graph.hpp"

namespace kiln::ir {

// The newest default-domain ("" / "ai.onnx") opset kiln knows.
inline constexpr int64_t k_newest_onnx_opset = 21;
// The newest default-domain opset that Debian's ONNX library knows.
inline constexpr int64_t k_checker_onnx_opset = 17;

enum class Computes {
  yes,  // kiln's shape function and reference kernel implement this version
  no,   // kiln knows the op but not this version: refused, naming op and opset
};

struct OpVersion {
  std::string_view op_type;
  int64_t since;  // the opset that introduced this version
  Computes computes;
  // Types only: the version widened its type lists and nothing else, so it
  // is well formed exactly when the version before it is (and the fields
  // below are unused).
  bool types_only;
  int min_inputs;
  int max_inputs;  // k_variadic: no upper bound
  int min_outputs;
  int max_outputs;              // k_variadic: no upper bound
  std::string_view attributes;  // allowed attribute names, comma separated
};
inline constexpr int k_variadic = 1 << 20;

// The version of `op_type` that a default-domain node at `opset` uses, when
// it was introduced in opsets 18 .. min(opset, 21); null when the op did not
// change after opset 17 (the ONNX library's schema at 17 is then the one).
const OpVersion* newer_op_version(std::string_view op_type, int64_t opset);

// For a types-only version: the version before it (from this table), or null
// when that is the ONNX library's opset-17 schema.
const OpVersion* previous_op_version(const OpVersion& version);

// Why kiln cannot compute `node` at its opset (an opset newer than kiln
// knows, or an op version kiln does not implement); nullopt when it can, or
// when the op is one kiln does not know at all (reported as such elsewhere).
std::optional<std::string> op_version_problem(const Node& node);

}  // namespace kiln::ir
