// The tutorial's "Engine Caching for AOT Compilation": compile ResNet-18 with
// the batch a dynamic dim from 1 to 200 (tactics timed at 100) three times,
//   1. caching disabled,
//   2. caching on, empty cache: build and save the engine,
//   3. caching on: load the engine and refit (here with OTHER weights),
// removing the timing cache before each compile as the tutorial does, then
// run each compiled model at batch 100, 101 and 102.
//
// Usage: kiln_example_aot_dynamic_batch [MODEL [BATCH]]   (default resnet18 100)
#include <iostream>

#include "common.hpp"
#include "kiln/compile.hpp"

int main(int argc, char** argv) try {
  example::Args args = example::parse_args(argc, argv);
  example::TempDir work;
  // Two models of one architecture: the cache key ignores weight values.
  std::filesystem::path models[] = {example::model_file(args.model, 0, work.path()),
                                    example::model_file(args.model, 0, work.path()),
                                    example::model_file(args.model, 1, work.path())};
  example::ImageInput input = example::image_input(models[0]);

  // torch.export.Dim("batch", min=1, max=200), with opt at the example batch.
  std::vector<int64_t> min = input.shape, opt = input.shape, max = input.shape;
  min[0] = 1;
  opt[0] = args.batch;
  max[0] = 2 * args.batch;
  std::vector<kiln::InputSpec> specs{{input.name, kiln::DType::float32, min, opt, max}};

  std::vector<double> times;
  for (int i = 0; i < 3; ++i) {
    kiln::CompileSettings settings;
    settings.cache_built_engines = i > 0;
    settings.reuse_cached_engines = i > 0;
    settings.engine_cache_dir = work.path() / "engine_cache";
    settings.engine_cache_size = uint64_t{1} << 30;  // 1 GB
    settings.timing_cache_path = work.path() / "timing_cache.bin";
    std::filesystem::remove(settings.timing_cache_path);  // remove_timing_cache()

    auto start = std::chrono::steady_clock::now();
    kiln::CompiledModel model = kiln::compile(models[i], specs, settings);
    times.push_back(example::ms_since(start));

    const kiln::EngineStatus& engine = model.engines().at(0);
    std::vector<kiln::Tensor> inputs{example::random_images(input, args.batch + i, static_cast<uint64_t>(i))};
    auto outputs = model.run(inputs);
    std::cout << "compile " << i + 1 << ": engine " << engine.status << ", output "
              << outputs.at(0).shape_string() << " at batch " << args.batch + i << "\n";
    const char* expected[] = {"built_uncached", "miss", "hit"};
    if (engine.status != expected[i]) {
      std::cerr << "expected " << expected[i] << ", got " << engine.status << ": " << engine.reason << "\n";
      return 1;
    }
  }
  std::cout << "----------------dynamo_compile----------------\n"
            << "disable engine caching, used: " << times[0] << " ms\n"
            << "enable engine caching to cache engines, used: " << times[1] << " ms\n"
            << "enable engine caching to reuse engines, used: " << times[2] << " ms\n";
  return 0;
} catch (const std::exception& e) {
  std::cerr << argv[0] << ": " << e.what() << "\n";
  return 1;
}
