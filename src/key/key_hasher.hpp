// KeyHasher: SHA-256 over a stream of typed, length-delimited fields.
//
// Every write puts a one-byte field kind first and, for variable-length
// fields, a 64-bit length, all little-endian whatever the host, in the
// manner of ccache's hash_delimiter: no two different sequences of writes
// produce the same byte stream, so "ab"+"c" never collides with "a"+"bc" and
// an int never collides with a float of the same bits.
//
// With `keep_text`, everything written is also appended to a readable dump
// (ccache's hash debug mode): a Tag starts a new line and each value follows
// it on that line. The dump is for explaining misses; only the bytes are
// hashed.
//
// Not thread-safe; one hasher per computation. Owns its OpenSSL context.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

typedef struct evp_md_ctx_st EVP_MD_CTX;

namespace kiln::key {

using Digest = std::array<uint8_t, 32>;

// Structural markers. Their values are hashed, so renumbering one changes
// every key; bump k_key_scheme_version (engine_key.cpp) if you do.
enum class Tag : uint8_t {
  // parts and the final digest
  scheme = 1,
  part_graph = 2,
  part_inputs = 3,
  part_settings = 4,
  part_fingerprint = 5,
  // graph
  graph_inputs = 10,
  graph_input = 11,
  dim_static = 12,
  dim_symbol = 13,
  dim_unknown = 14,
  rank_unknown = 15,
  node = 16,
  op_type = 17,
  domain = 18,
  opset = 19,
  attribute = 20,
  node_inputs = 21,
  node_outputs = 22,
  graph_outputs = 23,
  // operands
  operand_none = 30,
  operand_input = 31,
  operand_weight = 32,
  operand_constant = 33,
  operand_result = 34,
  operand_unbound = 35,
  first_use = 36,  // the operand's description follows (first reference only)
  known_value = 37,
  // typed values
  value_int = 40,
  value_float = 41,
  value_string = 42,
  value_ints = 43,
  value_floats = 44,
  value_strings = 45,
  value_tensor = 46,
  tensor = 47,
  recipe = 48,
  no_recipe = 49,
  // inputs part
  spec = 60,
  // settings part
  precisions = 70,
  optimization_level = 71,
  refittable = 72,
  min_block_size = 73,
  cpu_fused_attention = 74,
  // fingerprint part
  backend = 80,
  plan_version = 81,
  library_version = 82,
  isa = 83,
};

std::string_view tag_name(Tag tag);

class KeyHasher {
 public:
  explicit KeyHasher(bool keep_text = false);
  ~KeyHasher();
  KeyHasher(const KeyHasher&) = delete;
  KeyHasher& operator=(const KeyHasher&) = delete;

  void tag(Tag tag);
  void u64(uint64_t value);
  void i64(int64_t value);
  // The bit pattern as given (-0.0 and 0.0 differ), except that every NaN is
  // written as the one canonical quiet NaN: NaN payloads carry no meaning.
  void f32(float value);
  void str(std::string_view value);
  void bytes(std::span<const std::byte> value);
  void ints(std::span<const int64_t> values);

  // Ends the stream. The hasher cannot be written to afterwards.
  Digest finish();
  const std::string& text() const { return m_text; }

 private:
  void field(uint8_t kind, const void* data, size_t size);
  void update(const void* data, size_t size);
  void text_value(std::string_view value);

  struct CtxDeleter {
    void operator()(EVP_MD_CTX* ctx) const;
  };
  std::unique_ptr<EVP_MD_CTX, CtxDeleter> m_ctx;
  bool m_keep_text;
  bool m_finished = false;
  std::string m_text;
};

std::string hex_string(std::span<const uint8_t> bytes);

}  // namespace kiln::key
