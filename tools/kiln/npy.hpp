// NumPy .npy files (format versions 1.0 to 3.0), the CLI's tensor exchange
// format: C order, little endian, numeric and bool dtypes.
#pragma once

#include <filesystem>

#include "kiln/tensor.hpp"

namespace kiln::cli {

// Throws kiln::Error naming the file: io if unreadable, invalid_argument for a
// malformed header, unsupported for Fortran order, big endian or object dtypes.
Tensor read_npy(const std::filesystem::path& path);

// Writes a version 1.0 file. Throws kiln::Error(io) on failure.
void write_npy(const std::filesystem::path& path, const Tensor& tensor);

}  // namespace kiln::cli
