// Version and hardware drift: a cache folder shared by machines and kiln
// versions holds entries this process must not use. Each is a clean miss
// that says why, and a rebuild; never a crash and never a wrong engine.
// (tests/unit/test_compile_cache.cpp covers an entry of an older *envelope*
// version.)
//
//   - an entry built elsewhere (other oneDNN, other ISA) normally sits under
//     another key: a plain miss whose reason names the fingerprint part;
//   - the same under *our* key (a copied folder, a key collision, a kiln bug):
//     the envelope's fingerprint disagrees with this machine: a miss;
//   - a plan whose own fingerprint disagrees (plan version, oneDNN, ISA)
//     sealed in an envelope that claims ours: the backend refuses it, the
//     entry is quarantined and rebuilt.
#include <gtest/gtest.h>

#include <fstream>
#include <variant>

#include "backends/cpu/cpu_backend.hpp"
#include "backends/cpu/plan_format.hpp"
#include "cache/cache_layout.hpp"
#include "format/envelope.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "key/engine_key.hpp"
#include "kiln/compile.hpp"
#include "passes/passes.hpp"
#include "quiet_logs.hpp"
#include "test_helpers.hpp"
#include "zoo/zoo.hpp"

namespace kiln::reliability {
namespace {

namespace fs = std::filesystem;

std::vector<InputSpec> specs() { return {InputSpec::fixed("input", DType::float32, {1, 3, 64, 64})}; }

CompileSettings settings_for(const fs::path& cache_dir) {
  CompileSettings s;
  s.engine_cache_dir = cache_dir;
  s.optimization_level = 0;
  s.timing_cache_path = "-";
  return s;
}

class Drift : public ::testing::Test {
 protected:
  void SetUp() override {
    m_onnx = zoo::build_zoo_model("resnet_tiny", {1, std::nullopt}).onnx_bytes;
    auto first = compile();
    m_key = first.engines().at(0).key;
    m_entry = cache::CacheLayout(m_dir / "cache").entry_path(m_key);
    m_blob = testing::read_file_bytes(m_entry);
    auto result = format::open(m_blob);
    const auto& opened = std::get<format::OpenedBlob>(result);
    m_header = opened.header;
    m_plan.assign(opened.payload.begin(), opened.payload.end());
  }

  kiln::CompiledModel compile() {
    return kiln::compile(std::as_bytes(std::span<const char>(m_onnx)), specs(),
                         settings_for(m_dir / "cache"));
  }

  // Compiles with `entry_bytes` in our entry's place: a miss whose reason
  // holds `why`, then (rebuilt and saved) a hit.
  void expect_clean_miss(std::span<const std::byte> entry_bytes, const std::string& why) {
    testing::write_file_bytes(m_entry, entry_bytes);
    auto compiled = compile();
    const auto& status = compiled.engines().at(0);
    EXPECT_EQ(status.status, "miss");
    EXPECT_NE(status.reason.find(why), std::string::npos) << status.reason;
    Tensor input = Tensor::zeros(DType::float32, {1, 3, 64, 64});
    std::vector<Tensor> inputs{input};
    EXPECT_EQ(compiled.run(inputs).at(0).shape(), (std::vector<int64_t>{1, 10}));
    auto again = compile();
    EXPECT_EQ(again.engines().at(0).status, "hit") << again.engines().at(0).reason;
  }

  // Our plan, re-serialized with `change` applied to its fingerprint (a valid
  // plan checksum), sealed under our key with our envelope fingerprint.
  std::vector<std::byte> plan_with(void (*change)(Fingerprint&)) {
    // parse_plan refuses another plan version, so the change is made on a
    // plan parsed as ours and written back.
    cpu::EnginePlan plan = cpu::parse_plan(m_plan);
    change(plan.fingerprint);
    return format::seal(m_header, cpu::serialize_plan(plan));
  }

  QuietLogs m_quiet;
  kiln::testing::TempDir m_dir;
  std::string m_onnx;
  std::string m_key;
  fs::path m_entry;
  std::vector<std::byte> m_blob;
  format::EnvelopeHeader m_header;
  std::vector<std::byte> m_plan;
};

TEST_F(Drift, AnEntryFromAnotherMachineSitsUnderAnotherKeyAndIsAPlainMiss) {
  // What another machine (other ISA) would have saved for this model.
  auto graph = frontend::import_onnx_bytes(std::as_bytes(std::span<const char>(m_onnx)), "m").graph;
  auto lowered = passes::lower(graph);
  Fingerprint theirs = make_cpu_backend()->fingerprint();
  theirs.isa = "some_future_isa";
  auto settings = settings_for(m_dir / "cache");
  auto their_key = key::compute_engine_key(lowered, specs(), settings, theirs);
  ASSERT_NE(their_key.hex(), m_key);
  auto header = m_header;
  header.key = their_key;
  header.fingerprint = theirs.to_string();
  testing::write_file_bytes(cache::CacheLayout(m_dir / "cache").entry_path(their_key.hex()),
                            format::seal(header, m_plan));
  fs::remove(m_entry);  // only their entry is left

  auto compiled = compile();
  EXPECT_EQ(compiled.engines().at(0).status, "miss");
  EXPECT_NE(compiled.engines().at(0).reason.find("fingerprint"), std::string::npos)
      << compiled.engines().at(0).reason;
  // Theirs is left alone: it is valid, for them.
  EXPECT_TRUE(fs::exists(cache::CacheLayout(m_dir / "cache").entry_path(their_key.hex())));
}

TEST_F(Drift, AnEnvelopeFromAnotherOneDnnOrIsaUnderOurKeyIsAMiss) {
  for (std::string other :
       {"cpu plan v1, oneDNN 9.9.9, " + make_cpu_backend()->fingerprint().isa,
        "cpu plan v1, " + make_cpu_backend()->fingerprint().library_version + ", avx10_2"}) {
    SCOPED_TRACE(other);
    auto header = m_header;
    header.fingerprint = other;
    expect_clean_miss(format::seal(header, m_plan), "entry built by " + other);
  }
}

TEST_F(Drift, APlanFromAnotherPlanVersionIsRefusedQuarantinedAndRebuilt) {
  expect_clean_miss(plan_with([](Fingerprint& f) { f.plan_version += 1; }), "plan version");
  expect_clean_miss(plan_with([](Fingerprint& f) { f.plan_version = 0; }), "plan version");
  EXPECT_FALSE(fs::is_empty(cache::CacheLayout(m_dir / "cache").quarantine_dir()));
}

TEST_F(Drift, APlanFromAnotherOneDnnOrIsaBehindOurEnvelopeIsRefused) {
  expect_clean_miss(plan_with([](Fingerprint& f) { f.library_version = "oneDNN 9.9.9"; }), "plan rejected");
  expect_clean_miss(plan_with([](Fingerprint& f) { f.isa = "avx10_2"; }), "plan rejected");
  expect_clean_miss(plan_with([](Fingerprint& f) { f.backend = "cuda"; }), "plan rejected");
}

TEST_F(Drift, AnEntryFromAnotherEnvelopeVersionIsAMissNamingBoth) {
  for (uint32_t version : {format::k_envelope_version - 1, format::k_envelope_version + 1, 0xffffffffu}) {
    auto bad = m_blob;
    for (int i = 0; i < 4; ++i)
      bad[8 + static_cast<size_t>(i)] = static_cast<std::byte>((version >> (8 * i)) & 0xff);
    expect_clean_miss(bad, "envelope version " + std::to_string(version));
  }
}

}  // namespace
}  // namespace kiln::reliability
