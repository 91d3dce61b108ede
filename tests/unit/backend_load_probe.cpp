// Uses one engine backend as a kiln program would, then prints every shared
// object the process has loaded: what test_backend_plugin asserts about. Run
// as its own process (linked as kiln's programs are, without the cuda
// backend) so that nothing else a test did is loaded.
//
//   backend_load_probe cpu    compiles and runs a tiny model on the cpu backend
//   backend_load_probe cuda   asks the registry for the cuda backend
//
// Prints "result: ok" or "result: error <code>: <message>", then one
// "loaded: <path>" line per object (dl_iterate_phdr). Exits 0 when it got
// that far, whatever the result.
#include <link.h>

#include <exception>
#include <iostream>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "backends/registry/backend_registry.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "kiln/error.hpp"
#include "kiln/settings.hpp"
#include "runtime/compiled_model.hpp"
#include "zoo/zoo.hpp"

namespace {

void use_cpu() {
  const std::string text = kiln::zoo::build_zoo_model("resnet_tiny", {1, std::nullopt}).onnx_bytes;
  const auto bytes = std::as_bytes(std::span(text.data(), text.size()));
  const auto imported = kiln::frontend::import_onnx_bytes(bytes, "resnet_tiny.onnx");
  kiln::CompileSettings settings;
  settings.backend = "cpu";
  settings.cache_built_engines = settings.reuse_cached_engines = false;
  settings.optimization_level = 0;
  settings.timing_cache_path = "-";
  const std::vector<int64_t> shape{1, 3, 64, 64};
  auto compiled = kiln::runtime::CompiledModel::compile(
      imported.graph, {kiln::InputSpec::fixed("input", kiln::DType::float32, shape)}, settings);
  std::vector<kiln::Tensor> inputs{kiln::Tensor::zeros(kiln::DType::float32, shape)};
  (void)compiled.run(inputs);
}

int print_object(dl_phdr_info* info, size_t, void*) {
  if (info->dlpi_name != nullptr && *info->dlpi_name != '\0')
    std::cout << "loaded: " << info->dlpi_name << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string_view mode = argc == 2 ? argv[1] : "";
  if (mode != "cpu" && mode != "cuda") {
    std::cerr << "usage: backend_load_probe cpu|cuda\n";
    return 2;
  }
  try {
    if (mode == "cpu") {
      use_cpu();
    } else {
      (void)kiln::make_backend("cuda");
    }
    std::cout << "result: ok\n";
  } catch (const kiln::Error& e) {
    std::cout << "result: error " << kiln::to_string(e.code()) << ": " << e.what() << "\n";
  } catch (const std::exception& e) {
    std::cout << "result: exception: " << e.what() << "\n";
  }
  dl_iterate_phdr(print_object, nullptr);
  return 0;
}
