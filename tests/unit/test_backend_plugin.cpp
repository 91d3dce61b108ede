// The cuda backend is a plugin the registry opens on first use: a process
// that never asks for it loads neither it nor cuDNN and cuBLASLt, one that
// does finds it beside kiln's libraries, and a plugin that cannot be loaded
// is a kiln::Error naming the library and the dynamic loader's reason.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "backends/registry/backend_plugin_loader.hpp"
#include "backends/registry/backend_registry.hpp"
#include "kiln/error.hpp"
#include "test_helpers.hpp"

#ifndef KILN_BACKEND_LOAD_PROBE
#error "KILN_BACKEND_LOAD_PROBE must name the probe executable"
#endif
#ifndef KILN_CLI
#error "KILN_CLI must name the kiln executable"
#endif

namespace kiln {
namespace {

// What backend_load_probe reported: its result line and the objects loaded.
struct Probe {
  std::string result;
  std::vector<std::string> loaded;

  // The loaded objects whose file name starts with `prefix`.
  std::vector<std::string> named(const std::string& prefix) const {
    std::vector<std::string> found;
    for (const std::string& path : loaded)
      if (std::filesystem::path(path).filename().string().rfind(prefix, 0) == 0) found.push_back(path);
    return found;
  }
};

Probe run_probe(const std::string& mode) {
  const testing::CommandResult run = testing::run_command(std::string(KILN_BACKEND_LOAD_PROBE) + " " + mode);
  EXPECT_EQ(run.status, 0) << run.output;
  Probe probe;
  std::istringstream lines(run.output);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("result: ", 0) == 0) probe.result = line.substr(8);
    if (line.rfind("loaded: ", 0) == 0) probe.loaded.push_back(line.substr(8));
  }
  return probe;
}

bool cuda_is_built() {
  const std::vector<std::string> names = backend_names();
  return std::find(names.begin(), names.end(), "cuda") != names.end();
}

// The libraries only the cuda backend brings in.
const char* const kCudaLibraries[] = {"libkiln_backend_cuda", "libcublasLt", "libcublas.", "libcudnn"};

TEST(BackendPlugin, ACpuOnlyProcessLoadsNoCudaLibrary) {
  const Probe probe = run_probe("cpu");
  ASSERT_EQ(probe.result, "ok");
  // The list is the real one: the registry and the cpu backend are in it.
  EXPECT_EQ(probe.named("libkiln_backend_registry").size(), 1u);
  EXPECT_EQ(probe.named("libkiln_backend_cpu").size(), 1u);
  for (const char* library : kCudaLibraries)
    EXPECT_TRUE(probe.named(library).empty()) << library << " is loaded: " << probe.named(library)[0];
}

TEST(BackendPlugin, TheCliDoesNotLinkTheCudaLibraries) {
  // ldd lists every library the CLI needs at start-up, however indirectly:
  // `kiln --help` must not pay for the GPU's.
  const testing::CommandResult ldd = testing::run_command("ldd " + std::string(KILN_CLI));
  ASSERT_EQ(ldd.status, 0) << ldd.output;
  ASSERT_NE(ldd.output.find("libkiln_backend_registry"), std::string::npos) << ldd.output;
  for (const char* library : kCudaLibraries)
    EXPECT_EQ(ldd.output.find(library), std::string::npos) << ldd.output;
}

TEST(BackendPlugin, AskingForCudaLoadsThePluginFromBesideTheRegistry) {
  const Probe probe = run_probe("cuda");
  if (!cuda_is_built()) {
    // Nothing to load: the message of a build without the backend.
    EXPECT_NE(probe.result.find("error invalid argument: backend 'cuda': this kiln was built without it"),
              std::string::npos)
        << probe.result;
    EXPECT_TRUE(probe.named("libkiln_backend_cuda").empty());
    return;
  }
  // With a GPU the backend is made; without one, the plugin's own no-GPU
  // error ("cuda backend: <reason>") proves it was found and its entry ran.
  if (probe.result != "ok") {
    EXPECT_EQ(probe.result.rfind("error unsupported: cuda backend: ", 0), 0u) << probe.result;
  }
  const std::vector<std::string> plugin = probe.named("libkiln_backend_cuda");
  const std::vector<std::string> registry = probe.named("libkiln_backend_registry");
  ASSERT_EQ(plugin.size(), 1u) << probe.result;
  ASSERT_EQ(registry.size(), 1u);
  EXPECT_EQ(std::filesystem::path(plugin[0]).parent_path(), std::filesystem::path(registry[0]).parent_path());
  EXPECT_FALSE(probe.named("libcublasLt").empty());
  EXPECT_FALSE(probe.named("libcudnn").empty());
}

