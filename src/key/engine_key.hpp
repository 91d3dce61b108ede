// EngineKey: the weight-agnostic identity of an engine.
//
// SHA-256 over a canonical serialization of everything that changes the
// computed function or the built engine, and nothing else (DESIGN.md, "The
// key"). Each part is hashed on its own so a miss can be explained by naming
// the part that differs from the nearest cached entry:
//
//   graph        nodes in topological order: op type, domain, opset, attributes
//                sorted by name with typed values, operands as (producer,
//                slot) / graph input index / weight index; declared input
//                dtypes and dims (symbols numbered, not named); the dtype,
//                shape and recipe of each weight (never its values);
//                structural constants by value; the graph outputs
//   inputs       per graph input: dtype and min/opt/max
//   settings     the settings that change the engine (precisions,
//                optimization level, refittable, min_block_size)
//   fingerprint  backend name, plan version, library versions, ISA
//
// Every field is written with a type tag and a length, in the manner of
// ccache's hash_delimiter, so that no two different inputs serialize alike.
// Names (nodes, values, initializers, dimension symbols), doc strings and
// producer metadata are never read.
//
// Weights vs constants: in a lowered graph an initializer that carries a
// WeightRecipe is a weight (the engine gets its values by refit, so only its
// dtype, shape and recipe are hashed); every other initializer or known value
// is baked into the plan and hashed by value. This is the same test the
// lowering passes and the CPU backend use, so nothing the engine bakes in can
// be left out of the key. On a graph that was not lowered nothing has a
// recipe: every weight is then hashed by value (correct, never shared).
//
// Deliberately not in the key: num_threads (a thread count changes which
// tactic times fastest, never the function an engine computes), cache
// location/size/custom cache, timing_cache_path, debug, and the
// cache_built_engines/reuse_cached_engines switches.
//
// All functions are pure and thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "backends/backend.hpp"
#include "ir/graph.hpp"
#include "key/key_hasher.hpp"
#include "kiln/settings.hpp"

namespace kiln::key {

// Bumped whenever the serialization changes, so old entries miss cleanly.
constexpr uint64_t k_key_scheme_version = 1;

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

// `graph` is the lowered graph an engine is built for (passes::lower);
// `specs` has one entry per graph input, in order. Throws
// kiln::Error(invalid_argument) when the counts differ, and
// kiln::Error(invalid_model) for a graph with a cycle.
EngineKey compute_engine_key(const ir::Graph& graph, std::span<const InputSpec> specs,
                             const CompileSettings& settings, const Fingerprint& fingerprint);

// The names of the parts that differ ("graph", "inputs", "settings",
// "fingerprint"), comma separated; empty when all are equal.
std::string differing_parts(const KeyParts& a, const KeyParts& b);

// The canonical text that the graph part hashes, for `kiln cache explain
// --dump` and for debugging a surprising miss.
std::string canonical_graph_text(const ir::Graph& graph);

}  // namespace kiln::key
