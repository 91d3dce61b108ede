// kiln's CUDA kernels against straightforward host implementations in
// double: every launcher, f32 and (where the engine runs them) f16 and bf16,
// on shapes chosen for their edges: odd sizes, broadcasting along every
// dimension of ranks 0 to 6, padding, dilation and count_include_pad in
// pooling, rows longer than a block and rows of one column. The GPU tests
// skip when no CUDA device is present; the argument checks run anywhere,
// since a launcher rejects bad arguments before it touches the device.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <numbers>
#include <numeric>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kernels.hpp"

namespace kiln::cuda {
namespace {

constexpr double k_nan = std::numeric_limits<double>::quiet_NaN();
constexpr double k_inf = std::numeric_limits<double>::infinity();
constexpr ElemType k_types[] = {ElemType::f32, ElemType::f16, ElemType::bf16};

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

const char* type_name(ElemType t) {
  switch (t) {
    case ElemType::f32:
      return "f32";
    case ElemType::f16:
      return "f16";
    case ElemType::bf16:
      return "bf16";
  }
  return "?";
}

size_t elem_bytes(ElemType t) { return t == ElemType::f32 ? 4 : 2; }

// The value v becomes once stored as t (round to nearest even, CUDA's own
// host conversions, which the device's match).
float round_to(ElemType t, double v) {
  const auto f = static_cast<float>(v);
  switch (t) {
    case ElemType::f32:
      return f;
    case ElemType::f16:
      return __half2float(__float2half_rn(f));
    case ElemType::bf16:
      return __bfloat162float(__float2bfloat16_rn(f));
  }
  return f;
}

std::vector<unsigned char> encode(ElemType t, std::span<const float> values) {
  std::vector<unsigned char> bytes(values.size() * elem_bytes(t));
  for (size_t i = 0; i < values.size(); ++i) {
    unsigned char* dst = bytes.data() + i * elem_bytes(t);
    if (t == ElemType::f32) {
      std::memcpy(dst, &values[i], 4);
    } else if (t == ElemType::f16) {
      const __half h = __float2half_rn(values[i]);
      std::memcpy(dst, &h, 2);
    } else {
      const __nv_bfloat16 h = __float2bfloat16_rn(values[i]);
      std::memcpy(dst, &h, 2);
    }
  }
  return bytes;
}

std::vector<float> decode(ElemType t, std::span<const unsigned char> bytes) {
  std::vector<float> values(bytes.size() / elem_bytes(t));
  for (size_t i = 0; i < values.size(); ++i) {
    const unsigned char* src = bytes.data() + i * elem_bytes(t);
    if (t == ElemType::f32) {
      std::memcpy(&values[i], src, 4);
    } else if (t == ElemType::f16) {
      __half h;
      std::memcpy(&h, src, 2);
      values[i] = __half2float(h);
    } else {
      __nv_bfloat16 h;
      std::memcpy(&h, src, 2);
      values[i] = __bfloat162float(h);
    }
  }
  return values;
}

// A tensor in device memory of one element type, filled from floats or
// with all-ones bytes (NaN in every type), so an element a kernel fails to
// write shows up as a mismatch.
class DeviceTensor {
 public:
  DeviceTensor(ElemType type, std::span<const float> values) : type_(type), n_(values.size()) {
    allocate();
    const std::vector<unsigned char> bytes = encode(type, values);
    if (!bytes.empty()) check(cudaMemcpy(ptr_, bytes.data(), bytes.size(), cudaMemcpyHostToDevice), "upload");
  }
  DeviceTensor(ElemType type, size_t n) : type_(type), n_(n) {
    allocate();
    if (n_ > 0) check(cudaMemset(ptr_, 0xff, bytes()), "cudaMemset");
  }
  ~DeviceTensor() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  DeviceTensor(const DeviceTensor&) = delete;
  DeviceTensor& operator=(const DeviceTensor&) = delete;

  void* get() const { return ptr_; }
  size_t bytes() const { return n_ * elem_bytes(type_); }

  // Waits for the device, so a kernel's fault surfaces here by name.
  std::vector<float> read() const {
    check(cudaDeviceSynchronize(), "kernel run");
    std::vector<unsigned char> host(bytes());
    if (!host.empty()) check(cudaMemcpy(host.data(), ptr_, host.size(), cudaMemcpyDeviceToHost), "download");
    return decode(type_, host);
  }

 private:
  void allocate() {
    if (n_ > 0) check(cudaMalloc(&ptr_, bytes()), "cudaMalloc");
  }
  ElemType type_;
  size_t n_;
  void* ptr_ = nullptr;
};

// Uniform values in [lo, hi), already rounded to t so the host reference
// sees exactly what the kernel reads.
std::vector<float> random_values(ElemType t, size_t n, double lo, double hi, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = round_to(t, dist(gen));
  return v;
}

struct Tol {
  double atol;
  double rtol;
};

// One rounding of the output dominates: 2^-24, 2^-11 and 2^-8 relative.
Tol tol_for(ElemType t) {
  switch (t) {
    case ElemType::f32:
      return {1e-5, 1e-5};
    case ElemType::f16:
      return {2e-3, 2e-3};
    case ElemType::bf16:
      return {1.6e-2, 1.6e-2};
  }
  return {0, 0};
}

// got (as stored) against want (exact, in double, rounded here to the
// output type so overflow to inf matches); NaN must meet NaN.
void expect_close(ElemType t, std::span<const float> got, std::span<const double> want, Tol tol,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double w = round_to(t, want[i]);
    const double g = got[i];
    bool ok;
    if (std::isnan(w)) {
      ok = std::isnan(g);
    } else if (std::isinf(w)) {
      ok = g == w;
    } else {
      ok = std::isfinite(g) && std::fabs(g - w) <= tol.atol + tol.rtol * std::fabs(w);
    }
    if (!ok && ++bad <= 5) {
      ADD_FAILURE() << what << " [" << type_name(t) << "] element " << i << ": got " << g << ", want " << w
                    << " (exact " << want[i] << ")";
    }
  }
  EXPECT_EQ(bad, 0u) << what << " [" << type_name(t) << "]: " << bad << " of " << got.size()
                     << " elements differ";
}

void expect_close(ElemType t, std::span<const float> got, std::span<const double> want,
                  const std::string& what) {
  expect_close(t, got, want, tol_for(t), what);
}

int64_t numel(std::span<const int64_t> shape) {
  return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>());
}

// Row-major coordinates of flat index i.
std::vector<int64_t> coords_of(int64_t i, std::span<const int64_t> shape) {
  std::vector<int64_t> c(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    c[d] = i % shape[d];
    i /= shape[d];
  }
  return c;
}

int64_t flat_of(std::span<const int64_t> coords, std::span<const int64_t> shape) {
  int64_t i = 0;
  for (size_t d = 0; d < shape.size(); ++d) i = i * shape[d] + coords[d];
  return i;
}

// Every GPU test skips, with the reason, where no CUDA device can be used.
class CudaKernels : public ::testing::Test {
 protected:
  void SetUp() override {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) GTEST_SKIP() << "no CUDA device: " << cudaGetErrorString(err);
    if (count == 0) GTEST_SKIP() << "no CUDA device: cudaGetDeviceCount found none";
    check(cudaStreamCreate(&stream_), "cudaStreamCreate");
  }
  void TearDown() override {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  cudaStream_t stream_ = nullptr;
};

// ---------------------------------------------------------------- unary