TEST(BackendPlugin, PluginFoldersStartBesideTheRegistryAndEndAtTheInstallLibdir) {
  const std::vector<std::filesystem::path> dirs = backend_plugin_dirs("/opt/kiln-test/lib");
  ASSERT_EQ(dirs.size(), 2u);
  EXPECT_TRUE(std::filesystem::exists(dirs[0] / "libkiln_backend_registry.so")) << dirs[0];
  EXPECT_EQ(dirs[1], std::filesystem::path("/opt/kiln-test/lib"));
  // The install folder is not tried twice when the registry is already there.
  EXPECT_EQ(backend_plugin_dirs(dirs[0]).size(), 1u);
}

TEST(BackendPlugin, AMissingPluginNamesTheLibraryAndEachPathTried) {
  testing::TempDir first, second;
  const std::vector<std::filesystem::path> dirs{first.path(), second.path()};
  try {
    (void)BackendPlugin::open("demo", "libkiln_backend_demo.so", dirs);
    FAIL() << "opened a plugin that does not exist";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_EQ(e.code(), ErrorCode::unsupported);
    EXPECT_NE(what.find("backend 'demo': cannot load its plugin libkiln_backend_demo.so"), std::string::npos)
        << what;
    for (const auto& dir : dirs)
      EXPECT_NE(what.find((dir / "libkiln_backend_demo.so").string() + ": cannot open shared object file"),
                std::string::npos)
          << what;
  }
}

TEST(BackendPlugin, AFileThatFailsToLoadStopsTheSearchWithTheLoadersReason) {
  // The first folder's file is not a shared object; the second folder's is a
  // real library (without the entry point). Searching on would report the
  // missing entry point and hide why the first one failed.
  testing::TempDir bad;
  testing::write_file(bad / "libkiln_backend_api.so", std::string(4096, 'x'));
  const std::vector<std::filesystem::path> dirs{bad.path(), backend_plugin_dirs("")[0]};
  try {
    (void)BackendPlugin::open("demo", "libkiln_backend_api.so", dirs);
    FAIL() << "opened a file that is not a shared object";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_EQ(e.code(), ErrorCode::unsupported);
    EXPECT_NE(what.find((bad / "libkiln_backend_api.so").string() + ": invalid ELF header"),
              std::string::npos)
        << what;
    EXPECT_EQ(what.find("kiln_backend_plugin_create"), std::string::npos) << what;
  }
}

TEST(BackendPlugin, AMissingDependencyNamesThePluginAndTheLibraryItNeeds) {
  // A plugin linked against a library that is gone when it is loaded, as the
  // cuda plugin is on a machine without cuDNN or cuBLASLt. Built here with the
  // system C compiler, the one the install test builds its consumer with.
  testing::TempDir dir;
  testing::write_file(dir / "dependency.c", "int kiln_test_dependency(void) { return 1; }\n");
  testing::write_file(
      dir / "plugin.c",
      "int kiln_test_dependency(void);\nint kiln_test_plugin(void) { return kiln_test_dependency(); }\n");
  const std::string d = dir.path().string();
  const testing::CommandResult built =
      testing::run_command("cc -shared -fPIC -o " + d + "/libkiln_test_dependency.so " + d +
                           "/dependency.c && cc -shared -fPIC -o " + d + "/libkiln_backend_demo.so " + d +
                           "/plugin.c -L" + d + " -Wl,--no-as-needed -lkiln_test_dependency 2>&1");
  if (built.status != 0) GTEST_SKIP() << "no C compiler to build the test plugin: " << built.output;
  std::filesystem::remove(dir / "libkiln_test_dependency.so");
  const std::vector<std::filesystem::path> dirs{dir.path()};
  try {
    (void)BackendPlugin::open("demo", "libkiln_backend_demo.so", dirs);
    FAIL() << "opened a plugin whose dependency is missing";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_EQ(e.code(), ErrorCode::unsupported);
    EXPECT_NE(
        what.find("cannot load its plugin libkiln_backend_demo.so: " + d +
                  "/libkiln_backend_demo.so: libkiln_test_dependency.so: cannot open shared object file"),
        std::string::npos)
        << what;
  }
}

TEST(BackendPlugin, ALibraryWithoutTheEntryPointIsRefused) {
  const std::vector<std::filesystem::path> dirs{backend_plugin_dirs("")[0]};
  try {
    (void)BackendPlugin::open("demo", "libkiln_backend_api.so", dirs);
    FAIL() << "took a library without the entry point for a plugin";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_EQ(e.code(), ErrorCode::unsupported);
    EXPECT_NE(what.find("libkiln_backend_api.so has no kiln_backend_plugin_create"), std::string::npos)
        << what;
  }
}

}  // namespace
}  // namespace kiln
