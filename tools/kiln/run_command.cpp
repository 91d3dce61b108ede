// `kiln run MODEL.onnx`: imports a model, feeds it inputs (from .npy files or
// seeded random data), runs it on a backend and summarizes the outputs.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>

#include "arguments.hpp"
#include "backends/registry/backend_registry.hpp"
#include "commands.hpp"
#include "compile_report.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "npy.hpp"
#include "reference/executor.hpp"
#include "runtime/artifact.hpp"
#include "runtime/compiled_model.hpp"
#include "util/mapped_file.hpp"
#include "zoo/model_builder.hpp"

namespace kiln::cli {

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

struct RunOptions {
  std::string model;
  std::vector<std::string> inputs;
  std::vector<std::string> shapes;
  std::string backend = "cpu";
  CompileOptions compile;
  std::string output_dir;
  uint64_t seed = 0;
  int repeat = 1;
  bool json = false;
  bool profile = false;
  int profile_runs = 10;
};

constexpr size_t k_profile_top = 5;  // the slowest layers listed after the table

nlohmann::json profile_json(const runtime::ModelProfile& p) {
  nlohmann::json j;
  j["runs"] = p.runs;
  j["aggregate"] = "median";
  j["total_ms"] = p.total_ms;
  j["wall_ms"] = p.wall_ms;
  j["layers"] = nlohmann::json::array();
  for (const runtime::ProfileLayer& l : p.layers) {
    const LayerTiming& t = l.timing;
    j["layers"].push_back({{"name", t.name},
                           {"nodes", t.nodes},
                           {"op", t.op},
                           {"kind", t.kind},
                           {"tactic", t.tactic},
                           {"segment", l.segment},
                           {"ms", t.ms},
                           {"percent", l.percent}});
  }
  j["by_kind"] = nlohmann::json::object();
  for (const auto& [kind, ms] : p.by_kind_ms) {
    j["by_kind"][kind] = {{"ms", ms}, {"percent", p.total_ms > 0 ? 100.0 * ms / p.total_ms : 0.0}};
  }
  j["slowest"] = p.slowest(k_profile_top);
  return j;
}

std::string clip(const std::string& s, size_t width) {
  return s.size() <= width ? s : s.substr(0, width - 3) + "...";
}

void print_profile(std::ostream& out, const runtime::ModelProfile& p) {
  constexpr size_t k_name = 32, k_op = 22, k_tactic = 40;
  out << "profile " << p.layers.size() << " layers, median of " << p.runs << " profiled runs: " << std::fixed
      << std::setprecision(3) << p.total_ms << " ms in layers, " << p.wall_ms << " ms per run end to end\n";
  out << std::left << "  " << std::setw(static_cast<int>(k_name)) << "layer"
      << " " << std::setw(static_cast<int>(k_op)) << "op"
      << " " << std::setw(9) << "kind"
      << " " << std::setw(static_cast<int>(k_tactic)) << "tactic"
      << " " << std::right << std::setw(9) << "ms"
      << " " << std::setw(6) << "%"
      << "\n";
  auto row = [&](const LayerTiming& t, double percent) {
    out << std::left << "  " << std::setw(static_cast<int>(k_name)) << clip(t.name, k_name) << " "
        << std::setw(static_cast<int>(k_op)) << clip(t.op, k_op) << " " << std::setw(9) << t.kind << " "
        << std::setw(static_cast<int>(k_tactic)) << clip(t.tactic, k_tactic) << " " << std::right
        << std::setw(9) << std::setprecision(3) << t.ms << " " << std::setw(6) << std::setprecision(1)
        << percent << "\n";
  };
  for (const runtime::ProfileLayer& l : p.layers) row(l.timing, l.percent);
  out << "by kind";
  for (const auto& [kind, ms] : p.by_kind_ms) {
    out << "  " << kind << " " << std::setprecision(3) << ms << " ms (" << std::setprecision(1)
        << (p.total_ms > 0 ? 100.0 * ms / p.total_ms : 0.0) << "%)";
  }
  out << "\nslowest\n";
  for (size_t i : p.slowest(k_profile_top)) row(p.layers[i].timing, p.layers[i].percent);
}

std::vector<int64_t> shape_for_random(const ir::Value& v,
                                      const std::map<std::string, std::vector<int64_t>>& shapes,
                                      std::vector<std::string>& notes) {
  auto given = shapes.find(v.name);
  if (given != shapes.end()) {
    if (v.type.shape && v.type.shape->size() != given->second.size()) {
      throw Error(ErrorCode::invalid_argument, "--shape " + v.name + ": rank " +
                                                   std::to_string(given->second.size()) +
                                                   " does not match the model's " + v.type.to_string());
    }
    return given->second;
  }
  if (!v.type.shape) {
    throw Error(ErrorCode::invalid_argument,
                "input '" + v.name + "' has no declared shape: pass --shape " + v.name + "=...");
  }
  std::vector<int64_t> shape;
  for (const ir::Dim& d : *v.type.shape) {
    if (d.is_static()) {
      shape.push_back(d.value());
    } else if (d.is_symbolic()) {
      notes.push_back("input '" + v.name + "': dim '" + d.symbol_name() +
                      "' set to 1 (use --shape to choose)");
      shape.push_back(1);
    } else {
      throw Error(ErrorCode::invalid_argument,
                  "input '" + v.name + "' has an unknown dim: pass --shape " + v.name + "=...");
    }
  }
  return shape;
}

Tensor random_tensor(DType dtype, std::vector<int64_t> shape, zoo::SeededRandom& random) {
  Tensor t = Tensor::zeros(dtype, std::move(shape));
  switch (dtype) {
    case DType::float32:
      for (float& x : t.mutable_data<float>()) x = static_cast<float>(random.uniform() * 2 - 1);
      break;
    case DType::float64:
      for (double& x : t.mutable_data<double>()) x = random.uniform() * 2 - 1;
      break;
    case DType::int64:
      for (int64_t& x : t.mutable_data<int64_t>()) x = static_cast<int64_t>(random.next_u64() % 10);
      break;
    case DType::int32:
      for (int32_t& x : t.mutable_data<int32_t>()) x = static_cast<int32_t>(random.next_u64() % 10);
      break;
    case DType::boolean:
      for (bool& x : t.mutable_data<bool>()) x = random.next_u64() % 2 == 1;
      break;
    default:
      throw Error(ErrorCode::unsupported, "random inputs of type " + std::string(dtype_name(dtype)) +
                                              " are not supported: pass a .npy file");
  }
  return t;
}

nlohmann::json summarize(const Tensor& t) {
  nlohmann::json s;
  s["dtype"] = dtype_name(t.dtype());
  s["shape"] = t.shape();
  if (t.numel() == 0 || t.dtype() == DType::float16 || t.dtype() == DType::bfloat16) return s;
  double lo = INFINITY, hi = -INFINITY, sum = 0;
  int64_t nonfinite = 0;
  for (int64_t i = 0; i < t.numel(); ++i) {
    double v = is_floating(t.dtype()) ? t.float_at(i) : static_cast<double>(t.int_at(i));
    if (!std::isfinite(v)) {
      ++nonfinite;
      continue;
    }
    lo = std::min(lo, v);
    hi = std::max(hi, v);
    sum += v;
  }
  if (nonfinite < t.numel()) {
    s["min"] = lo;
    s["max"] = hi;
    s["mean"] = sum / static_cast<double>(t.numel() - nonfinite);
  }
  if (nonfinite) s["nonfinite"] = nonfinite;
  return s;
}

std::string file_name_for(const std::string& output_name) {
  std::string safe = output_name;
  for (char& c : safe) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.') c = '_';
  }
  if (safe.empty() || safe[0] == '.') safe = "_" + safe;
  return safe + ".npy";
}