double ref_act(ActParams a, double x) {
  switch (a.kind) {
    case Act::none:
      return x;
    case Act::relu:
      return x < 0 ? 0 : x;
    case Act::sigmoid:
      return 1 / (1 + std::exp(-x));
    case Act::tanh:
      return std::tanh(x);
    case Act::gelu_erf:
      return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    case Act::gelu_tanh:
      return 0.5 * x * (1 + std::tanh(std::sqrt(2 / std::numbers::pi) * (x + 0.044715 * x * x * x)));
    case Act::silu:
      return x / (1 + std::exp(-x));
    case Act::hardswish:
      return x * std::max(0.0, std::min(1.0, x / 6 + 0.5));
    case Act::hardsigmoid:
      return std::max(0.0, std::min(1.0, double(a.alpha) * x + a.beta));
    case Act::leaky_relu:
      return x < 0 ? a.alpha * x : x;
    case Act::clip:
      return std::min(double(a.beta), std::max(double(a.alpha), x));
    case Act::elu:
      return x < 0 ? a.alpha * (std::exp(x) - 1) : x;
    case Act::softplus:
      return std::log1p(std::exp(x));  // no overflow in double for the |x| <= 30 tested
    case Act::abs:
      return std::fabs(x);
    case Act::neg:
      return -x;
    case Act::exp:
      return std::exp(x);
    case Act::log:
      return std::log(x);
    case Act::sqrt:
      return std::sqrt(x);
    case Act::reciprocal:
      return 1 / x;
    case Act::erf:
      return std::erf(x);
  }
  return k_nan;
}

std::vector<ActParams> all_acts() {
  std::vector<ActParams> acts;
  for (int k = 0; k <= static_cast<int>(Act::erf); ++k) {
    ActParams a{static_cast<Act>(k), 0, 0};
    if (a.kind == Act::hardsigmoid) a = {a.kind, 0.2f, 0.5f};
    if (a.kind == Act::leaky_relu) a = {a.kind, 0.1f, 0};
    if (a.kind == Act::clip) a = {a.kind, -1.0f, 1.5f};
    if (a.kind == Act::elu) a = {a.kind, 0.7f, 0};
    acts.push_back(a);
  }
  return acts;
}

TEST_F(CudaKernels, UnaryMatchesOnnxFormulasForEveryActivationAndType) {
  for (ElemType t : k_types) {
    for (ActParams act : all_acts()) {
      const bool positive = act.kind == Act::log || act.kind == Act::sqrt || act.kind == Act::reciprocal;
      std::vector<float> x = random_values(t, 4099, positive ? 0.05 : -5, 5, 1 + static_cast<int>(act.kind));
      // Domain edges: zeros of both signs, the far tails of softplus and
      // sigmoid, tiny values, and (for log/sqrt) arguments out of domain.
      for (double s : {0.0, -0.0, 30.0, -30.0, 1e-3, -1e-3, 0.5, -0.5}) x.push_back(round_to(t, s));
      std::vector<double> want(x.size());
      for (size_t i = 0; i < x.size(); ++i) want[i] = ref_act(act, x[i]);
      DeviceTensor dx(t, x), dy(t, x.size());
      launch_unary(act, t, dx.get(), dy.get(), static_cast<int64_t>(x.size()), stream_);
      expect_close(t, dy.read(), want, "unary act " + std::to_string(static_cast<int>(act.kind)));
    }
  }
}

TEST_F(CudaKernels, UnaryInPlaceAndPastOneGridOfThreads) {
  // More elements than one pass of the capped grid covers (8192 blocks of
  // 256 threads), so the grid-stride loop must go round again.
  const ElemType t = ElemType::f32;
  std::vector<float> x = random_values(t, (size_t{1} << 21) + 4097, -4, 4, 7);
  std::vector<double> want(x.size());
  const ActParams act{Act::gelu_tanh, 0, 0};
  for (size_t i = 0; i < x.size(); ++i) want[i] = ref_act(act, x[i]);
  DeviceTensor d(t, x);
  launch_unary(act, t, d.get(), d.get(), static_cast<int64_t>(x.size()), stream_);
  expect_close(t, d.read(), want, "in-place gelu_tanh");
}

TEST_F(CudaKernels, UnaryKeepsNaNThroughEveryActivation) {
  for (ElemType t : k_types) {
    for (ActParams act : all_acts()) {
      const std::vector<float> x(33, std::numeric_limits<float>::quiet_NaN());
      DeviceTensor dx(t, x), dy(t, x.size());
      check(cudaMemset(dy.get(), 0, dy.bytes()), "cudaMemset");  // so NaN is the kernel's
      launch_unary(act, t, dx.get(), dy.get(), static_cast<int64_t>(x.size()), stream_);
      for (float v : dy.read()) {
        ASSERT_TRUE(std::isnan(v)) << "act " << static_cast<int>(act.kind) << " [" << type_name(t)
                                   << "] gave " << v;
      }
    }
  }
}

// ---------------------------------------------------------------- binary

double ref_binary(BinaryOp op, double a, double b) {
  switch (op) {
    case BinaryOp::add:
      return a + b;
    case BinaryOp::sub:
      return a - b;
    case BinaryOp::mul:
      return a * b;
    case BinaryOp::div:
      return a / b;
    case BinaryOp::max:
      return std::isnan(a) || std::isnan(b) ? k_nan : std::max(a, b);
    case BinaryOp::min:
      return std::isnan(a) || std::isnan(b) ? k_nan : std::min(a, b);
    case BinaryOp::pow:
      return std::pow(a, b);
  }
  return k_nan;
}

// Numpy broadcasting of a and b (right-aligned) to out.
struct Broadcast {
  std::vector<int64_t> out, a, b;

  std::vector<int64_t> aligned(const std::vector<int64_t>& s) const {
    std::vector<int64_t> r(out.size() - s.size(), 1);
    r.insert(r.end(), s.begin(), s.end());
    return r;
  }

  BroadcastShape shape() const {
    BroadcastShape s;
    s.rank = static_cast<int>(out.size());
    const std::vector<int64_t> pa = aligned(a), pb = aligned(b);
    int64_t sa = 1, sb = 1;
    for (size_t d = out.size(); d-- > 0;) {
      s.out[d] = out[d];
      s.a_strides[d] = pa[d] == 1 ? 0 : sa;
      s.b_strides[d] = pb[d] == 1 ? 0 : sb;
      sa *= pa[d];
      sb *= pb[d];
    }
    return s;
  }

  // The input element that output element i reads: its coordinates, with 0
  // along the dimensions the input broadcasts.
  static int64_t source(const std::vector<int64_t>& c, const std::vector<int64_t>& in) {
    std::vector<int64_t> ci(c);
    for (size_t d = 0; d < in.size(); ++d)
      if (in[d] == 1) ci[d] = 0;
    return flat_of(ci, in);
  }

  std::vector<double> reference(BinaryOp op, ActParams act, std::span<const float> xa,
                                std::span<const float> xb) const {
    const std::vector<int64_t> pa = aligned(a), pb = aligned(b);
    std::vector<double> y(static_cast<size_t>(numel(out)));
    for (size_t i = 0; i < y.size(); ++i) {
      const std::vector<int64_t> c = coords_of(static_cast<int64_t>(i), out);
      y[i] = ref_act(act, ref_binary(op, xa[static_cast<size_t>(source(c, pa))],
                                     xb[static_cast<size_t>(source(c, pb))]));
    }
    return y;
  }
};

void run_binary(cudaStream_t stream, ElemType t, BinaryOp op, ActParams act, const Broadcast& bc,
                const std::string& what) {
  const bool positive_a = op == BinaryOp::pow;
  const auto na = static_cast<size_t>(numel(bc.a)), nb = static_cast<size_t>(numel(bc.b));
  const std::vector<float> xa = random_values(t, na, positive_a ? 0.1 : -3, 3, 11);
  std::vector<float> xb = random_values(t, nb, -3, 3, 12);
  if (op == BinaryOp::div) {  // keep divisors away from 0
    for (float& v : xb) v = round_to(t, v < 0 ? v - 0.5 : v + 0.5);
  }
  const std::vector<double> want = bc.reference(op, act, xa, xb);
  DeviceTensor da(t, xa), db(t, xb), dy(t, want.size());
  launch_binary(op, act, t, da.get(), db.get(), dy.get(), bc.shape(), stream);
  expect_close(t, dy.read(), want, what);
}

TEST_F(CudaKernels, BinaryEveryOperatorAndTypeOnOneShape) {
  const Broadcast same{{7, 11, 13}, {7, 11, 13}, {7, 11, 13}};
  for (ElemType t : k_types) {
    for (int op = 0; op <= static_cast<int>(BinaryOp::pow); ++op) {
      run_binary(stream_, t, static_cast<BinaryOp>(op), {}, same, "binary op " + std::to_string(op));
    }
  }
}

