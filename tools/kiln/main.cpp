#include <iostream>

#include "backends/ref/executor.hpp"
#include "frontend/onnx/onnx_importer.hpp"

int main(int argc, char** argv) {
  if (argc < 2) return 1;
  try {
    auto model = kiln::frontend::import_onnx_file(argv[1]);
    std::cout << model.graph.to_string();
  } catch (const kiln::Error& e) {
    std::cerr << "kiln: " << e.what() << "\n";
    return kiln::is_user_error(e.code()) ? 1 : 2;
  }
  return 0;
}
