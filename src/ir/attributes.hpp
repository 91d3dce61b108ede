// Typed node attributes, kept sorted by name (std::map) so that any walk over
// them, for printing or hashing, is deterministic.
//
// Getters throw kiln::Error (invalid_model) for a missing required attribute or
// a value of the wrong type; the caller adds the node and op to the message.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "kiln/tensor.hpp"

namespace kiln::ir {

using AttributeValue = std::variant<int64_t, float, std::string, std::vector<int64_t>, std::vector<float>,
                                    std::vector<std::string>, Tensor>;

class Attributes {
 public:
  void set(const std::string& name, AttributeValue value) { m_values[name] = std::move(value); }
  bool has(const std::string& name) const { return m_values.count(name) != 0; }
  const std::map<std::string, AttributeValue>& all() const { return m_values; }

  int64_t get_int(const std::string& name) const;
  int64_t get_int(const std::string& name, int64_t fallback) const;
  float get_float(const std::string& name) const;
  float get_float(const std::string& name, float fallback) const;
  std::string get_string(const std::string& name) const;
  std::string get_string(const std::string& name, const std::string& fallback) const;
  std::vector<int64_t> get_ints(const std::string& name) const;
  std::vector<int64_t> get_ints(const std::string& name, std::vector<int64_t> fallback) const;
  std::optional<std::vector<int64_t>> find_ints(const std::string& name) const;
  std::vector<float> get_floats(const std::string& name) const;
  const Tensor& get_tensor(const std::string& name) const;

 private:
  template <typename T>
  const T& get_typed(const std::string& name, const char* type_name) const;

  std::map<std::string, AttributeValue> m_values;
};

std::string attribute_to_string(const AttributeValue& value);

}  // namespace kiln::ir