TEST_F(CudaKernels, BinaryBroadcastsAlongEveryDimensionOfEveryRank) {
  const std::vector<int64_t> dims = {3, 2, 5, 4, 3, 2};
  for (int rank = 1; rank <= k_max_rank; ++rank) {
    const std::vector<int64_t> out(dims.begin(), dims.begin() + rank);
    for (int d = 0; d < rank; ++d) {
      std::vector<int64_t> a = out, b = out;
      b[static_cast<size_t>(d)] = 1;               // b broadcasts along d
      a[static_cast<size_t>((d + 1) % rank)] = 1;  // a along another (or the same at rank 1)
      const std::string what = "rank " + std::to_string(rank) + " dim " + std::to_string(d);
      for (ElemType t : k_types) run_binary(stream_, t, BinaryOp::sub, {}, Broadcast{out, a, b}, what);
    }
    // b of lower rank (right-aligned, like a bias), and b a scalar.
    run_binary(stream_, ElemType::f32, BinaryOp::add, {}, Broadcast{out, out, {out.back()}},
               "trailing b at rank " + std::to_string(rank));
    run_binary(stream_, ElemType::f32, BinaryOp::div, {}, Broadcast{out, out, {}},
               "scalar b at rank " + std::to_string(rank));
    run_binary(stream_, ElemType::f32, BinaryOp::mul, {}, Broadcast{out, {}, out},
               "scalar a at rank " + std::to_string(rank));
  }
  run_binary(stream_, ElemType::f32, BinaryOp::add, {}, Broadcast{{}, {}, {}}, "rank 0");
  // Both inputs broadcast along different dims of the same output.
  run_binary(stream_, ElemType::f16, BinaryOp::max, {}, Broadcast{{5, 1, 7, 3}, {5, 1, 1, 3}, {1, 1, 7, 1}},
             "outer product");
}

TEST_F(CudaKernels, BinaryFusesActivationAndRunsPastOneGrid) {
  run_binary(stream_, ElemType::f32, BinaryOp::add, {Act::relu, 0, 0}, Broadcast{{31, 17}, {31, 17}, {17}},
             "add+relu");
  run_binary(stream_, ElemType::bf16, BinaryOp::mul, {Act::gelu_erf, 0, 0},
             Broadcast{{9, 8, 7}, {9, 8, 7}, {9, 1, 7}}, "mul+gelu");
  // More than 8192 * 256 outputs on the strided (rank 3) path.
  run_binary(stream_, ElemType::f32, BinaryOp::sub, {}, Broadcast{{3, 1100, 700}, {3, 1100, 700}, {1100, 1}},
             "large broadcast");
}

TEST_F(CudaKernels, BinaryInPlaceAndNaNThroughMaxMin) {
  const ElemType t = ElemType::f32;
  std::vector<float> a = random_values(t, 257, -2, 2, 3), b = random_values(t, 257, -2, 2, 4);
  a[5] = std::numeric_limits<float>::quiet_NaN();
  b[9] = std::numeric_limits<float>::quiet_NaN();
  const Broadcast bc{{257}, {257}, {257}};
  for (BinaryOp op : {BinaryOp::max, BinaryOp::min, BinaryOp::add}) {
    const std::vector<double> want = bc.reference(op, {}, a, b);
    DeviceTensor da(t, a), db(t, b);
    launch_binary(op, {}, t, da.get(), db.get(), da.get(), bc.shape(), stream_);  // y == a
    const std::vector<float> got = da.read();
    EXPECT_TRUE(std::isnan(got[5]) && std::isnan(got[9])) << "op " << static_cast<int>(op);
    expect_close(t, got, want, "in-place op " + std::to_string(static_cast<int>(op)));
  }
}

// -------------------------------------------------------------- bias_act

TEST_F(CudaKernels, BiasActAddsBiasPerChannelAndResidual) {
  // inner 7 takes the per-element kernel; inner 16 (a multiple of every
  // vector size) the vectorised one; inner 1 (channels-last) with 24
  // channels the one whose vectors hold consecutive channels, with 5 the
  // per-element one again.
  const std::pair<int64_t, int64_t> inner_channels[] = {{7, 5}, {16, 5}, {1, 24}, {1, 5}};
  for (const auto& [inner, channels] : inner_channels) {
    const int64_t outer = 3;
    const auto n = static_cast<size_t>(outer * channels * inner);
    for (ElemType t : k_types) {
      for (int mode = 0; mode < 4; ++mode) {  // bit 0: bias, bit 1: residual
        const bool with_bias = (mode & 1) != 0, with_residual = (mode & 2) != 0;
        const std::vector<float> x = random_values(t, n, -3, 3, 21);
        const std::vector<float> bias = random_values(t, channels, -1, 1, 22);
        const std::vector<float> res = random_values(t, n, -1, 1, 23);
        const ActParams act{Act::silu, 0, 0};
        std::vector<double> want(n);
        for (size_t i = 0; i < n; ++i) {
          double v = x[i];
          if (with_bias) v += bias[(i / inner) % channels];
          if (with_residual) v += res[i];
          want[i] = ref_act(act, v);
        }
        DeviceTensor dx(t, x), db(t, bias), dr(t, res);
        launch_bias_act(t, dx.get(), with_bias ? db.get() : nullptr, with_residual ? dr.get() : nullptr,
                        dx.get(), outer, channels, inner, act, stream_);  // in place, as the engine runs it
        expect_close(t, dx.read(), want,
                     "bias_act inner " + std::to_string(inner) + " mode " + std::to_string(mode));
      }
    }
  }
}

// Aligned buffers take the 16-byte vector paths; a pointer one element in
// must take the per-element ones and give the same results.
TEST_F(CudaKernels, ElementwiseKernelsOnUnalignedPointers) {
  for (ElemType t : k_types) {
    const size_t n = 1001;
    const size_t e = elem_bytes(t);
    auto shifted = [](std::vector<float> v) {
      v.insert(v.begin(), 0.0f);
      return v;
    };
    auto at1 = [e](const DeviceTensor& d) { return static_cast<void*>(static_cast<char*>(d.get()) + e); };
    auto tail = [](std::vector<float> v) { return std::vector<float>(v.begin() + 1, v.end()); };
    const std::vector<float> x = random_values(t, n, -3, 3, 131), b = random_values(t, n, -3, 3, 132);

    const ActParams act{Act::sigmoid, 0, 0};
    std::vector<double> want(n);
    for (size_t i = 0; i < n; ++i) want[i] = ref_act(act, x[i]);
    DeviceTensor dx(t, shifted(x)), dy(t, n + 1);
    launch_unary(act, t, at1(dx), at1(dy), static_cast<int64_t>(n), stream_);
    expect_close(t, tail(dy.read()), want, "unaligned unary");

    const Broadcast same{{static_cast<int64_t>(n)}, {static_cast<int64_t>(n)}, {static_cast<int64_t>(n)}};
    DeviceTensor db(t, shifted(b)), dz(t, n + 1);
    launch_binary(BinaryOp::mul, {}, t, at1(dx), at1(db), at1(dz), same.shape(), stream_);
    expect_close(t, tail(dz.read()), same.reference(BinaryOp::mul, {}, x, b), "unaligned binary");

    // bias_act with inner 16: vectorisable but for the pointer.
    const int64_t channels = 7, inner = 16, outer = 1;
    const std::vector<float> xb = random_values(t, channels * inner, -3, 3, 133);
    const std::vector<float> bias = random_values(t, channels, -1, 1, 134);
    std::vector<double> want_b(xb.size());
    for (size_t i = 0; i < xb.size(); ++i) want_b[i] = xb[i] + bias[i / inner];
    DeviceTensor dxb(t, shifted(xb)), dbias(t, bias), dyb(t, xb.size() + 1);
    launch_bias_act(t, at1(dxb), dbias.get(), nullptr, at1(dyb), outer, channels, inner, {}, stream_);
    expect_close(t, tail(dyb.read()), want_b, "unaligned bias_act");
  }
}

// --------------------------------------------------------------- pooling

struct PoolCase {
  Pool2d p;
  int64_t pad_bottom = 0, pad_right = 0;
  bool ceil_mode = false;
};

