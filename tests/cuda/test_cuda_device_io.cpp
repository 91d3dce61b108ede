// Device inputs and outputs of the cuda backend: CudaEngine::run_device,
// CompiledModel::run_device and the C API's stream runs, against the host
// path on the same engine. Every test needs a GPU (label gpu) and skips
// without one, except the ones that check the refusals a host can see.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>

#include "backends/cuda/cuda_engine.hpp"
#include "backends/cuda/device.hpp"
#include "backends/registry/backend_registry.hpp"
#include "builder/timing_cache.hpp"
#include "cuda_test_support.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "kiln/compile.hpp"
#include "kiln/kiln.h"
#include "passes/passes.hpp"
#include "runtime/compiled_model.hpp"
#include "zoo/zoo.hpp"

namespace kiln {
namespace {

using testing::has_gpu;
using testing::lowered_zoo_model;
using testing::ramp;
using testing::zoo_model;

void ok(cudaError_t status) { ASSERT_EQ(status, cudaSuccess) << cudaGetErrorString(status); }

// Device memory of a test, freed at scope exit.
struct DeviceMemory {
  void* data = nullptr;
  explicit DeviceMemory(size_t bytes) { ok(cudaMalloc(&data, std::max<size_t>(bytes, 1))); }
  ~DeviceMemory() { cudaFree(data); }
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
};

struct Stream {
  cudaStream_t s = nullptr;
  Stream() { ok(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)); }
  ~Stream() { cudaStreamDestroy(s); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
};

// Host bytes of `bytes` device bytes at `data`, read on `stream` after
// waiting for it.
Tensor download(const void* data, DType dtype, std::vector<int64_t> shape, cudaStream_t stream) {
  Tensor t = Tensor::zeros(dtype, std::move(shape));
  EXPECT_EQ(cudaMemcpyAsync(t.mutable_bytes().data(), data, t.byte_size(), cudaMemcpyDeviceToHost, stream),
            cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  return t;
}

// max |a - b| / max(1, max |b|), NaN when `a` has a NaN: the device path
// runs the host path's kernels, so only a nondeterministic library kernel
// can make them differ.
double max_abs_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  auto x = a.data<float>();
  auto y = b.data<float>();
  double d = 0, scale = 1;
  for (size_t i = 0; i < std::min(x.size(), y.size()); ++i) {
    const double e = std::abs(double(x[i]) - y[i]);
    if (std::isnan(e) || e > d) d = e;  // a NaN (an output never written) stays
    if (std::isnan(d)) break;
    scale = std::max(scale, std::abs(double(y[i])));
  }
  return d / scale;
}

using CudaDeviceIo = testing::GpuTest;

// resnet_tiny with a dynamic batch 1..4.
const std::vector<InputSpec> k_dynamic{
    {"input", DType::float32, {1, 3, 64, 64}, {2, 3, 64, 64}, {4, 3, 64, 64}}};

TEST_F(CudaDeviceIo, DeviceRunsEqualHostRunsAtEveryBatchEagerAndReplayed) {
  const auto model = zoo_model("resnet_tiny", 1);
  auto compiled = runtime::CompiledModel::compile(model.graph, k_dynamic, settings());
  ASSERT_FALSE(compiled.device_io_unavailable()) << *compiled.device_io_unavailable();
  Stream stream;
  for (int64_t batch : {2, 3, 1}) {
    const Tensor host_in = ramp({batch, 3, 64, 64}, static_cast<float>(batch));
    const auto want = compiled.run(std::vector<Tensor>{host_in});
    const auto descs = compiled.output_descs(std::vector<TensorDesc>{{DType::float32, host_in.shape()}});
    ASSERT_EQ(descs.size(), want.size());
    EXPECT_EQ(descs[0].shape, want[0].shape());
    DeviceMemory in(host_in.byte_size());
    ok(cudaMemcpy(in.data, host_in.bytes().data(), host_in.byte_size(), cudaMemcpyHostToDevice));
    DeviceMemory out(want[0].byte_size());
    const std::vector<DeviceTensor> din{{DType::float32, host_in.shape(), in.data, 0}};
    const std::vector<DeviceTensor> dout{{descs[0].dtype, descs[0].shape, out.data, 0}};
    // Run 1 launches layer by layer, run 2 captures the graph, run 3 replays it.
    for (int run = 1; run <= 3; ++run) {
      ok(cudaMemsetAsync(out.data, 0xff, want[0].byte_size(), stream.s));  // NaNs if nothing is written
      compiled.run_device(din, dout, stream.s);
      const Tensor got = download(out.data, DType::float32, descs[0].shape, stream.s);
      EXPECT_LE(max_abs_diff(got, want[0]), 1e-5) << "batch " << batch << " run " << run;
    }
  }
}

TEST_F(CudaDeviceIo, TheRunIsOrderedOnTheCallersStreamWithoutAHostWait) {
  // Every transfer and run below is enqueued on one stream without a host
  // synchronisation in between: the run must read the input written just
  // before it, and the download must see the output written by it, even
  // though the engine runs on a stream of its own.
  const auto model = zoo_model("resnet_tiny", 1);
  auto compiled = runtime::CompiledModel::compile(model.graph, k_dynamic, settings());
  Stream stream;
  const int64_t batch = 4;
  std::vector<Tensor> inputs, wants;
  for (int k = 0; k < 4; ++k) {
    inputs.push_back(ramp({batch, 3, 64, 64}, 0.5f * static_cast<float>(k)));
    wants.push_back(compiled.run(std::vector<Tensor>{inputs.back()})[0]);
  }
  void* pinned_in = nullptr;
  void* pinned_out = nullptr;
  const size_t in_bytes = inputs[0].byte_size(), out_bytes = wants[0].byte_size();
  ok(cudaMallocHost(&pinned_in, in_bytes * inputs.size()));
  ok(cudaMallocHost(&pinned_out, out_bytes * inputs.size()));
  for (size_t k = 0; k < inputs.size(); ++k)
    std::memcpy(static_cast<char*>(pinned_in) + k * in_bytes, inputs[k].bytes().data(), in_bytes);
  DeviceMemory in(in_bytes), out(out_bytes);
  const std::vector<DeviceTensor> din{{DType::float32, inputs[0].shape(), in.data, 0}};
  const std::vector<DeviceTensor> dout{{DType::float32, wants[0].shape(), out.data, 0}};
  for (size_t k = 0; k < inputs.size(); ++k) {
    ok(cudaMemcpyAsync(in.data, static_cast<char*>(pinned_in) + k * in_bytes, in_bytes,
                       cudaMemcpyHostToDevice, stream.s));
    compiled.run_device(din, dout, stream.s);
    ok(cudaMemcpyAsync(static_cast<char*>(pinned_out) + k * out_bytes, out.data, out_bytes,
                       cudaMemcpyDeviceToHost, stream.s));
  }
  ok(cudaStreamSynchronize(stream.s));
  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor got = Tensor::zeros(DType::float32, wants[k].shape());
    std::memcpy(got.mutable_bytes().data(), static_cast<char*>(pinned_out) + k * out_bytes, out_bytes);
    EXPECT_LE(max_abs_diff(got, wants[k]), 1e-5) << "run " << k;
  }
  cudaFreeHost(pinned_in);
  cudaFreeHost(pinned_out);
}

TEST_F(CudaDeviceIo, MismatchedOutputsHostPointersAndShapesOutsideTheRangeAreRefused) {
  const auto model = zoo_model("resnet_tiny", 1);
  auto compiled = runtime::CompiledModel::compile(model.graph, k_dynamic, settings());
  const auto descs = compiled.output_descs(std::vector<TensorDesc>{{DType::float32, {2, 3, 64, 64}}});
  DeviceMemory in(2 * 3 * 64 * 64 * sizeof(float)), out(1 << 20);
  const std::vector<DeviceTensor> din{{DType::float32, {2, 3, 64, 64}, in.data, 0}};
  auto expect_error = [&](auto&& call, ErrorCode code, const std::string& text) {
    try {
      call();
      ADD_FAILURE() << "no error; expected one with '" << text << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), code) << e.what();
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  };
  std::vector<int64_t> wrong = descs[0].shape;
  wrong[0] = 3;
  expect_error(
      [&] {
        compiled.run_device(din, std::vector<DeviceTensor>{{DType::float32, wrong, out.data, 0}}, nullptr);
      },
      ErrorCode::invalid_argument, "the caller's tensor is");
  std::vector<float> host(2 * 3 * 64 * 64);
  expect_error(
      [&] {
        compiled.run_device(std::vector<DeviceTensor>{{DType::float32, {2, 3, 64, 64}, host.data(), 0}},
                            std::vector<DeviceTensor>{{DType::float32, descs[0].shape, out.data, 0}},
                            nullptr);
      },
      ErrorCode::invalid_argument, "host memory");
  expect_error(
      [&] {
        (void)compiled.output_descs(std::vector<TensorDesc>{{DType::float32, {5, 3, 64, 64}}});
      },
      ErrorCode::invalid_argument, "outside the compiled range");
}

