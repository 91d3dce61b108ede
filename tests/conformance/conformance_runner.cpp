// Runs the official ONNX backend test cases (Debian's libonnx-testdata)
// through the reference backend.
//
// Every case whose ops are all supported must pass at the suite's default
// tolerances (|actual - expected| <= atol + rtol * |expected|, rtol 1e-3,
// atol 1e-7). Cases that use an unsupported op, attribute or dtype are
// skipped, and the skips are compared with a committed list so that a
// regression (a case that used to run and is now skipped) fails the run.
//
// With --backend cpu, each case is compiled into cpu engines instead
// (lowered, built at the default optimization level, no engine cache) and run
// at the test data's shapes; cases the cpu backend cannot take are skipped
// with its reason, against their own skip list. The first data set runs
// profiled, which says where each node ran (oneDNN, an aux reference kernel,
// a fallback segment); a table per op type ends the run.
//
// Node tests feed weights as graph inputs, and the cpu backend runs Conv,
// Gemm, MatMul and LayerNormalization on oneDNN only with constant weights.
// --weights adds the initializer variant: each case whose weight-position
// inputs (weight_inputs.hpp) are graph inputs runs again with them as
// initializers holding the data set's values, against --weights-skip-list.
// --onednn-floors FILE fails the run when an op group's share of passing
// initializer-variant cases on oneDNN drops below its committed floor.
// --weights-known-failures lists initializer-variant cases that fail for a
// known cpu backend bug, --known-failures cases whose test data contradicts
// the spec; any other failure fails the run.
//
//   kiln_conformance [--backend ref|cpu] [--data DIR] [--skip-list FILE]
//                    [--known-failures FILE]
//                    [--write-skip-list FILE] [--weights] [--weights-skip-list FILE]
//                    [--weights-known-failures FILE] [--write-weights-skip-list FILE]
//                    [--onednn-floors FILE]
//                    [--coverage-json FILE] [--filter SUBSTRING] [--verbose]
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "frontend/onnx/onnx_importer.hpp"
#include "op_coverage.hpp"
#include "reference/executor.hpp"
#include "runtime/compiled_model.hpp"
#include "weight_inputs.hpp"

namespace fs = std::filesystem;
using kiln::Error;
using kiln::ErrorCode;
using kiln::Tensor;
using kiln::conformance::NodePlacement;