int64_t pool_out(int64_t size, int64_t pad_sum, int64_t kernel, int64_t stride, int64_t dilation,
                 bool ceil_mode, int64_t pad_begin) {
  const int64_t span = size + pad_sum - ((kernel - 1) * dilation + 1);
  int64_t out = (ceil_mode ? (span + stride - 1) / stride : span / stride) + 1;
  // A window may not start in the end padding (ONNX and PyTorch).
  if (ceil_mode && (out - 1) * stride >= size + pad_begin) --out;
  return out;
}

PoolCase make_pool(int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t s, int64_t pt, int64_t pl,
                   int64_t pb, int64_t pr, int64_t dil, bool include_pad, bool ceil_mode = false) {
  PoolCase pc;
  pc.p = Pool2d{n, c, h, w, 0, 0, k, k, s, s, pt, pl, dil, dil, include_pad};
  pc.pad_bottom = pb;
  pc.pad_right = pr;
  pc.ceil_mode = ceil_mode;
  pc.p.out_h = pool_out(h, pt + pb, k, s, dil, ceil_mode, pt);
  pc.p.out_w = pool_out(w, pl + pr, k, s, dil, ceil_mode, pl);
  return pc;
}

// ONNX's definition: taps in the input count; with count_include_pad, taps
// in the padding count toward the divisor too (but not taps past it).
std::vector<double> ref_pool(const PoolCase& pc, bool max, std::span<const float> x) {
  const Pool2d& p = pc.p;
  std::vector<double> y(static_cast<size_t>(p.n * p.c * p.out_h * p.out_w));
  size_t o = 0;
  for (int64_t plane = 0; plane < p.n * p.c; ++plane) {
    for (int64_t oh = 0; oh < p.out_h; ++oh) {
      for (int64_t ow = 0; ow < p.out_w; ++ow) {
        double acc = max ? -k_inf : 0;
        int64_t count = 0;
        for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
          for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
            const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
            const int64_t iw = ow * p.stride_w - p.pad_left + kw * p.dilation_w;
            if (ih >= 0 && ih < p.h && iw >= 0 && iw < p.w) {
              const double v = x[static_cast<size_t>((plane * p.h + ih) * p.w + iw)];
              acc = max ? ((v > acc || std::isnan(v)) && !std::isnan(acc) ? v : acc) : acc + v;
              ++count;
            } else if (p.count_include_pad && ih >= -p.pad_top && ih < p.h + pc.pad_bottom &&
                       iw >= -p.pad_left && iw < p.w + pc.pad_right) {
              ++count;
            }
          }
        }
        y[o++] = max ? acc : acc / static_cast<double>(count);
      }
    }
  }
  return y;
}

void run_pool(cudaStream_t stream, ElemType t, bool max, const PoolCase& pc, const std::string& what) {
  const Pool2d& p = pc.p;
  const std::vector<float> x = random_values(t, static_cast<size_t>(p.n * p.c * p.h * p.w), -4, 4, 31);
  const std::vector<double> want = ref_pool(pc, max, x);
  DeviceTensor dx(t, x), dy(t, want.size());
  if (max) {
    launch_max_pool2d(t, dx.get(), dy.get(), p, stream);
  } else {
    launch_avg_pool2d(t, dx.get(), dy.get(), p, stream);
  }
  expect_close(t, dy.read(), want, std::string(max ? "max " : "avg ") + what);
}

TEST_F(CudaKernels, PoolingWithPaddingStrideDilationAndCountIncludePad) {
  const std::vector<std::pair<std::string, PoolCase>> cases = {
      {"3x3 s2 p1", make_pool(2, 3, 11, 13, 3, 2, 1, 1, 1, 1, 1, false)},
      {"3x3 s2 p1 include_pad", make_pool(2, 3, 11, 13, 3, 2, 1, 1, 1, 1, 1, true)},
      {"2x2 s2", make_pool(1, 4, 7, 9, 2, 2, 0, 0, 0, 0, 1, false)},
      {"3x3 s1 p1 dilation 2", make_pool(2, 2, 10, 10, 3, 1, 1, 1, 1, 1, 2, false)},
      {"dilation 2 include_pad", make_pool(1, 2, 9, 8, 3, 1, 2, 2, 2, 2, 2, true)},
      {"asymmetric pads include_pad", make_pool(1, 3, 8, 7, 3, 2, 0, 1, 1, 0, 1, true)},
      {"asymmetric pads", make_pool(1, 3, 8, 7, 3, 2, 1, 0, 0, 2, 1, false)},
      {"ceil_mode", make_pool(1, 2, 8, 8, 3, 2, 0, 0, 0, 0, 1, false, true)},
      {"window larger than input", make_pool(1, 1, 3, 3, 5, 1, 2, 2, 2, 2, 1, false)},
      {"window larger than input include_pad", make_pool(1, 1, 3, 3, 5, 1, 2, 2, 2, 2, 1, true)},
  };
  for (ElemType t : k_types) {
    for (const auto& [name, pc] : cases) {
      run_pool(stream_, t, true, pc, name);
      run_pool(stream_, t, false, pc, name);
    }
  }
  // Past one grid of threads: 8 * 64 * 112 * 112 outputs.
  run_pool(stream_, ElemType::f32, true, make_pool(8, 64, 112, 112, 3, 1, 1, 1, 1, 1, 1, false), "large");
}

TEST_F(CudaKernels, MaxPoolPropagatesNaN) {
  const PoolCase pc = make_pool(1, 1, 4, 4, 2, 2, 0, 0, 0, 0, 1, false);
  std::vector<float> x(16, 1.0f);
  x[5] = std::numeric_limits<float>::quiet_NaN();  // in the first window only
  DeviceTensor dx(ElemType::f32, x), dy(ElemType::f32, 4);
  launch_max_pool2d(ElemType::f32, dx.get(), dy.get(), pc.p, stream_);
  const std::vector<float> y = dy.read();
  EXPECT_TRUE(std::isnan(y[0]));
  EXPECT_EQ(y[1], 1.0f);
  EXPECT_EQ(y[2], 1.0f);
  EXPECT_EQ(y[3], 1.0f);
}

// ---------------------------------------------------------- reduce_rows

TEST_F(CudaKernels, ReduceRowsMeanAndMaxForShortAndLongRows) {
  // Rows of 1, a 7x7 plane, the last warp-per-row length and the first
  // block-per-row length, and a long row.
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {1000, 1}, {67, 49}, {5, 1024}, {5, 1025}, {3, 5000}};
  for (ElemType t : k_types) {
    for (auto [rows, inner] : shapes) {
      const std::vector<float> x = random_values(t, static_cast<size_t>(rows * inner), -2, 2, 41);
      for (bool max : {false, true}) {
        std::vector<double> want(static_cast<size_t>(rows));
        for (int64_t r = 0; r < rows; ++r) {
          double acc = max ? -k_inf : 0;
          for (int64_t j = 0; j < inner; ++j) {
            const double v = x[static_cast<size_t>(r * inner + j)];
            acc = max ? std::max(acc, v) : acc + v;
          }
          want[static_cast<size_t>(r)] = max ? acc : acc / static_cast<double>(inner);
        }
        DeviceTensor dx(t, x), dy(t, want.size());
        launch_reduce_rows(t, max, dx.get(), dy.get(), rows, inner, stream_);
        expect_close(t, dy.read(), want,
                     std::string(max ? "max" : "mean") + " rows " + std::to_string(rows) + " x " +
                         std::to_string(inner));
      }
    }
  }
}

TEST_F(CudaKernels, ReduceRowsMaxPropagatesNaN) {
  for (int64_t inner : {int64_t{40}, int64_t{3000}}) {  // warp and block paths
    std::vector<float> x = random_values(ElemType::f32, static_cast<size_t>(2 * inner), -1, 1, 5);
    x[static_cast<size_t>(inner + inner / 2)] = std::numeric_limits<float>::quiet_NaN();  // row 1
    DeviceTensor dx(ElemType::f32, x), dy(ElemType::f32, 2);
    launch_reduce_rows(ElemType::f32, true, dx.get(), dy.get(), 2, inner, stream_);
    const std::vector<float> y = dy.read();
    EXPECT_FALSE(std::isnan(y[0])) << inner;
    EXPECT_TRUE(std::isnan(y[1])) << inner;
  }
}

