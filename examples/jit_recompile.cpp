// The tutorial's "Engine Caching for JIT Compilation", with kiln::JitModule in
// the place of torch.compile: three fresh modules, each timed over its first
// call (compile + run),
//   1. caching disabled,
//   2. caching on, empty cache: build and save,
//   3. caching on: the cached engine is loaded and refitted;
// then what a JIT does when shapes change: a new batch recompiles (through the
// cache), the next new batch switches to one range engine (as PyTorch's
// automatic dynamic shapes do), and reset() drops the engines as a new
// process would, so the next call is a cache hit.
//
// Usage: kiln_example_jit_recompile [MODEL [BATCH]]   (default resnet18 100)
#include <iostream>

#include "common.hpp"
#include "kiln/jit.hpp"

namespace {

kiln::CompileSettings settings_for(const std::filesystem::path& work, bool caching) {
  kiln::CompileSettings settings;
  settings.cache_built_engines = caching;
  settings.reuse_cached_engines = caching;
  settings.engine_cache_dir = work / "engine_cache";
  settings.timing_cache_path = work / "timing_cache.bin";
  std::filesystem::remove(settings.timing_cache_path);  // remove_timing_cache()
  return settings;
}

bool expect(bool ok, const std::string& what) {
  if (!ok) std::cerr << "unexpected: " << what << "\n";
  return ok;
}

}  // namespace

int main(int argc, char** argv) try {
  example::Args args = example::parse_args(argc, argv);
  example::TempDir work;
  std::filesystem::path model = example::model_file(args.model, 0, work.path());
  example::ImageInput input = example::image_input(model);
  auto batch_of = [&](int64_t batch) {
    return std::vector<kiln::Tensor>{example::random_images(input, batch, 7)};
  };

  std::vector<double> times;
  for (int i = 0; i < 3; ++i) {
    auto settings = settings_for(work.path(), i > 0);
    auto start = std::chrono::steady_clock::now();
    kiln::JitModule jit(model, settings);  // torch.compile(model, ...)
    jit(batch_of(args.batch));             // the first call compiles
    times.push_back(example::ms_since(start));
    std::cout << "module " << i + 1 << ": engine " << jit.last_engines().at(0).status << "\n";
  }
  std::cout << "----------------torch_compile----------------\n"
            << "disable engine caching, used: " << times[0] << " ms\n"
            << "enable engine caching to cache engines, used: " << times[1] << " ms\n"
            << "enable engine caching to reuse engines, used: " << times[2] << " ms\n\n";

  // Recompilation. dynamic_after = 1: the second distinct batch already gets
  // a range engine, as PyTorch marks a dim dynamic on its first change.
  kiln::JitOptions options;
  options.dynamic_after = 1;
  kiln::JitModule jit(model, settings_for(work.path(), true), options);
  bool ok = true;
  for (int64_t batch : {args.batch, args.batch + 1, args.batch + 2, args.batch}) {
    kiln::JitCallInfo info;
    jit.run(batch_of(batch), &info);
    const kiln::JitCompileRecord record = jit.compile_log().at(info.engine);
    std::cout << "batch " << batch << ": " << (info.compiled ? "compiled " : "served by ") << record.signature
              << (info.compiled ? " (" + record.trigger + ", engine " + record.engines.at(0).status + ")"
                                : "")
              << "\n";
  }
  ok &= expect(jit.compiles() == 2, "two compiles: the exact batch and one range engine");
  ok &= expect(jit.compile_log()[0].engines.at(0).status == "hit", "the exact batch was cached by module 2");
  ok &= expect(jit.compile_log()[1].range, "the second compile is a range engine");

  jit.reset();  // torch._dynamo.reset(): a new process, as far as engines go
  kiln::JitCallInfo info;
  jit.run(batch_of(args.batch), &info);
  std::cout << "after reset(), batch " << args.batch << ": compiled "
            << jit.compile_log().at(info.engine).signature << " (engine " << jit.last_engines().at(0).status
            << ")\n";
  ok &=
      expect(jit.last_engines().at(0).status == "hit", "after reset() the engine comes from the disk cache");
  return ok ? 0 : 1;
} catch (const std::exception& e) {
  std::cerr << argv[0] << ": " << e.what() << "\n";
  return 1;
}
