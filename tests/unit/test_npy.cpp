#include <gtest/gtest.h>

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

}  // namespace
}  // namespace kiln::cli