// ----------------------------------------------------- softmax and norm

// Probabilities of long rows are small, so an absolute tolerance of 1e-5
// would accept nearly anything: softmax is held to relative error, down to
// the smallest step of the type (f16's subnormals).
Tol softmax_tol(ElemType t, bool log) {
  if (log) return tol_for(t);
  switch (t) {
    case ElemType::f32:
      return {1e-9, 2e-5};
    case ElemType::f16:
      return {1.2e-7, 2e-3};
    case ElemType::bf16:
      return {1e-9, 1.6e-2};
  }
  return {0, 0};
}

std::vector<double> ref_softmax(std::span<const float> x, int64_t rows, int64_t cols, bool log) {
  std::vector<double> y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x.data() + r * cols;
    double m = -k_inf;
    for (int64_t j = 0; j < cols; ++j) m = std::max(m, double(row[j]));
    double s = 0;
    for (int64_t j = 0; j < cols; ++j) s += std::exp(row[j] - m);
    for (int64_t j = 0; j < cols; ++j) {
      y[static_cast<size_t>(r * cols + j)] = log ? row[j] - m - std::log(s) : std::exp(row[j] - m) / s;
    }
  }
  return y;
}

TEST_F(CudaKernels, SoftmaxAndLogSoftmaxOverRowsOfEveryLength) {
  // cols = 1, odd, the warp/block boundary, and rows longer than a block.
  // Up to 1024 columns a row is held in registers in chunks of 1 to 8
  // elements: attention's 128, rows that no wide chunk divides, 32 chunks.
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{7, 1},    {33, 100},  {4, 1024},  {3, 1025},
                                                           {2, 5000}, {1, 70001}, {300, 128}, {5, 96},
                                                           {9, 200},  {3, 8},     {4, 777},   {2, 512}};
  for (ElemType t : k_types) {
    for (auto [rows, cols] : shapes) {
      const std::vector<float> x = random_values(t, static_cast<size_t>(rows * cols), -8, 8, 51);
      for (bool log : {false, true}) {
        DeviceTensor dx(t, x), dy(t, x.size());
        launch_softmax(t, log, dx.get(), dy.get(), rows, cols, stream_);
        expect_close(t, dy.read(), ref_softmax(x, rows, cols, log), softmax_tol(t, log),
                     std::string(log ? "log_softmax " : "softmax ") + std::to_string(rows) + " x " +
                         std::to_string(cols));
      }
    }
  }
}

TEST_F(CudaKernels, SoftmaxIsStableForLargeLogitsAndMaskedColumns) {
  for (int64_t cols : {int64_t{300}, int64_t{3000}}) {  // warp and block paths
    const ElemType t = ElemType::f32;
    std::vector<float> x =
        random_values(t, static_cast<size_t>(2 * cols), 995, 1005, 61);  // exp would overflow
    for (int64_t j = 0; j < cols; j += 3)
      x[static_cast<size_t>(cols + j)] = -std::numeric_limits<float>::infinity();
    for (bool log : {false, true}) {
      DeviceTensor dx(t, x);
      launch_softmax(t, log, dx.get(), dx.get(), 2, cols, stream_);  // in place
      expect_close(t, dx.read(), ref_softmax(x, 2, cols, log), softmax_tol(t, log),
                   "stable softmax " + std::to_string(cols));
    }
  }
}

std::vector<double> ref_layer_norm(std::span<const float> x, std::span<const float> gamma,
                                   std::span<const float> beta, int64_t rows, int64_t cols, double eps) {
  std::vector<double> y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x.data() + r * cols;
    double mean = 0;
    for (int64_t j = 0; j < cols; ++j) mean += row[j];
    mean /= static_cast<double>(cols);
    double var = 0;
    for (int64_t j = 0; j < cols; ++j) var += (row[j] - mean) * (row[j] - mean);
    var /= static_cast<double>(cols);
    for (int64_t j = 0; j < cols; ++j) {
      const auto c = static_cast<size_t>(j);
      y[static_cast<size_t>(r * cols + j)] =
          (row[j] - mean) / std::sqrt(var + eps) * gamma[c] + (beta.empty() ? 0.0 : double(beta[c]));
    }
  }
  return y;
}

TEST_F(CudaKernels, LayerNormOverRowsOfEveryLengthWithAndWithoutBeta) {
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{5, 1}, {9, 768}, {3, 1024}, {2, 1025}, {2, 4099}};
  for (ElemType t : k_types) {
    for (auto [rows, cols] : shapes) {
      const std::vector<float> x = random_values(t, static_cast<size_t>(rows * cols), -3, 3, 71);
      const std::vector<float> gamma = random_values(t, static_cast<size_t>(cols), 0.5, 1.5, 72);
      const std::vector<float> beta = random_values(t, static_cast<size_t>(cols), -1, 1, 73);
      for (bool with_beta : {true, false}) {
        const float eps = 1e-5f;
        DeviceTensor dx(t, x), dg(t, gamma), db(t, beta), dy(t, x.size());
        launch_layer_norm(t, dx.get(), dg.get(), with_beta ? db.get() : nullptr, dy.get(), rows, cols, eps,
                          stream_);
        expect_close(
            t, dy.read(),
            ref_layer_norm(x, gamma, with_beta ? std::span<const float>(beta) : std::span<const float>(),
                           rows, cols, eps),
            "layer_norm " + std::to_string(rows) + " x " + std::to_string(cols) +
                (with_beta ? "" : " no beta"));
      }
    }
  }
}

TEST_F(CudaKernels, LayerNormKeepsPrecisionForRowsFarFromZero) {
  // Rows near 100 with a spread of 1: an fp32 E[x^2] - E[x]^2 loses the
  // variance; the two-pass, shifted statistics must not.
  const ElemType t = ElemType::f32;
  for (int64_t cols : {int64_t{768}, int64_t{4096}}) {
    const std::vector<float> x = random_values(t, static_cast<size_t>(4 * cols), 99, 101, 81);
    const std::vector<float> gamma(static_cast<size_t>(cols), 1.0f);
    DeviceTensor dx(t, x), dg(t, gamma);
    launch_layer_norm(t, dx.get(), dg.get(), nullptr, dx.get(), 4, cols, 1e-5f, stream_);  // in place
    expect_close(t, dx.read(), ref_layer_norm(x, gamma, {}, 4, cols, 1e-5), Tol{5e-5, 5e-5},
                 "offset layer_norm " + std::to_string(cols));
  }
}

// ---------------------------------------------------------------- layout

std::vector<float> ref_transpose(std::span<const float> x, const std::vector<int64_t>& in_shape,
                                 const std::vector<int>& perm) {
  std::vector<int64_t> out_shape(perm.size());
  for (size_t d = 0; d < perm.size(); ++d) out_shape[d] = in_shape[static_cast<size_t>(perm[d])];
  std::vector<float> y(x.size());
  for (size_t i = 0; i < y.size(); ++i) {
    const std::vector<int64_t> oc = coords_of(static_cast<int64_t>(i), out_shape);
    std::vector<int64_t> ic(perm.size());
    for (size_t d = 0; d < perm.size(); ++d) ic[static_cast<size_t>(perm[d])] = oc[d];
    y[i] = x[static_cast<size_t>(flat_of(ic, in_shape))];
  }
  return y;
}

void run_transpose(cudaStream_t stream, ElemType t, const std::vector<int64_t>& shape,
                   const std::vector<int>& perm) {
  const std::vector<float> x = random_values(t, static_cast<size_t>(numel(shape)), -100, 100, 91);
  const std::vector<float> want = ref_transpose(x, shape, perm);
  DeviceTensor dx(t, x), dy(t, x.size());
  launch_transpose(t, dx.get(), dy.get(), static_cast<int>(shape.size()), shape.data(), perm.data(), stream);
  const std::vector<float> got = dy.read();
  std::string what = "transpose [";
  for (int64_t s : shape) what += std::to_string(s) + " ";
  what += "] perm [";
  for (int p : perm) what += std::to_string(p) + " ";
  what += std::string("] ") + type_name(t);
  ASSERT_EQ(got.size(), want.size());
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) bad += got[i] != want[i];  // data movement: exact
  EXPECT_EQ(bad, 0u) << what;
}

