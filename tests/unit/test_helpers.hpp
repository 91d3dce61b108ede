// Helpers shared by the unit tests: temporary folders and small ONNX models
// written with the zoo's ModelBuilder.
#pragma once

#include <unistd.h>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kiln/error.hpp"
#include "kiln/settings.hpp"
#include "kiln/tensor.hpp"

namespace kiln::testing {

// Runs `fn`, which must throw a kiln::Error of `code` whose message holds
// every one of `parts`.
template <typename Fn>
void expect_error(Fn&& fn, ErrorCode code, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "expected a kiln::Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

// A fresh folder under the system temp dir, removed with everything in it
// when the object goes out of scope.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "kiln-test-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    m_path = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(m_path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return m_path; }
  std::filesystem::path operator/(const std::string& name) const { return m_path / name; }

 private:
  std::filesystem::path m_path;
};

inline void write_file(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Settings for fast cache tests: a private cache folder, no tactic timing
// (the same tactics every build) and no timing cache.
inline CompileSettings fast_settings(const std::filesystem::path& cache_dir) {
  CompileSettings s;
  s.engine_cache_dir = cache_dir;
  s.optimization_level = 0;
  s.timing_cache_path = "-";
  return s;
}

// A deterministic float tensor with values spread over [-1, 1).
inline Tensor ramp_tensor(std::vector<int64_t> shape) {
  Tensor t = Tensor::zeros(DType::float32, std::move(shape));
  auto v = t.mutable_data<float>();
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>((i * 7919) % 1000) / 500.0f - 1.0f;
  return t;
}

inline std::vector<std::byte> read_file_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto view = std::as_bytes(std::span(text.data(), text.size()));
  return {view.begin(), view.end()};
}

// Creates the parent folder if needed.
inline void write_file_bytes(const std::filesystem::path& path, std::span<const std::byte> bytes) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// Runs `command` through the shell (exec'ing it, never a bare fork: see
// test_compile_cache.cpp) and returns its exit status and standard output.
struct CommandResult {
  int status = -1;  // as pclose returns it: 0 for success
  std::string output;
};
inline CommandResult run_command(const std::string& command) {
  CommandResult result;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return result;
  char buffer[4096];
  size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) result.output.append(buffer, n);
  result.status = ::pclose(pipe);
  return result;
}

}  // namespace kiln::testing
