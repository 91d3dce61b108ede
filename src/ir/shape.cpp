#include "ir/shape.hpp"

#include "kiln/tensor.hpp"

namespace kiln::ir {

Dim Dim::symbol(std::string name) {
  Dim d;
  d.m_symbol = std::move(name);
  return d;
}

std::string Dim::to_string() const {
  if (is_static()) return std::to_string(m_value);
  if (is_symbolic()) return m_symbol;
  return "?";
}

ValueType ValueType::of(const Tensor& tensor) { return of_static(tensor.dtype(), tensor.shape()); }

ValueType ValueType::of_static(DType dtype, std::span<const int64_t> shape) {
  Dims dims(shape.begin(), shape.end());
  return {dtype, std::move(dims)};
}

bool ValueType::is_static() const {
  if (!shape) return false;
  for (const Dim& d : *shape) {
    if (!d.is_static()) return false;
  }
  return true;
}

std::vector<int64_t> ValueType::static_shape() const {
  std::vector<int64_t> out;
  for (const Dim& d : *shape) out.push_back(d.value());
  return out;
}

std::string ValueType::to_string() const {
  std::string s(dtype_name(dtype));
  if (!shape) return s + "[...]";
  s += '[';
  for (size_t i = 0; i < shape->size(); ++i) {
    if (i) s += ',';
    s += (*shape)[i].to_string();
  }
  return s + ']';
}

std::optional<Dims> broadcast_dims(const Dims& a, const Dims& b) {
  size_t rank = std::max(a.size(), b.size());
  Dims out(rank);
  for (size_t i = 0; i < rank; ++i) {
    Dim da = i < rank - a.size() ? Dim(1) : a[i - (rank - a.size())];
    Dim db = i < rank - b.size() ? Dim(1) : b[i - (rank - b.size())];
    if (da == Dim(1)) {
      out[i] = db;
    } else if (db == Dim(1)) {
      out[i] = da;
    } else if (da.is_static() && db.is_static()) {
      if (da.value() != db.value()) return std::nullopt;
      out[i] = da;
    } else if (da == db) {
      out[i] = da;
    } else if (da.is_static()) {
      out[i] = da;  // the symbol must be 1 or equal to it: the static size wins
    } else if (db.is_static()) {
      out[i] = db;
    } else {
      out[i] = Dim();
    }
  }
  return out;
}

Dim dims_product(std::span<const Dim> dims) {
  int64_t n = 1;
  for (const Dim& d : dims) {
    if (!d.is_static()) return Dim();
    n *= d.value();
  }
  return Dim(n);
}

}  // namespace kiln::ir