TEST_F(CudaKernels, TransposeEveryPermutationOfRanksOneToFourAndSomeOfFiveAndSix) {
  const std::vector<std::vector<int64_t>> shapes = {{37}, {67, 45}, {4, 33, 35}, {2, 3, 17, 19}};
  for (ElemType t : {ElemType::f32, ElemType::f16}) {
    for (const auto& shape : shapes) {
      std::vector<int> perm(shape.size());
      std::iota(perm.begin(), perm.end(), 0);
      do {
        run_transpose(stream_, t, shape, perm);
      } while (std::next_permutation(perm.begin(), perm.end()));
    }
  }
  // Ranks 5 and 6 with size-1 dimensions, on fixed pseudo-random perms.
  std::mt19937 gen(97);
  for (const std::vector<int64_t>& shape :
       {std::vector<int64_t>{2, 1, 3, 4, 5}, std::vector<int64_t>{2, 3, 1, 2, 3, 4}}) {
    std::vector<int> perm(shape.size());
    std::iota(perm.begin(), perm.end(), 0);
    for (int i = 0; i < 12; ++i) {
      std::shuffle(perm.begin(), perm.end(), gen);
      run_transpose(stream_, ElemType::f32, shape, perm);
    }
  }
}

TEST_F(CudaKernels, TransposeLayoutsTheEngineUses) {
  run_transpose(stream_, ElemType::f32, {2, 3, 113, 97}, {0, 2, 3, 1});   // NCHW -> NHWC
  run_transpose(stream_, ElemType::bf16, {2, 113, 97, 3}, {0, 3, 1, 2});  // NHWC -> NCHW
  run_transpose(stream_, ElemType::f16, {2, 12, 77, 64}, {0, 2, 1, 3});   // attention heads
  run_transpose(stream_, ElemType::f32, {1, 5, 1}, {2, 1, 0});            // only size-1 dims move: a copy
  run_transpose(stream_, ElemType::f32, {}, {});                          // rank 0
  run_transpose(stream_, ElemType::f32, {3, 700, 1100}, {1, 0, 2});       // past one grid, general path
}

// The gather moves 16-, 8- or 4-byte words where the innermost run allows,
// else single elements: runs of every such size, in both element widths.
TEST_F(CudaKernels, TransposeWithContiguousRunsOfEveryWordSize) {
  for (ElemType t : {ElemType::f32, ElemType::f16}) {
    for (int64_t run : {64, 20, 6, 3, 1}) {
      run_transpose(stream_, t, {2, 9, 5, run}, {0, 2, 1, 3});
    }
    run_transpose(stream_, t, {2, 128, 12, 64}, {0, 2, 3, 1});  // attention's K, transposed twice over
  }
}

TEST_F(CudaKernels, ConcatPartsFillTheirColumns) {
  for (ElemType t : {ElemType::f32, ElemType::bf16}) {
    const int64_t outer = 37;
    const std::vector<int64_t> widths = {5, 1, 300, 7};
    const int64_t y_inner = std::accumulate(widths.begin(), widths.end(), int64_t{0});
    std::vector<double> want(static_cast<size_t>(outer * y_inner));
    DeviceTensor dy(t, want.size());
    int64_t offset = 0;
    uint32_t seed = 100;
    for (int64_t w : widths) {
      const std::vector<float> x = random_values(t, static_cast<size_t>(outer * w), -5, 5, seed++);
      for (int64_t o = 0; o < outer; ++o) {
        for (int64_t j = 0; j < w; ++j) {
          want[static_cast<size_t>(o * y_inner + offset + j)] = x[static_cast<size_t>(o * w + j)];
        }
      }
      DeviceTensor dx(t, x);
      launch_concat_part(t, dx.get(), dy.get(), outer, w, y_inner, offset, stream_);
      check(cudaStreamSynchronize(stream_), "concat_part");  // dx is freed at the end of this iteration
      offset += w;
    }
    expect_close(t, dy.read(), want, Tol{0, 0}, "concat");
  }
}

void run_slice(cudaStream_t stream, ElemType t, const std::vector<int64_t>& in_shape,
               const std::vector<int64_t>& starts, const std::vector<int64_t>& steps,
               const std::vector<int64_t>& out_shape) {
  const std::vector<float> x = random_values(t, static_cast<size_t>(numel(in_shape)), -50, 50, 77);
  std::vector<double> want(static_cast<size_t>(numel(out_shape)));
  for (size_t i = 0; i < want.size(); ++i) {
    std::vector<int64_t> c = coords_of(static_cast<int64_t>(i), out_shape);
    for (size_t d = 0; d < c.size(); ++d) c[d] = starts[d] + c[d] * steps[d];
    want[i] = x[static_cast<size_t>(flat_of(c, in_shape))];
  }
  DeviceTensor dx(t, x), dy(t, std::max<size_t>(want.size(), 1));
  launch_slice(t, dx.get(), dy.get(), static_cast<int>(in_shape.size()), in_shape.data(), starts.data(),
               steps.data(), out_shape.data(), stream);
  std::vector<float> got = dy.read();
  got.resize(want.size());
  expect_close(t, got, want, Tol{0, 0}, "slice");  // data movement: exact
}

// A strided copy visits offset + sum of c_d * stride_d: attention's Split →
// Reshape → Transpose walk, a slice with steps, a broadcast-free permutation.
TEST_F(CudaKernels, StridedCopyWalksAnyChainOfViews) {
  struct Case {
    std::vector<int64_t> in_shape, out_shape, strides;
    int64_t offset;
  };
  const std::vector<Case> cases = {
      {{2, 128, 2304}, {2, 12, 128, 64}, {128 * 2304, 64, 2304, 1}, 768},   // K of a qkv split, heads first
      {{2, 128, 2304}, {2, 12, 64, 128}, {128 * 2304, 64, 1, 2304}, 1536},  // V, transposed
      {{3, 5, 7}, {2, 3, 2}, {35, 7, 2}, 35 + 14 + 3},                      // a slice with steps
      {{4, 6}, {6, 4}, {1, 6}, 0},                                          // a transpose
      {{10}, {10}, {1}, 0},                                                 // a copy
  };
  for (ElemType t : {ElemType::f32, ElemType::f16}) {
    for (const Case& c : cases) {
      const int64_t in_n = numel(c.in_shape), out_n = numel(c.out_shape);
      const std::vector<float> x = random_values(t, static_cast<size_t>(in_n), -50, 50, 78);
      std::vector<double> want(static_cast<size_t>(out_n));
      for (int64_t i = 0; i < out_n; ++i) {
        const std::vector<int64_t> co = coords_of(i, c.out_shape);
        int64_t off = c.offset;
        for (size_t d = 0; d < co.size(); ++d) off += co[d] * c.strides[d];
        want[static_cast<size_t>(i)] = x[static_cast<size_t>(off)];
      }
      DeviceTensor dx(t, x), dy(t, want.size());
      launch_strided_copy(t, dx.get(), dy.get(), static_cast<int>(c.out_shape.size()), c.out_shape.data(),
                          c.strides.data(), c.offset, in_n, stream_);
      expect_close(t, dy.read(), want, Tol{0, 0}, "strided copy");
    }
  }
}

