// KeyHasher over OpenSSL's EVP SHA-256.
#include "key/key_hasher.hpp"

#include <openssl/evp.h>

#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "kiln/error.hpp"

namespace kiln::key {

namespace {

// Field kinds: the first byte of every field.
enum Kind : uint8_t { k_tag = 1, k_u64 = 2, k_i64 = 3, k_f32 = 4, k_str = 5, k_bytes = 6, k_ints = 7 };

constexpr uint32_t k_canonical_nan = 0x7fc00000u;

// Little-endian regardless of the host, so keys agree across machines.
std::array<uint8_t, 8> le64(uint64_t v) {
  std::array<uint8_t, 8> out{};
  for (size_t i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(v >> (8 * i));
  return out;
}

[[noreturn]] void openssl_failure(const char* what) {
  throw Error(ErrorCode::internal, std::string("engine key: OpenSSL ") + what + " failed");
}

}  // namespace

std::string_view tag_name(Tag tag) {
  switch (tag) {
    case Tag::scheme:
      return "scheme";
    case Tag::part_graph:
      return "graph";
    case Tag::part_inputs:
      return "inputs";
    case Tag::part_settings:
      return "settings";
    case Tag::part_fingerprint:
      return "fingerprint";
    case Tag::graph_inputs:
      return "graph_inputs";
    case Tag::graph_input:
      return "input";
    case Tag::dim_static:
      return "dim";
    case Tag::dim_symbol:
      return "dim_symbol";
    case Tag::dim_unknown:
      return "dim_unknown";
    case Tag::rank_unknown:
      return "rank_unknown";
    case Tag::node:
      return "node";
    case Tag::op_type:
      return "op";
    case Tag::domain:
      return "domain";
    case Tag::opset:
      return "opset";
    case Tag::attribute:
      return "attr";
    case Tag::node_inputs:
      return "inputs";
    case Tag::node_outputs:
      return "outputs";
    case Tag::graph_outputs:
      return "graph_outputs";
    case Tag::operand_none:
      return "none";
    case Tag::operand_input:
      return "input";
    case Tag::operand_weight:
      return "weight";
    case Tag::operand_constant:
      return "constant";
    case Tag::operand_result:
      return "result";
    case Tag::operand_unbound:
      return "unbound";
    case Tag::first_use:
      return "=";
    case Tag::known_value:
      return "known";
    case Tag::value_int:
      return "int";
    case Tag::value_float:
      return "float";
    case Tag::value_string:
      return "string";
    case Tag::value_ints:
      return "ints";
    case Tag::value_floats:
      return "floats";
    case Tag::value_strings:
      return "strings";
    case Tag::value_tensor:
      return "tensor_attr";
    case Tag::tensor:
      return "tensor";
    case Tag::recipe:
      return "recipe";
    case Tag::no_recipe:
      return "no_recipe";
    case Tag::spec:
      return "spec";
    case Tag::precisions:
      return "enabled_precisions";
    case Tag::optimization_level:
      return "optimization_level";
    case Tag::refittable:
      return "refittable";
    case Tag::min_block_size:
      return "min_block_size";
    case Tag::cpu_fused_attention:
      return "cpu_fused_attention";
    case Tag::backend:
      return "backend";
    case Tag::plan_version:
      return "plan_version";
    case Tag::library_version:
      return "library_version";
    case Tag::isa:
      return "isa";
  }
  return "?";
}

void KeyHasher::CtxDeleter::operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }

KeyHasher::KeyHasher(bool keep_text) : m_ctx(EVP_MD_CTX_new()), m_keep_text(keep_text) {
  if (!m_ctx) openssl_failure("EVP_MD_CTX_new");
  if (EVP_DigestInit_ex(m_ctx.get(), EVP_sha256(), nullptr) != 1) openssl_failure("EVP_DigestInit_ex");
}

KeyHasher::~KeyHasher() = default;

void KeyHasher::update(const void* data, size_t size) {
  if (m_finished) throw Error(ErrorCode::internal, "engine key: write to a finished KeyHasher");
  if (size != 0 && EVP_DigestUpdate(m_ctx.get(), data, size) != 1) openssl_failure("EVP_DigestUpdate");
}

void KeyHasher::field(uint8_t kind, const void* data, size_t size) {
  update(&kind, 1);
  update(data, size);
}

void KeyHasher::text_value(std::string_view value) {
  if (!m_keep_text) return;
  m_text += ' ';
  m_text += value;
}

void KeyHasher::tag(Tag tag) {
  auto value = static_cast<uint8_t>(tag);
  field(k_tag, &value, 1);
  if (m_keep_text) {
    // Nodes, graph inputs and part markers start a line; the rest read inline.
    bool new_line = tag == Tag::node || tag == Tag::graph_input || tag == Tag::graph_inputs ||
                    tag == Tag::graph_outputs || tag == Tag::spec;
    if (!m_text.empty()) m_text += new_line ? '\n' : ' ';
    m_text += tag_name(tag);
  }
}

void KeyHasher::u64(uint64_t value) {
  auto b = le64(value);
  field(k_u64, b.data(), b.size());
  text_value(std::to_string(value));
}

void KeyHasher::i64(int64_t value) {
  auto b = le64(static_cast<uint64_t>(value));
  field(k_i64, b.data(), b.size());
  text_value(std::to_string(value));
}

void KeyHasher::f32(float value) {
  uint32_t bits = std::isnan(value) ? k_canonical_nan : std::bit_cast<uint32_t>(value);
  std::array<uint8_t, 4> b{};
  for (size_t i = 0; i < 4; ++i) b[i] = static_cast<uint8_t>(bits >> (8 * i));
  field(k_f32, b.data(), b.size());
  if (m_keep_text) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(value));
    text_value(buf);
  }
}

