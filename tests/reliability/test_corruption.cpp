// Corruption of real cache entries: a blob made by a real compile of a zoo
// model (resnet_tiny, then mobilenet_tiny), damaged every way a disk, a copy
// or an attacker can damage it.
//
//   - every single-bit flip in the envelope (preamble and header) and in a
//     sample across the payload, every truncation length through the header
//     and a sample across the payload: rejected by the check the compile
//     runs on every load (format::open with the expected key);
//   - a sample of those through the real compile path: a miss naming the
//     corruption, the entry quarantined, the engine rebuilt and saved, the
//     next compile a hit; never an engine served from a damaged blob;
//   - the plan verifier itself, behind the checksums: bits flipped in the
//     FlatBuffer plan, with the plan's own checksum and the envelope's
//     XXH3 recomputed (a corrupted plan sealed as if it were good). Each
//     must be rejected with a kiln::Error, or load as an engine that refits
//     and runs or fails with a kiln::Error; never a crash.
//
// KILN_LONG_TESTS=1 flips every payload byte and many more plan bits.
// KILN_TRACE_BITS=1 prints each plan bit before it is tried (to find a crash).
#include <gtest/gtest.h>

#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <variant>

#include "backends/cpu/cpu_backend.hpp"
#include "backends/cpu/plan_format.hpp"
#include "cache/cache_layout.hpp"
#include "format/envelope.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "kiln/compile.hpp"
#include "passes/passes.hpp"
#include "process.hpp"
#include "quiet_logs.hpp"
#include "test_helpers.hpp"
#include "zoo/zoo.hpp"

