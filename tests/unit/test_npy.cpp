#include <gtest/gtest.h>

#include <chrono>

#include "npy.hpp"
#include "test_helpers.hpp"

namespace kiln::cli {
namespace {

TEST(Npy, RoundTripsEveryDtypeAndRank) {
  testing::TempDir dir;
  Tensor f = Tensor::from_values<float>({2, 3}, std::vector<float>{1, 2, 3, 4, 5, -6.5f});
  write_npy(dir / "f.npy", f);
  Tensor back = read_npy(dir / "f.npy");
  EXPECT_EQ(back.shape(), f.shape());
  EXPECT_EQ(back.data<float>()[5], -6.5f);

  Tensor scalar = Tensor::scalar<int64_t>(42);
  write_npy(dir / "s.npy", scalar);
  EXPECT_EQ(read_npy(dir / "s.npy").rank(), 0);
  EXPECT_EQ(read_npy(dir / "s.npy").data<int64_t>()[0], 42);

  Tensor vec = Tensor::from_values<int32_t>({3}, std::vector<int32_t>{7, 8, 9});
  write_npy(dir / "v.npy", vec);
  EXPECT_EQ(read_npy(dir / "v.npy").shape(), (std::vector<int64_t>{3}));
}

TEST(Npy, BadFilesAreClearErrors) {
  testing::TempDir dir;
  testing::write_file(dir / "bad.npy", "not numpy");
  EXPECT_THROW(read_npy(dir / "bad.npy"), Error);
  Tensor f = Tensor::from_values<float>({4}, std::vector<float>{1, 2, 3, 4});
  write_npy(dir / "f.npy", f);
  auto bytes = std::filesystem::file_size(dir / "f.npy");
  std::filesystem::resize_file(dir / "f.npy", bytes - 3);
  try {
    read_npy(dir / "f.npy");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fewer bytes"), std::string::npos);
  }
  EXPECT_THROW(read_npy(dir / "missing.npy"), Error);
}

// A header may claim any shape: its byte count is checked (overflow
// included) against the file before anything is allocated. A 1.9 GB claim in
// a tiny file was once allocated and zeroed (10 s) before "fewer bytes".
TEST(Npy, HugeClaimedShapesAreRefusedBeforeAllocating) {
  testing::TempDir dir;
  auto write_with_shape = [&](const std::string& name, const std::string& shape) {
    std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
    header.append((64 - (10 + header.size() + 1) % 64) % 64, ' ');
    header += '\n';
    std::string bytes = std::string("\x93NUMPY", 6) + std::string("\x01\x00", 2);
    bytes += static_cast<char>(header.size() & 0xff);
    bytes += static_cast<char>(header.size() >> 8);
    bytes += header + std::string(16, '\0');
    testing::write_file(dir / name, bytes);
    return dir / name;
  };
  for (const auto& [shape, why] : std::vector<std::pair<std::string, std::string>>{
           {"(500000000,)", "holds 16 bytes of data; its shape 500000000 needs 2000000000"},
           {"(4611686018427387904, 4)", "more elements than int64 counts"},
           {"(2305843009213693952, 2)", "more bytes than"}}) {
    auto path = write_with_shape("huge.npy", shape);
    auto started = std::chrono::steady_clock::now();
    try {
      (void)read_npy(path);
      ADD_FAILURE() << "decoded shape " << shape;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << e.what();
      EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
    }
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(1)) << shape;
  }
}

}  // namespace
}  // namespace kiln::cli
