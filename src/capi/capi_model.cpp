// kiln_model: compile, load, save and run through runtime::CompiledModel (or
// the reference interpreter), the same path as the C++ kiln::compile.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>

#include "capi/capi_internal.hpp"
#include "runtime/artifact.hpp"
#include "runtime/report_json.hpp"
#include "util/atomic_file.hpp"
#include "util/mapped_file.hpp"
#include "zoo/zoo.hpp"

namespace kiln::capi {
namespace {

using nlohmann::json;

std::vector<int64_t> dims_of(const int64_t* dims, size_t rank, const char* what) {
  if (rank > 0) require(dims, what);
  return std::vector<int64_t>(dims, dims + rank);
}

// The caller's specs, with names taken from the graph where missing; with
// none given, each input's declared (static) shape.
std::vector<InputSpec> read_specs(const ir::Graph& graph, const kiln_input_spec* specs, size_t num_specs) {
  const auto& inputs = graph.inputs();
  std::vector<InputSpec> result;
  if (num_specs == 0) {
    for (ir::ValueId id : inputs) {
      const ir::Value& value = graph.value(id);
      if (!value.type.is_static()) {
        throw Error(ErrorCode::invalid_argument, graph.source + ": input '" + value.name +
                                                     "' has the dynamic shape " + value.type.to_string() +
                                                     ": give its min/opt/max shapes");
      }
      result.push_back(InputSpec::fixed(value.name, value.type.dtype, value.type.static_shape()));
    }
    return result;
  }
  require(specs, "specs");
  if (num_specs != inputs.size()) {
    throw Error(ErrorCode::invalid_argument, graph.source + ": " + std::to_string(num_specs) +
                                                 " input specs for a model with " +
                                                 std::to_string(inputs.size()) + " inputs");
  }
  for (size_t i = 0; i < num_specs; ++i) {
    const kiln_input_spec& s = specs[i];
    const std::string& model_name = graph.value(inputs[i]).name;
    std::string name = s.name ? s.name : "";
    if (name.empty()) name = model_name;
    if (name != model_name) {
      throw Error(ErrorCode::invalid_argument, "input spec " + std::to_string(i) + " is named '" + name +
                                                   "', but the model's input " + std::to_string(i) + " is '" +
                                                   model_name + "'");
    }
    if (dtype_size(static_cast<DType>(s.dtype)) == 0) {
      throw Error(ErrorCode::invalid_argument,
                  "input '" + name + "': unknown dtype " + std::to_string(static_cast<int>(s.dtype)));
    }
    InputSpec spec;
    spec.name = name;
    spec.dtype = static_cast<DType>(s.dtype);
    spec.min = dims_of(s.min_shape, s.rank, "min_shape");
    spec.opt = s.opt_shape ? dims_of(s.opt_shape, s.rank, "opt_shape") : spec.min;
    spec.max = s.max_shape ? dims_of(s.max_shape, s.rank, "max_shape") : spec.min;
    for (size_t d = 0; d < s.rank; ++d) {
      if (spec.min[d] < 0 || !(spec.min[d] <= spec.opt[d] && spec.opt[d] <= spec.max[d])) {
        throw Error(ErrorCode::invalid_argument,
                    "input '" + name + "' dim " + std::to_string(d) + ": needs 0 <= min <= opt <= max, got " +
                        std::to_string(spec.min[d]) + ", " + std::to_string(spec.opt[d]) + ", " +
                        std::to_string(spec.max[d]));
      }
    }
    result.push_back(std::move(spec));
  }
  return result;
}

const kiln_settings& settings_or_default(const kiln_settings* settings) {
  static const kiln_settings defaults;
  return settings ? *settings : defaults;
}

void finish(kiln_model& model, const kiln_settings& settings, std::chrono::steady_clock::time_point start) {
  model.backend = settings.backend;
  const ir::Graph& graph = model.imported->graph;
  for (ir::ValueId id : graph.outputs()) model.output_names.push_back(graph.value(id).name);
  if (settings.backend == "ref") {
    model.executor.emplace(graph);
  } else {
    model.compiled = runtime::CompiledModel::compile(graph, model.specs, settings.settings);
  }
  model.compile_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

// The checks of runtime::CompiledModel, for the reference backend.
void check_inputs(const kiln_model& model, std::span<const Tensor> inputs) {
  for (size_t i = 0; i < inputs.size(); ++i) {
    const InputSpec& s = model.specs[i];
    const Tensor& t = inputs[i];
    if (t.dtype() != s.dtype) {
      throw Error(ErrorCode::invalid_argument, "input '" + s.name + "': dtype " +
                                                   std::string(dtype_name(t.dtype())) + ", expected " +
                                                   std::string(dtype_name(s.dtype)));
    }
    if (t.shape().size() != s.min.size()) {
      throw Error(ErrorCode::invalid_argument, "input '" + s.name + "': rank " +
                                                   std::to_string(t.shape().size()) + ", expected " +
                                                   std::to_string(s.min.size()));
    }
    for (size_t d = 0; d < s.min.size(); ++d) {
      if (t.shape()[d] < s.min[d] || t.shape()[d] > s.max[d]) {
        throw Error(ErrorCode::invalid_argument,
                    "input '" + s.name + "' dim " + std::to_string(d) + " is " +
                        std::to_string(t.shape()[d]) + ", outside the compiled range [" +
                        std::to_string(s.min[d]) + ", " + std::to_string(s.max[d]) + "]");
      }
    }
  }
}

bool overlaps(std::span<const std::byte> a, std::span<const std::byte> b) {
  if (a.empty() || b.empty()) return false;
  auto a0 = reinterpret_cast<uintptr_t>(a.data()), b0 = reinterpret_cast<uintptr_t>(b.data());
  return a0 < b0 + b.size() && b0 < a0 + a.size();
}

std::vector<Tensor> run_model(kiln_model* model, const kiln_tensor* const* inputs, size_t num_inputs,
                              size_t num_outputs) {
  require(model, "model");
  if (num_inputs > 0) require(inputs, "inputs");
  if (num_inputs != model->specs.size()) {
    throw Error(ErrorCode::invalid_argument, "expected " + std::to_string(model->specs.size()) +
                                                 " inputs, got " + std::to_string(num_inputs));
  }
  if (num_outputs != model->output_names.size()) {
    throw Error(ErrorCode::invalid_argument, "the model has " + std::to_string(model->output_names.size()) +
                                                 " outputs, the caller gave room for " +
                                                 std::to_string(num_outputs));
  }
  std::vector<Tensor> in;
  in.reserve(num_inputs);
  for (size_t i = 0; i < num_inputs; ++i) {
    if (inputs[i] == nullptr)
      throw Error(ErrorCode::invalid_argument, "input " + std::to_string(i) + " is NULL");
    require_host(*inputs[i], "input '" + model->specs[i].name + "'");
    in.push_back(inputs[i]->tensor);
  }
  std::vector<Tensor> out;
  if (model->executor) {
    check_inputs(*model, in);
    out = model->executor->run(in);
  } else {
    out = model->compiled->run(in);
  }
  // An output that passes an input through would point into the caller's
  // memory after the call: give it storage of its own.
  for (Tensor& t : out) {
    if (!t.is_borrowed()) continue;
    for (const Tensor& i : in) {
      if (overlaps(t.bytes(), i.bytes())) {
        t = t.clone();
        break;
      }
    }
  }
  return out;
}

// The model's compiled form for a device run; kiln::Error(unsupported)
// naming why a model cannot run on device memory.
runtime::CompiledModel& device_model(kiln_model* model) {
  require(model, "model");
  if (!model->compiled) {
    throw Error(ErrorCode::unsupported,
                "device run: the model runs on the reference interpreter on the host (backend 'ref'); "
                "device inputs and outputs need backend 'cuda'");
  }
  if (auto why = model->compiled->device_io_unavailable())
    throw Error(ErrorCode::unsupported, "device run: " + *why);
  return *model->compiled;
}

// The dtypes and shapes of `inputs`, which may be host or device tensors.
std::vector<TensorDesc> input_descs(const kiln_model& model, const kiln_tensor* const* inputs,
                                    size_t num_inputs) {
  if (num_inputs > 0) require(inputs, "inputs");
  if (num_inputs != model.specs.size()) {
    throw Error(ErrorCode::invalid_argument, "expected " + std::to_string(model.specs.size()) +
                                                 " inputs, got " + std::to_string(num_inputs));
  }
  std::vector<TensorDesc> descs;
  for (size_t i = 0; i < num_inputs; ++i) {
    if (inputs[i] == nullptr)
      throw Error(ErrorCode::invalid_argument, "input " + std::to_string(i) + " is NULL");
    descs.push_back({inputs[i]->tensor.dtype(), inputs[i]->tensor.shape()});
  }
  return descs;
}

// A device tensor of the C API as the engine's view of it.
DeviceTensor device_view(const kiln_tensor* tensor, const std::string& what) {
  if (tensor == nullptr) throw Error(ErrorCode::invalid_argument, what + " is NULL");
  if (tensor->device < 0) {
    throw Error(ErrorCode::invalid_argument,
                what +
                    " is host memory: kiln_model_run_into_stream takes device tensors "
                    "(kiln_tensor_wrap_device); host tensors run through kiln_model_run");
  }
  return {tensor->tensor.dtype(), tensor->tensor.shape(),
          const_cast<std::byte*>(tensor->tensor.bytes().data()), tensor->device};
}

json report_json(const kiln_model& model) {
  json engines = json::array();
  if (model.compiled) {
    for (const auto& e : model.compiled->report().engines) {
      engines.push_back({{"key", e.key},
                         {"status", e.status},
                         {"reason", e.reason},
                         {"build_ms", e.build_ms},
                         {"load_ms", e.load_ms},
                         {"refit_ms", e.refit_ms}});
    }
  }
  json last_refit = nullptr;
  if (model.last_refit) {
    const RefitStats& r = *model.last_refit;
    last_refit = {{"weights", r.weights},
                  {"engines", r.engines},
                  {"fallback_weights", r.fallback_weights},
                  {"check_ms", r.check_ms},
                  {"refit_ms", r.refit_ms}};
  }
  return {{"backend", model.backend},
          {"compile_ms", model.compile_ms},
          {"engines", engines},
          {"segments", model.compiled ? runtime::segments_json(model.compiled->report()) : json::array()},
          {"last_refit", last_refit}};
}

}  // namespace
}  // namespace kiln::capi

using namespace kiln;
using namespace kiln::capi;

extern "C" {

kiln_status kiln_compile_file(const char* onnx_path, const kiln_input_spec* specs, size_t num_specs,
                              const kiln_settings* settings, kiln_model** model_out) {
  return guard([&] {
    require(onnx_path, "onnx_path");
    require(model_out, "model_out");
    auto start = std::chrono::steady_clock::now();
    auto model = std::make_unique<kiln_model>();
    model->imported = std::make_unique<frontend::ImportedModel>(frontend::import_onnx_file(onnx_path));
    model->model_path = onnx_path;
    model->specs = read_specs(model->imported->graph, specs, num_specs);
    finish(*model, settings_or_default(settings), start);
    *model_out = model.release();
  });
}

kiln_status kiln_compile_bytes(const void* onnx_bytes, size_t size, const kiln_input_spec* specs,
                               size_t num_specs, const kiln_settings* settings, kiln_model** model_out) {
  return guard([&] {
    if (size > 0) require(onnx_bytes, "onnx_bytes");
    require(model_out, "model_out");
    auto start = std::chrono::steady_clock::now();
    auto model = std::make_unique<kiln_model>();
    std::span<const std::byte> bytes(static_cast<const std::byte*>(onnx_bytes), size);
    model->imported = std::make_unique<frontend::ImportedModel>(frontend::import_onnx_bytes(bytes));
    model->model_bytes.assign(bytes.begin(), bytes.end());
    model->specs = read_specs(model->imported->graph, specs, num_specs);
    finish(*model, settings_or_default(settings), start);
    *model_out = model.release();
  });
}

kiln_status kiln_load(const char* artifact_path, const kiln_settings* settings, kiln_model** model_out) {
  return guard([&] {
    require(artifact_path, "artifact_path");
    require(model_out, "model_out");
    const kiln_settings& s = settings_or_default(settings);
    if (s.backend != "cpu") {
      throw Error(ErrorCode::invalid_argument,
                  "kiln_load: artifacts hold cpu engines; backend is '" + s.backend + "'");
    }
    auto start = std::chrono::steady_clock::now();
    auto decoded = runtime::decode_artifact(MappedFile::open(artifact_path)->bytes(), artifact_path);
    auto model = std::make_unique<kiln_model>();
    model->backend = "cpu";
    model->model_bytes = std::move(decoded.onnx);
    model->imported = std::make_unique<frontend::ImportedModel>(
        frontend::import_onnx_bytes(model->model_bytes, artifact_path));
    model->specs = decoded.manifest.specs;
    const ir::Graph& graph = model->imported->graph;
    for (ir::ValueId id : graph.outputs()) model->output_names.push_back(graph.value(id).name);
    model->compiled = runtime::CompiledModel::from_artifact(decoded, graph, s.settings);
    model->compile_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    *model_out = model.release();
  });
}

kiln_status kiln_model_save(const kiln_model* model, const char* artifact_path) {
  return guard([&] {
    require(model, "model");
    require(artifact_path, "artifact_path");
    if (!model->compiled) {
      throw Error(ErrorCode::invalid_argument,
                  "save: a model compiled with the reference backend has no engines");
    }
    std::shared_ptr<const MappedFile> file;
    std::span<const std::byte> onnx = model->model_bytes;
    if (!model->model_path.empty()) {
      file = MappedFile::open(model->model_path);
      onnx = file->bytes();
    }
    auto bytes = model->compiled->to_artifact(onnx, model->imported->graph);
    AtomicFile out(std::filesystem::absolute(artifact_path));
    if (!out.write(bytes) || !out.commit()) {
      throw Error(ErrorCode::io, std::string(artifact_path) + ": cannot write the artifact: " + out.error());
    }
  });
}

void kiln_model_destroy(kiln_model* model) {
  if (model == nullptr) return;
  // The interpreter and engines borrow the graph: drop them first.
  model->executor.reset();
  model->compiled.reset();
  delete model;
}

size_t kiln_model_num_inputs(const kiln_model* model) { return model ? model->specs.size() : 0; }
size_t kiln_model_num_outputs(const kiln_model* model) { return model ? model->output_names.size() : 0; }

const char* kiln_model_input_name(const kiln_model* model, size_t index) {
  return model && index < model->specs.size() ? model->specs[index].name.c_str() : nullptr;
}

const char* kiln_model_output_name(const kiln_model* model, size_t index) {
  return model && index < model->output_names.size() ? model->output_names[index].c_str() : nullptr;
}

kiln_status kiln_model_report_json(const kiln_model* model, char** json_out) {
  return guard([&] {
    require(model, "model");
    require(json_out, "json_out");
    *json_out = copy_string(report_json(*model).dump());
  });
}

kiln_status kiln_model_inputs_json(const kiln_model* model, char** json_out) {
  return guard([&] {
    require(model, "model");
    require(json_out, "json_out");
    json list = json::array();
    for (const InputSpec& s : model->specs) {
      list.push_back({{"name", s.name},
                      {"dtype", std::string(dtype_name(s.dtype))},
                      {"min", s.min},
                      {"opt", s.opt},
                      {"max", s.max}});
    }
    *json_out = copy_string(list.dump());
  });
}

kiln_status kiln_model_run(kiln_model* model, const kiln_tensor* const* inputs, size_t num_inputs,
                           kiln_tensor** outputs_out, size_t num_outputs) {
  return guard([&] {
    if (num_outputs > 0) require(outputs_out, "outputs_out");
    std::vector<Tensor> out = run_model(model, inputs, num_inputs, num_outputs);
    std::vector<std::unique_ptr<kiln_tensor>> handles;
    for (Tensor& t : out) {
      auto handle = std::make_unique<kiln_tensor>();
      handle->writable = !t.is_borrowed();
      handle->tensor = std::move(t);
      handles.push_back(std::move(handle));
    }
    for (size_t i = 0; i < handles.size(); ++i) outputs_out[i] = handles[i].release();
  });
}

kiln_status kiln_model_run_into(kiln_model* model, const kiln_tensor* const* inputs, size_t num_inputs,
                                kiln_tensor* const* outputs, size_t num_outputs) {
  return guard([&] {
    if (num_outputs > 0) require(outputs, "outputs");
    for (size_t i = 0; i < num_outputs; ++i) {
      if (outputs[i] == nullptr || !outputs[i]->writable) {
        throw Error(ErrorCode::invalid_argument, "output " + std::to_string(i) + " is NULL or read-only");
      }
      require_host(*outputs[i], "output " + std::to_string(i));
    }
    std::vector<Tensor> out = run_model(model, inputs, num_inputs, num_outputs);
    for (size_t i = 0; i < out.size(); ++i) {
      const Tensor& dest = outputs[i]->tensor;
      if (dest.dtype() != out[i].dtype() || dest.shape() != out[i].shape()) {
        throw Error(ErrorCode::invalid_argument,
                    "output '" + model->output_names[i] + "' is " + out[i].shape_string() + " " +
                        std::string(dtype_name(out[i].dtype())) + ", the caller's tensor is " +
                        dest.shape_string() + " " + std::string(dtype_name(dest.dtype())));
      }
      std::memcpy(const_cast<std::byte*>(dest.bytes().data()), out[i].bytes().data(), out[i].byte_size());
    }
  });
}

kiln_status kiln_model_check_device_io(const kiln_model* model) {
  return guard([&] { device_model(const_cast<kiln_model*>(model)); });
}

kiln_status kiln_model_output_info(kiln_model* model, const kiln_tensor* const* inputs, size_t num_inputs,
                                   size_t index, kiln_dtype* dtype_out, int64_t* shape_out,
                                   size_t shape_capacity, size_t* rank_out) {
  return guard([&] {
    runtime::CompiledModel& compiled = device_model(model);
    require(dtype_out, "dtype_out");
    require(rank_out, "rank_out");
    if (index >= model->output_names.size()) {
      throw Error(ErrorCode::invalid_argument, "output index " + std::to_string(index) + ": the model has " +
                                                   std::to_string(model->output_names.size()) + " outputs");
    }
    const std::vector<TensorDesc> outs = compiled.output_descs(input_descs(*model, inputs, num_inputs));
    const TensorDesc& d = outs.at(index);
    if (d.shape.size() > shape_capacity) {
      throw Error(ErrorCode::invalid_argument,
                  "output '" + model->output_names[index] + "' has rank " + std::to_string(d.shape.size()) +
                      ", shape_out has room for " + std::to_string(shape_capacity));
    }
    if (!d.shape.empty()) require(shape_out, "shape_out");
    std::copy(d.shape.begin(), d.shape.end(), shape_out);
    *dtype_out = static_cast<kiln_dtype>(d.dtype);
    *rank_out = d.shape.size();
  });
}

kiln_status kiln_model_run_into_stream(kiln_model* model, const kiln_tensor* const* inputs, size_t num_inputs,
                                       kiln_tensor* const* outputs, size_t num_outputs, void* cuda_stream) {
  return guard([&] {
    runtime::CompiledModel& compiled = device_model(model);
    if (num_inputs > 0) require(inputs, "inputs");
    if (num_outputs > 0) require(outputs, "outputs");
    if (num_inputs != model->specs.size()) {
      throw Error(ErrorCode::invalid_argument, "expected " + std::to_string(model->specs.size()) +
                                                   " inputs, got " + std::to_string(num_inputs));
    }
    if (num_outputs != model->output_names.size()) {
      throw Error(ErrorCode::invalid_argument, "the model has " + std::to_string(model->output_names.size()) +
                                                   " outputs, the caller gave " +
                                                   std::to_string(num_outputs));
    }
    std::vector<DeviceTensor> in, out;
    for (size_t i = 0; i < num_inputs; ++i)
      in.push_back(device_view(inputs[i], "input '" + model->specs[i].name + "'"));
    for (size_t i = 0; i < num_outputs; ++i) {
      const std::string what = "output '" + model->output_names[i] + "'";
      if (outputs[i] != nullptr && !outputs[i]->writable)
        throw Error(ErrorCode::invalid_argument, what + " is read-only");
      out.push_back(device_view(outputs[i], what));
    }
    compiled.run_device(in, out, cuda_stream);
  });
}

kiln_status kiln_zoo_model(const char* name, uint64_t seed, int64_t batch, void** bytes_out,
                           size_t* size_out) {
  return guard([&] {
    require(name, "name");
    require(bytes_out, "bytes_out");
    require(size_out, "size_out");
    zoo::ZooOptions options;
    options.seed = seed;
    if (batch > 0) options.batch = batch;
    std::string bytes = zoo::build_zoo_model(name, options).onnx_bytes;
    void* memory = std::malloc(bytes.empty() ? 1 : bytes.size());
    if (memory == nullptr) throw std::bad_alloc();
    std::memcpy(memory, bytes.data(), bytes.size());
    *bytes_out = memory;
    *size_out = bytes.size();
  });
}

}  // extern "C"
