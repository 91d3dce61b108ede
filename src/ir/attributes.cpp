#include "ir/attributes.hpp"

namespace kiln::ir {

template <typename T>
const T& Attributes::get_typed(const std::string& name, const char* type_name) const {
  auto it = m_values.find(name);
  if (it == m_values.end()) {
    throw Error(ErrorCode::invalid_model, "missing required attribute '" + name + "'");
  }
  const T* value = std::get_if<T>(&it->second);
  if (!value) {
    throw Error(ErrorCode::invalid_model, "attribute '" + name + "' must be " + type_name);
  }
  return *value;
}

int64_t Attributes::get_int(const std::string& name) const { return get_typed<int64_t>(name, "an int"); }
int64_t Attributes::get_int(const std::string& name, int64_t fallback) const {
  return has(name) ? get_int(name) : fallback;
}
float Attributes::get_float(const std::string& name) const { return get_typed<float>(name, "a float"); }
float Attributes::get_float(const std::string& name, float fallback) const {
  return has(name) ? get_float(name) : fallback;
}
std::string Attributes::get_string(const std::string& name) const {
  return get_typed<std::string>(name, "a string");
}
std::string Attributes::get_string(const std::string& name, const std::string& fallback) const {
  return has(name) ? get_string(name) : fallback;
}
std::vector<int64_t> Attributes::get_ints(const std::string& name) const {
  return get_typed<std::vector<int64_t>>(name, "a list of ints");
}
std::vector<int64_t> Attributes::get_ints(const std::string& name, std::vector<int64_t> fallback) const {
  return has(name) ? get_ints(name) : fallback;
}
std::optional<std::vector<int64_t>> Attributes::find_ints(const std::string& name) const {
  if (!has(name)) return std::nullopt;
  return get_ints(name);
}
std::vector<float> Attributes::get_floats(const std::string& name) const {
  return get_typed<std::vector<float>>(name, "a list of floats");
}
const Tensor& Attributes::get_tensor(const std::string& name) const {
  return get_typed<Tensor>(name, "a tensor");
}

namespace {
template <typename T>
std::string list_to_string(const std::vector<T>& values) {
  std::string s = "[";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) s += ',';
    if constexpr (std::is_same_v<T, std::string>) {
      s += '"' + values[i] + '"';
    } else {
      s += std::to_string(values[i]);
    }
  }
  return s + ']';
}
}  // namespace

std::string attribute_to_string(const AttributeValue& value) {
  struct Printer {
    std::string operator()(int64_t v) const { return std::to_string(v); }
    std::string operator()(float v) const { return std::to_string(v); }
    std::string operator()(const std::string& v) const { return '"' + v + '"'; }
    std::string operator()(const std::vector<int64_t>& v) const { return list_to_string(v); }
    std::string operator()(const std::vector<float>& v) const { return list_to_string(v); }
    std::string operator()(const std::vector<std::string>& v) const { return list_to_string(v); }
    std::string operator()(const Tensor& t) const {
      return "tensor<" + std::string(dtype_name(t.dtype())) + "[" + t.shape_string() + "]>";
    }
  };
  return std::visit(Printer{}, value);
}

}  // namespace kiln::ir
