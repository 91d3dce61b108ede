// kiln: the command-line front end.
//
// Exit codes (DESIGN.md): 0 success, 1 a user error (bad model, bad
// arguments, unsupported op), 2 an internal failure.
#include <cstring>
#include <iostream>

#include "commands.hpp"
#include "kiln/error.hpp"

namespace kiln::cli {

void print_json(const nlohmann::json& report) { std::cout << report.dump(2) << "\n"; }

}  // namespace kiln::cli

int main(int argc, char** argv) {
  bool json = false;
  for (int i = 1; i < argc; ++i) json = json || std::strcmp(argv[i], "--json") == 0;

  CLI::App app{"kiln: an inference compiler for ONNX models with a first-class engine cache"};
  app.require_subcommand(1);
  kiln::cli::Action action;
  kiln::cli::add_run_command(app, action);
  kiln::cli::add_build_command(app, action);
  kiln::cli::add_cache_command(app, action);
  kiln::cli::add_zoo_command(app, action);
  kiln::cli::add_inspect_command(app, action);
  kiln::cli::add_bench_command(app, action);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 1;
  }
  auto report_error = [&](const char* kind, const std::string& message, int exit_code) {
    if (json) {
      kiln::cli::print_json({{"error", {{"kind", kind}, {"message", message}}}, {"exit_code", exit_code}});
    } else {
      std::cerr << "kiln: " << message << "\n";
    }
    return exit_code;
  };
  try {
    return action();
  } catch (const kiln::Error& e) {
    return report_error(kiln::to_string(e.code()), e.what(), kiln::is_user_error(e.code()) ? 1 : 2);
  } catch (const std::exception& e) {
    return report_error("internal error", e.what(), 2);
  }
}
