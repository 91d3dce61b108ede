// `kiln build MODEL.onnx`: compiles a model into engines (through the engine
// cache) and reports, per engine, hit or miss and where the time went.
#include <sys/stat.h>

#include <chrono>
#include <iostream>

#include "arguments.hpp"
#include "commands.hpp"
#include "compile_report.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "runtime/artifact.hpp"
#include "runtime/compiled_model.hpp"
#include "util/atomic_file.hpp"
#include "util/mapped_file.hpp"

namespace kiln::cli {

namespace {

struct BuildOptions {
  std::string model;
  CompileOptions compile;
  bool layers = false;
  bool json = false;
  std::string save;    // write an AOT artifact here
  bool force = false;  // --save may replace a file that is not an artifact
};

// Refuses an artifact path that would destroy something, before compiling:
// the input model itself (the same file, also through a symlink or a hard
// link: same st_dev and st_ino), anything that is not a regular file, and,
// without --force, a file that is not a kiln artifact. An existing artifact
// is replaced (rebuilding one in place is the common case).
void check_save_target(const BuildOptions& opt) {
  struct stat target {};
  if (::stat(opt.save.c_str(), &target) != 0) return;  // nothing there; a write error is reported later
  struct stat model {};
  if (::stat(opt.model.c_str(), &model) == 0 && model.st_dev == target.st_dev &&
      model.st_ino == target.st_ino) {
    throw Error(ErrorCode::invalid_argument, "--save " + opt.save + " is the input model " + opt.model +
                                                 ": the artifact would overwrite it; choose another path");
  }
  if (!S_ISREG(target.st_mode)) {
    throw Error(ErrorCode::invalid_argument, "--save " + opt.save + " exists and is not a regular file");
  }
  if (!opt.force && !runtime::is_artifact_file(opt.save)) {
    throw Error(ErrorCode::invalid_argument,
                "--save " + opt.save + " exists and is not a kiln artifact; pass --force to replace it");
  }
}

void save_artifact(const runtime::CompiledModel& compiled, const BuildOptions& opt, const ir::Graph& graph) {
  auto file = MappedFile::open(opt.model);
  auto bytes = compiled.to_artifact(file->bytes(), graph);
  AtomicFile out(std::filesystem::absolute(opt.save));
  if (!out.write(bytes) || !out.commit()) {
    throw Error(ErrorCode::io, opt.save + ": cannot write the artifact: " + out.error());
  }
}

int run_build(const BuildOptions& opt) {
  if (!opt.save.empty()) check_save_target(opt);
  auto start = std::chrono::steady_clock::now();
  frontend::ImportedModel model = frontend::import_onnx_file(opt.model);
  double import_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  const ir::Graph& g = model.graph;
  std::vector<InputSpec> specs = to_specs(g, opt.compile, {});
  auto compiled = runtime::CompiledModel::compile(g, specs, to_settings(opt.compile));
  const auto& report = compiled.report();
  bool layers = opt.layers || opt.compile.debug;
  if (!opt.save.empty()) save_artifact(compiled, opt, g);

  nlohmann::json j;
  j["command"] = "build";
  j["model"] = opt.model;
  j["import_ms"] = import_ms;
  for (const auto& s : specs) {
    j["inputs"].push_back(
        {{"name", s.name}, {"dtype", dtype_name(s.dtype)}, {"min", s.min}, {"opt", s.opt}, {"max", s.max}});
  }
  nlohmann::json c = compile_report_json(report, layers);
  for (auto& [k, v] : c.items()) j[k] = v;
  if (!opt.save.empty()) j["artifact"] = opt.save;
  if (opt.json) {
    print_json(j);
    return 0;
  }
  std::cout << "model   " << opt.model << " imported in " << import_ms << " ms\n";
  for (const auto& s : specs) {
    std::cout << "input   " << s.name << ": " << dtype_name(s.dtype) << " ";
    if (s.is_static()) {
      std::cout << shape_to_string(s.opt) << "\n";
    } else {
      std::cout << "min " << shape_to_string(s.min) << ", opt " << shape_to_string(s.opt) << ", max "
                << shape_to_string(s.max) << "\n";
    }
  }
  print_compile_report(std::cout, report, layers);
  if (!opt.save.empty())
    std::cout << "saved   " << opt.save << " (run it with: kiln run " << opt.save << ")\n";
  return 0;
}

}  // namespace

void add_build_command(CLI::App& app, Action& action) {
  auto opt = std::make_shared<BuildOptions>();
  CLI::App* cmd = app.add_subcommand("build", "Compile a model into engines through the engine cache");
  cmd->add_option("model", opt->model, "Model file (.onnx)")->required();
  cmd->add_option("--shape", opt->compile.shapes, "NAME=1x3x224x224: a fixed input shape");
  add_compile_options(cmd, opt->compile);
  cmd->add_option("--backend", opt->compile.backend, engine_backend_help())->capture_default_str();
  cmd->add_flag("--layers", opt->layers, "List each layer's chosen tactic");
  cmd->add_flag("--json", opt->json, "Print one JSON object instead of text");
  cmd->add_option("--save", opt->save, "Write an AOT artifact (.kiln): model, engines and specs in one file");
  cmd->add_flag("--force", opt->force,
                "Let --save replace a file that is not a kiln artifact (never the input model itself)");
  cmd->callback([opt, &action] { action = [opt] { return run_build(*opt); }; });
}

}  // namespace kiln::cli
