// The oneDNN CPU backend: builds, deserializes and refits CpuEngines.
//
// build() partitions the lowered graph into layers (oneDNN primitives with
// fused post-ops; reference kernels for ops oneDNN lacks, so whole models
// build as one engine), times tactics at the specs' opt shapes through the
// TimingCache, and plans activation memory. deserialize() recreates an engine
// from its plan without timing; the engine has no weights until refit().
//
// The fingerprint (part of the engine key) is kiln's CPU plan version, the
// oneDNN version and the ISA oneDNN dispatches to on this machine.
//
// Thread-safety: a CpuBackend may be shared; each engine is single-caller.
#pragma once

#include <memory>

#include "backends/backend.hpp"

namespace kiln {

std::unique_ptr<Backend> make_cpu_backend();

}  // namespace kiln
