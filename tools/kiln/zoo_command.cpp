// `kiln zoo NAME -o FILE.onnx`: writes a built-in model; `kiln zoo --list`.
#include <fstream>
#include <iostream>

#include "commands.hpp"
#include "kiln/error.hpp"
#include "zoo/zoo.hpp"

namespace kiln::cli {

namespace {

struct ZooCommandOptions {
  std::string name;
  std::string output;
  uint64_t seed = 0;
  std::string batch = "symbolic";
  bool list = false;
  bool json = false;
};

int run_zoo(const ZooCommandOptions& opt) {
  nlohmann::json report;
  report["command"] = "zoo";
  if (opt.list || opt.name.empty()) {
    for (const auto& e : zoo::zoo_entries()) {
      report["models"].push_back({{"name", e.name}, {"description", e.description}});
      if (!opt.json) std::cout << e.name << "\t" << e.description << "\n";
    }
    if (opt.json) print_json(report);
    return 0;
  }
  if (opt.output.empty()) throw Error(ErrorCode::invalid_argument, "zoo: -o FILE.onnx is required");
  zoo::ZooOptions zoo_options;
  zoo_options.seed = opt.seed;
  if (opt.batch != "symbolic") {
    try {
      size_t used = 0;
      zoo_options.batch = std::stoll(opt.batch, &used);
      if (used != opt.batch.size() || *zoo_options.batch < 1) throw std::invalid_argument("batch");
    } catch (const std::exception&) {
      throw Error(ErrorCode::invalid_argument,
                  "--batch must be 'symbolic' or a positive number, got '" + opt.batch + "'");
    }
  }
  zoo::ZooModel model = zoo::build_zoo_model(opt.name, zoo_options);
  std::ofstream out(opt.output, std::ios::binary | std::ios::trunc);
  out.write(model.onnx_bytes.data(), static_cast<std::streamsize>(model.onnx_bytes.size()));
  out.close();
  if (!out) throw Error(ErrorCode::io, opt.output + ": cannot write");
  report["model"] = opt.name;
  report["file"] = opt.output;
  report["bytes"] = model.onnx_bytes.size();
  report["parameters"] = model.parameters;
  if (opt.json) {
    print_json(report);
  } else {
    std::cout << "wrote " << opt.output << ": " << opt.name << ", " << model.parameters << " parameters, "
              << model.onnx_bytes.size() << " bytes\n";
  }
  return 0;
}

}  // namespace

void add_zoo_command(CLI::App& app, Action& action) {
  auto opt = std::make_shared<ZooCommandOptions>();
  CLI::App* cmd =
      app.add_subcommand("zoo", "Write a built-in model (real architecture, seeded weights) as ONNX");
  cmd->add_option("name", opt->name, "Model name (see --list)");
  cmd->add_option("-o,--output", opt->output, "Output .onnx file");
  cmd->add_option("--seed", opt->seed, "Weight seed")->capture_default_str();
  cmd->add_option("--batch", opt->batch, "'symbolic' or a fixed batch size")->capture_default_str();
  cmd->add_flag("--list", opt->list, "List the models");
  cmd->add_flag("--json", opt->json, "Print one JSON object instead of text");
  cmd->callback([opt, &action] { action = [opt] { return run_zoo(*opt); }; });
}

}  // namespace kiln::cli
