// libFuzzer target: the ONNX importer on bytes (parse, ONNX checker,
// conversion to IR, static shape inference). Any input must import or end in
// a kiln::Error; any other exception, a crash, a leak or an allocation over
// libFuzzer's -malloc_limit_mb is a finding.
#include <cstddef>
#include <cstdint>
#include <span>

#include "frontend/onnx/onnx_importer.hpp"
#include "kiln/error.hpp"
#include "util/log.hpp"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kiln::log::set_level(kiln::log::Level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    (void)kiln::frontend::import_onnx_bytes(std::span(reinterpret_cast<const std::byte*>(data), size),
                                            "fuzz.onnx");
  } catch (const kiln::Error&) {
  }
  return 0;
}
