// Validation of ONNX models newer than the ONNX library kiln builds against.
//
// Debian's libonnx 1.12 knows IR version 8 and the default-domain opsets up
// to 17; its checker rejects a newer model outright, or misreads an opset-18
// node against the opset-17 schema ("Bad node spec" for ReduceMean with axes
// as an input). kiln runs that checker on the models it can validate and, for
// the others, checks the same well-formedness itself: names defined before
// use and once only, domains imported, and every node against its op
// version's schema (the library's where the op has not changed since opset
// 17, else ir::newer_op_version's input/output counts and attributes).
//
// Version limits apply to every model: an IR version or default-domain
// opset newer than kiln knows is refused, never read with older semantics.
#pragma once

#include <onnx/onnx_pb.h>

#include <string>

namespace kiln::frontend {

// The newest IR version kiln imports (ONNX 1.16 to 1.17).
inline constexpr int64_t k_newest_ir_version = 10;

// Throws kiln::Error (unsupported) for an IR version or opset newer than
// kiln knows, and (invalid_model) for a missing ir_version or opset_import
// or a domain imported twice. `source` names the file in messages.
void check_versions(const onnx::ModelProto& model, const std::string& source);

// Whether the ONNX library's checker knows every version the model uses.
bool checker_knows(const onnx::ModelProto& model);

// REQUIRES: check_versions passed. Throws kiln::Error (invalid_model) naming
// the node and op for what the checker would reject.
void validate_newer_model(const onnx::ModelProto& model, const std::string& source);

// Fields that IR 9 and 10 added to NodeProto arrive as unknown fields here.
// Throws kiln::Error (unsupported) for a node that names a model-local
// function overload (IR 10), which kiln cannot represent; metadata is
// ignored.
void check_node_fields(const onnx::NodeProto& node, const std::string& where);

}  // namespace kiln::frontend