namespace {

constexpr double k_rtol = 1e-3;
constexpr double k_atol = 1e-7;
const char* const k_suites[] = {"node", "pytorch-converted", "pytorch-operator", "simple"};

enum class Outcome { passed, failed, skipped };

enum class Variant {
  inputs,   // the case as the suite ships it
  weights,  // weight-position graph inputs as initializers
};

struct CaseResult {
  std::string name;  // "node/test_add"
  Outcome outcome;
  std::string detail;
  // cpu backend, passed: where each node ran in the first data set.
  std::vector<NodePlacement> placements;
};

std::vector<fs::path> sorted_entries(const fs::path& dir, const std::string& prefix) {
  std::vector<fs::path> out;
  if (!fs::is_directory(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename().string().starts_with(prefix)) out.push_back(e.path());
  }
  // input_10 must come after input_9.
  std::sort(out.begin(), out.end(), [](const fs::path& a, const fs::path& b) {
    auto key = [](const fs::path& p) {
      std::string s = p.stem().string();
      size_t digits = s.find_last_not_of("0123456789") + 1;
      return std::make_pair(s.substr(0, digits), digits < s.size() ? std::stol(s.substr(digits)) : -1L);
    };
    return key(a) < key(b);
  });
  return out;
}

std::string compare(const Tensor& expected, const Tensor& actual, size_t index) {
  std::string where = "output " + std::to_string(index) + ": ";
  if (expected.dtype() != actual.dtype()) {
    return where + "type " + std::string(kiln::dtype_name(actual.dtype())) + ", expected " +
           std::string(kiln::dtype_name(expected.dtype()));
  }
  if (expected.shape() != actual.shape()) {
    return where + "shape " + actual.shape_string() + ", expected " + expected.shape_string();
  }
  bool floating = kiln::is_floating(expected.dtype());
  if (expected.dtype() == kiln::DType::float16 || expected.dtype() == kiln::DType::bfloat16) {
    if (std::equal(expected.bytes().begin(), expected.bytes().end(), actual.bytes().begin())) return {};
    return where + std::string(kiln::dtype_name(expected.dtype())) + " values differ (compared bitwise)";
  }
  int64_t mismatches = 0;
  std::string first;
  for (int64_t i = 0; i < expected.numel(); ++i) {
    bool ok;
    double e = 0;
    double a = 0;
    if (floating) {
      e = expected.float_at(i);
      a = actual.float_at(i);
      if (std::isnan(e) || std::isnan(a)) {
        ok = std::isnan(e) && std::isnan(a);
      } else if (std::isinf(e) || std::isinf(a)) {
        ok = e == a;
      } else {
        ok = std::fabs(a - e) <= k_atol + k_rtol * std::fabs(e);
      }
    } else {
      ok = expected.int_at(i) == actual.int_at(i);
      e = static_cast<double>(expected.int_at(i));
      a = static_cast<double>(actual.int_at(i));
    }
    if (!ok && mismatches++ == 0) {
      std::ostringstream os;
      os << where << "element " << i << " is " << a << ", expected " << e;
      first = os.str();
    }
  }
  if (mismatches == 0) return {};
  return first + " (" + std::to_string(mismatches) + " of " + std::to_string(expected.numel()) + " differ)";
}

// Compiles `graph` into cpu engines for `inputs`' shapes and runs it; with
// `placements`, profiled, recording where each node ran.
std::vector<Tensor> run_cpu(const kiln::ir::Graph& graph, std::span<const Tensor> inputs,
                            std::vector<NodePlacement>* placements) {
  std::vector<kiln::InputSpec> specs;
  for (size_t i = 0; i < inputs.size(); ++i) {
    specs.push_back(
        kiln::InputSpec::fixed(graph.value(graph.inputs()[i]).name, inputs[i].dtype(), inputs[i].shape()));
  }
  kiln::CompileSettings settings;  // the default optimization level: tactics are timed as users get them
  settings.cache_built_engines = false;
  settings.reuse_cached_engines = false;
  settings.timing_cache_path = "-";
  auto compiled = kiln::runtime::CompiledModel::compile(graph, specs, settings);
  if (!placements) return compiled.run(inputs);
  kiln::runtime::ModelProfile profile = compiled.profile(inputs, 1, 0);
  *placements = kiln::conformance::place_nodes(graph, compiled, profile);
  return std::move(profile.outputs);
}

// ONNX 1.12's test data stores bfloat16 tensors as uint16 (numpy has no
// bfloat16): the same bits, read as the model's bfloat16.
Tensor bfloat16_bits_as(Tensor t, kiln::DType model_dtype) {
  if (t.dtype() != kiln::DType::uint16 || model_dtype != kiln::DType::bfloat16) return t;
  Tensor out = Tensor::zeros(kiln::DType::bfloat16, t.shape());
  std::copy(t.bytes().begin(), t.bytes().end(), out.mutable_bytes().begin());
  return out;
}

// Runs one case; nullopt when `variant` is weights and the case has no graph
// input in a weight position (the variant would be the case itself).
std::optional<CaseResult> run_case(const fs::path& dir, const std::string& name, const std::string& backend,
                                   Variant variant) {
  kiln::frontend::ImportedModel model;
  try {
    model = kiln::frontend::import_onnx_file(dir / "model.onnx");
  } catch (const Error& e) {
    // Without a graph there is no telling whether the variant exists; the
    // graph-input variant reports the case.
    if (variant == Variant::weights) return std::nullopt;
    if (e.code() == ErrorCode::unsupported) return CaseResult{name, Outcome::skipped, e.what(), {}};
    return CaseResult{name, Outcome::failed, std::string("import: ") + e.what(), {}};
  }
  const kiln::ir::Graph& graph = model.graph;
  auto data_sets = sorted_entries(dir, "test_data_set_");
  if (variant == Variant::weights) {
    // Whether the variant exists depends only on which graph inputs the ops
    // read as weights, not on the data: decide before any skip.
    if (kiln::conformance::weight_inputs(graph).empty()) return std::nullopt;
  }
  auto unsupported = kiln::ref::find_unsupported(graph);
  if (!unsupported.empty()) {
    std::set<std::string> reasons;
    for (const auto& u : unsupported) reasons.insert(u.op_type + ": " + u.reason);
    std::string detail;
    for (const auto& r : reasons) detail += (detail.empty() ? "" : "; ") + r;
    return CaseResult{name, Outcome::skipped, detail, {}};
  }
  CaseResult result{name, Outcome::passed, {}, {}};
  try {
    std::optional<kiln::ref::Executor> executor;
    if (backend == "ref") executor.emplace(graph);
    for (const auto& set : data_sets) {
      std::vector<Tensor> inputs;
      for (const auto& f : sorted_entries(set, "input_")) {
        const size_t i = inputs.size();
        Tensor t = kiln::frontend::read_tensor_proto_file(f);
        inputs.push_back(i < graph.inputs().size()
                             ? bfloat16_bits_as(std::move(t), graph.value(graph.inputs()[i]).type.dtype)
                             : std::move(t));
      }
      std::vector<Tensor> expected;
      for (const auto& f : sorted_entries(set, "output_")) {
        const size_t i = expected.size();
        Tensor t = kiln::frontend::read_tensor_proto_file(f);
        expected.push_back(i < graph.outputs().size()
                               ? bfloat16_bits_as(std::move(t), graph.value(graph.outputs()[i]).type.dtype)
                               : std::move(t));
      }
      std::vector<Tensor> actual;
      std::vector<NodePlacement>* placements = set == data_sets.front() ? &result.placements : nullptr;
      if (executor) {
        actual = executor->run(inputs);
      } else if (inputs.size() != graph.inputs().size()) {
        return CaseResult{
            name, Outcome::failed, "test data has " + std::to_string(inputs.size()) + " inputs", {}};
      } else if (variant == Variant::weights) {
        // Each data set may hold other weights: one graph (and compile) per set.
        auto converted = kiln::conformance::weights_as_initializers(graph, inputs);
        actual = run_cpu(converted->graph, converted->remaining, placements);
      } else {
        actual = run_cpu(graph, inputs, placements);
      }
      if (actual.size() != expected.size()) {
        return CaseResult{name,
                          Outcome::failed,
                          "produced " + std::to_string(actual.size()) + " outputs, expected " +
                              std::to_string(expected.size()),
                          {}};
      }
      for (size_t i = 0; i < expected.size(); ++i) {
        std::string diff = compare(expected[i], actual[i], i);
        if (!diff.empty())
          return CaseResult{name, Outcome::failed, set.filename().string() + ": " + diff, {}};
      }
    }
  } catch (const Error& e) {
    if (e.code() == ErrorCode::unsupported) return CaseResult{name, Outcome::skipped, e.what(), {}};
    return CaseResult{name, Outcome::failed, e.what(), {}};
  } catch (const std::exception& e) {
    return CaseResult{name, Outcome::failed, std::string("exception: ") + e.what(), {}};
  }
  return result;
}

std::set<std::string> read_list(const fs::path& path) {
  std::set<std::string> names;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    auto end = line.find_first_of(" \t#");
    std::string name = line.substr(0, end);
    if (!name.empty()) names.insert(name);
  }
  return names;
}

