// The blob envelope (src/format/envelope.hpp): round trip, and rejection of
// every truncation, every single-bit flip, foreign data, other envelope
// versions and a blob under another key, always with a reason and never a
// crash.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <variant>
#include <vector>

#include "format/envelope.hpp"
#include "zoo/zoo.hpp"

namespace kiln::format {
namespace {

key::EngineKey make_key(uint8_t seed) {
  key::EngineKey key;
  for (size_t i = 0; i < key.digest.size(); ++i) {
    key.digest[i] = static_cast<uint8_t>(seed + i);
    key.parts.graph[i] = static_cast<uint8_t>(seed * 3 + i);
    key.parts.inputs[i] = static_cast<uint8_t>(seed * 5 + i);
    key.parts.settings[i] = static_cast<uint8_t>(seed * 7 + i);
    key.parts.fingerprint[i] = static_cast<uint8_t>(seed * 11 + i);
  }
  return key;
}

EnvelopeHeader make_header(uint8_t seed = 1) {
  return EnvelopeHeader{make_key(seed), "kiln 0.1.0", "cpu/plan1/dnnl-2.6/avx512", 1'700'000'000'123, 4321};
}

std::vector<std::byte> bytes_of(const std::string& text) {
  auto view = std::as_bytes(std::span(text.data(), text.size()));
  return {view.begin(), view.end()};
}

std::string reason_of(const std::variant<OpenedBlob, Rejection>& result) {
  const auto* rejection = std::get_if<Rejection>(&result);
  return rejection ? rejection->reason : "";
}

TEST(Envelope, RoundTrip) {
  auto payload = bytes_of("the backend's plan \x01\x02\x00 bytes");
  auto header = make_header();
  auto blob = seal(header, payload);
  auto result = open(blob, header.key);
  ASSERT_TRUE(std::holds_alternative<OpenedBlob>(result)) << reason_of(result);
  const auto& opened = std::get<OpenedBlob>(result);
  EXPECT_EQ(opened.header.key, header.key);
  EXPECT_EQ(opened.header.producer, header.producer);
  EXPECT_EQ(opened.header.fingerprint, header.fingerprint);
  EXPECT_EQ(opened.header.created_unix_ms, header.created_unix_ms);
  EXPECT_EQ(opened.header.build_ms, header.build_ms);
  ASSERT_EQ(opened.payload.size(), payload.size());
  EXPECT_EQ(std::memcmp(opened.payload.data(), payload.data(), payload.size()), 0);
  // The payload is a view into the blob, not a copy.
  EXPECT_EQ(opened.payload.data() + opened.payload.size(), blob.data() + blob.size());
}

TEST(Envelope, EmptyPayloadAndStrings) {
  EnvelopeHeader header{make_key(9), "", "", 0};
  auto blob = seal(header, {});
  auto result = open(blob);
  ASSERT_TRUE(std::holds_alternative<OpenedBlob>(result)) << reason_of(result);
  EXPECT_TRUE(std::get<OpenedBlob>(result).payload.empty());
}

TEST(Envelope, OverlongStringIsAnError) {
  EnvelopeHeader header = make_header();
  header.producer.assign(70'000, 'x');
  EXPECT_THROW(seal(header, {}), Error);
}

TEST(Envelope, EveryTruncationIsRejected) {
  auto blob = seal(make_header(), bytes_of("a payload of some length, 42 bytes long."));
  for (size_t size = 0; size < blob.size(); ++size) {
    auto result = open(std::span(blob).first(size));
    EXPECT_TRUE(std::holds_alternative<Rejection>(result)) << "accepted a blob cut to " << size << " bytes";
    EXPECT_FALSE(reason_of(result).empty());
  }
}

TEST(Envelope, TrailingBytesAreRejected) {
  auto blob = seal(make_header(), bytes_of("payload"));
  blob.push_back(std::byte{0});
  EXPECT_NE(reason_of(open(blob)).find("trailing"), std::string::npos) << reason_of(open(blob));
}

TEST(Envelope, EverySingleBitFlipIsRejected) {
  auto original = seal(make_header(), bytes_of("small plan"));
  for (size_t bit = 0; bit < original.size() * 8; ++bit) {
    auto blob = original;
    blob[bit / 8] ^= std::byte{static_cast<uint8_t>(1u << (bit % 8))};
    auto result = open(blob);
    EXPECT_TRUE(std::holds_alternative<Rejection>(result)) << "accepted a flip of bit " << bit;
  }
}

TEST(Envelope, FlipsInTheHeaderFailTheChecksum) {
  auto original = seal(make_header(), bytes_of("small plan"));
  // Offset 20 is the first byte of the key digest (after magic, version,
  // header_len and flags): the checksum, not a length check, catches it.
  auto blob = original;
  blob[20] ^= std::byte{1};
  EXPECT_EQ(reason_of(open(blob)), "checksum mismatch (corrupt blob)");
}

TEST(Envelope, ForeignDataIsRejected) {
  EXPECT_EQ(reason_of(open({})), "empty blob");

  std::mt19937 rng(7);
  for (size_t size : {1u, 15u, 16u, 64u, 4096u}) {
    std::vector<std::byte> noise(size);
    for (auto& b : noise) b = static_cast<std::byte>(rng());
    EXPECT_TRUE(std::holds_alternative<Rejection>(open(noise))) << size << " random bytes";
  }

  auto onnx = bytes_of(zoo::build_zoo_model("resnet_tiny", {}).onnx_bytes);
  EXPECT_NE(reason_of(open(onnx)).find("bad magic"), std::string::npos) << reason_of(open(onnx));

  // Right magic, then garbage: lengths are checked before they are used.
  auto fake = bytes_of("KILNBLOB");
  for (int i = 0; i < 4; ++i) fake.push_back(static_cast<std::byte>((k_envelope_version >> (8 * i)) & 0xff));
  fake.insert(fake.end(), 4, std::byte{0xff});  // header_len 4 GiB
  EXPECT_NE(reason_of(open(fake)).find("truncated"), std::string::npos) << reason_of(open(fake));
}

TEST(Envelope, OtherVersionsAreRejectedNamingBoth) {
  auto blob = seal(make_header(), bytes_of("plan"));
  for (uint32_t version : {0u, k_envelope_version + 1, 7u}) {
    auto changed = blob;
    for (int i = 0; i < 4; ++i) changed[8 + i] = static_cast<std::byte>((version >> (8 * i)) & 0xff);
    EXPECT_EQ(reason_of(open(changed)), "envelope version " + std::to_string(version) + " (expected " +
                                            std::to_string(k_envelope_version) + ")");
  }
}

TEST(Envelope, KeyMismatchIsRejected) {
  auto header = make_header(1);
  auto blob = seal(header, bytes_of("plan"));
  EXPECT_TRUE(std::holds_alternative<OpenedBlob>(open(blob, header.key)));
  EXPECT_NE(reason_of(open(blob, make_key(2))).find("key mismatch"), std::string::npos);

  auto same_digest = header.key;
  same_digest.parts.settings[0] ^= 1;
  EXPECT_EQ(reason_of(open(blob, same_digest)), "key mismatch: the part digests differ");
}

}  // namespace
}  // namespace kiln::format
