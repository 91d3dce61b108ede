#include "frontend/onnx/tensor_proto.hpp"

#include <sys/stat.h>

#include <onnx/onnx_pb.h>
#include <cerrno>
#include <cstring>
#include <limits>

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

// The byte size of a tensor of `shape` and `dtype`, checked: every dim is
// non-negative and neither the element count nor the byte count overflows.
// A hostile file's dims are checked here, before anything of that size is
// allocated or a product wraps around to a small number.
size_t checked_byte_size(DType dtype, std::span<const int64_t> shape) {
  uint64_t count = 1;
  for (int64_t d : shape) {
    if (d < 0) throw Error(ErrorCode::invalid_model, "tensor has a negative dimension " + std::to_string(d));
    if (d != 0 &&
        count > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / static_cast<uint64_t>(d)) {
      throw Error(ErrorCode::invalid_model,
                  "tensor of shape " + shape_to_string(shape) + " has more elements than int64 counts");
    }
    count *= static_cast<uint64_t>(d);
  }
  if (count > std::numeric_limits<size_t>::max() / 16 / dtype_size(dtype)) {
    throw Error(ErrorCode::invalid_model,
                "tensor of shape " + shape_to_string(shape) + " is too large to address");
  }
  return static_cast<size_t>(count) * dtype_size(dtype);
}

void expect_byte_size(DType dtype, std::span<const int64_t> shape, size_t actual, const char* what) {
  size_t needed = checked_byte_size(dtype, shape);
  if (actual != needed) {
    throw Error(ErrorCode::invalid_model, std::string(what) + " of " + std::to_string(actual) +
                                              " bytes, but shape " + shape_to_string(shape) + " of " +
                                              std::string(dtype_name(dtype)) + " needs " +
                                              std::to_string(needed));
  }
}

// `full` with every symlink resolved must lie inside `base` (resolved too):
// a model must not make kiln read files outside its own folder, whether by
// "..", an absolute path or a symlink pointing out.
void require_inside(const std::filesystem::path& base, const std::filesystem::path& full,
                    const std::string& location) {
  std::error_code ec;
  auto real_base = std::filesystem::canonical(base, ec);
  if (ec)
    throw Error(ErrorCode::io, "cannot resolve the model's folder " + base.string() + ": " + ec.message());
  auto real = std::filesystem::weakly_canonical(full, ec);
  if (ec) throw Error(ErrorCode::io, "cannot resolve external data '" + location + "': " + ec.message());
  auto rel = real.lexically_relative(real_base);
  if (rel.empty() || *rel.begin() == "..") {
    throw Error(ErrorCode::invalid_model, "external data location '" + location +
                                              "' leaves the model's folder (it resolves to " + real.string() +
                                              ")");
  }
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
      throw Error(ErrorCode::invalid_model,
                  "external data '" + entry.key() + "' is not a number: '" + entry.value() + "'");
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
    throw Error(ErrorCode::invalid_model,
                "external data location '" + location + "' leaves the model's folder");
  }
  std::filesystem::path full = source.base_dir / relative;
  require_inside(source.base_dir, full, location);
  auto& mapping = source.mapped[full];
  if (!mapping) {
    // stat, not open: opening a FIFO blocks until a writer comes.
    struct stat st {};
    if (::stat(full.c_str(), &st) != 0) {
      throw Error(ErrorCode::io, "external data '" + location + "': " + std::strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) {
      throw Error(ErrorCode::invalid_model, "external data '" + location + "' is not a regular file");
    }
    mapping = MappedFile::open(full);
  }
  auto file = mapping->bytes();
  if (offset < 0 || static_cast<uint64_t>(offset) > file.size()) {
    throw Error(ErrorCode::invalid_model, "external data offset " + std::to_string(offset) +
                                              " is beyond the end of '" + location + "' (" +
                                              std::to_string(file.size()) + " bytes)");
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
  // Counted before allocating: a header may claim terabytes over three values.
  size_t count = checked_byte_size(dtype, shape) / dtype_size(dtype);
  if (static_cast<size_t>(field.size()) != count) {
    throw Error(ErrorCode::invalid_model, "tensor of shape " + shape_to_string(shape) + " has " +
                                              std::to_string(field.size()) + " values");
  }
  Tensor t = Tensor::zeros(dtype, std::move(shape));
  auto* out = reinterpret_cast<Dst*>(t.mutable_bytes().data());
  for (int i = 0; i < field.size(); ++i) out[i] = static_cast<Dst>(field.Get(i));
  return t;
}

}  // namespace

Tensor tensor_from_proto(const onnx::TensorProto& proto, TensorSource& source) {
  auto dtype = dtype_from_onnx(proto.data_type());
  if (!dtype) {
    throw Error(ErrorCode::unsupported,
                "tensor element type " + onnx_type_name(proto.data_type()) + " is not supported by kiln");
  }
  std::vector<int64_t> shape(proto.dims().begin(), proto.dims().end());
  (void)checked_byte_size(*dtype, shape);
  if (proto.data_location() == onnx::TensorProto::EXTERNAL) {
    auto external = external_bytes(proto, source);
    expect_byte_size(*dtype, shape, external.bytes.size(), "external data");
    return borrow_or_copy(*dtype, std::move(shape), external.bytes, std::move(external.file));
  }
  if (proto.has_raw_data()) {
    if (auto elided = source.elided.find(&proto); elided != source.elided.end()) {
      expect_byte_size(*dtype, shape, elided->second.bytes.size(), "raw_data");
      return borrow_or_copy(*dtype, std::move(shape), elided->second.bytes, elided->second.owner);
    }
    const std::string& raw = proto.raw_data();
    std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(raw.data()), raw.size());
    expect_byte_size(*dtype, shape, bytes.size(), "raw_data");
    return borrow_or_copy(*dtype, std::move(shape), bytes, source.owner);
  }
  switch (*dtype) {
    case DType::float32:
      return from_typed_field<float>(*dtype, std::move(shape), proto.float_data());
    case DType::float64:
      return from_typed_field<double>(*dtype, std::move(shape), proto.double_data());
    case DType::int64:
      return from_typed_field<int64_t>(*dtype, std::move(shape), proto.int64_data());
    case DType::int32:
      return from_typed_field<int32_t>(*dtype, std::move(shape), proto.int32_data());
    case DType::int16:
      return from_typed_field<int16_t>(*dtype, std::move(shape), proto.int32_data());
    case DType::int8:
      return from_typed_field<int8_t>(*dtype, std::move(shape), proto.int32_data());
    case DType::uint8:
      return from_typed_field<uint8_t>(*dtype, std::move(shape), proto.int32_data());
    case DType::uint16:
    case DType::float16:
    case DType::bfloat16:
      return from_typed_field<uint16_t>(*dtype, std::move(shape), proto.int32_data());
    case DType::boolean:
      return from_typed_field<uint8_t>(*dtype, std::move(shape), proto.int32_data());
    case DType::uint32:
      return from_typed_field<uint32_t>(*dtype, std::move(shape), proto.uint64_data());
    case DType::uint64:
      return from_typed_field<uint64_t>(*dtype, std::move(shape), proto.uint64_data());
    case DType::undefined:
      break;
  }
  throw Error(ErrorCode::unsupported, "tensor element type is not supported");
}

}  // namespace kiln::frontend