TEST_F(CudaDeviceIo, AModelWithAHostSegmentRefusesNamingIt) {
  const auto model = zoo_model("bert_tiny", 1);
  std::vector<InputSpec> specs;
  for (ir::ValueId v : model.graph.inputs()) {
    const ir::Value& value = model.graph.value(v);
    std::vector<int64_t> shape;
    for (const ir::Dim& d : *value.type.shape) shape.push_back(d.is_static() ? d.value() : 1);
    specs.push_back(InputSpec::fixed(value.name, value.type.dtype, shape));
  }
  auto compiled = runtime::CompiledModel::compile(model.graph, specs, settings());
  ASSERT_GT(compiled.report().segments.size(), 1u);
  const auto why = compiled.device_io_unavailable();
  ASSERT_TRUE(why.has_value());
  EXPECT_NE(why->find("runs on the host"), std::string::npos) << *why;
  EXPECT_NE(why->find("node '"), std::string::npos) << *why;
  try {
    compiled.run_device({}, {}, nullptr);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::unsupported);
  }
}

// The engine itself: graphs are captured on the second run, dropped on
// refit, and a refitted engine's replays use the new weights.
TEST_F(CudaDeviceIo, GraphsAreCapturedOnceAndDroppedOnRefit) {
  const char* env = std::getenv("KILN_CUDA_GRAPHS");
  const bool graphs = env == nullptr || std::string(env) != "0";
  auto [lowered, sources] = lowered_zoo_model("resnet_tiny", 1);
  const auto second = zoo_model("resnet_tiny", 2);
  auto backend = make_backend("cuda");
  builder::TimingCache timing;
  const std::vector<InputSpec> specs{InputSpec::fixed("input", DType::float32, {2, 3, 64, 64})};
  auto engine = backend->build(lowered, specs, settings(), timing);
  auto* cuda_engine = dynamic_cast<cuda::CudaEngine*>(engine.get());
  ASSERT_NE(cuda_engine, nullptr);
  const Tensor host_in = ramp({2, 3, 64, 64});
  const std::vector<Tensor> in{host_in};
  Stream stream;
  DeviceMemory din_mem(host_in.byte_size());
  ok(cudaMemcpy(din_mem.data, host_in.bytes().data(), host_in.byte_size(), cudaMemcpyHostToDevice));
  const auto descs = engine->output_descs(std::vector<TensorDesc>{{DType::float32, host_in.shape()}});
  DeviceMemory dout_mem(shape_numel(descs[0].shape) * sizeof(float));
  const std::vector<DeviceTensor> din{{DType::float32, host_in.shape(), din_mem.data, 0}};
  const std::vector<DeviceTensor> dout{{DType::float32, descs[0].shape, dout_mem.data, 0}};
  auto device_run = [&] {
    engine->run_device(din, dout, stream.s);
    return download(dout_mem.data, DType::float32, descs[0].shape, stream.s);
  };
  const Tensor want_first = engine->run(in)[0];
  EXPECT_LE(max_abs_diff(device_run(), want_first), 1e-5);
  EXPECT_EQ(cuda_engine->captured_graphs(), 0u);  // the first device run is eager
  EXPECT_LE(max_abs_diff(device_run(), want_first), 1e-5);
  EXPECT_EQ(cuda_engine->captured_graphs(), graphs ? 1u : 0u);
  EXPECT_LE(max_abs_diff(device_run(), want_first), 1e-5);

  engine->refit(passes::source_weights(second.graph));
  EXPECT_EQ(cuda_engine->captured_graphs(), 0u);
  const Tensor want_second = engine->run(in)[0];
  EXPECT_GT(max_abs_diff(want_second, want_first), 1e-4);  // the weights did change
  for (int run = 0; run < 3; ++run) EXPECT_LE(max_abs_diff(device_run(), want_second), 1e-5) << run;
  EXPECT_EQ(cuda_engine->captured_graphs(), graphs ? 1u : 0u);
}

