#include "frontend/onnx/model_validator.hpp"

#include <onnx/checker.h>
#include <onnx/defs/schema.h>

#include <algorithm>
#include <set>
#include <unordered_set>

#include "ir/op_versions.hpp"
#include "kiln/error.hpp"

namespace kiln::frontend {

namespace {

bool is_default_domain(const std::string& domain) { return domain.empty() || domain == "ai.onnx"; }

// The newest opset of each domain that the ONNX library's schemas know.
int library_opset(const std::string& domain) {
  const auto& ranges = onnx::OpSchemaRegistry::DomainToVersionRange::Instance().Map();
  auto it = ranges.find(is_default_domain(domain) ? std::string() : domain);
  return it == ranges.end() ? -1 : it->second.second;
}

std::string describe(const onnx::NodeProto& node, int index) {
  std::string name = node.name().empty() ? node.op_type() + "_" + std::to_string(index) : node.name();
  return "node '" + name + "' (" + node.op_type() + ")";
}

[[noreturn]] void invalid(const std::string& message) { throw Error(ErrorCode::invalid_model, message); }

// "2", "2 or more", "1 to 3": how many of something a version takes.
std::string count_range(int min, int max) {
  if (max == min) return std::to_string(min);
  if (max == ir::k_variadic) return std::to_string(min) + " or more";
  return std::to_string(min) + " to " + std::to_string(max);
}

// A node against a version from ir::newer_op_version.
void check_against(const ir::OpVersion& version, const onnx::NodeProto& node, const std::string& where) {
  const std::string what = node.op_type() + "-" + std::to_string(version.since);
  const int inputs = node.input_size();
  if (inputs < version.min_inputs || inputs > version.max_inputs) {
    invalid(where + ": " + what + " takes " + count_range(version.min_inputs, version.max_inputs) +
            " inputs, got " + std::to_string(inputs));
  }
  for (int i = 0; i < version.min_inputs; ++i) {
    if (node.input(i).empty()) invalid(where + ": required input " + std::to_string(i) + " is missing");
  }
  const int outputs = node.output_size();
  if (outputs < version.min_outputs || outputs > version.max_outputs) {
    invalid(where + ": " + what + " has " + count_range(version.min_outputs, version.max_outputs) +
            " outputs, got " + std::to_string(outputs));
  }
  std::set<std::string> seen;
  for (const auto& a : node.attribute()) {
    if (!seen.insert(a.name()).second) invalid(where + ": attribute '" + a.name() + "' is given twice");
    bool known = false;
    std::string_view list = version.attributes;
    while (!list.empty() && !known) {
      size_t comma = list.find(',');
      known = list.substr(0, comma) == a.name();
      list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
    }
    if (!known) invalid(where + ": " + what + " has no attribute '" + a.name() + "'");
  }
}

// A default-domain node at `opset`, which may be newer than the library knows.
void check_default_domain_node(const onnx::NodeProto& node, int64_t opset, const std::string& where) {
  const ir::OpVersion* version = ir::newer_op_version(node.op_type(), opset);
  // A types-only version is well formed exactly when the one before it is.
  while (version && version->types_only) version = ir::previous_op_version(*version);
  if (version) {
    check_against(*version, node, where);
    return;
  }
  const int known = static_cast<int>(std::min<int64_t>(opset, ir::k_checker_onnx_opset));
  const onnx::OpSchema* schema = onnx::OpSchemaRegistry::Schema(node.op_type(), known, "");
  if (!schema || schema->Deprecated()) {
    invalid(where + ": there is no op " + node.op_type() + " in ONNX opset " + std::to_string(opset));
  }
  try {
    schema->Verify(node);
  } catch (const std::exception& e) {
    invalid(where + ": " + e.what());
  }
}

}  // namespace

void check_versions(const onnx::ModelProto& model, const std::string& source) {
  if (!model.has_ir_version()) invalid(source + ": the model has no ir_version");
  const int64_t ir = model.ir_version();
  if (ir > k_newest_ir_version) {
    throw Error(ErrorCode::unsupported, source + ": IR version " + std::to_string(ir) +
                                            " is newer than kiln supports (" +
                                            std::to_string(k_newest_ir_version) + ")");
  }
  if (ir < 1) invalid(source + ": IR version " + std::to_string(ir) + " is not valid");
  if (ir >= 3 && model.opset_import_size() == 0) invalid(source + ": the model has no opset_import");
  std::set<std::string> domains;
  for (const auto& op : model.opset_import()) {
    const std::string domain = is_default_domain(op.domain()) ? std::string() : op.domain();
    if (!domains.insert(domain).second) {
      invalid(source + ": opset_import lists domain '" + op.domain() + "' twice");
    }
    if (domain.empty() && op.version() > ir::k_newest_onnx_opset) {
      throw Error(ErrorCode::unsupported,
                  source + ": default-domain (ai.onnx) opset " + std::to_string(op.version()) +
                      " is newer than kiln supports (" + std::to_string(ir::k_newest_onnx_opset) + ")");
    }
    if (op.version() < 1) {
      invalid(source + ": opset " + std::to_string(op.version()) + " of domain '" + op.domain() +
              "' is not valid");
    }
  }
}

bool checker_knows(const onnx::ModelProto& model) {
  if (model.ir_version() > onnx::IR_VERSION) return false;
  for (const auto& op : model.opset_import()) {
    const int newest = library_opset(op.domain());
    // A domain the library has no schemas for is checked by name only.
    if (newest >= 0 && op.version() > newest) return false;
  }
  return true;
}

void validate_newer_model(const onnx::ModelProto& model, const std::string& source) {
  if (!model.has_graph()) invalid(source + ": model has no graph");
  std::unordered_map<std::string, int64_t> opsets;
  for (const auto& op : model.opset_import()) {
    opsets[is_default_domain(op.domain()) ? std::string() : op.domain()] = op.version();
  }
  const onnx::GraphProto& graph = model.graph();
  std::unordered_set<std::string> defined;
  for (const auto& init : graph.initializer()) {
    if (init.name().empty()) invalid(source + ": an initializer has no name");
    if (!defined.insert(init.name()).second)
      invalid(source + ": initializer '" + init.name() + "' is defined twice");
  }
  std::unordered_set<std::string> inputs;
  for (const auto& in : graph.input()) {
    if (in.name().empty()) invalid(source + ": a graph input has no name");
    if (!inputs.insert(in.name()).second)
      invalid(source + ": graph input '" + in.name() + "' is listed twice");
    defined.insert(in.name());
  }
  for (int n = 0; n < graph.node_size(); ++n) {
    const onnx::NodeProto& node = graph.node(n);
    const std::string where = source + ": " + describe(node, n);
    if (node.op_type().empty()) invalid(where + ": the node has no op_type");
    for (const auto& in : node.input()) {
      if (!in.empty() && !defined.count(in)) {
        invalid(where + ": input '" + in +
                "' is not produced by any earlier node, graph input or initializer (nodes must be in "
                "topological order)");
      }
    }
    for (const auto& out : node.output()) {
      if (!out.empty() && !defined.insert(out).second)
        invalid(where + ": output '" + out + "' is defined twice");
    }
    const std::string domain = is_default_domain(node.domain()) ? std::string() : node.domain();
    auto opset = opsets.find(domain);
    if (opset == opsets.end()) {
      invalid(where + ": domain '" + node.domain() + "' is not in the model's opset_import");
    }
    if (domain.empty()) {
      check_default_domain_node(node, opset->second, where);
    } else if (opset->second <= library_opset(domain)) {
      // ai.onnx.ml and the other domains the library knows, at a version it knows.
      const onnx::OpSchema* schema =
          onnx::OpSchemaRegistry::Schema(node.op_type(), static_cast<int>(opset->second), domain);
      if (!schema)
        invalid(where + ": there is no op " + node.op_type() + " in " + domain + " opset " +
                std::to_string(opset->second));
      try {
        schema->Verify(node);
      } catch (const std::exception& e) {
        invalid(where + ": " + e.what());
      }
    }
    // Other domains (custom ops, model-local functions) are kiln's to refuse by op.
  }
  for (const auto& out : graph.output()) {
    if (!defined.count(out.name())) {
      invalid(source + ": graph output '" + out.name() +
              "' is not produced by any node, input or initializer");
    }
  }
}

void check_node_fields(const onnx::NodeProto& node, const std::string& where) {
  constexpr int k_overload = 8;  // NodeProto.overload, IR 10
  const auto& unknown = node.unknown_fields();
  for (int i = 0; i < unknown.field_count(); ++i) {
    const auto& field = unknown.field(i);
    if (field.number() == k_overload &&
        field.type() == google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED &&
        !field.length_delimited().empty()) {
      throw Error(ErrorCode::unsupported, where + ": calls overload '" + field.length_delimited() +
                                              "' of a model-local function, which kiln does not run");
    }
  }
}

}  // namespace kiln::frontend
