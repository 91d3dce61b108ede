// EngineKey: the weight-agnostic identity of an engine.
//
// SHA-256 over a canonical serialization of everything that changes the
// computed function or the built engine, and nothing else (DESIGN.md, "The
// key"). Each part is hashed on its own so a miss can be explained by naming
// the part that differs from the nearest cached entry:
//
//   graph        nodes in topological order: op type, domain, opset, attributes
//                sorted by name with typed values, operands as (producer,
//                slot) / graph input index / weight index; the dtype and shape
//                of each refittable weight (never its values); structural
//                constants by value; the graph outputs
//   inputs       per graph input: dtype and min/opt/max
//   settings     the settings that change the engine (precisions,
//                optimization level, refittable); never cache location, size
//                or debug
//   fingerprint  backend name, plan version, library versions, ISA
//
// Every field is written with a type tag and a length, in the manner of
// ccache's hash_delimiter, so that no two different inputs serialize alike.
// Names (nodes, values, initializers), doc strings and producer metadata are
// never read.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>

#include "backends/backend.hpp"
#include "ir/graph.hpp"
#include "kiln/settings.hpp"

namespace kiln::key {

using Digest = std::array<uint8_t, 32>;

std::string to_hex(const Digest& digest);

struct KeyParts {
  Digest graph{};
  Digest inputs{};
  Digest settings{};
  Digest fingerprint{};
  bool operator==(const KeyParts&) const = default;
};

struct EngineKey {
  Digest digest{};  // SHA-256 over the four part digests
  KeyParts parts;

  std::string hex() const { return to_hex(digest); }
  bool operator==(const EngineKey&) const = default;
};

// `graph` is the lowered graph an engine is built for (refittable weights
// identified by passes::is_refittable); `specs` has one entry per graph input.
EngineKey compute_engine_key(const ir::Graph& graph, std::span<const InputSpec> specs,
                             const CompileSettings& settings, const Fingerprint& fingerprint);

// The names of the parts that differ ("graph", "inputs", "settings",
// "fingerprint"), comma separated; empty when all are equal.
std::string differing_parts(const KeyParts& a, const KeyParts& b);

// The canonical text that the graph part hashes, for `kiln cache explain
// --dump` and for debugging a surprising miss.
std::string canonical_graph_text(const ir::Graph& graph);

}  // namespace kiln::key