// ---- host side: the refusals a machine without a GPU sees ----

TEST(DeviceIoOnTheHost, ACpuModelRefusesNamingItsBackendWhateverItsPartition) {
  CompileSettings s;
  s.backend = "cpu";
  s.cache_built_engines = s.reuse_cached_engines = false;
  s.timing_cache_path = "-";
  s.optimization_level = 0;
  const auto model = zoo_model("resnet_tiny", 1);
  auto compiled = runtime::CompiledModel::compile(model.graph, k_dynamic, s);
  ASSERT_EQ(compiled.report().segments.size(), 1u);
  const auto why = compiled.device_io_unavailable();
  ASSERT_TRUE(why.has_value());
  EXPECT_NE(why->find("backend 'cpu'"), std::string::npos) << *why;
  for (auto call : {+[](runtime::CompiledModel& m) { m.run_device({}, {}, nullptr); },
                    +[](runtime::CompiledModel& m) {
                      (void)m.output_descs(std::vector<TensorDesc>{{DType::float32, {2, 3, 64, 64}}});
                    }}) {
    try {
      call(compiled);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::unsupported) << e.what();
      EXPECT_NE(std::string(e.what()).find("backend 'cpu'"), std::string::npos) << e.what();
    }
  }
  // The public API says the same.
  std::string bytes = zoo::build_zoo_model("resnet_tiny", {1, std::nullopt}).onnx_bytes;
  auto public_model = kiln::compile(std::as_bytes(std::span<const char>(bytes)), k_dynamic, s);
  EXPECT_NE(public_model.device_io_unavailable().find("backend 'cpu'"), std::string::npos);
  EXPECT_THROW(public_model.run_device({}, {}, nullptr), Error);
}