int run(const RunOptions& opt) {
  const std::vector<std::string> engines = backend_names();
  if (opt.backend != "ref" && std::find(engines.begin(), engines.end(), opt.backend) == engines.end()) {
    std::string available;
    for (const std::string& b : engines) available += b + ", ";
    throw Error(ErrorCode::invalid_argument,
                "--backend: unknown backend '" + opt.backend + "' (available: " + available + "ref)");
  }
  if (opt.repeat < 1) throw Error(ErrorCode::invalid_argument, "--repeat must be at least 1");
  if (opt.profile_runs < 1) throw Error(ErrorCode::invalid_argument, "--profile-runs must be at least 1");
  if (opt.profile && opt.backend == "ref") {
    throw Error(ErrorCode::invalid_argument,
                "--profile times engine layers: it needs an engine backend, not ref");
  }
  nlohmann::json report;
  report["command"] = "run";
  report["model"] = opt.model;
  report["backend"] = opt.backend;

  auto start = Clock::now();
  // A .kiln artifact embeds its model; its engines are used below.
  std::optional<runtime::Artifact> artifact;
  frontend::ImportedModel model;
  if (runtime::is_artifact_file(opt.model)) {
    artifact = runtime::decode_artifact(MappedFile::open(opt.model)->bytes(), opt.model);
    model = frontend::import_onnx_bytes(artifact->onnx, opt.model);
  } else {
    model = frontend::import_onnx_file(opt.model);
  }
  const ir::Graph& g = model.graph;
  report["timings_ms"]["import"] = ms_since(start);

  std::map<std::string, std::vector<int64_t>> shapes;
  if (artifact) {
    // Random inputs default to the shapes the artifact was tuned for.
    for (const auto& spec : artifact->manifest.specs) shapes[spec.name] = spec.opt;
  }
  for (const auto& s : opt.shapes) {
    auto [name, text] = split_assignment(s, "--shape");
    find_input(g, name, "--shape");
    shapes[name] = parse_shape(text, "--shape");
  }
  std::map<std::string, std::string> sources;
  for (const auto& s : opt.inputs) {
    auto [name, source] = split_assignment(s, "--input");
    find_input(g, name, "--input");
    sources[name] = source;
  }

  std::vector<std::string> notes;
  std::vector<Tensor> inputs;
  zoo::SeededRandom random(opt.seed);
  for (ir::ValueId id : g.inputs()) {
    const ir::Value& v = g.value(id);
    auto src = sources.find(v.name);
    nlohmann::json info;
    info["name"] = v.name;
    if (src != sources.end() && src->second != "random") {
      inputs.push_back(read_npy(src->second));
      info["source"] = src->second;
    } else {
      inputs.push_back(random_tensor(v.type.dtype, shape_for_random(v, shapes, notes), random));
      info["source"] = "random (seed " + std::to_string(opt.seed) + ")";
    }
    info["dtype"] = dtype_name(inputs.back().dtype());
    info["shape"] = inputs.back().shape();
    report["inputs"].push_back(info);
  }

  // The reference backend interprets the graph; the cpu backend compiles it
  // (through the engine cache) for the shapes of the inputs in hand.
  start = Clock::now();
  std::optional<ref::Executor> executor;
  std::optional<runtime::CompiledModel> compiled;
  if (opt.backend == "ref") {
    executor.emplace(g);
  } else {
    std::map<std::string, std::vector<int64_t>> known;
    for (size_t i = 0; i < inputs.size(); ++i) known[g.value(g.inputs()[i]).name] = inputs[i].shape();
    CompileOptions compile = opt.compile;
    compile.backend = opt.backend;
    compiled = artifact
                   ? runtime::CompiledModel::from_artifact(*artifact, g, to_settings(compile))
                   : runtime::CompiledModel::compile(g, to_specs(g, compile, known), to_settings(compile));
    report["compile"] = compile_report_json(compiled->report(), opt.compile.debug);
  }
  report["timings_ms"]["prepare"] = ms_since(start);
  std::vector<Tensor> outputs;
  std::vector<double> run_ms;
  for (int i = 0; i < opt.repeat; ++i) {
    start = Clock::now();
    outputs = executor ? executor->run(inputs) : compiled->run(inputs);
    run_ms.push_back(ms_since(start));
  }
  std::vector<double> sorted = run_ms;
  std::sort(sorted.begin(), sorted.end());
  report["timings_ms"]["run"] = run_ms;
  report["timings_ms"]["run_median"] = sorted[sorted.size() / 2];
  std::optional<runtime::ModelProfile> profile;
  if (opt.profile) {
    // The runs above warmed the engines up.
    profile = compiled->profile(inputs, opt.profile_runs, 0);
    report["profile"] = profile_json(*profile);
  }

  if (!opt.output_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(opt.output_dir, ec);
    if (ec) throw Error(ErrorCode::io, opt.output_dir + ": cannot create: " + ec.message());
  }
  for (size_t i = 0; i < outputs.size(); ++i) {
    const std::string& name = g.value(g.outputs()[i]).name;
    nlohmann::json info = summarize(outputs[i]);
    info["name"] = name;
    if (!opt.output_dir.empty()) {
      auto path = std::filesystem::path(opt.output_dir) / file_name_for(name);
      write_npy(path, outputs[i]);
      info["file"] = path.string();
    }
    report["outputs"].push_back(info);
  }
  report["notes"] = notes;

  if (opt.json) {
    print_json(report);
    return 0;
  }
  auto& out = std::cout;
  out << std::fixed << std::setprecision(1);
  out << "model   " << opt.model << " (" << g.num_nodes() << " nodes, " << std::setprecision(2)
      << static_cast<double>(g.initializer_bytes()) / 1e6 << " MB of weights), imported in "
      << std::setprecision(1) << report["timings_ms"]["import"].get<double>() << " ms\n";
  for (const auto& note : notes) out << "note    " << note << "\n";
  for (const auto& in : report["inputs"]) {
    out << "input   " << in["name"].get<std::string>() << ": " << in["dtype"].get<std::string>() << "["
        << shape_to_string(in["shape"].get<std::vector<int64_t>>()) << "] from "
        << in["source"].get<std::string>() << "\n";
  }
  if (compiled) print_compile_report(out, compiled->report(), opt.compile.debug);
  out << "run     " << opt.backend << " backend: " << report["timings_ms"]["run_median"].get<double>()
      << " ms";
  // The first run also pays what an engine defers to it (a loaded cuda
  // engine plans its layers at the input shapes then): shown apart.
  if (opt.repeat > 1) {
    out << " (median of " << opt.repeat << ", min " << sorted.front() << "; first run "
        << report["timings_ms"]["run"][0].get<double>() << " ms)";
  }
  out << "\n";
  out << std::setprecision(5);
  for (const auto& o : report["outputs"]) {
    out << "output  " << o["name"].get<std::string>() << ": " << o["dtype"].get<std::string>() << "["
        << shape_to_string(o["shape"].get<std::vector<int64_t>>()) << "]";
    if (o.contains("min")) {
      out << "  min " << o["min"].get<double>() << "  max " << o["max"].get<double>() << "  mean "
          << o["mean"].get<double>();
    }
    if (o.contains("nonfinite")) out << "  (" << o["nonfinite"].get<int64_t>() << " non-finite)";
    if (o.contains("file")) out << "  → " << o["file"].get<std::string>();
    out << "\n";
  }
  if (profile) print_profile(out, *profile);
  return 0;
}

}  // namespace

