// Signed entries: the envelope's HMAC-SHA256 trailer (format::sign,
// verify_signature), SigningEngineCache over any cache, secrets from files
// and the environment, and a compile through a signed Redis tier that
// refuses forged and unsigned entries.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdlib>
#include <cstring>

#include "cache/open.hpp"
#include "cache/ram_engine_cache.hpp"
#include "cache/redis_engine_cache.hpp"
#include "cache/signing_engine_cache.hpp"
#include "cache/tiered_engine_cache.hpp"
#include "format/envelope.hpp"
#include "format/header_peek.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "kiln/error.hpp"
#include "redis_test_server.hpp"
#include "runtime/compiled_model.hpp"
#include "zoo/zoo.hpp"

namespace kiln {
namespace {

std::vector<std::byte> secret_of(const std::string& text) {
  const auto* p = reinterpret_cast<const std::byte*>(text.data());
  return {p, p + text.size()};
}
const auto k_secret = secret_of("correct horse battery staple");
const auto k_other = secret_of("another team's secret, longer");

key::EngineKey make_key(uint8_t seed) {
  key::EngineKey key;
  for (size_t i = 0; i < key.digest.size(); ++i) key.digest[i] = static_cast<uint8_t>(seed + i);
  return key;
}

std::vector<std::byte> sealed(uint8_t seed = 1) {
  std::vector<std::byte> payload(300, static_cast<std::byte>(seed));
  return format::seal({make_key(seed), "kiln test", "cpu/test", 1, 25}, payload);
}

TEST(SignedEnvelope, ASignedBlobOpensVerifiesAndKeepsItsHeader) {
  auto plain = sealed();
  auto signed_blob = format::sign(plain, k_secret);
  EXPECT_EQ(signed_blob.size(), plain.size() + format::k_signature_size);
  EXPECT_TRUE(format::is_signed(signed_blob));
  EXPECT_FALSE(format::is_signed(plain));
  EXPECT_FALSE(format::verify_signature(signed_blob, k_secret));
  auto opened = format::open(signed_blob, make_key(1));
  ASSERT_TRUE(std::holds_alternative<format::OpenedBlob>(opened))
      << std::get<format::Rejection>(opened).reason;
  EXPECT_EQ(std::get<format::OpenedBlob>(opened).payload.size(), 300u);
  EXPECT_EQ(std::get<format::OpenedBlob>(opened).header.build_ms, 25u);
  auto peeked = format::peek_header(signed_blob);
  ASSERT_TRUE(peeked);
  EXPECT_EQ(peeked->key, make_key(1));
  // Re-signing replaces the trailer instead of stacking another.
  EXPECT_EQ(format::sign(signed_blob, k_other).size(), signed_blob.size());
  EXPECT_FALSE(format::verify_signature(format::sign(signed_blob, k_other), k_other));
}

TEST(SignedEnvelope, UnsignedWrongSecretAndEveryBitFlipAreRefused) {
  auto plain = sealed();
  auto signed_blob = format::sign(plain, k_secret);
  ASSERT_TRUE(format::verify_signature(plain, k_secret));
  EXPECT_NE(format::verify_signature(plain, k_secret)->reason.find("unsigned"), std::string::npos);
  ASSERT_TRUE(format::verify_signature(signed_blob, k_other));
  EXPECT_NE(format::verify_signature(signed_blob, k_other)->reason.find("bad signature"), std::string::npos);
  for (size_t bit = 0; bit < signed_blob.size() * 8; ++bit) {
    auto tampered = signed_blob;
    tampered[bit / 8] ^= std::byte{static_cast<uint8_t>(1u << (bit % 8))};
    EXPECT_TRUE(format::verify_signature(tampered, k_secret)) << "accepted a flip of bit " << bit;
  }
  // Stripping the signature (flag cleared, trailer cut, checksum fixed by
  // re-sealing) leaves an unsigned blob, which is refused.
  EXPECT_TRUE(format::verify_signature(plain, k_secret));
  // Truncations of a signed blob: refused by the HMAC and by open().
  for (size_t size = 0; size < signed_blob.size(); size += 7) {
    auto cut = std::span(signed_blob).first(size);
    EXPECT_TRUE(format::verify_signature(cut, k_secret)) << size;
    EXPECT_TRUE(std::holds_alternative<format::Rejection>(format::open(cut))) << size;
  }
  EXPECT_THROW(format::sign(std::span(plain).first(40), k_secret), Error);
  EXPECT_THROW(format::sign(plain, {}), Error);
}

TEST(SigningCache, SignsOnSaveAndRefusesUnsignedOrTamperedEntriesAsCountedMisses) {
  auto inner = std::make_shared<cache::RamEngineCache>(1 << 20);
  cache::SigningEngineCache signing(inner, k_secret);
  std::string key = make_key(1).hex();
  signing.save(key, sealed());
  EXPECT_TRUE(format::is_signed(*inner->load(key)));
  ASSERT_TRUE(signing.load(key));
  EXPECT_EQ(signing.refused_unauthenticated(), 0u);

  inner->save(key, sealed());  // someone without the secret
  EXPECT_FALSE(signing.load(key));
  auto forged = format::sign(sealed(), k_other);  // someone with another secret
  inner->save(key, forged);
  EXPECT_EQ(signing.get(key).status, cache::Status::refused_bad_signature);
  auto tampered = format::sign(sealed(), k_secret);
  tampered[tampered.size() - 40] ^= std::byte{1};
  inner->save(key, tampered);
  EXPECT_FALSE(signing.load(key));
  // Two plain loads count at once; the compile read (get) counts at its outcome.
  EXPECT_EQ(signing.refused_unauthenticated(), 2u);
  auto second = signing.get(key);  // the compile's second read of the key
  EXPECT_EQ(second.status, cache::Status::refused_bad_signature);
  EXPECT_EQ(signing.refused_unauthenticated(), 2u);
  signing.record_outcome(key, second, cache::Store::Outcome::absent, 0);
  EXPECT_EQ(signing.refused_unauthenticated(), 3u);
  EXPECT_EQ(signing.counters()->refused_unauthenticated, 3u);
}

// The secret file is checked before it is read: a FIFO is never opened for
// a blocking read, a device or a file above 64 KiB is never read whole, a
// folder is not "0 bytes". Each is an error naming the file. The CLI runs
// under a deadline, so a regression fails instead of hanging.
TEST(SigningCache, SecretFilesThatAreNotSmallRegularFilesAreErrorsNamingThem) {
  testing::TempDir dir;
  auto message_of = [](const std::filesystem::path& path) {
    try {
      (void)cache::read_secret_file(path);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
      return std::string(e.what());
    }
    return std::string("no error");
  };
  ASSERT_EQ(::mkfifo((dir / "fifo").c_str(), 0600), 0);
  std::filesystem::create_directory(dir / "folder");
  testing::write_file(dir / "big", std::string((64 << 10) + 1, 'x'));
  for (const auto& [path, why] :
       std::vector<std::pair<std::filesystem::path, std::string>>{{dir / "fifo", "not a regular file"},
                                                                  {dir / "folder", "not a regular file"},
                                                                  {"/dev/zero", "not a regular file"},
                                                                  {dir / "big", "more than 65536 bytes"}}) {
    auto message = message_of(path);
    EXPECT_NE(message.find(path.string()), std::string::npos) << message;
    EXPECT_NE(message.find(why), std::string::npos) << message;
  }
  // A symlink to a good secret is followed (secrets often live in mounted
  // volumes reached through links).
  testing::write_file(dir / "secret", "0123456789abcdef0123\n");
  ::chmod((dir / "secret").c_str(), 0600);
  std::filesystem::create_symlink(dir / "secret", dir / "link");
  EXPECT_EQ(cache::read_secret_file(dir / "link"), secret_of("0123456789abcdef0123"));

  testing::write_file(dir / "model.onnx", zoo::build_zoo_model("resnet_tiny", {1, std::nullopt}).onnx_bytes);
  auto result = testing::run_command("timeout -s KILL 30 " + std::string(KILN_CLI) + " build " +
                                     (dir / "model.onnx").string() + " --shape input=1x3x64x64 --cache-dir " +
                                     (dir / "cache").string() + " --cache-secret-file " +
                                     (dir / "fifo").string() + " 2>&1");
  ASSERT_TRUE(WIFEXITED(result.status)) << "killed by the deadline: " << result.output;
  EXPECT_EQ(WEXITSTATUS(result.status), 1) << result.output;
  EXPECT_NE(result.output.find("not a regular file"), std::string::npos) << result.output;
}

TEST(SigningCache, SecretsFromFilesAndTheEnvironment) {
  testing::TempDir dir;
  testing::write_file(dir / "secret", "0123456789abcdef0123\n");
  ::chmod((dir / "secret").c_str(), 0600);
  EXPECT_EQ(cache::read_secret_file(dir / "secret"), secret_of("0123456789abcdef0123"));
  testing::write_file(dir / "short", "tiny\n");
  EXPECT_THROW(cache::read_secret_file(dir / "short"), Error);
  EXPECT_THROW(cache::read_secret_file(dir / "missing"), Error);

  CompileSettings s;
  s.engine_cache_dir = dir / "cache";
  ::setenv("KILN_ENGINE_CACHE_SECRET", "an environment secret!", 1);
  EXPECT_TRUE(dynamic_cast<cache::SigningEngineCache*>(cache::open(s).get()));
  ::unsetenv("KILN_ENGINE_CACHE_SECRET");
  EXPECT_FALSE(dynamic_cast<cache::SigningEngineCache*>(cache::open(s).get()));
  s.engine_cache_secret_file = dir / "short";
  EXPECT_THROW(cache::open(s), Error);
  s.engine_cache_secret_file = dir / "secret";
  s.engine_cache_tiers = {"ram:16M", "disk"};
  auto tiered = std::dynamic_pointer_cast<cache::TieredEngineCache>(cache::open(s));
  ASSERT_TRUE(tiered);
  EXPECT_FALSE(dynamic_cast<cache::SigningEngineCache*>(tiered->tiers()[0].cache.get()));  // RAM: in-process
  EXPECT_TRUE(dynamic_cast<cache::SigningEngineCache*>(tiered->tiers()[1].cache.get()));
}

frontend::ImportedModel zoo_model(const std::string& name, uint64_t seed) {
  std::string bytes = zoo::build_zoo_model(name, {seed, std::nullopt}).onnx_bytes;
  return frontend::import_onnx_bytes(std::as_bytes(std::span<const char>(bytes)), name + ".onnx");
}

TEST(SigningCache, ACompileThroughSignedRedisRefusesForgedEntriesAndRebuilds) {
  REQUIRE_REDIS_SERVER();
  testing::RedisTestServer server;
  testing::TempDir dir;
  testing::write_file(dir / "secret", "fleet secret: 7b1f0c9e2a");
  ::chmod((dir / "secret").c_str(), 0600);
  auto model = zoo_model("resnet_tiny", 1);
  std::vector<InputSpec> specs{InputSpec::fixed("input", DType::float32, {1, 3, 64, 64})};
  CompileSettings s;
  s.optimization_level = 0;
  s.timing_cache_path = "-";
  s.engine_cache_tiers = {server.uri("prefix=signed")};
  s.engine_cache_secret_file = dir / "secret";

  auto first = runtime::CompiledModel::compile(model.graph, specs, s);
  ASSERT_EQ(first.report().engines.at(0).status, "miss");
  std::string key = first.report().engines[0].key;
  cache::RedisEngineCache raw(cache::parse_redis_uri(server.uri("prefix=signed")));
  auto good = raw.load(key);
  ASSERT_TRUE(good);
  ASSERT_TRUE(format::is_signed(*good));
  EXPECT_EQ(runtime::CompiledModel::compile(model.graph, specs, s).report().engines[0].status, "hit");

  // A forger with Redis access but another secret, then one with none.
  raw.save(key, format::sign(*good, k_other));
  auto forged = runtime::CompiledModel::compile(model.graph, specs, s);
  EXPECT_EQ(forged.report().engines[0].status, "miss");  // refused, rebuilt, re-signed
  // The miss says why, rather than "not in cache".
  EXPECT_NE(forged.report().engines[0].reason.find("refused"), std::string::npos)
      << forged.report().engines[0].reason;
  // The genuine entry with its signature stripped (re-sealed unsigned).
  std::vector<std::byte> stripped;
  {
    auto opened = format::open(*good);
    const auto& o = std::get<format::OpenedBlob>(opened);
    stripped = format::seal(o.header, o.payload);
  }
  raw.save(key, stripped);
  EXPECT_EQ(runtime::CompiledModel::compile(model.graph, specs, s).report().engines[0].status, "miss");
  EXPECT_EQ(runtime::CompiledModel::compile(model.graph, specs, s).report().engines[0].status, "hit");
  auto fleet = raw.fleet_stats();
  ASSERT_TRUE(fleet);
  // Two refusing compiles. Each reads the entry twice (before and after
  // taking the build lease) but counts one refusal, as a miss counts once.
  EXPECT_EQ(fleet->refused_unauthenticated, 2u);
}

}  // namespace
}  // namespace kiln