// ---- the public C++ API on a GPU ----

TEST_F(CudaDeviceIo, ThePublicApiRunsOnDeviceMemory) {
  std::string bytes = zoo::build_zoo_model("resnet_tiny", {1, std::nullopt}).onnx_bytes;
  auto model = kiln::compile(std::as_bytes(std::span<const char>(bytes)), k_dynamic, settings());
  ASSERT_EQ(model.device_io_unavailable(), "");
  const Tensor host_in = ramp({3, 3, 64, 64});
  const auto want = model.run(std::vector<Tensor>{host_in});
  const auto descs = model.output_descs(std::vector<TensorDesc>{{DType::float32, host_in.shape()}});
  ASSERT_EQ(descs.size(), 1u);
  DeviceMemory in(host_in.byte_size()), out(want[0].byte_size());
  ok(cudaMemcpy(in.data, host_in.bytes().data(), host_in.byte_size(), cudaMemcpyHostToDevice));
  Stream stream;
  for (int run = 0; run < 3; ++run) {
    model.run_device(std::vector<DeviceTensor>{{DType::float32, host_in.shape(), in.data, 0}},
                     std::vector<DeviceTensor>{{descs[0].dtype, descs[0].shape, out.data, 0}}, stream.s);
    EXPECT_LE(max_abs_diff(download(out.data, DType::float32, descs[0].shape, stream.s), want[0]), 1e-5);
  }
}

// ---- the C API on a GPU ----