// Lists skips and failures and compares the skips with the committed list;
// false when a case failed or is skipped without being listed.
// `known_failures` lists cases that fail for a known cpu backend bug: they are
// reported, and a listed case that passes is noted for removal.
bool report(const std::vector<CaseResult>& results, const std::string& label, const fs::path& skip_list,
            const fs::path& known_failures, bool filtered) {
  std::set<std::string> known;
  if (!known_failures.empty()) known = read_list(known_failures);
  int passed = 0, failed = 0, skipped = 0;
  for (const auto& r : results) {
    if (r.outcome == Outcome::passed) ++passed;
    if (r.outcome == Outcome::failed) ++failed;
    if (r.outcome == Outcome::skipped) ++skipped;
  }
  std::cout << label << ": skipped cases (unsupported):\n";
  for (const auto& r : results) {
    if (r.outcome == Outcome::skipped) std::cout << "  SKIP " << r.name << "  [" << r.detail << "]\n";
  }
  std::cout << label << ": failed cases:\n";
  bool ok = true;
  for (const auto& r : results) {
    if (r.outcome != Outcome::failed) continue;
    const bool listed = known.count(r.name) > 0;
    std::cout << (listed ? "  KNOWN FAIL " : "  FAIL ") << r.name << "  " << r.detail << "\n";
    if (!listed) ok = false;
  }
  for (const auto& r : results) {
    if (r.outcome != Outcome::failed && known.count(r.name)) {
      std::cout << "  NOTE " << r.name << " no longer fails: remove it from " << known_failures.filename()
                << "\n";
    }
  }
  if (!skip_list.empty() && !filtered) {
    std::set<std::string> allowed = read_list(skip_list);
    for (const auto& r : results) {
      if (r.outcome == Outcome::skipped && !allowed.count(r.name)) {
        std::cout << "  REGRESSION " << r.name << " is skipped but not in " << skip_list.filename() << "\n";
        ok = false;
      }
      if (r.outcome == Outcome::passed && allowed.count(r.name)) {
        std::cout << "  NOTE " << r.name << " now passes: remove it from " << skip_list.filename() << "\n";
      }
    }
  }
  std::cout << label << ": " << passed << " passed, " << failed << " failed, " << skipped << " skipped\n";
  return ok;
}

