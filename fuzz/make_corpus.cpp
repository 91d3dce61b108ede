// Writes the seed corpus of the fuzz targets (fuzz/corpus/<target>/) from
// real artifacts: plans built by the CPU backend for tiny zoo models, the
// envelopes a compile would save for them, and small ONNX models. Run once
// when the formats change:
//   cmake --build BUILD --target kiln_fuzz_corpus && BUILD/fuzz/kiln_fuzz_corpus fuzz/corpus
// The ONNX seeds are 37 small models of Debian's libonnx-testdata node suite
// (/usr/share/libonnx-testdata/data/node/<test>/model.onnx, copied by hand);
// regression-* seeds are inputs with which a fuzzer found a bug (now fixed).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include "backends/cpu/cpu_backend.hpp"
#include "builder/timing_cache.hpp"
#include "format/envelope.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "key/engine_key.hpp"
#include "kiln/version.hpp"
#include "passes/passes.hpp"
#include "zoo/zoo.hpp"

namespace fs = std::filesystem;
using namespace kiln;

void write(const fs::path& path, std::span<const std::byte> bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  std::printf("%s: %zu bytes\n", path.c_str(), bytes.size());
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: kiln_fuzz_corpus CORPUS_DIR\n");
    return 64;
  }
  fs::path root = argv[1];
  for (const char* sub : {"envelope", "plan", "onnx"}) fs::create_directories(root / sub);
  auto backend = make_cpu_backend();
  CompileSettings settings;
  settings.optimization_level = 0;
  struct Model {
    const char* name;
    std::vector<InputSpec> specs;
  };
  std::vector<Model> models = {
      {"resnet_tiny", {InputSpec::fixed("input", DType::float32, {1, 3, 64, 64})}},
      {"mobilenet_tiny", {InputSpec::fixed("input", DType::float32, {1, 3, 64, 64})}},
      {"bert_tiny",
       {InputSpec::fixed("input_ids", DType::int64, {1, 8}),
        InputSpec::fixed("attention_mask", DType::int64, {1, 8})}},
  };
  for (const auto& model : models) {
    auto onnx = zoo::build_zoo_model(model.name, {1, std::nullopt}).onnx_bytes;
    auto graph = frontend::import_onnx_bytes(std::as_bytes(std::span<const char>(onnx)), model.name).graph;
    auto lowered = passes::lower(graph);
    builder::TimingCache timing;
    auto engine = backend->build(lowered, model.specs, settings, timing);
    auto plan = engine->serialize();
    // The plan target appends the checksum itself: its seeds are the FlatBuffer only.
    write(root / "plan" / (std::string(model.name) + ".fb"), std::span(plan).first(plan.size() - 8));
    format::EnvelopeHeader header{
        key::compute_engine_key(lowered, model.specs, settings, backend->fingerprint()),
        "kiln " KILN_VERSION_STRING, backend->fingerprint().to_string(), 1'700'000'000'000, 1234};
    write(root / "envelope" / (std::string(model.name) + ".kiln"), format::seal(header, plan));
  }
  // Small envelopes: empty and tiny payloads, empty strings.
  format::EnvelopeHeader small{};
  write(root / "envelope" / "empty_payload.kiln", format::seal(small, {}));
  std::string text = "payload";
  write(root / "envelope" / "small.kiln", format::seal(small, std::as_bytes(std::span<const char>(text))));
  return 0;
}