TEST_F(CudaDeviceIo, TheCApiRunsIntoTheCallersStream) {
  std::string bytes = zoo::build_zoo_model("resnet_tiny", {1, std::nullopt}).onnx_bytes;
  kiln_settings* s = nullptr;
  ASSERT_EQ(kiln_settings_create(&s), KILN_OK);
  ASSERT_EQ(kiln_settings_set_json(s, R"({"backend": "cuda", "cache_built_engines": false,
                                         "reuse_cached_engines": false, "timing_cache_path": "-"})"),
            KILN_OK)
      << kiln_last_error();
  const int64_t min[] = {1, 3, 64, 64}, opt[] = {2, 3, 64, 64}, max[] = {4, 3, 64, 64};
  kiln_input_spec spec = {"input", KILN_FLOAT32, 4, min, opt, max};
  kiln_model* m = nullptr;
  ASSERT_EQ(kiln_compile_bytes(bytes.data(), bytes.size(), &spec, 1, s, &m), KILN_OK) << kiln_last_error();
  EXPECT_EQ(kiln_model_check_device_io(m), KILN_OK) << kiln_last_error();

  const Tensor host_in = ramp({3, 3, 64, 64});
  kiln_tensor* hin = nullptr;
  ASSERT_EQ(kiln_tensor_wrap(KILN_FLOAT32, host_in.shape().data(), 4, host_in.bytes().data(),
                             host_in.byte_size(), &hin),
            KILN_OK);
  kiln_tensor* hout = nullptr;
  ASSERT_EQ(kiln_model_run(m, &hin, 1, &hout, 1), KILN_OK) << kiln_last_error();

  DeviceMemory in(host_in.byte_size());
  ok(cudaMemcpy(in.data, host_in.bytes().data(), host_in.byte_size(), cudaMemcpyHostToDevice));
  kiln_tensor* din = nullptr;
  ASSERT_EQ(kiln_tensor_wrap_device(KILN_FLOAT32, host_in.shape().data(), 4, in.data, 0, &din), KILN_OK);
  EXPECT_EQ(kiln_tensor_device(din), 0);
  kiln_dtype dtype{};
  int64_t shape[8];
  size_t rank = 0;
  ASSERT_EQ(kiln_model_output_info(m, &din, 1, 0, &dtype, shape, 8, &rank), KILN_OK) << kiln_last_error();
  ASSERT_EQ(rank, kiln_tensor_rank(hout));
  EXPECT_EQ(std::memcmp(shape, kiln_tensor_shape(hout), rank * sizeof(int64_t)), 0);
  DeviceMemory out(kiln_tensor_byte_size(hout));
  kiln_tensor* dout = nullptr;
  ASSERT_EQ(kiln_tensor_wrap_device(dtype, shape, rank, out.data, 0, &dout), KILN_OK);
  Stream stream;
  for (int run = 0; run < 3; ++run) {
    ASSERT_EQ(kiln_model_run_into_stream(m, &din, 1, &dout, 1, stream.s), KILN_OK) << kiln_last_error();
    std::vector<float> got(kiln_tensor_byte_size(hout) / sizeof(float));
    ok(cudaMemcpyAsync(got.data(), out.data, kiln_tensor_byte_size(hout), cudaMemcpyDeviceToHost, stream.s));
    ok(cudaStreamSynchronize(stream.s));
    const float* want = static_cast<const float*>(kiln_tensor_data(hout));
    double d = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      const double e = std::abs(double(got[i]) - want[i]);
      if (std::isnan(e) || e > d) d = e;
      if (std::isnan(d)) break;
    }
    EXPECT_LE(d, 1e-5) << "run " << run;
  }
  // Host and device tensors are not interchangeable.
  EXPECT_EQ(kiln_model_run_into_stream(m, &hin, 1, &dout, 1, stream.s), KILN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kiln_last_error()).find("host memory"), std::string::npos) << kiln_last_error();
  kiln_tensor* again = nullptr;
  EXPECT_EQ(kiln_model_run(m, &din, 1, &again, 1), KILN_ERROR_INVALID_ARGUMENT);

  kiln_tensor_destroy(dout);
  kiln_tensor_destroy(din);
  kiln_tensor_destroy(hout);
  kiln_tensor_destroy(hin);
  kiln_model_destroy(m);
  kiln_settings_destroy(s);
}

}  // namespace
}  // namespace kiln
