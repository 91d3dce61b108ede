// Reading and writing the backend-independent part of an engine plan: the
// lowered graph and the input specs (plan_graph.fbs), and the frame every
// plan is stored in (a FlatBuffer followed by an 8-byte FNV-1a checksum).
//
// Readers check every index, size and dtype, so a truncated, corrupted or
// foreign plan is a kiln::Error(invalid_model) that names the plan kind
// ("cpu plan: ..."), never a crash.
//
// Stateless; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#include "plan_graph_generated.h"
#pragma GCC diagnostic pop

#include "ir/graph.hpp"
#include "kiln/settings.hpp"

namespace kiln::plan {

// ---- writing ----
flatbuffers::Offset<fb::Graph> write_graph(flatbuffers::FlatBufferBuilder& b, const ir::Graph& graph);
flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<fb::Spec>>> write_specs(
    flatbuffers::FlatBufferBuilder& b, std::span<const InputSpec> specs);
// The finished buffer followed by its checksum.
std::vector<std::byte> seal(const flatbuffers::FlatBufferBuilder& b);

// ---- reading ----
// `what` names the plan kind in errors: "cpu plan".
[[noreturn]] void corrupt(std::string_view what, std::string_view why);
// Checks the checksum and returns an aligned copy of the FlatBuffer (the
// verifier checks alignment; callers' spans need not be aligned).
std::vector<uint8_t> unseal(std::span<const std::byte> bytes, std::string_view what);
ir::Graph read_graph(const fb::Graph* graph, std::string_view what);
// One spec per graph input, each with min <= opt <= max.
std::vector<InputSpec> read_specs(const flatbuffers::Vector<flatbuffers::Offset<fb::Spec>>* specs,
                                  size_t graph_inputs, std::string_view what);
std::vector<int64_t> read_ints(const flatbuffers::Vector<int64_t>* v);
std::string read_string(const flatbuffers::String* s);

}  // namespace kiln::plan