TEST_F(CudaKernels, SliceBoxesStepsAndSplitParts) {
  for (ElemType t : {ElemType::f32, ElemType::f16}) {
    run_slice(stream_, t, {2, 197, 768}, {0, 0, 0}, {1, 1, 1}, {2, 1, 768});       // ViT's class token
    run_slice(stream_, t, {2, 128, 2304}, {0, 0, 768}, {1, 1, 1}, {2, 128, 768});  // a q/k/v split part
    run_slice(stream_, t, {1, 56, 56, 96}, {0, 1, 0, 0}, {1, 2, 2, 1},
              {1, 28, 28, 96});  // Swin's patch merge
    run_slice(stream_, t, {3, 5, 7}, {1, 2, 3}, {1, 1, 2}, {2, 3, 2});
    run_slice(stream_, t, {4, 6}, {0, 0}, {1, 1}, {4, 6});  // the whole tensor: one copy
  }
  run_slice(stream_, ElemType::f32, {2, 3, 1, 2, 3, 4}, {1, 0, 0, 1, 1, 0}, {1, 2, 1, 1, 1, 3},
            {1, 2, 1, 1, 2, 2});
  run_slice(stream_, ElemType::f32, {3, 4}, {0, 0}, {1, 1}, {0, 4});  // empty: nothing to do
  // Contiguous runs whose start or length is not a multiple of a wide word.
  for (ElemType t : {ElemType::f32, ElemType::f16}) {
    run_slice(stream_, t, {4, 3, 40}, {0, 0, 1}, {1, 1, 1}, {4, 3, 32});
    run_slice(stream_, t, {4, 3, 40}, {1, 1, 8}, {1, 1, 1}, {3, 2, 30});
    run_slice(stream_, t, {5, 66}, {0, 2}, {1, 1}, {5, 64});
  }
}

// ------------------------------------------------------------------ cast

TEST_F(CudaKernels, CastRoundsToNearestEvenBetweenEveryPairOfTypes) {
  std::vector<float> base = random_values(ElemType::f32, 1001, -70, 70, 111);
  // Overflow to inf in f16, underflow, halfway cases, signed zero, NaN, inf.
  for (float s : {70000.0f, -70000.0f, 1e-8f, 1.0f + 1.0f / 2048, 1.0f + 3.0f / 2048, -0.0f,
                  std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    base.push_back(s);
  }
  for (ElemType from : k_types) {
    std::vector<float> x(base.size());
    for (size_t i = 0; i < x.size(); ++i) x[i] = round_to(from, base[i]);
    for (ElemType to : k_types) {
      std::vector<double> want(x.size());
      for (size_t i = 0; i < x.size(); ++i) want[i] = round_to(to, x[i]);
      DeviceTensor dx(from, x), dy(to, x.size());
      launch_cast(from, to, dx.get(), dy.get(), static_cast<int64_t>(x.size()), stream_);
      const std::vector<float> got = dy.read();
      expect_close(to, got, want, Tol{0, 0}, std::string("cast from ") + type_name(from));
      EXPECT_TRUE(std::signbit(got[base.size() - 3])) << "-0 lost its sign";
    }
  }
}

// ---------------------------------------------- argument checks, no GPU

// ---------------------------------------------------------------- attention

// One attention problem: operands in device memory laid out as the strides
// say (Q inside a fused projection, Kᵀ stored transposed, the output written
// transposed), against the formula in double over the values as stored.
struct AttentionCase {
  int64_t batch, heads, q_len, kv_len, d, dv;
  bool mask = false;
  bool full_mask = false;                       // [B, H, Sq, Sk] rather than [B, 1, 1, Sk]
  std::vector<std::pair<double, bool>> scales;  // value, divide
  double constant_scale = 1.0;
};

// Flat element of (b, h, r, c) through strides.
size_t at(const std::array<int64_t, 4>& s, int64_t b, int64_t h, int64_t r, int64_t c) {
  return static_cast<size_t>(b * s[0] + h * s[1] + r * s[2] + c * s[3]);
}

void run_attention_case(cudaStream_t stream, ElemType t, const AttentionCase& c, const std::string& what) {
  const int64_t B = c.batch, H = c.heads, Sq = c.q_len, Sk = c.kv_len, D = c.d, Dv = c.dv;
  // Q inside a fused [B, Sq, 2, H, D] projection (the other half unused);
  // K stored transposed, [B, H, D, Sk]; V plain [B, H, Sk, Dv]; the output
  // written as [B, Sq, H, Dv] (the transpose after attention).
  const std::array<int64_t, 4> qs{Sq * 2 * H * D, D, 2 * H * D, 1};
  const std::array<int64_t, 4> ks{H * D * Sk, D * Sk, 1, Sk};
  const std::array<int64_t, 4> vs{H * Sk * Dv, Sk * Dv, Dv, 1};
  const std::array<int64_t, 4> ms =
      c.full_mask ? std::array<int64_t, 4>{H * Sq * Sk, Sq * Sk, Sk, 1} : std::array<int64_t, 4>{Sk, 0, 0, 1};
  const std::array<int64_t, 4> os{Sq * H * Dv, Dv, H * Dv, 1};
  const std::vector<float> q = random_values(t, static_cast<size_t>(B * Sq * 2 * H * D), -1, 1, 71);
  const std::vector<float> k = random_values(t, static_cast<size_t>(B * H * D * Sk), -1, 1, 72);
  const std::vector<float> v = random_values(t, static_cast<size_t>(B * H * Sk * Dv), -1, 1, 73);
  std::vector<float> mask =
      random_values(t, static_cast<size_t>(c.full_mask ? B * H * Sq * Sk : B * Sk), -2, 2, 74);
  for (size_t i = 0; i < mask.size(); i += 5) mask[i] = round_to(t, -10000.0);  // masked-out keys
  double scale = c.constant_scale;
  std::vector<std::unique_ptr<DeviceTensor>> scale_tensors;
  AttentionArgs a;
  for (auto [value, divide] : c.scales) {
    const float stored = round_to(t, value);
    scale = divide ? scale / stored : scale * stored;
    scale_tensors.push_back(std::make_unique<DeviceTensor>(t, std::vector<float>{stored}));
    a.divide_mask |= (divide ? 1u : 0u) << a.n_scales;
    a.scales[static_cast<size_t>(a.n_scales++)] = scale_tensors.back()->get();
  }
  std::vector<double> want(static_cast<size_t>(B * Sq * H * Dv), 0.0);
  std::vector<double> p(static_cast<size_t>(Sk));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t i = 0; i < Sq; ++i) {
        double top = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < Sk; ++j) {
          double dot = 0;
          for (int64_t e = 0; e < D; ++e) dot += double{q[at(qs, b, h, i, e)]} * k[at(ks, b, h, j, e)];
          double s = scale * dot;
          if (c.mask) s += mask[at(ms, b, h, i, j)];
          p[static_cast<size_t>(j)] = s;
          top = std::max(top, s);
        }
        double sum = 0;
        for (double& x : p) sum += (x = std::exp(x - top));
        for (int64_t e = 0; e < Dv; ++e) {
          double o = 0;
          for (int64_t j = 0; j < Sk; ++j) o += p[static_cast<size_t>(j)] * v[at(vs, b, h, j, e)];
          want[at(os, b, h, i, e)] = o / sum;
        }
      }
    }
  }
  DeviceTensor dq(t, q), dk(t, k), dv(t, v), dmask(t, mask), dout(t, want.size());
  a.batch = B;
  a.heads = H;
  a.q_len = Sq;
  a.kv_len = Sk;
  a.head_dim = D;
  a.v_dim = Dv;
  a.q = {dq.get(), qs};
  a.k = {dk.get(), ks};
  a.v = {dv.get(), vs};
  if (c.mask) a.mask = {dmask.get(), ms};
  a.out = dout.get();
  a.out_strides = os;
  a.constant_scale = static_cast<float>(c.constant_scale);
  launch_attention(t, a, stream);
  // fp32 is exact arithmetic in another order. In half, the probabilities
  // are rounded to t before P·V (as every tensor-core attention does):
  // about one rounding of t on top of the output's own.
  const Tol tol = t == ElemType::f32   ? Tol{2e-6, 2e-5}
                  : t == ElemType::f16 ? Tol{4e-3, 4e-3}
                                       : Tol{3e-2, 3e-2};
  expect_close(t, dout.read(), want, tol, what);
}