void add_run_command(CLI::App& app, Action& action) {
  auto opt = std::make_shared<RunOptions>();
  CLI::App* cmd = app.add_subcommand("run", "Run an ONNX model and summarize its outputs");
  cmd->add_option("model", opt->model, "Model file (.onnx)")->required();
  cmd->add_option("--input", opt->inputs, "NAME=FILE.npy or NAME=random (default: random)");
  cmd->add_option("--shape", opt->shapes, "NAME=1x3x224x224: shape of a random input with symbolic dims");
  cmd->add_option("--backend", opt->backend,
                  engine_backend_help() + "; or ref (reference kernels, no engine)")
      ->capture_default_str();
  cmd->add_option("--output-dir", opt->output_dir, "Write each output as NAME.npy into this folder");
  cmd->add_option("--seed", opt->seed, "Seed for random inputs")->capture_default_str();
  cmd->add_option("--repeat", opt->repeat, "Run this many times and report the median")
      ->capture_default_str();
  cmd->add_flag("--json", opt->json, "Print one JSON object instead of text");
  cmd->add_flag(
      "--profile", opt->profile,
      "Time each layer (cpu and cuda backends): a table of layer, op(s), kind (onednn primitive, aux "
      "reference "
      "kernel inside an engine, native kiln kernel, reorder, reference fallback), tactic, ms and share, the "
      "median of "
      "--profile-runs synchronised runs after the normal ones; with --json, a \"profile\" section");
  cmd->add_option("--profile-runs", opt->profile_runs, "Profiled runs to take the median of")
      ->capture_default_str();
  add_compile_options(cmd, opt->compile);
  cmd->callback([opt, &action] { action = [opt] { return run(*opt); }; });
}

}  // namespace kiln::cli