namespace kiln::reliability {
namespace {

namespace fs = std::filesystem;

std::vector<InputSpec> image_specs() { return {InputSpec::fixed("input", DType::float32, {1, 3, 64, 64})}; }

CompileSettings settings_for(const fs::path& cache_dir) {
  CompileSettings s;
  s.engine_cache_dir = cache_dir;
  s.optimization_level = 0;
  s.timing_cache_path = "-";
  return s;
}

std::string zoo_bytes(const std::string& name) {
  return zoo::build_zoo_model(name, {1, std::nullopt}).onnx_bytes;
}

Tensor image() {
  Tensor t = Tensor::zeros(DType::float32, {1, 3, 64, 64});
  auto v = t.mutable_data<float>();
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>((i * 7919) % 1000) / 500.0f - 1.0f;
  return t;
}

// Every element of every output within 1e-4 of max|want| of `want` (the
// uncorrupted engine's outputs): a rebuilt or reloaded engine computes the
// same function, not just the same shapes.
void expect_same_outputs(const std::vector<Tensor>& got, const std::vector<Tensor>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t o = 0; o < want.size(); ++o) {
    ASSERT_EQ(got[o].shape(), want[o].shape()) << "output " << o;
    auto g = got[o].data<float>();
    auto w = want[o].data<float>();
    float max_ref = 0;
    for (float v : w) max_ref = std::max(max_ref, std::fabs(v));
    ASSERT_GT(max_ref, 0.0f) << "output " << o << " is all zeros: nothing to compare";
    for (size_t i = 0; i < w.size(); ++i) {
      ASSERT_NEAR(g[i], w[i], 1e-4f * max_ref) << "output " << o << " element " << i;
    }
  }
}

// A real entry, made once per test binary run.
struct RealBlob {
  std::string model;  // zoo name
  std::string onnx;
  std::string key;
  key::EngineKey engine_key;
  std::vector<std::byte> blob;
  size_t payload_offset = 0;  // where the plan starts
};

RealBlob make_real_blob(const std::string& model, const fs::path& cache_dir) {
  RealBlob r;
  r.model = model;
  r.onnx = zoo_bytes(model);
  auto compiled =
      kiln::compile(std::as_bytes(std::span<const char>(r.onnx)), image_specs(), settings_for(cache_dir));
  r.key = compiled.engines().at(0).key;
  r.blob = testing::read_file_bytes(cache::CacheLayout(cache_dir).entry_path(r.key));
  auto opened = format::open(r.blob);
  const auto& ok = std::get<format::OpenedBlob>(opened);
  r.engine_key = ok.header.key;
  r.payload_offset = static_cast<size_t>(ok.payload.data() - r.blob.data());
  return r;
}

bool rejected(std::span<const std::byte> blob, const key::EngineKey& key) {
  return std::holds_alternative<format::Rejection>(format::open(blob, key));
}

std::vector<size_t> sample_positions(size_t begin, size_t end, size_t count) {
  std::vector<size_t> out;
  if (end <= begin) return out;
  size_t span = end - begin;
  if (count >= span) {
    for (size_t i = begin; i < end; ++i) out.push_back(i);
    return out;
  }
  for (size_t i = 0; i < count; ++i) out.push_back(begin + i * span / count);
  out.push_back(end - 1);
  return out;
}

class CorruptRealBlob : public ::testing::TestWithParam<std::string> {};

TEST_P(CorruptRealBlob, EveryHeaderBitFlipAndTruncationAndAPayloadSampleIsRejected) {
  kiln::testing::TempDir dir;
  auto real = make_real_blob(GetParam(), dir / "cache");
  ASSERT_FALSE(rejected(real.blob, real.engine_key));
  const size_t header_end = real.payload_offset;
  size_t flips = 0, truncations = 0;

  for (size_t bit = 0; bit < header_end * 8; ++bit) {
    auto bad = real.blob;
    bad[bit / 8] ^= std::byte{static_cast<uint8_t>(1u << (bit % 8))};
    EXPECT_TRUE(rejected(bad, real.engine_key)) << "header bit " << bit << " flipped was accepted";
    ++flips;
  }
  const size_t payload_bytes = real.blob.size() - header_end;
  for (size_t pos : sample_positions(header_end, real.blob.size(), long_tests() ? payload_bytes : 4096)) {
    for (int bit : {0, 3, 7}) {
      auto bad = real.blob;
      bad[pos] ^= std::byte{static_cast<uint8_t>(1u << bit)};
      EXPECT_TRUE(rejected(bad, real.engine_key)) << "payload byte " << pos << " bit " << bit;
      ++flips;
    }
  }
  for (size_t size = 0; size <= header_end; ++size) {
    EXPECT_TRUE(rejected(std::span(real.blob).first(size), real.engine_key)) << "cut to " << size;
    ++truncations;
  }
  for (size_t size : sample_positions(header_end + 1, real.blob.size(), 512)) {
    EXPECT_TRUE(rejected(std::span(real.blob).first(size), real.engine_key)) << "cut to " << size;
    ++truncations;
  }
  // Appended bytes, and the blob under another key.
  auto longer = real.blob;
  longer.push_back(std::byte{0});
  EXPECT_TRUE(rejected(longer, real.engine_key));
  auto other = real.engine_key;
  other.digest[31] ^= 1;
  EXPECT_TRUE(rejected(real.blob, other));
  std::printf(
      "[ figures ] %s: blob %zu bytes (header %zu): %zu bit flips and %zu truncations, all rejected\n",
      GetParam().c_str(), real.blob.size(), header_end, flips, truncations);
}

INSTANTIATE_TEST_SUITE_P(ZooModels, CorruptRealBlob, ::testing::Values("resnet_tiny", "mobilenet_tiny"));

// Through the real compile path: detected, quarantined, rebuilt, then a hit.
TEST(CorruptRealBlob, DamagedEntriesAreQuarantinedAndRebuiltNeverServed) {
  kiln::testing::TempDir dir;
  QuietLogs quiet;
  auto cache_dir = dir / "cache";
  auto real = make_real_blob("resnet_tiny", cache_dir);
  auto entry = cache::CacheLayout(cache_dir).entry_path(real.key);
  auto quarantine_dir = cache::CacheLayout(cache_dir).quarantine_dir();
  auto onnx = std::as_bytes(std::span<const char>(real.onnx));
  std::vector<Tensor> inputs{image()};
  auto expected = kiln::compile(onnx, image_specs(), settings_for(cache_dir)).run(inputs);

  struct Damage {
    std::string what;
    std::vector<std::byte> bytes;
  };
  std::vector<Damage> damages;
  auto flip = [&](size_t pos, const std::string& what) {
    auto bad = real.blob;
    bad[pos] ^= std::byte{0x04};
    damages.push_back({"flip in " + what, std::move(bad)});
  };
  const size_t h = real.payload_offset;
  flip(0, "magic");
  flip(8, "version");
  flip(12, "header_len");
  flip(16, "flags");
  flip(20, "key digest");
  flip(20 + 32 * 3, "settings digest");
  flip(20 + 32 * 5, "producer length");
  flip(20 + 32 * 5 + 4, "producer");
  flip(h - 40, "created time");
  flip(h - 24, "payload length");
  flip(h - 8, "checksum");
  flip(h, "first plan byte");
  flip(h + (real.blob.size() - h) / 2, "plan middle");
  flip(real.blob.size() - 1, "last plan byte");
  for (size_t cut : {size_t{0}, size_t{10}, h / 2, h, h + (real.blob.size() - h) / 2, real.blob.size() - 1}) {
    damages.push_back(
        {"cut to " + std::to_string(cut), {real.blob.begin(), real.blob.begin() + static_cast<long>(cut)}});
  }

  size_t quarantined = 0;
  for (const auto& damage : damages) {
    SCOPED_TRACE(damage.what);
    testing::write_file_bytes(entry, damage.bytes);
    auto compiled = kiln::compile(onnx, image_specs(), settings_for(cache_dir));
    const auto& status = compiled.engines().at(0);
    EXPECT_EQ(status.status, "miss");
    EXPECT_NE(status.reason.find("corrupt"), std::string::npos) << status.reason;
    expect_same_outputs(compiled.run(inputs), expected);
    // The damaged blob went to quarantine (the newest 8 are kept) and a good
    // entry replaced it.
    size_t now = 0;
    for (const auto& f : fs::directory_iterator(quarantine_dir)) now += f.path().extension() == ".kiln";
    EXPECT_GE(now, std::min<size_t>(quarantined + 1, 8));
    quarantined = now;
    EXPECT_EQ(testing::read_file_bytes(entry).size(), real.blob.size());
    auto again = kiln::compile(onnx, image_specs(), settings_for(cache_dir));
    EXPECT_EQ(again.engines().at(0).status, "hit") << again.engines().at(0).reason;
  }
}

// The FlatBuffers plan behind both checksums.
uint64_t fnv1a(const std::byte* data, size_t size) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < size; ++i) {
    h ^= std::to_integer<uint8_t>(data[i]);
    h *= 0x100000001b3ull;
  }
  return h;
}

