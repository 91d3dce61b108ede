// StridedWalk against brute force: the walk of a chain of slices, reshapes
// and transposes visits exactly the input elements the ops, applied one by
// one to a tensor holding its own indices, produce.
#include <gtest/gtest.h>

#include <cstdint>
#include <numeric>
#include <vector>

#include "backends/cuda/strided_walk.hpp"

namespace kiln::cuda {
namespace {

// A tensor of input element indices, with its shape.
struct Indices {
  std::vector<int64_t> shape;
  std::vector<int64_t> values;
};

Indices iota(const std::vector<int64_t>& shape) {
  Indices t{shape, std::vector<int64_t>(static_cast<size_t>(
                       std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>())))};
  std::iota(t.values.begin(), t.values.end(), 0);
  return t;
}

std::vector<int64_t> coords(int64_t i, const std::vector<int64_t>& shape) {
  std::vector<int64_t> c(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    c[d] = i % shape[d];
    i /= shape[d];
  }
  return c;
}

int64_t flat(const std::vector<int64_t>& c, const std::vector<int64_t>& shape) {
  int64_t i = 0;
  for (size_t d = 0; d < shape.size(); ++d) i = i * shape[d] + c[d];
  return i;
}

Indices slice(const Indices& x, const std::vector<int64_t>& starts, const std::vector<int64_t>& steps,
              const std::vector<int64_t>& out) {
  Indices y = iota(out);
  for (size_t i = 0; i < y.values.size(); ++i) {
    std::vector<int64_t> c = coords(static_cast<int64_t>(i), out);
    for (size_t d = 0; d < c.size(); ++d) c[d] = starts[d] + c[d] * steps[d];
    y.values[i] = x.values[static_cast<size_t>(flat(c, x.shape))];
  }
  return y;
}

Indices transpose(const Indices& x, const std::vector<int64_t>& perm) {
  std::vector<int64_t> out(perm.size());
  for (size_t d = 0; d < perm.size(); ++d) out[d] = x.shape[static_cast<size_t>(perm[d])];
  Indices y = iota(out);
  for (size_t i = 0; i < y.values.size(); ++i) {
    const std::vector<int64_t> c = coords(static_cast<int64_t>(i), out);
    std::vector<int64_t> src(c.size());
    for (size_t d = 0; d < c.size(); ++d) src[static_cast<size_t>(perm[d])] = c[d];
    y.values[i] = x.values[static_cast<size_t>(flat(src, x.shape))];
  }
  return y;
}

std::vector<int64_t> walked(const StridedWalk& w) {
  const Indices shape_only = iota(w.shape);
  std::vector<int64_t> out(shape_only.values.size());
  for (size_t i = 0; i < out.size(); ++i) {
    const std::vector<int64_t> c = coords(static_cast<int64_t>(i), w.shape);
    int64_t off = w.offset;
    for (size_t d = 0; d < c.size(); ++d) off += c[d] * w.strides[d];
    out[i] = off;
  }
  return out;
}

TEST(StridedWalk, AttentionsSplitReshapeTranspose) {
  // [2, 5, 3*12] → the second of three parts [2, 5, 12] → [2, 5, 3, 4] → [2, 3, 5, 4]
  Indices x = iota({2, 5, 36});
  StridedWalk w = StridedWalk::contiguous(x.shape);
  Indices y = slice(x, {0, 0, 12}, {1, 1, 1}, {2, 5, 12});
  w.slice(std::vector<int64_t>{0, 0, 12}, std::vector<int64_t>{1, 1, 1}, y.shape);
  y.shape = {2, 5, 3, 4};
  ASSERT_TRUE(w.reshape(y.shape));
  EXPECT_EQ(walked(w), y.values);
  y = transpose(y, {0, 2, 1, 3});
  w.transpose(std::vector<int64_t>{0, 2, 1, 3});
  EXPECT_EQ(w.shape, y.shape);
  EXPECT_EQ(walked(w), y.values);
  // and K's transpose to [2, 3, 4, 5]
  Indices k = transpose(y, {0, 1, 3, 2});
  StridedWalk wk = w;
  wk.transpose(std::vector<int64_t>{0, 1, 3, 2});
  EXPECT_EQ(walked(wk), k.values);
}

TEST(StridedWalk, ReshapesThatSplitMergeOrAddUnitDimensions) {
  StridedWalk w = StridedWalk::contiguous(std::vector<int64_t>{4, 6, 10});
  w.slice(std::vector<int64_t>{1, 0, 2}, std::vector<int64_t>{1, 2, 1}, std::vector<int64_t>{3, 3, 8});
  const std::vector<int64_t> before = walked(w);
  for (const std::vector<int64_t>& target :
       {std::vector<int64_t>{3, 3, 2, 4}, {1, 3, 3, 8}, {3, 1, 3, 1, 8, 1}, {3, 3, 8}}) {
    StridedWalk r = w;
    ASSERT_TRUE(r.reshape(target));
    EXPECT_EQ(r.shape, target);
    EXPECT_EQ(walked(r), before);  // a reshape keeps the elements and their order
  }
  // A contiguous tensor reshapes to anything of its size.
  StridedWalk c = StridedWalk::contiguous(std::vector<int64_t>{6, 4});
  ASSERT_TRUE(c.reshape(std::vector<int64_t>{2, 12}));
  EXPECT_EQ(walked(c), iota({24}).values);
}

TEST(StridedWalk, ReshapesThatAreNoWalkAreRefusedAndChangeNothing) {
  // After a transpose, merging the swapped dimensions needs a copy.
  StridedWalk w = StridedWalk::contiguous(std::vector<int64_t>{4, 6});
  w.transpose(std::vector<int64_t>{1, 0});
  const StridedWalk before = w;
  EXPECT_FALSE(w.reshape(std::vector<int64_t>{24}));
  EXPECT_EQ(w.shape, before.shape);
  EXPECT_EQ(w.strides, before.strides);
  // A slice's rows are not contiguous: they cannot merge with the next dim.
  StridedWalk s = StridedWalk::contiguous(std::vector<int64_t>{4, 10});
  s.slice(std::vector<int64_t>{0, 0}, std::vector<int64_t>{1, 1}, std::vector<int64_t>{4, 6});
  EXPECT_FALSE(s.reshape(std::vector<int64_t>{24}));
  EXPECT_FALSE(s.reshape(std::vector<int64_t>{8, 3}));
  ASSERT_TRUE(s.reshape(std::vector<int64_t>{2, 2, 2, 3}));  // splitting is fine
}

}  // namespace
}  // namespace kiln::cuda
