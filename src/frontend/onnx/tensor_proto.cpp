#include "frontend/onnx/tensor_proto.hpp"

#include <cstring>
#include <onnx/onnx_pb.h>

namespace kiln::frontend {

namespace {

bool is_aligned(const std::byte* p, size_t alignment) {
  return reinterpret_cast<uintptr_t>(p) % alignment == 0;
}

// Borrows `bytes` if they are aligned for the element type, else copies.
Tensor borrow_or_copy(DType dtype, std::vector<int64_t> shape, std::span<const std::byte> bytes,
                      std::shared_ptr<const void> owner) {
  if (is_aligned(bytes.data(), dtype_size(dtype))) {
    return Tensor::borrow(dtype, std::move(shape), bytes, std::move(owner));
  }
  Tensor t = Tensor::zeros(dtype, std::move(shape));
  if (bytes.size() != t.byte_size()) {
    throw Error(ErrorCode::invalid_model, "data has " + std::to_string(bytes.size()) + " bytes, shape " +
                                              t.shape_string() + " needs " + std::to_string(t.byte_size()));
  }
  std::memcpy(t.mutable_bytes().data(), bytes.data(), bytes.size());
  return t;
}

struct ExternalBytes {
  std::span<const std::byte> bytes;
  std::shared_ptr<const MappedFile> file;
};

ExternalBytes external_bytes(const onnx::TensorProto& proto, TensorSource& source) {
  std::string location;
  int64_t offset = 0;
  int64_t length = -1;
  for (const auto& entry : proto.external_data()) {
    try {
      if (entry.key() == "location") location = entry.value();
      if (entry.key() == "offset") offset = std::stoll(entry.value());
      if (entry.key() == "length") length = std::stoll(entry.value());
    } catch (const std::exception&) {
      throw Error(ErrorCode::invalid_model, "external data '" + entry.key() + "' is not a number: '" +
                                                entry.value() + "'");
    }
  }
  if (location.empty()) throw Error(ErrorCode::invalid_model, "external data has no location");
  if (source.base_dir.empty()) {
    throw Error(ErrorCode::invalid_argument,
                "external data '" + location + "' needs the model's folder; load the model from a file");
  }
  std::filesystem::path relative(location);
  // A model must not make kiln read files outside its own folder.
  if (relative.is_absolute() || relative.lexically_normal().string().starts_with("..")) {
    throw Error(ErrorCode::invalid_model, "external data location '" + location + "' leaves the model's folder");
  }
  std::filesystem::path full = source.base_dir / relative;
  auto& mapping = source.mapped[full];
  if (!mapping) mapping = MappedFile::open(full);
  auto file = mapping->bytes();
  if (offset < 0 || static_cast<uint64_t>(offset) > file.size()) {
    throw Error(ErrorCode::invalid_model, "external data offset " + std::to_string(offset) + " is beyond the end of '" +
                                              location + "' (" + std::to_string(file.size()) + " bytes)");
  }
  size_t available = file.size() - static_cast<size_t>(offset);
  size_t size = length < 0 ? available : static_cast<size_t>(length);
  if (size > available) {
    throw Error(ErrorCode::invalid_model, "external data of " + std::to_string(size) + " bytes at offset " +
                                              std::to_string(offset) + " overruns '" + location + "'");
  }
  return {file.subspan(static_cast<size_t>(offset), size), mapping};
}

template <typename Dst, typename Field>
Tensor from_typed_field(DType dtype, std::vector<int64_t> shape, const Field& field) {
  Tensor t = Tensor::zeros(dtype, std::move(shape));
  if (static_cast<int64_t>(field.size()) != t.numel()) {
    throw Error(ErrorCode::invalid_model, "tensor of shape " + t.shape_string() + " has " +
                                              std::to_string(field.size()) + " values");
  }
  auto* out = reinterpret_cast<Dst*>(t.mutable_bytes().data());
  for (int i = 0; i < field.size(); ++i) out[i] = static_cast<Dst>(field.Get(i));
  return t;
}

}  // namespace

Tensor tensor_from_proto(const onnx::TensorProto& proto, TensorSource& source) {
  auto dtype = dtype_from_onnx(proto.data_type());
  if (!dtype) {
    throw Error(ErrorCode::unsupported,
                "tensor element type " + std::to_string(proto.data_type()) + " is not supported by kiln");
  }
  std::vector<int64_t> shape(proto.dims().begin(), proto.dims().end());
  for (int64_t d : shape) {
    if (d < 0) throw Error(ErrorCode::invalid_model, "tensor has a negative dimension");
  }
  if (proto.data_location() == onnx::TensorProto::EXTERNAL) {
    auto external = external_bytes(proto, source);
    return borrow_or_copy(*dtype, std::move(shape), external.bytes, std::move(external.file));
  }
  if (proto.has_raw_data()) {
    const std::string& raw = proto.raw_data();
    std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(raw.data()), raw.size());
    return borrow_or_copy(*dtype, std::move(shape), bytes, source.owner);
  }
  switch (*dtype) {
    case DType::float32: return from_typed_field<float>(*dtype, std::move(shape), proto.float_data());
    case DType::float64: return from_typed_field<double>(*dtype, std::move(shape), proto.double_data());
    case DType::int64: return from_typed_field<int64_t>(*dtype, std::move(shape), proto.int64_data());
    case DType::int32: return from_typed_field<int32_t>(*dtype, std::move(shape), proto.int32_data());
    case DType::int16: return from_typed_field<int16_t>(*dtype, std::move(shape), proto.int32_data());
    case DType::int8: return from_typed_field<int8_t>(*dtype, std::move(shape), proto.int32_data());
    case DType::uint8: return from_typed_field<uint8_t>(*dtype, std::move(shape), proto.int32_data());
    case DType::uint16:
    case DType::float16:
    case DType::bfloat16: return from_typed_field<uint16_t>(*dtype, std::move(shape), proto.int32_data());
    case DType::boolean: return from_typed_field<uint8_t>(*dtype, std::move(shape), proto.int32_data());
    case DType::uint32: return from_typed_field<uint32_t>(*dtype, std::move(shape), proto.uint64_data());
    case DType::uint64: return from_typed_field<uint64_t>(*dtype, std::move(shape), proto.uint64_data());
    case DType::undefined: break;
  }
  throw Error(ErrorCode::unsupported, "tensor element type is not supported");
}

}  // namespace kiln::frontend
