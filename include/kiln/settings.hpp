// Compile settings and input specifications.
//
// Setting names follow the engine-caching tutorial kiln implements
// (Torch-TensorRT's engine_caching_example.py), in C++ snake_case.
// Settings that change the built engine are part of the engine key; the
// others (cache location and size, debug) are not.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "kiln/dtype.hpp"

namespace kiln {

class EngineCache;

// The system temp dir followed by "kiln_engine_cache": the tutorial's
// default engine_cache_dir.
inline std::filesystem::path default_engine_cache_dir() {
  std::error_code ec;
  auto temp = std::filesystem::temp_directory_path(ec);
  if (ec) temp = "/tmp";
  return temp / "kiln_engine_cache";
}

// Kernel precisions a build may choose among. Values are persistent. The cpu
// backend uses bf16 where enabled (fp16 is ignored there); the cuda backend
// builds a whole fp16 (or bf16) engine when it is enabled (docs/cuda.md).
enum class Precision : uint8_t { fp32 = 0, bf16 = 1, fp16 = 2 };

struct CompileSettings {
  // --- engine cache (docs/engine-cache.md) ---
  bool cache_built_engines = true;
  bool reuse_cached_engines = true;
  bool refittable = true;
  // An empty folder is an error (kiln::Error), never a silent fallback to the
  // shared default.
  std::filesystem::path engine_cache_dir = default_engine_cache_dir();
  uint64_t engine_cache_size = uint64_t{5} << 30;
  std::shared_ptr<EngineCache> custom_engine_cache;
  // --- fleet cache (docs/fleet-cache.md) ---
  // Cache tiers, fastest first: "ram" or "ram:SIZE", "disk" (engine_cache_dir),
  // "redis://[[user]:pass@]host[:port][/db][?prefix=..&ttl=..&readonly=1..]",
  // "unix:///path.sock?...". A lookup served by a lower tier is copied into
  // the tiers above; saves write through. Empty: $KILN_ENGINE_CACHE (the same
  // list, comma-separated) if set, else {"disk"}.
  std::vector<std::string> engine_cache_tiers;
  // A file holding the secret that signs entries (HMAC-SHA256); unsigned or
  // tampered entries are then refused. Empty: $KILN_ENGINE_CACHE_SECRET_FILE,
  // else $KILN_ENGINE_CACHE_SECRET (the secret itself), else no signing.
  std::filesystem::path engine_cache_secret_file;

  // --- engine build ---
  // The engine backend: "cpu" (oneDNN) or "cuda" (cuDNN and cuBLASLt, in a
  // build with KILN_WITH_CUDA). Part of the engine key through the backend's
  // fingerprint.
  std::string backend = "cpu";
  std::filesystem::path timing_cache_path;  // empty: inside the cache dir; "-": none
  std::set<Precision> enabled_precisions{Precision::fp32};
  int min_block_size = 1;
  int optimization_level = 3;  // 0: heuristics, no timing ... 5: exhaustive
  bool debug = false;          // log each layer's candidates, timings and choice
  int num_threads = 0;         // 0: all cores
  // The cpu backend runs each scaled-dot-product attention it matches as one
  // fused layer instead of oneDNN's batched MatMuls and Softmax. Off: at
  // BERT's and ViT's shapes the fused layer measured slower on the
  // development machine (docs/performance.md). Part of the engine key when
  // on; other backends ignore it. The CLI's default is
  // KILN_CPU_FUSED_ATTENTION=1 in the environment; the library reads no
  // environment for it.
  bool cpu_fused_attention = false;
};

// One engine input: its dtype and the range of shapes the engine must run.
// Tactics are timed at `opt`. For a static input, min == opt == max.
struct InputSpec {
  std::string name;
  DType dtype = DType::float32;
  std::vector<int64_t> min;
  std::vector<int64_t> opt;
  std::vector<int64_t> max;

  static InputSpec fixed(std::string name, DType dtype, std::vector<int64_t> shape) {
    return {std::move(name), dtype, shape, shape, shape};
  }
  bool is_static() const { return min == max; }
};

}  // namespace kiln