// The plan's trailing FNV-1a checksum recomputed after a change (the format
// of src/backends/cpu/plan_format.hpp).
void reseal_plan(std::vector<std::byte>& plan) {
  const size_t size = plan.size() - 8;
  uint64_t h = fnv1a(plan.data(), size);
  for (size_t i = 0; i < 8; ++i) plan[size + i] = static_cast<std::byte>((h >> (8 * i)) & 0xff);
}

TEST(CorruptPlan, BitFlipsBehindRecomputedChecksumsAreRejectedOrHarmlessNeverACrash) {
  kiln::testing::TempDir dir;
  QuietLogs quiet;
  auto real = make_real_blob("resnet_tiny", dir / "cache");
  const std::vector<std::byte> plan(real.blob.begin() + static_cast<long>(real.payload_offset),
                                    real.blob.end());
  auto backend = make_cpu_backend();
  auto graph =
      frontend::import_onnx_bytes(std::as_bytes(std::span<const char>(real.onnx)), "resnet_tiny").graph;
  auto weights = passes::source_weights(graph);
  std::vector<Tensor> inputs{image()};
  {
    auto engine = backend->deserialize(plan);  // the unchanged plan loads
    engine->refit(weights);
    EXPECT_EQ(engine->run(inputs).size(), 1u);
  }

  const size_t body = plan.size() - 8;  // FlatBuffer bytes, then the checksum
  std::vector<size_t> bits;
  // Every bit of the root table and the first vtables, then one bit in a
  // sample of the other bytes (KILN_LONG_TESTS: in every fourth byte).
  const size_t head = std::min<size_t>(body, long_tests() ? 512 : 64);
  for (size_t bit = 0; bit < head * 8; ++bit) bits.push_back(bit);
  for (size_t pos : sample_positions(head, body, long_tests() ? body / 4 : 300))
    bits.push_back(pos * 8 + pos % 8);
  size_t rejected_count = 0, loaded = 0, ran = 0, run_errors = 0;
  for (size_t bit : bits) {
    if (std::getenv("KILN_TRACE_BITS")) std::fprintf(stderr, "bit %zu\n", bit);
    auto bad = plan;
    bad[bit / 8] ^= std::byte{static_cast<uint8_t>(1u << (bit % 8))};
    reseal_plan(bad);
    std::unique_ptr<Engine> engine;
    try {
      engine = backend->deserialize(bad);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_model) << "bit " << bit << ": " << e.what();
      ++rejected_count;
      continue;
    }
    ++loaded;
    // It verified: a flip in a value the plan may legitimately hold (a tactic
    // name, a timing, an attribute). Whatever it became, using it is an
    // error or a result, never a crash.
    try {
      engine->refit(weights);
      auto out = engine->run(inputs);
      ++ran;
    } catch (const Error&) {
      ++run_errors;
    }
  }
  std::printf(
      "[ figures ] plan of %zu bytes, %zu bits flipped behind recomputed checksums: %zu rejected, "
      "%zu loaded (%zu ran, %zu refused at refit/run), 0 crashes\n",
      plan.size(), bits.size(), rejected_count, loaded, ran, run_errors);
  EXPECT_GT(rejected_count, bits.size() / 4);  // the verifier does the work, not luck
}

