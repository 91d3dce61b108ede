// Runs the official ONNX backend test cases (Debian's libonnx-testdata)
// through the reference backend.
//
// Every case whose ops are all supported must pass at the suite's default
// tolerances (|actual - expected| <= atol + rtol * |expected|, rtol 1e-3,
// atol 1e-7). Cases that use an unsupported op, attribute or dtype are
// skipped, and the skips are compared with a committed list so that a
// regression (a case that used to run and is now skipped) fails the run.
//
// With --backend cpu, each case is compiled into a oneDNN engine instead
// (lowered, built at optimization level 0, no engine cache) and run at the
// test data's shapes; cases the cpu backend cannot take are skipped with its
// reason, against their own skip list.
//
//   kiln_conformance [--backend ref|cpu] [--data DIR] [--skip-list FILE]
//                    [--write-skip-list FILE] [--filter SUBSTRING] [--verbose]
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "backends/ref/executor.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "runtime/compiled_model.hpp"

namespace fs = std::filesystem;
using kiln::Error;
using kiln::ErrorCode;
using kiln::Tensor;

namespace {

constexpr double k_rtol = 1e-3;
constexpr double k_atol = 1e-7;
const char* const k_suites[] = {"node", "pytorch-converted", "pytorch-operator", "simple"};

enum class Outcome { passed, failed, skipped };

struct CaseResult {
  std::string name;  // "node/test_add"
  Outcome outcome;
  std::string detail;
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
    return where + "float16 values differ";
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

CaseResult run_case(const fs::path& dir, const std::string& name, const std::string& backend) {
  kiln::frontend::ImportedModel model;
  try {
    model = kiln::frontend::import_onnx_file(dir / "model.onnx");
  } catch (const Error& e) {
    if (e.code() == ErrorCode::unsupported) return {name, Outcome::skipped, e.what()};
    return {name, Outcome::failed, std::string("import: ") + e.what()};
  }
  const kiln::ir::Graph& graph = model.graph;
  auto unsupported = kiln::ref::find_unsupported(graph);
  if (!unsupported.empty()) {
    std::set<std::string> reasons;
    for (const auto& u : unsupported) reasons.insert(u.op_type + ": " + u.reason);
    std::string detail;
    for (const auto& r : reasons) detail += (detail.empty() ? "" : "; ") + r;
    return {name, Outcome::skipped, detail};
  }
  try {
    std::optional<kiln::ref::Executor> executor;
    if (backend == "ref") executor.emplace(graph);
    auto data_sets = sorted_entries(dir, "test_data_set_");
    for (const auto& set : data_sets) {
      std::vector<Tensor> inputs;
      for (const auto& f : sorted_entries(set, "input_"))
        inputs.push_back(kiln::frontend::read_tensor_proto_file(f));
      std::vector<Tensor> expected;
      for (const auto& f : sorted_entries(set, "output_"))
        expected.push_back(kiln::frontend::read_tensor_proto_file(f));
      std::vector<Tensor> actual;
      if (executor) {
        actual = executor->run(inputs);
      } else {
        if (inputs.size() != graph.inputs().size()) {
          return {name, Outcome::failed, "test data has " + std::to_string(inputs.size()) + " inputs"};
        }
        std::vector<kiln::InputSpec> specs;
        for (size_t i = 0; i < inputs.size(); ++i) {
          specs.push_back(kiln::InputSpec::fixed(graph.value(graph.inputs()[i]).name, inputs[i].dtype(),
                                                 inputs[i].shape()));
        }
        kiln::CompileSettings settings;
        settings.cache_built_engines = false;
        settings.reuse_cached_engines = false;
        settings.optimization_level = 0;
        settings.timing_cache_path = "-";
        auto compiled = kiln::runtime::CompiledModel::compile(graph, specs, settings);
        actual = compiled.run(inputs);
      }
      if (actual.size() != expected.size()) {
        return {name, Outcome::failed,
                "produced " + std::to_string(actual.size()) + " outputs, expected " +
                    std::to_string(expected.size())};
      }
      for (size_t i = 0; i < expected.size(); ++i) {
        std::string diff = compare(expected[i], actual[i], i);
        if (!diff.empty()) return {name, Outcome::failed, set.filename().string() + ": " + diff};
      }
    }
  } catch (const Error& e) {
    if (e.code() == ErrorCode::unsupported) return {name, Outcome::skipped, e.what()};
    return {name, Outcome::failed, e.what()};
  } catch (const std::exception& e) {
    return {name, Outcome::failed, std::string("exception: ") + e.what()};
  }
  return {name, Outcome::passed, {}};
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

}  // namespace

int main(int argc, char** argv) {
  fs::path data = "/usr/share/libonnx-testdata/data";
  fs::path skip_list;
  fs::path write_skip_list;
  std::string filter;
  bool verbose = false;
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
  if (!fs::is_directory(data)) {
    std::cerr << "no ONNX test data at " << data << " (install libonnx-testdata)\n";
    return 1;
  }

  std::vector<CaseResult> results;
  for (const char* suite : k_suites) {
    for (const auto& dir : sorted_entries(data / suite, "test_")) {
      std::string name = std::string(suite) + "/" + dir.filename().string();
      if (!filter.empty() && name.find(filter) == std::string::npos) continue;
      results.push_back(run_case(dir, name, backend));
      if (verbose) std::cerr << name << ": " << static_cast<int>(results.back().outcome) << "\n";
    }
  }

  int passed = 0, failed = 0, skipped = 0;
  for (const auto& r : results) {
    if (r.outcome == Outcome::passed) ++passed;
    if (r.outcome == Outcome::failed) ++failed;
    if (r.outcome == Outcome::skipped) ++skipped;
  }
  std::cout << "Skipped cases (unsupported):\n";
  for (const auto& r : results) {
    if (r.outcome == Outcome::skipped) std::cout << "  SKIP " << r.name << "  [" << r.detail << "]\n";
  }
  std::cout << "Failed cases:\n";
  for (const auto& r : results) {
    if (r.outcome == Outcome::failed) std::cout << "  FAIL " << r.name << "  " << r.detail << "\n";
  }

  bool ok = failed == 0;
  if (!skip_list.empty() && filter.empty()) {
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
  if (!write_skip_list.empty()) {
    std::ofstream out(write_skip_list);
    const bool cpu = backend == "cpu";
    out << "# ONNX conformance cases the " << (cpu ? "cpu" : "reference")
        << " backend skips, with the reason.\n"
        << "# Regenerate with: kiln_conformance" << (cpu ? " --backend cpu" : "")
        << " --write-skip-list tests/conformance/" << (cpu ? "skipped_cpu.txt" : "skipped.txt") << "\n";
    for (const auto& r : results) {
      if (r.outcome == Outcome::skipped) {
        std::string reason = r.detail.substr(0, 160);
        std::replace(reason.begin(), reason.end(), '\n', ' ');
        out << r.name << "  # " << reason << "\n";
      }
    }
  }
  std::cout << passed << " passed, " << failed << " failed, " << skipped << " skipped\n";
  return ok ? 0 : 1;
}
