#include "npy.hpp"

#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>

namespace kiln::cli {

namespace {

constexpr char k_magic[] = "\x93NUMPY";

struct DescrMapping {
  const char* descr;
  DType dtype;
};
constexpr DescrMapping k_descrs[] = {
    {"f4", DType::float32}, {"f8", DType::float64}, {"f2", DType::float16}, {"i1", DType::int8},
    {"u1", DType::uint8},   {"i2", DType::int16},   {"u2", DType::uint16},  {"i4", DType::int32},
    {"u4", DType::uint32},  {"i8", DType::int64},   {"u8", DType::uint64},  {"b1", DType::boolean},
};

DType dtype_from_descr(const std::string& descr, const std::string& where) {
  if (descr.size() != 3 || (descr[0] != '<' && descr[0] != '|' && descr[0] != '>' && descr[0] != '=')) {
    throw Error(ErrorCode::unsupported, where + ": unsupported dtype '" + descr + "'");
  }
  if (descr[0] == '>') throw Error(ErrorCode::unsupported, where + ": big-endian arrays are not supported");
  for (const auto& m : k_descrs) {
    if (descr.substr(1) == m.descr) return m.dtype;
  }
  throw Error(ErrorCode::unsupported, where + ": unsupported dtype '" + descr + "'");
}

std::string descr_for(DType dtype) {
  for (const auto& m : k_descrs) {
    if (m.dtype == dtype) return (dtype_size(dtype) == 1 ? "|" : "<") + std::string(m.descr);
  }
  throw Error(ErrorCode::unsupported, "cannot write " + std::string(dtype_name(dtype)) + " as .npy");
}

}  // namespace

Tensor read_npy(const std::filesystem::path& path) {
  const std::string where = path.string();
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::io, where + ": cannot open");
  char magic[6];
  unsigned char version[2];
  if (!in.read(magic, 6) || std::memcmp(magic, k_magic, 6) != 0 ||
      !in.read(reinterpret_cast<char*>(version), 2)) {
    throw Error(ErrorCode::invalid_argument, where + ": not a .npy file");
  }
  uint32_t header_len = 0;
  if (version[0] == 1) {
    unsigned char len[2];
    if (!in.read(reinterpret_cast<char*>(len), 2))
      throw Error(ErrorCode::invalid_argument, where + ": truncated");
    header_len = len[0] | (len[1] << 8);
  } else if (version[0] == 2 || version[0] == 3) {
    unsigned char len[4];
    if (!in.read(reinterpret_cast<char*>(len), 4))
      throw Error(ErrorCode::invalid_argument, where + ": truncated");
    header_len = len[0] | (len[1] << 8) | (len[2] << 16) | (static_cast<uint32_t>(len[3]) << 24);
  } else {
    throw Error(ErrorCode::unsupported,
                where + ": .npy version " + std::to_string(version[0]) + " is not supported");
  }
  if (header_len > (1u << 20)) throw Error(ErrorCode::invalid_argument, where + ": header too large");
  std::string header(header_len, '\0');
  if (!in.read(header.data(), header_len))
    throw Error(ErrorCode::invalid_argument, where + ": truncated header");

  std::smatch m;
  if (!std::regex_search(header, m, std::regex(R"('descr'\s*:\s*'([^']*)')"))) {
    throw Error(ErrorCode::invalid_argument, where + ": header has no descr");
  }
  DType dtype = dtype_from_descr(m[1], where);
  if (std::regex_search(header, m, std::regex(R"('fortran_order'\s*:\s*True)"))) {
    throw Error(ErrorCode::unsupported, where + ": Fortran-order arrays are not supported");
  }
  if (!std::regex_search(header, m, std::regex(R"('shape'\s*:\s*\(([^)]*)\))"))) {
    throw Error(ErrorCode::invalid_argument, where + ": header has no shape");
  }
  std::vector<int64_t> shape;
  std::stringstream dims(m[1]);
  std::string item;
  while (std::getline(dims, item, ',')) {
    if (item.find_first_not_of(" \t") == std::string::npos) continue;
    try {
      shape.push_back(std::stoll(item));
    } catch (const std::exception&) {
      throw Error(ErrorCode::invalid_argument, where + ": bad shape entry '" + item + "'");
    }
    if (shape.back() < 0) throw Error(ErrorCode::invalid_argument, where + ": negative dimension");
  }
  Tensor t = Tensor::zeros(dtype, shape);
  auto bytes = t.mutable_bytes();
  if (!in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()))) {
    throw Error(ErrorCode::invalid_argument,
                where + ": holds fewer bytes than its shape " + t.shape_string() + " needs");
  }
  return t;
}

void write_npy(const std::filesystem::path& path, const Tensor& tensor) {
  std::string shape = "(";
  for (int64_t d : tensor.shape()) shape += std::to_string(d) + ", ";
  if (tensor.rank() > 1) shape.erase(shape.size() - 2);
  if (tensor.rank() == 1) shape.erase(shape.size() - 1);
  shape += ")";
  std::string header =
      "{'descr': '" + descr_for(tensor.dtype()) + "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Pad so the data starts on a 64-byte boundary, as NumPy does.
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw Error(ErrorCode::io, path.string() + ": cannot create");
  out.write(k_magic, 6);
  const char version[2] = {1, 0};
  out.write(version, 2);
  const char len[2] = {static_cast<char>(header.size() & 0xff), static_cast<char>(header.size() >> 8)};
  out.write(len, 2);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  auto bytes = tensor.bytes();
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw Error(ErrorCode::io, path.string() + ": write failed");
}

}  // namespace kiln::cli
