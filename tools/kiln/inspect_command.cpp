// `kiln inspect MODEL.onnx`: prints the imported IR graph, with inferred
// shapes, and the ops the reference backend cannot run.
#include <iostream>

#include "backends/ref/executor.hpp"
#include "commands.hpp"
#include "frontend/onnx/onnx_importer.hpp"

namespace kiln::cli {

namespace {

struct InspectOptions {
  std::string model;
  bool json = false;
};

int run_inspect(const InspectOptions& opt) {
  frontend::ImportedModel model = frontend::import_onnx_file(opt.model);
  const ir::Graph& g = model.graph;
  auto unsupported = ref::find_unsupported(g);
  nlohmann::json report;
  report["command"] = "inspect";
  report["model"] = opt.model;
  report["ir_version"] = model.ir_version;
  report["producer"] = model.producer;
  for (const auto& [domain, version] : model.opsets)
    report["opsets"][domain.empty() ? "ai.onnx" : domain] = version;
  report["nodes"] = g.num_nodes();
  report["weight_bytes"] = g.initializer_bytes();
  for (ir::ValueId id : g.inputs()) {
    report["inputs"].push_back({{"name", g.value(id).name}, {"type", g.value(id).type.to_string()}});
  }
  for (ir::ValueId id : g.outputs()) {
    report["outputs"].push_back({{"name", g.value(id).name}, {"type", g.value(id).type.to_string()}});
  }
  report["unsupported"] = nlohmann::json::array();
  for (const auto& u : unsupported) {
    report["unsupported"].push_back({{"node", g.node(u.node).name}, {"op", u.op_type}, {"reason", u.reason}});
  }
  if (opt.json) {
    report["graph"] = g.to_string();
    print_json(report);
    return 0;
  }
  std::cout << g.to_string();
  for (const auto& u : unsupported) {
    std::cout << "unsupported: " << g.node(u.node).describe() << ": " << u.reason << "\n";
  }
  return 0;
}

}  // namespace

void add_inspect_command(CLI::App& app, Action& action) {
  auto opt = std::make_shared<InspectOptions>();
  CLI::App* cmd = app.add_subcommand("inspect", "Print a model's graph with inferred types");
  cmd->add_option("model", opt->model, "Model file (.onnx)")->required();
  cmd->add_flag("--json", opt->json, "Print one JSON object instead of text");
  cmd->callback([opt, &action] { action = [opt] { return run_inspect(*opt); }; });
}

}  // namespace kiln::cli
