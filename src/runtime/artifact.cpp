#include "runtime/artifact.hpp"

#include <xxhash.h>

#include <array>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "kiln/error.hpp"

namespace kiln::runtime {

namespace {

constexpr std::array<char, 8> k_magic{'K', 'I', 'L', 'N', 'A', 'O', 'T', '\0'};
constexpr uint32_t k_artifact_version = 1;
constexpr size_t k_checksum_size = 16;

template <typename T>
void put_le(std::vector<std::byte>& out, T value) {
  for (size_t i = 0; i < sizeof(T); ++i)
    out.push_back(static_cast<std::byte>((static_cast<uint64_t>(value) >> (8 * i)) & 0xff));
}

void put_bytes(std::vector<std::byte>& out, std::span<const std::byte> bytes) {
  out.insert(out.end(), bytes.begin(), bytes.end());
}

std::array<std::byte, k_checksum_size> checksum(std::span<const std::byte> bytes) {
  XXH128_hash_t h = XXH3_128bits(bytes.data(), bytes.size());
  std::array<std::byte, k_checksum_size> out{};
  for (size_t i = 0; i < 8; ++i) {
    out[i] = static_cast<std::byte>((h.low64 >> (8 * i)) & 0xff);
    out[8 + i] = static_cast<std::byte>((h.high64 >> (8 * i)) & 0xff);
  }
  return out;
}

// Reads little-endian fields and byte runs, refusing to read past the end.
class Reader {
 public:
  Reader(std::span<const std::byte> bytes, const std::string& source) : m_bytes(bytes), m_source(source) {}

  template <typename T>
  T le(const char* what) {
    need(sizeof(T), what);
    uint64_t v = 0;
    for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<uint64_t>(m_bytes[m_pos + i]) << (8 * i);
    m_pos += sizeof(T);
    return static_cast<T>(v);
  }
  std::span<const std::byte> take(uint64_t n, const char* what) {
    need(n, what);
    auto out = m_bytes.subspan(m_pos, static_cast<size_t>(n));
    m_pos += static_cast<size_t>(n);
    return out;
  }
  size_t left() const { return m_bytes.size() - m_pos; }

 private:
  void need(uint64_t n, const char* what) const {
    if (n > m_bytes.size() - m_pos) {
      throw Error(ErrorCode::invalid_model, m_source + ": artifact truncated: " + what + " needs " +
                                                std::to_string(n) + " bytes, " +
                                                std::to_string(m_bytes.size() - m_pos) + " left");
    }
  }

  std::span<const std::byte> m_bytes;
  const std::string& m_source;
  size_t m_pos = 0;
};

nlohmann::json manifest_json(const ArtifactManifest& m) {
  nlohmann::json j;
  j["producer"] = m.producer;
  j["fingerprint"] = m.fingerprint;
  j["specs"] = nlohmann::json::array();
  for (const auto& s : m.specs) {
    j["specs"].push_back({{"name", s.name},
                          {"dtype", static_cast<int>(s.dtype)},
                          {"min", s.min},
                          {"opt", s.opt},
                          {"max", s.max}});
  }
  j["enabled_precisions"] = nlohmann::json::array();
  for (Precision p : m.enabled_precisions) j["enabled_precisions"].push_back(static_cast<int>(p));
  j["optimization_level"] = m.optimization_level;
  j["min_block_size"] = m.min_block_size;
  j["cpu_fused_attention"] = m.cpu_fused_attention;
  return j;
}

ArtifactManifest parse_manifest(std::span<const std::byte> bytes, const std::string& source) {
  try {
    auto j = nlohmann::json::parse(reinterpret_cast<const char*>(bytes.data()),
                                   reinterpret_cast<const char*>(bytes.data()) + bytes.size());
    ArtifactManifest m;
    m.producer = j.at("producer").get<std::string>();
    m.fingerprint = j.at("fingerprint").get<std::string>();
    for (const auto& s : j.at("specs")) {
      m.specs.push_back(
          InputSpec{s.at("name").get<std::string>(), static_cast<DType>(s.at("dtype").get<int>()),
                    s.at("min").get<std::vector<int64_t>>(), s.at("opt").get<std::vector<int64_t>>(),
                    s.at("max").get<std::vector<int64_t>>()});
    }
    for (int p : j.at("enabled_precisions")) m.enabled_precisions.insert(static_cast<Precision>(p));
    m.optimization_level = j.at("optimization_level").get<int>();
    m.min_block_size = j.at("min_block_size").get<int>();
    m.cpu_fused_attention = j.value("cpu_fused_attention", false);
    return m;
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::invalid_model, source + ": artifact manifest is unreadable: " + e.what());
  }
}

}  // namespace

