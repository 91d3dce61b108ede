// Static and symbolic shapes for the IR.
//
// A Dim is a known size (>= 0), a named symbol ("batch", "seq") whose size is
// chosen at run time, or unknown. A ValueType is a dtype plus a shape whose
// rank itself may be unknown (std::nullopt) when inference cannot tell.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kiln/dtype.hpp"

namespace kiln {
class Tensor;
}

namespace kiln::ir {

class Dim {
 public:
  Dim() = default;                        // unknown
  Dim(int64_t value) : m_value(value) {}  // NOLINT(google-explicit-constructor): sizes read naturally
  static Dim symbol(std::string name);

  bool is_static() const { return m_value >= 0; }
  bool is_symbolic() const { return m_value < 0 && !m_symbol.empty(); }
  bool is_unknown() const { return m_value < 0 && m_symbol.empty(); }
  // REQUIRES: is_static().
  int64_t value() const { return m_value; }
  const std::string& symbol_name() const { return m_symbol; }

  bool operator==(const Dim& other) const = default;
  std::string to_string() const;  // "3", "batch" or "?"

 private:
  int64_t m_value = -1;
  std::string m_symbol;
};

using Dims = std::vector<Dim>;

struct ValueType {
  DType dtype = DType::undefined;
  std::optional<Dims> shape;  // nullopt: rank unknown

  static ValueType of(const Tensor& tensor);
  static ValueType of_static(DType dtype, std::span<const int64_t> shape);
  static ValueType unknown_shape(DType dtype) { return {dtype, std::nullopt}; }
  static ValueType of_rank(DType dtype, size_t rank) { return {dtype, Dims(rank)}; }

  bool has_rank() const { return shape.has_value(); }
  bool is_static() const;
  // REQUIRES: is_static().
  std::vector<int64_t> static_shape() const;
  std::string to_string() const;  // "float32[batch,3,224,224]"
};

// Numpy-style multidirectional broadcasting of two shapes. Returns nullopt if
// they cannot broadcast; symbols broadcast against 1 and against themselves.
std::optional<Dims> broadcast_dims(const Dims& a, const Dims& b);

// The product of dims if all are static, else unknown.
Dim dims_product(std::span<const Dim> dims);

}  // namespace kiln::ir
