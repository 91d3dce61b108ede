// Imports one model and prints the process's resident-memory high-water mark
// before and after, in kB: "<baseline_kb> <peak_kb>". Run as its own process
// by test_import_memory so that nothing else the test did counts.
#include <fstream>
#include <iostream>
#include <string>

#include "frontend/onnx/onnx_importer.hpp"

namespace {
long peak_rss_kb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: import_memory_probe MODEL.onnx\n";
    return 1;
  }
  long baseline = peak_rss_kb();
  auto model = kiln::frontend::import_onnx_file(argv[1]);
  long peak = peak_rss_kb();
  std::cout << baseline << " " << peak << " " << model.graph.initializer_bytes() << "\n";
  return 0;
}
