// `kiln bench tutorial`: the engine-caching tutorial
// (Torch-TensorRT's engine_caching_example.py), both halves, with the
// tutorial's three timings each:
//
//   JIT (torch_compile):  a fresh kiln::JitModule, timed over its first call
//                         (compile + run), as the tutorial times
//                         torch.compile + the first call;
//   AOT (dynamo_compile): kiln::compile with the batch a dynamic dim from 1 to
//                         2 x batch (opt batch), timed over the compile, then
//                         run at batch, batch + 1 and batch + 2.
//
// Per flow: 1. caching disabled; 2. caching on, empty cache (build + save);
// 3. caching on, warm cache (load + refit). The timing cache is private to the
// invocation and removed before every compile (the tutorial's
// remove_timing_cache()), so 1 and 2 are real cold builds. The engine cache is
// a private temp folder unless --cache-dir names one. Step 3 compiles a model
// of the same architecture with OTHER weights, so the hit really refits.
//
// Every step runs in a fresh process (this binary, re-executed with the
// hidden --step option): oneDNN keeps created primitives in an in-process
// cache, so a second build in one process would not be a cold build, and a
// reuse in the process that built the engine would not be a new session.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>

#include "arguments.hpp"
#include "commands.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "kiln/compile.hpp"
#include "kiln/jit.hpp"
#include "zoo/model_builder.hpp"
#include "zoo/zoo.hpp"

namespace kiln::cli {

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

struct BenchOptions {
  std::string model = "resnet18";
  int64_t batch = 100;
  std::string cache_dir;
  std::string flow = "both";
  int threads = 0;
  std::string backend = "cpu";
  bool json = false;
  std::string step;      // hidden: "jit:N" or "aot:N" runs one step and prints its JSON
  std::string work_dir;  // hidden: the parent's scratch folder, for --step
};

// A folder under the temp dir, removed with its contents at scope exit.
class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "kiln-bench-XXXXXX").string();
    if (!::mkdtemp(pattern.data()))
      throw Error(ErrorCode::io, "bench: cannot create a folder under " + pattern);
    m_path = pattern;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(m_path, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return m_path; }

 private:
  std::filesystem::path m_path;
};

// The model input: float32, batch on axis 0, every other dim static.
struct ImageInput {
  std::string name;
  std::vector<int64_t> shape;  // shape[0] is replaced by the batch
};

ImageInput read_input(const std::filesystem::path& model) {
  frontend::ImportedModel m = frontend::import_onnx_file(model);
  const ir::Graph& g = m.graph;
  if (g.inputs().size() != 1) {
    throw Error(ErrorCode::invalid_argument, "bench tutorial: " + model.string() + " has " +
                                                 std::to_string(g.inputs().size()) +
                                                 " inputs; the tutorial's model has one image input");
  }
  const ir::Value& v = g.value(g.inputs()[0]);
  if (v.type.dtype != DType::float32 || !v.type.shape || v.type.shape->empty()) {
    throw Error(ErrorCode::invalid_argument,
                "bench tutorial: input '" + v.name + "' must be a float32 tensor of known rank");
  }
  ImageInput input{v.name, {}};
  for (size_t a = 0; a < v.type.shape->size(); ++a) {
    const ir::Dim& d = (*v.type.shape)[a];
    if (a > 0 && !d.is_static()) {
      throw Error(ErrorCode::invalid_argument, "bench tutorial: input '" + v.name + "' dim " +
                                                   std::to_string(a) +
                                                   " is not static; only the batch (dim 0) may vary");
    }
    input.shape.push_back(d.is_static() ? d.value() : 1);
  }
  return input;
}

// torch.rand: uniform in [0, 1), seeded.
Tensor random_input(const ImageInput& input, int64_t batch, uint64_t seed) {
  std::vector<int64_t> shape = input.shape;
  shape[0] = batch;
  Tensor t = Tensor::zeros(DType::float32, shape);
  zoo::SeededRandom random(seed);
  for (float& x : t.mutable_data<float>()) x = static_cast<float>(random.uniform());
  return t;
}

// Step i of a flow: its caching switches, and the model it compiles.
struct Step {
  const char* name;
  bool caching;
  const char* line;  // the tutorial's output line
};
constexpr Step k_steps[] = {
    {"disabled", false, "disable engine caching, used: "},
    {"save", true, "enable engine caching to cache engines, used: "},
    {"reuse", true, "enable engine caching to reuse engines, used: "},
};