std::vector<std::byte> encode_artifact(const Artifact& artifact) {
  std::string manifest = manifest_json(artifact.manifest).dump();
  std::vector<std::byte> graph;
  put_le(graph, static_cast<uint32_t>(manifest.size()));
  put_bytes(graph, std::as_bytes(std::span(manifest.data(), manifest.size())));
  put_le(graph, static_cast<uint64_t>(artifact.onnx.size()));
  put_bytes(graph, artifact.onnx);

  std::vector<std::byte> out;
  put_bytes(out, std::as_bytes(std::span(k_magic)));
  put_le(out, k_artifact_version);
  put_le(out, static_cast<uint64_t>(graph.size()));
  put_bytes(out, checksum(graph));
  put_bytes(out, graph);
  put_le(out, static_cast<uint32_t>(artifact.engines.size()));
  for (const auto& blob : artifact.engines) {
    put_le(out, static_cast<uint64_t>(blob.size()));
    put_bytes(out, blob);
  }
  return out;
}

Artifact decode_artifact(std::span<const std::byte> bytes, const std::string& source) {
  Reader r(bytes, source);
  auto magic = r.take(k_magic.size(), "the magic");
  if (std::memcmp(magic.data(), k_magic.data(), k_magic.size()) != 0) {
    throw Error(ErrorCode::invalid_model, source + ": not a kiln artifact (bad magic)");
  }
  auto version = r.le<uint32_t>("the version");
  if (version != k_artifact_version) {
    throw Error(ErrorCode::invalid_model, source + ": artifact version " + std::to_string(version) +
                                              ", this kiln reads " + std::to_string(k_artifact_version));
  }
  auto graph_len = r.le<uint64_t>("the graph length");
  auto stored = r.take(k_checksum_size, "the graph checksum");
  auto graph = r.take(graph_len, "the graph section");
  auto actual = checksum(graph);
  if (std::memcmp(stored.data(), actual.data(), k_checksum_size) != 0) {
    throw Error(ErrorCode::invalid_model, source + ": artifact graph section is corrupt (checksum mismatch)");
  }
  Artifact artifact;
  Reader g(graph, source);
  auto manifest_len = g.le<uint32_t>("the manifest length");
  artifact.manifest = parse_manifest(g.take(manifest_len, "the manifest"), source);
  auto onnx_len = g.le<uint64_t>("the model length");
  auto onnx = g.take(onnx_len, "the model");
  artifact.onnx.assign(onnx.begin(), onnx.end());

  // Engines verify on their own; a truncated tail loses engines, not the
  // model. A count that the bytes left cannot hold (each engine takes at least
  // its 8-byte length) or bytes after the last engine are not damage a
  // truncation or a flipped length makes: the file is not what kiln wrote.
  if (r.left() < sizeof(uint32_t)) return artifact;  // cut before the engine count
  auto count = r.le<uint32_t>("the engine count");
  if (count > r.left() / sizeof(uint64_t)) {
    throw Error(ErrorCode::invalid_model, source + ": artifact is corrupt: it claims " +
                                              std::to_string(count) + " engines, more than its last " +
                                              std::to_string(r.left()) + " bytes can hold");
  }
  try {
    for (uint32_t i = 0; i < count; ++i) {
      auto len = r.le<uint64_t>("an engine length");
      auto blob = r.take(len, "an engine");
      artifact.engines.emplace_back(blob.begin(), blob.end());
    }
  } catch (const Error&) {
    // Fewer engines: the missing ones are rebuilt, with a warning from the loader.
    return artifact;
  }
  if (r.left() != 0) {
    throw Error(ErrorCode::invalid_model, source + ": artifact is corrupt: " + std::to_string(r.left()) +
                                              " bytes follow its last engine");
  }
  return artifact;
}

bool is_artifact_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::array<char, 8> head{};
  return in.read(head.data(), head.size()) && head == k_magic;
}

}  // namespace kiln::runtime
