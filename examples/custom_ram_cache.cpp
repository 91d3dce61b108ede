// The tutorial's "Custom Engine Cache": a user class with save and load only
// (the tutorial's RAMEngineCache), passed as custom_engine_cache, where it
// replaces the disk cache. Three fresh JIT modules time their first call:
// caching disabled, caching to save (into RAM), caching to reuse (from RAM).
//
// Usage: kiln_example_custom_ram_cache [MODEL [BATCH]]   (default resnet18 100)
#include <iostream>
#include <map>
#include <mutex>

#include "common.hpp"
#include "kiln/engine_cache.hpp"
#include "kiln/jit.hpp"

// Keys are weight-agnostic hex hashes of the lowered graph; blobs are sealed
// engines (plans without weights) that kiln verifies before any use, so a
// cache may hand back anything without harm. save and load may be called
// from several threads at once, hence the mutex.
class RamEngineCache : public kiln::EngineCache {
 public:
  void save(const std::string& hash, std::span<const std::byte> blob) override {
    std::lock_guard lock(m_mutex);
    m_engine_cache[hash].assign(blob.begin(), blob.end());
  }

  std::optional<std::vector<std::byte>> load(const std::string& hash) override {
    std::lock_guard lock(m_mutex);
    auto it = m_engine_cache.find(hash);
    if (it == m_engine_cache.end()) return std::nullopt;
    return it->second;
  }

  size_t size() const {
    std::lock_guard lock(m_mutex);
    return m_engine_cache.size();
  }

 private:
  mutable std::mutex m_mutex;
  std::map<std::string, std::vector<std::byte>> m_engine_cache;
};

int main(int argc, char** argv) try {
  example::Args args = example::parse_args(argc, argv);
  example::TempDir work;
  std::filesystem::path model = example::model_file(args.model, 0, work.path());
  example::ImageInput input = example::image_input(model);
  auto engine_cache = std::make_shared<RamEngineCache>();

  std::vector<double> times;
  const char* expected[] = {"built_uncached", "miss", "hit"};
  for (int i = 0; i < 3; ++i) {
    kiln::CompileSettings settings;
    settings.cache_built_engines = i > 0;
    settings.reuse_cached_engines = i > 0;
    settings.custom_engine_cache = engine_cache;
    settings.timing_cache_path = work.path() / "timing_cache.bin";
    std::filesystem::remove(settings.timing_cache_path);  // remove_timing_cache()

    std::vector<kiln::Tensor> inputs{example::random_images(input, args.batch, static_cast<uint64_t>(i))};
    auto start = std::chrono::steady_clock::now();
    kiln::JitModule jit(model, settings);
    jit(inputs);
    times.push_back(example::ms_since(start));
    const kiln::EngineStatus& engine = jit.last_engines().at(0);
    std::cout << "module " << i + 1 << ": engine " << engine.status << ", RAM cache holds "
              << engine_cache->size() << " engine(s)\n";
    if (engine.status != expected[i]) {
      std::cerr << "expected " << expected[i] << ", got " << engine.status << ": " << engine.reason << "\n";
      return 1;
    }
  }
  std::cout << "----------------torch_compile----------------\n"
            << "disable engine caching, used: " << times[0] << " ms\n"
            << "enable engine caching to cache engines, used: " << times[1] << " ms\n"
            << "enable engine caching to reuse engines, used: " << times[2] << " ms\n";
  return 0;
} catch (const std::exception& e) {
  std::cerr << argv[0] << ": " << e.what() << "\n";
  return 1;
}