nlohmann::json engines_json(const std::vector<EngineStatus>& engines) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& e : engines) {
    nlohmann::json ej{{"key", e.key},
                      {"status", e.status},
                      {"build_ms", e.build_ms},
                      {"load_ms", e.load_ms},
                      {"refit_ms", e.refit_ms}};
    if (!e.reason.empty()) ej["reason"] = e.reason;
    j.push_back(ej);
  }
  return j;
}

std::string engines_text(const std::vector<EngineStatus>& engines) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(0);
  for (const auto& e : engines) {
    if (&e != &engines.front()) out << ", ";
    out << e.status;
    if (e.status == "hit") {
      out << " (load " << e.load_ms << " ms, refit " << e.refit_ms << " ms)";
    } else {
      out << " (build " << e.build_ms << " ms)";
    }
  }
  return out.str();
}

class TutorialBench {
 public:
  TutorialBench(const BenchOptions& options, const std::filesystem::path& work,
                const std::filesystem::path& cache)
      : m_options(options), m_cache(cache), m_timing(work / "timing" / "timing_cache.bin") {
    std::filesystem::path path(options.model);
    if (path.extension() == ".onnx") {
      if (!std::filesystem::exists(path)) throw Error(ErrorCode::io, path.string() + ": no such file");
      m_models = {path, path, path};
      m_other_weights = false;
    } else {
      auto write = [&](uint64_t seed) {
        auto file = work / (options.model + "_seed" + std::to_string(seed) + ".onnx");
        if (std::filesystem::exists(file)) return file;  // written by the parent
        std::string bytes = zoo::build_zoo_model(options.model, {seed, std::nullopt}).onnx_bytes;
        std::ofstream out(file, std::ios::binary | std::ios::trunc);
        out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
        if (!out) throw Error(ErrorCode::io, file.string() + ": cannot write");
        return file;
      };
      auto first = write(0);
      m_models = {first, first, write(1)};
      m_other_weights = true;
    }
    m_input = read_input(m_models[0]);
  }

  bool other_weights() const { return m_other_weights; }
  const std::filesystem::path& timing_cache() const { return m_timing; }

  CompileSettings settings(const Step& step) const {
    // The tutorial's remove_timing_cache(): every compile starts without one.
    std::error_code ec;
    std::filesystem::remove(m_timing, ec);
    CompileSettings s;
    s.cache_built_engines = step.caching;
    s.reuse_cached_engines = step.caching;
    s.engine_cache_dir = m_cache;
    s.timing_cache_path = m_timing;
    s.num_threads = m_options.threads;
    s.backend = m_options.backend;
    return s;
  }

  // torch.compile(model) + compiled_model(inputs): a fresh JIT module each time.
  nlohmann::json jit_step(size_t i) const {
    const Step& step = k_steps[i];
    std::vector<Tensor> inputs{random_input(m_input, m_options.batch, i)};
    auto settings_for_step = settings(step);
    auto start = Clock::now();
    JitModule jit(m_models[i], settings_for_step);
    double construct_ms = ms_since(start);
    JitCallInfo info;
    jit.run(inputs, &info);
    double total = ms_since(start);
    return {{"step", step.name},
            {"model", m_models[i].string()},
            {"used_ms", total},
            {"construct_ms", construct_ms},
            {"compile_ms", info.compile_ms},
            {"run_ms", info.run_ms},
            {"construct_and_compile_ms", total - info.run_ms},
            {"compiles", jit.compiles()},
            {"engines", engines_json(jit.last_engines())},
            {"engines_text", engines_text(jit.last_engines())}};
  }

  // torch_trt.dynamo.compile(exported program with a dynamic batch): the
  // compile is timed; the runs at batch + i come after, timed on their own.
  nlohmann::json aot_step(size_t i) const {
    const Step& step = k_steps[i];
    int64_t run_batch = m_options.batch + static_cast<int64_t>(i);
    std::vector<int64_t> min = m_input.shape, opt = m_input.shape, max = m_input.shape;
    min[0] = 1;
    opt[0] = m_options.batch;
    max[0] = 2 * m_options.batch;
    std::vector<InputSpec> specs{{m_input.name, DType::float32, min, opt, max}};
    auto settings_for_step = settings(step);
    auto start = Clock::now();
    CompiledModel model = compile(m_models[i], specs, settings_for_step);
    double used = ms_since(start);
    std::vector<Tensor> inputs{random_input(m_input, run_batch, 100 + i)};
    start = Clock::now();
    auto outputs = model.run(inputs);
    double run_ms = ms_since(start);
    return {{"step", step.name},
            {"model", m_models[i].string()},
            {"used_ms", used},
            {"compile_ms", model.compile_ms()},
            {"run_batch", run_batch},
            {"run_ms", run_ms},
            {"output_shape", outputs.at(0).shape()},
            {"engines", engines_json(model.engines())},
            {"engines_text", engines_text(model.engines())}};
  }