void KeyHasher::str(std::string_view value) {
  auto len = le64(value.size());
  uint8_t kind = k_str;
  update(&kind, 1);
  update(len.data(), len.size());
  update(value.data(), value.size());
  if (m_keep_text) text_value("\"" + std::string(value) + "\"");
}

void KeyHasher::bytes(std::span<const std::byte> value) {
  auto len = le64(value.size());
  uint8_t kind = k_bytes;
  update(&kind, 1);
  update(len.data(), len.size());
  update(value.data(), value.size());
  if (m_keep_text) {
    // A short digest of the content, so that two dumps can be diffed
    // without printing megabytes of constants.
    Digest d{};
    unsigned int n = 0;
    if (EVP_Digest(value.data(), value.size(), d.data(), &n, EVP_sha256(), nullptr) != 1) {
      openssl_failure("EVP_Digest");
    }
    text_value("bytes[" + std::to_string(value.size()) + "]:" + hex_string(d).substr(0, 16));
  }
}

void KeyHasher::ints(std::span<const int64_t> values) {
  auto len = le64(values.size());
  uint8_t kind = k_ints;
  update(&kind, 1);
  update(len.data(), len.size());
  for (int64_t v : values) {
    auto b = le64(static_cast<uint64_t>(v));
    update(b.data(), b.size());
  }
  if (m_keep_text) {
    std::string s = "[";
    for (size_t i = 0; i < values.size(); ++i) {
      if (i) s += ',';
      s += std::to_string(values[i]);
    }
    text_value(s + "]");
  }
}

Digest KeyHasher::finish() {
  if (m_finished) throw Error(ErrorCode::internal, "engine key: KeyHasher finished twice");
  Digest digest{};
  unsigned int size = 0;
  if (EVP_DigestFinal_ex(m_ctx.get(), digest.data(), &size) != 1 || size != digest.size()) {
    openssl_failure("EVP_DigestFinal_ex");
  }
  m_finished = true;
  return digest;
}

std::string hex_string(std::span<const uint8_t> bytes) {
  static constexpr char k_digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    out += k_digits[b >> 4];
    out += k_digits[b & 0xf];
  }
  return out;
}

}  // namespace kiln::key