// Found by fuzz_plan: a plan whose Conv pads were altered (and resealed)
// asked for gigabytes of activations, and oneDNN spent seconds and gigabytes
// creating primitives for it before anything failed. It is now refused from
// the plan's recorded activation size, before oneDNN sees the shapes.
TEST(CorruptPlan, AlteredShapesThatNeedFarMoreMemoryThanRecordedAreRefusedUpFront) {
  kiln::testing::TempDir dir;
  QuietLogs quiet;
  auto real = make_real_blob("resnet_tiny", dir / "cache");
  const std::vector<std::byte> plan(real.blob.begin() + static_cast<long>(real.payload_offset),
                                    real.blob.end());
  cpu::EnginePlan parsed = cpu::parse_plan(plan);
  bool changed = false;
  for (size_t n = 0; n < parsed.graph.num_nodes() && !changed; ++n) {
    auto& node = parsed.graph.node(static_cast<ir::NodeId>(n));
    if (node.op_type != "Conv") continue;
    node.attrs.set("pads", std::vector<int64_t>{20000, 20000, 20000, 20000});
    changed = true;
  }
  ASSERT_TRUE(changed);
  long before = 0;
  {
    struct rusage usage {};
    ::getrusage(RUSAGE_SELF, &usage);
    before = usage.ru_maxrss / 1024;
  }
  try {
    make_cpu_backend()->deserialize(cpu::serialize_plan(parsed));
    ADD_FAILURE() << "a plan asking for gigabytes was loaded";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_model);
    EXPECT_NE(std::string(e.what()).find("activations"), std::string::npos) << e.what();
  }
  struct rusage usage {};
  ::getrusage(RUSAGE_SELF, &usage);
  EXPECT_LT(usage.ru_maxrss / 1024 - before, 256);
}

// The same corrupted plans, sealed in a valid envelope under the right key,
// through the compile path: a clean miss that rebuilds, never a crash.
TEST(CorruptPlan, SealedCorruptPlansAreMissesThatRebuild) {
  kiln::testing::TempDir dir;
  QuietLogs quiet;
  auto cache_dir = dir / "cache";
  auto real = make_real_blob("resnet_tiny", cache_dir);
  auto header = std::get<format::OpenedBlob>(format::open(real.blob)).header;
  const std::vector<std::byte> plan(real.blob.begin() + static_cast<long>(real.payload_offset),
                                    real.blob.end());
  auto entry = cache::CacheLayout(cache_dir).entry_path(real.key);
  auto onnx = std::as_bytes(std::span<const char>(real.onnx));
  std::vector<Tensor> inputs{image()};
  const auto expected = kiln::compile(onnx, image_specs(), settings_for(cache_dir)).run(inputs);
  int misses = 0;
  for (size_t pos : {size_t{0}, size_t{4}, size_t{9}, size_t{17}, plan.size() / 3, plan.size() - 9}) {
    auto bad = plan;
    bad[pos] ^= std::byte{0x21};
    reseal_plan(bad);
    testing::write_file_bytes(entry, format::seal(header, bad));
    auto compiled = kiln::compile(onnx, image_specs(), settings_for(cache_dir));
    const auto& status = compiled.engines().at(0);
    if (status.status == "miss") {
      ++misses;
      EXPECT_NE(status.reason.find("plan rejected"), std::string::npos) << status.reason;
    } else {
      EXPECT_EQ(status.status, "hit");  // a flip in a harmless field
    }
    // A rebuilt engine, or one loaded from a plan whose flip was harmless:
    // either way the model's outputs.
    expect_same_outputs(compiled.run(inputs), expected);
  }
  EXPECT_GT(misses, 0);
}

}  // namespace
}  // namespace kiln::reliability