TEST_F(CudaKernels, AttentionMatchesTheUnfusedFormulaOnStridedOperands) {
  const std::vector<std::pair<AttentionCase, std::string>> cases = {
      // BERT's head at a tail of both tiles: 77 rows and keys, a [B,1,1,Sk] mask, a Div by sqrt(64).
      {{2, 3, 77, 77, 64, 64, true, false, {{8.0, true}}}, "bert-like 77 tokens"},
      // Head dims that are no multiple of 16, keys over three tiles, Mul and Div scales.
      {{1, 2, 5, 130, 40, 24, false, false, {{0.5, false}, {2.0, true}}}, "odd dims"},
      // The widest head, query rows over four blocks, a full mask and a host scale.
      {{1, 1, 200, 64, 128, 128, true, true, {}, 0.088}, "d128 full mask"},
      // One token, one key.
      {{3, 2, 1, 1, 32, 32, false, false, {{0.25, false}}}, "one token"},
  };
  for (ElemType t : k_types) {
    for (const auto& [c, name] : cases) run_attention_case(stream_, t, c, name);
  }
}

TEST_F(CudaKernels, AttentionFullyMaskedRowIsNaNAsTheUnfusedSoftmax) {
  for (ElemType t : {ElemType::f32, ElemType::f16}) {
    const std::vector<float> halves(32, round_to(t, 0.5));
    std::vector<float> mask(4, -std::numeric_limits<float>::infinity());
    mask[2] = 0;  // row 1 keeps key 0
    DeviceTensor dq(t, halves), dk(t, halves), dv(t, halves), dmask(t, mask), dout(t, 32);
    AttentionArgs a;
    a.batch = a.heads = 1;
    a.q_len = a.kv_len = 2;
    a.head_dim = a.v_dim = 16;
    a.q = {dq.get(), {0, 0, 16, 1}};
    a.k = {dk.get(), {0, 0, 16, 1}};
    a.v = {dv.get(), {0, 0, 16, 1}};
    a.mask = {dmask.get(), {0, 0, 2, 1}};
    a.out = dout.get();
    a.out_strides = {0, 0, 16, 1};
    launch_attention(t, a, stream_);
    const std::vector<float> out = dout.read();
    for (size_t e = 0; e < 16; ++e) {
      EXPECT_TRUE(std::isnan(out[e])) << "row 0 (every key masked) element " << e;
      EXPECT_FLOAT_EQ(out[16 + e], 0.5f) << "row 1 element " << e;
    }
  }
}

template <typename F>
void expect_error(F&& f, const std::string& kernel) {
  try {
    f();
    ADD_FAILURE() << kernel << ": no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(kernel), std::string::npos) << e.what();
  }
}

TEST(CudaKernelArgs, ZeroSizeLaunchesDoNothing) {
  // Null pointers and no stream: a zero-size launch must touch neither.
  BroadcastShape empty;
  empty.rank = 2;
  empty.out = {3, 0, 0, 0, 0, 0};
  const Pool2d no_planes{0, 3, 8, 8, 4, 4, 2, 2, 2, 2};
  const int64_t shape[] = {4, 0, 2};
  const int perm[] = {2, 0, 1};
  EXPECT_NO_THROW(launch_unary({Act::relu, 0, 0}, ElemType::f32, nullptr, nullptr, 0, nullptr));
  EXPECT_NO_THROW(launch_binary(BinaryOp::add, {}, ElemType::f16, nullptr, nullptr, nullptr, empty, nullptr));
  EXPECT_NO_THROW(launch_bias_act(ElemType::bf16, nullptr, nullptr, nullptr, nullptr, 2, 0, 5, {}, nullptr));
  EXPECT_NO_THROW(launch_max_pool2d(ElemType::f32, nullptr, nullptr, no_planes, nullptr));
  EXPECT_NO_THROW(launch_avg_pool2d(ElemType::f32, nullptr, nullptr, no_planes, nullptr));
  EXPECT_NO_THROW(launch_reduce_rows(ElemType::f32, true, nullptr, nullptr, 0, 10, nullptr));
  EXPECT_NO_THROW(launch_softmax(ElemType::f32, false, nullptr, nullptr, 0, 10, nullptr));
  EXPECT_NO_THROW(launch_softmax(ElemType::f32, true, nullptr, nullptr, 10, 0, nullptr));
  EXPECT_NO_THROW(launch_layer_norm(ElemType::f32, nullptr, nullptr, nullptr, nullptr, 4, 0, 1e-5f, nullptr));
  EXPECT_NO_THROW(launch_transpose(ElemType::f32, nullptr, nullptr, 3, shape, perm, nullptr));
  EXPECT_NO_THROW(launch_concat_part(ElemType::f32, nullptr, nullptr, 0, 3, 5, 1, nullptr));
  EXPECT_NO_THROW(launch_cast(ElemType::f32, ElemType::f16, nullptr, nullptr, 0, nullptr));
}

TEST(CudaKernelArgs, BadArgumentsThrowNamingTheKernel) {
  expect_error(
      [] {
        launch_unary({static_cast<Act>(200), 0, 0}, ElemType::f32, nullptr, nullptr, 4, nullptr);
      },
      "unary");
  expect_error([] { launch_unary({}, static_cast<ElemType>(9), nullptr, nullptr, 4, nullptr); }, "unary");
  expect_error([] { launch_unary({}, ElemType::f32, nullptr, nullptr, -1, nullptr); }, "unary");
  // A strided walk past the input's end is refused before any launch.
  const int64_t walk_shape[1] = {4}, walk_strides[1] = {3};
  expect_error(
      [&] {
        launch_strided_copy(ElemType::f32, nullptr, nullptr, 1, walk_shape, walk_strides, 0, 9, nullptr);
      },
      "strided_copy");
  BroadcastShape too_deep;
  too_deep.rank = k_max_rank + 1;
  expect_error(
      [&] { launch_binary(BinaryOp::add, {}, ElemType::f32, nullptr, nullptr, nullptr, too_deep, nullptr); },
      "binary");
  BroadcastShape one;
  one.rank = 1;
  one.out[0] = 4;
  expect_error(
      [&] {
        launch_binary(static_cast<BinaryOp>(50), {}, ElemType::f32, nullptr, nullptr, nullptr, one, nullptr);
      },
      "binary");
  Pool2d no_kernel{1, 1, 4, 4, 4, 4, 0, 0};
  expect_error([&] { launch_max_pool2d(ElemType::f32, nullptr, nullptr, no_kernel, nullptr); }, "max_pool2d");
  expect_error([&] { launch_avg_pool2d(ElemType::f32, nullptr, nullptr, no_kernel, nullptr); }, "avg_pool2d");
  expect_error([] { launch_reduce_rows(ElemType::f32, false, nullptr, nullptr, -2, 3, nullptr); },
               "reduce_rows");
  expect_error([] { launch_softmax(ElemType::f32, false, nullptr, nullptr, 2, -3, nullptr); }, "softmax");
  expect_error(
      [] { launch_layer_norm(ElemType::f32, nullptr, nullptr, nullptr, nullptr, 2, 3, 1e-5f, nullptr); },
      "layer_norm");  // no gamma
  const int64_t shape[] = {2, 3, 4};
  const int repeated[] = {0, 0, 2};
  expect_error([&] { launch_transpose(ElemType::f32, nullptr, nullptr, 3, shape, repeated, nullptr); },
               "transpose");
  const int out_of_range[] = {0, 1, 3};
  expect_error([&] { launch_transpose(ElemType::f32, nullptr, nullptr, 3, shape, out_of_range, nullptr); },
               "transpose");
  expect_error([] { launch_concat_part(ElemType::f32, nullptr, nullptr, 2, 4, 5, 2, nullptr); },
               "concat_part");
  expect_error([] { launch_cast(ElemType::f32, static_cast<ElemType>(7), nullptr, nullptr, 3, nullptr); },
               "cast");
  AttentionArgs attention;
  attention.batch = attention.heads = attention.q_len = attention.kv_len = 1;
  attention.head_dim = attention.v_dim = 64;
  attention.v_dim = 0;
  expect_error([&] { launch_attention(ElemType::f32, attention, nullptr); }, "attention");
  attention.v_dim = 64;
  attention.head_dim = k_attention_max_dim + 1;
  expect_error([&] { launch_attention(ElemType::f16, attention, nullptr); }, "attention");
  attention.head_dim = 64;
  attention.kv_len = 0;
  expect_error([&] { launch_attention(ElemType::bf16, attention, nullptr); }, "attention");
}

}  // namespace
}  // namespace kiln::cuda