void write_skips(const std::vector<CaseResult>& results, const fs::path& path, const std::string& what,
                 const std::string& regenerate) {
  std::ofstream out(path);
  out << "# ONNX conformance cases " << what << ", with the reason.\n"
      << "# Regenerate with: kiln_conformance " << regenerate << "\n";
  for (const auto& r : results) {
    if (r.outcome == Outcome::skipped) {
      std::string reason = r.detail.substr(0, 160);
      std::replace(reason.begin(), reason.end(), '\n', ' ');
      out << r.name << "  # " << reason << "\n";
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  fs::path data = "/usr/share/libonnx-testdata/data";
  fs::path skip_list, write_skip_list, known_failures, weights_skip_list, weights_known_failures,
      write_weights_skip_list;
  fs::path floors, coverage_json;
  std::string filter;
  bool verbose = false;
  bool weights = false;
  std::string backend = "ref";
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "missing value for " << arg << "\n";
        std::exit(1);
      }
      return argv[++i];
    };
    if (arg == "--data")
      data = next();
    else if (arg == "--skip-list")
      skip_list = next();
    else if (arg == "--write-skip-list")
      write_skip_list = next();
    else if (arg == "--known-failures")
      known_failures = next();
    else if (arg == "--weights")
      weights = true;
    else if (arg == "--weights-skip-list")
      weights_skip_list = next();
    else if (arg == "--weights-known-failures")
      weights_known_failures = next();
    else if (arg == "--write-weights-skip-list")
      write_weights_skip_list = next();
    else if (arg == "--onednn-floors")
      floors = next();
    else if (arg == "--coverage-json")
      coverage_json = next();
    else if (arg == "--filter")
      filter = next();
    else if (arg == "--verbose")
      verbose = true;
    else if (arg == "--backend")
      backend = next();
    else {
      std::cerr << "unknown argument " << arg << "\n";
      return 1;
    }
  }
  if (backend != "ref" && backend != "cpu") {
    std::cerr << "unknown backend " << backend << " (ref, cpu)\n";
    return 1;
  }
  const bool cpu = backend == "cpu";
  if (!cpu && (weights || !floors.empty() || !coverage_json.empty())) {
    std::cerr << "--weights, --onednn-floors and --coverage-json need --backend cpu\n";
    return 1;
  }
  if (!floors.empty() && !weights) {
    std::cerr << "--onednn-floors guards the initializer variant: add --weights\n";
    return 1;
  }
  if (!fs::is_directory(data)) {
    std::cerr << "no ONNX test data at " << data << " (install libonnx-testdata)\n";
    return 1;
  }

  std::vector<CaseResult> results;          // as shipped
  std::vector<CaseResult> weight_results;   // initializer variant, where it differs
  kiln::conformance::OpCoverage shipped;    // where the as-shipped cases ran
  kiln::conformance::OpCoverage as_models;  // each case as a model holds it: the variant if any
  for (const char* suite : k_suites) {
    for (const auto& dir : sorted_entries(data / suite, "test_")) {
      std::string name = std::string(suite) + "/" + dir.filename().string();
      if (!filter.empty() && name.find(filter) == std::string::npos) continue;
      results.push_back(*run_case(dir, name, backend, Variant::inputs));
      const CaseResult& r = results.back();
      if (verbose) std::cerr << name << ": " << static_cast<int>(r.outcome) << "\n";
      if (r.outcome == Outcome::passed && cpu) shipped.add(name, r.placements);
      if (!weights) continue;
      if (auto w = run_case(dir, name, backend, Variant::weights)) {
        weight_results.push_back(std::move(*w));
        const CaseResult& wr = weight_results.back();
        if (verbose) std::cerr << name << " (weights): " << static_cast<int>(wr.outcome) << "\n";
        if (wr.outcome == Outcome::passed) as_models.add(name, wr.placements);
      } else if (r.outcome == Outcome::passed) {
        // No weight inputs: the variant is this very graph, built the same way.
        as_models.add(name, r.placements);
      }
    }
  }

  const bool filtered = !filter.empty();
  bool ok = report(results, cpu ? "graph-input variant" : "reference", skip_list, known_failures, filtered);
  if (weights) {
    ok = report(weight_results, "initializer variant", weights_skip_list, weights_known_failures, filtered) &&
         ok;
  }
  if (cpu) {
    std::cout << "\n";
    shipped.print(std::cout, "Where the passing graph-input cases ran, per op (cases with that op):");
    if (weights) {
      std::cout << "\n";
      as_models.print(std::cout,
                      "Where the passing cases ran with weight inputs as initializers, per op "
                      "(cases without weight inputs counted as shipped):");
    }
  }
  if (!coverage_json.empty()) {
    std::ofstream out(coverage_json);
    out << "{\"graph_inputs\": " << shipped.to_json();
    if (weights) out << ",\n\"initializers\": " << as_models.to_json();
    out << "}\n";
    if (!out) {
      std::cerr << "cannot write " << coverage_json << "\n";
      return 1;
    }
  }
  if (!floors.empty() && filtered)
    std::cout << "oneDNN share floors not checked: --filter runs part of the suite\n";
  if (!floors.empty() && !filtered) {
    try {
      for (const std::string& f : kiln::conformance::check_floors(as_models, floors)) {
        std::cout << "  BELOW FLOOR " << f << "\n";
        ok = false;
      }
    } catch (const Error& e) {
      std::cerr << e.what() << "\n";
      return 1;
    }
  }
  if (!write_skip_list.empty()) {
    write_skips(results, write_skip_list, cpu ? "the cpu backend skips" : "the reference backend skips",
                std::string(cpu ? "--backend cpu " : "") + "--write-skip-list tests/conformance/" +
                    (cpu ? "skipped_cpu.txt" : "skipped.txt"));
  }
  if (!write_weights_skip_list.empty()) {
    write_skips(
        weight_results, write_weights_skip_list,
        "the cpu backend skips with their weight inputs as initializers (only cases that have weight "
        "inputs)",
        "--backend cpu --weights --write-weights-skip-list tests/conformance/skipped_cpu_weights.txt");
  }
  return ok ? 0 : 1;
}
