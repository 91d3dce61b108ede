// The AOT artifact: one `.kiln` file that holds a compiled model, so another
// process (or machine) runs it without building anything.
//
//   artifact := magic "KILNAOT\0" (8) version (u32)
//               graph_len (u64) graph checksum (16)   XXH3-128 of the graph section
//               graph section:  manifest_len (u32) manifest (JSON) onnx_len (u64) onnx
//               engine_count (u32) { blob_len (u64) blob }*   each blob an envelope
//
// The graph section (manifest and the model's ONNX bytes, weights included)
// must verify, or nothing can be loaded. Each engine is a sealed envelope
// (format/envelope.hpp) that verifies on its own, so one bad engine costs
// one rebuild, not the artifact. The manifest names the producer, the
// backend fingerprint the engines were built for, the input specs and the
// settings that shape the engines.
//
// Loading checks compatibility first (the manifest's fingerprint against
// this machine's backend: plan version, oneDNN version, ISA). A compatible
// artifact compiles the embedded model with its engines as the first cache
// tier: every engine is a hit (deserialize and refit, no build). An
// incompatible artifact, or an engine that does not verify, falls back to
// compiling from the embedded graph through the configured engine cache,
// with a warning.
#pragma once

#include <cstddef>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "kiln/settings.hpp"
#include "runtime/compiled_model.hpp"

namespace kiln::runtime {

struct ArtifactManifest {
  std::string producer;
  std::string fingerprint;  // Fingerprint::to_string() of the engines' backend
  std::vector<InputSpec> specs;
  std::set<Precision> enabled_precisions;
  int optimization_level = 3;
  int min_block_size = 1;
  bool cpu_fused_attention = false;  // absent in artifacts written before the setting: off
};

struct Artifact {
  ArtifactManifest manifest;
  std::vector<std::byte> onnx;
  std::vector<std::vector<std::byte>> engines;  // sealed envelopes
};

// Throws kiln::Error(invalid_argument) when a field cannot be encoded.
std::vector<std::byte> encode_artifact(const Artifact& artifact);

// Throws kiln::Error(invalid_model) naming `source` when the file is not an
// artifact, is of another version, is truncated or its graph section does
// not verify. Engine blobs are returned as they are (verified on use).
Artifact decode_artifact(std::span<const std::byte> bytes, const std::string& source);

// True when the file starts with the artifact magic.
bool is_artifact_file(const std::filesystem::path& path);

}  // namespace kiln::runtime