  const ImageInput& input() const { return m_input; }

 private:
  const BenchOptions& m_options;
  std::filesystem::path m_cache;
  std::filesystem::path m_timing;
  std::vector<std::filesystem::path> m_models;
  bool m_other_weights = false;
  ImageInput m_input;
};

double ratio(const nlohmann::json& steps, const char* field) {
  double reuse = steps[2][field].get<double>();
  return reuse > 0 ? steps[0][field].get<double>() / reuse : 0;
}

void print_flow(const nlohmann::json& flow, bool jit) {
  const auto& steps = flow["steps"];
  std::cout << std::fixed << std::setprecision(2);
  std::cout << (jit ? "----------------torch_compile----------------\n"
                    : "----------------dynamo_compile----------------\n");
  for (size_t i = 0; i < 3; ++i) std::cout << k_steps[i].line << steps[i]["used_ms"].get<double>() << " ms\n";
  std::cout << std::setprecision(0);
  for (const auto& s : steps) {
    std::cout << "  " << std::left << std::setw(8) << s["step"].get<std::string>() << std::right;
    if (jit) {
      std::cout << " module " << s["construct_ms"].get<double>() << " ms + first call: compile "
                << s["compile_ms"].get<double>() << " ms, run " << s["run_ms"].get<double>() << " ms; engine "
                << s["engines_text"].get<std::string>() << "\n";
    } else {
      std::cout << " engine " << s["engines_text"].get<std::string>() << "; then run at batch "
                << s["run_batch"].get<int64_t>() << ": " << s["run_ms"].get<double>() << " ms\n";
    }
  }
  std::cout << std::setprecision(1);
  if (jit) {
    std::cout << "  reuse vs disabled: " << flow["speedup_first_call"].get<double>()
              << "x on the first call, " << flow["speedup_compile"].get<double>()
              << "x on module + compile without the run (the run of batch " << flow["batch"].get<int64_t>()
              << " on this CPU is in both)\n";
  } else {
    std::cout << "  reuse vs disabled: " << flow["speedup_compile"].get<double>() << "x\n";
  }
}

std::string shell_quote(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Runs one step in a fresh process of this binary and returns its report.
nlohmann::json step_in_new_process(const BenchOptions& opt, const std::filesystem::path& work,
                                   const std::filesystem::path& cache, bool jit, size_t i) {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) throw Error(ErrorCode::internal, "bench: cannot find this executable: " + ec.message());
  std::string command = shell_quote(self.string()) + " bench tutorial --step " + (jit ? "jit:" : "aot:") +
                        std::to_string(i) + " --work-dir " + shell_quote(work.string()) + " --cache-dir " +
                        shell_quote(cache.string()) + " --model " + shell_quote(opt.model) + " --batch " +
                        std::to_string(opt.batch) + " --threads " + std::to_string(opt.threads) +
                        " --backend " + shell_quote(opt.backend) + " --json";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) throw Error(ErrorCode::internal, "bench: cannot start " + command);
  std::string output;
  char buffer[4096];
  size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) output.append(buffer, n);
  int status = ::pclose(pipe);
  auto result = nlohmann::json::parse(output, nullptr, false);
  if (status != 0 || result.is_discarded() || !result.contains("used_ms")) {
    std::string message =
        result.is_object() && result.contains("error") ? result["error"].value("message", output) : output;
    throw Error(ErrorCode::internal, "bench: step " + std::string(k_steps[i].name) + " failed: " + message);
  }
  return result;
}

int run_bench_tutorial(const BenchOptions& opt) {
  if (opt.batch < 1) throw Error(ErrorCode::invalid_argument, "--batch must be at least 1");
  if (opt.flow != "both" && opt.flow != "jit" && opt.flow != "aot") {
    throw Error(ErrorCode::invalid_argument, "--flow must be jit, aot or both, got '" + opt.flow + "'");
  }
  if (!opt.step.empty()) {
    // A child: one step, its JSON on stdout.
    size_t i = opt.step.size() == 5 ? static_cast<size_t>(opt.step[4] - '0') : 3;
    bool jit = opt.step.starts_with("jit:");
    if (i > 2 || (!jit && !opt.step.starts_with("aot:")) || opt.work_dir.empty() || opt.cache_dir.empty()) {
      throw Error(ErrorCode::invalid_argument,
                  "--step must be jit:N or aot:N (N 0-2), with --work-dir and --cache-dir");
    }
    TutorialBench bench(opt, opt.work_dir, opt.cache_dir);
    print_json(jit ? bench.jit_step(i) : bench.aot_step(i));
    return 0;
  }
  ScratchDir work;
  std::filesystem::path cache =
      opt.cache_dir.empty() ? work.path() / "engine_cache" : std::filesystem::path(opt.cache_dir);
  TutorialBench bench(opt, work.path(), cache);
  std::string shape = shape_to_string(bench.input().shape);
  shape = std::to_string(opt.batch) + shape.substr(shape.find('x'));

  nlohmann::json report;
  report["command"] = "bench tutorial";
  report["model"] = opt.model;
  report["batch"] = opt.batch;
  report["cache_dir"] = cache.string();
  report["cache_private"] = opt.cache_dir.empty();
  report["timing_cache"] = bench.timing_cache().string();
  report["reuse_other_weights"] = bench.other_weights();
  report["threads"] = opt.threads;
  report["backend"] = opt.backend;
  if (!opt.json) {
    std::cout
        << "kiln: the engine-caching tutorial on " << opt.model << ", input " << bench.input().name << " "
        << shape << ", " << opt.backend << " backend\n"
        << "engine cache: " << cache.string()
        << (opt.cache_dir.empty() ? " (private to this run, removed at exit)"
                                  : " (given with --cache-dir: used as is, so it may already hold engines)")
        << "\ntiming cache: private, removed before every compile (the tutorial's remove_timing_cache()),"
           " so 'disable' and 'cache engines' are cold builds\n"
        << "reuse: "
        << (bench.other_weights() ? "the same architecture with other weights (seed 1): load + refit"
                                  : "the same model file: load + refit")
        << "\neach compile runs in a fresh process (no in-process oneDNN primitive cache carries over)"
        << "\n(cold builds time every tactic: on 2 cores each takes tens of seconds)\n"
        << std::flush;
  }

  auto run_flow = [&](bool jit) {
    nlohmann::json flow;
    flow["batch"] = opt.batch;
    if (!jit) flow["dynamic_batch"] = {1, opt.batch, 2 * opt.batch};
    for (size_t i = 0; i < 3; ++i) {
      if (!opt.json) {
        std::cerr << "  " << (jit ? "jit" : "aot") << ": " << k_steps[i].name << "..." << std::endl;
      }
      flow["steps"].push_back(step_in_new_process(opt, work.path(), cache, jit, i));
    }
    flow["speedup_first_call"] = ratio(flow["steps"], "used_ms");
    flow["speedup_compile"] = ratio(flow["steps"], jit ? "construct_and_compile_ms" : "used_ms");
    if (!opt.json) print_flow(flow, jit);
    return flow;
  };
  if (opt.flow != "aot") report["jit"] = run_flow(true);
  if (opt.flow != "jit") report["aot"] = run_flow(false);
  if (opt.json) print_json(report);
  return 0;
}

}  // namespace

void add_bench_command(CLI::App& app, Action& action) {
  CLI::App* bench = app.add_subcommand("bench", "Benchmarks");
  bench->require_subcommand(1);
  auto opt = std::make_shared<BenchOptions>();
  CLI::App* cmd = bench->add_subcommand(
      "tutorial",
      "The engine-caching tutorial, JIT and AOT: caching disabled, caching to save, caching to reuse");
  cmd->add_option("--model", opt->model, "Zoo model name, or an .onnx file (one float image input)")
      ->capture_default_str();
  cmd->add_option("--batch", opt->batch, "Batch (AOT: dynamic from 1 to 2 x batch, opt batch)")
      ->capture_default_str();
  cmd->add_option("--cache-dir", opt->cache_dir, "Engine cache folder (default: a private temp folder)");
  cmd->add_option("--flow", opt->flow, "jit, aot or both")->capture_default_str();
  cmd->add_option("--threads", opt->threads, "Threads for the engines (0: all cores)")->capture_default_str();
  cmd->add_option("--backend", opt->backend, engine_backend_help())->capture_default_str();
  cmd->add_flag("--json", opt->json, "Print one JSON object instead of text");
  cmd->add_option("--step", opt->step)->group("");  // internal: one step in a child process
  cmd->add_option("--work-dir", opt->work_dir)->group("");
  cmd->callback([opt, &action] { action = [opt] { return run_bench_tutorial(*opt); }; });
}

}  // namespace kiln::cli
