// The public kiln::compile, on top of runtime::CompiledModel.
#include "frontend/onnx/onnx_importer.hpp"
#include "kiln/compile.hpp"
#include "runtime/artifact.hpp"
#include "runtime/compiled_model.hpp"
#include "util/atomic_file.hpp"
#include "util/mapped_file.hpp"

namespace kiln {

struct CompiledModel::Impl {
  frontend::ImportedModel model;  // keeps the graph (and its borrowed weights) alive
  // Where the model's ONNX bytes are, for save(): the file, or a copy.
  std::filesystem::path model_path;
  std::vector<std::byte> model_bytes;
  std::optional<runtime::CompiledModel> compiled;
  std::vector<EngineStatus> engines;
};

CompiledModel::CompiledModel(std::unique_ptr<Impl> impl) : m_impl(std::move(impl)) {}
CompiledModel::CompiledModel(CompiledModel&&) noexcept = default;
CompiledModel& CompiledModel::operator=(CompiledModel&&) noexcept = default;
CompiledModel::~CompiledModel() = default;

std::vector<Tensor> CompiledModel::run(std::span<const Tensor> inputs) {
  return m_impl->compiled->run(inputs);
}

void CompiledModel::run_device(std::span<const DeviceTensor> inputs, std::span<const DeviceTensor> outputs,
                               void* cuda_stream) {
  m_impl->compiled->run_device(inputs, outputs, cuda_stream);
}

std::vector<TensorDesc> CompiledModel::output_descs(std::span<const TensorDesc> inputs) {
  return m_impl->compiled->output_descs(inputs);
}

std::string CompiledModel::device_io_unavailable() const {
  return m_impl->compiled->device_io_unavailable().value_or("");
}
RefitStats CompiledModel::refit(std::span<const WeightUpdate> weights) {
  return m_impl->compiled->refit(weights);
}

RefitStats CompiledModel::refit(const std::map<std::string, Tensor>& weights) {
  std::vector<WeightUpdate> updates;
  updates.reserve(weights.size());
  for (const auto& [name, value] : weights) updates.push_back({name, value});
  return refit(updates);
}

const std::vector<WeightInfo>& CompiledModel::weights() const { return m_impl->compiled->weights(); }

const std::vector<EngineStatus>& CompiledModel::engines() const { return m_impl->engines; }
double CompiledModel::compile_ms() const { return m_impl->compiled->report().compile_ms; }

std::vector<std::string> CompiledModel::input_names() const {
  std::vector<std::string> names;
  for (ir::ValueId id : m_impl->model.graph.inputs()) names.push_back(m_impl->model.graph.value(id).name);
  return names;
}

std::vector<std::string> CompiledModel::output_names() const {
  std::vector<std::string> names;
  for (ir::ValueId id : m_impl->model.graph.outputs()) names.push_back(m_impl->model.graph.value(id).name);
  return names;
}

void CompiledModel::save(const std::filesystem::path& artifact) const {
  std::shared_ptr<const MappedFile> file;
  std::span<const std::byte> onnx = m_impl->model_bytes;
  if (!m_impl->model_path.empty()) {
    file = MappedFile::open(m_impl->model_path);
    onnx = file->bytes();
  }
  auto bytes = m_impl->compiled->to_artifact(onnx, m_impl->model.graph);
  AtomicFile out(std::filesystem::absolute(artifact));
  if (!out.write(bytes) || !out.commit()) {
    throw Error(ErrorCode::io, artifact.string() + ": cannot write the artifact: " + out.error());
  }
}

namespace {
void record_engines(CompiledModel::Impl& impl) {
  for (const auto& e : impl.compiled->report().engines) {
    impl.engines.push_back({e.key, e.status, e.reason, e.build_ms, e.load_ms, e.refit_ms});
  }
}
}  // namespace

CompiledModel compile(const std::filesystem::path& onnx_model, std::vector<InputSpec> specs,
                      const CompileSettings& settings) {
  auto impl = std::make_unique<CompiledModel::Impl>();
  impl->model = frontend::import_onnx_file(onnx_model);
  impl->model_path = onnx_model;
  impl->compiled = runtime::CompiledModel::compile(impl->model.graph, std::move(specs), settings);
  record_engines(*impl);
  return CompiledModel(std::move(impl));
}

CompiledModel compile(std::span<const std::byte> onnx_model, std::vector<InputSpec> specs,
                      const CompileSettings& settings) {
  auto impl = std::make_unique<CompiledModel::Impl>();
  impl->model = frontend::import_onnx_bytes(onnx_model);
  impl->model_bytes.assign(onnx_model.begin(), onnx_model.end());
  impl->compiled = runtime::CompiledModel::compile(impl->model.graph, std::move(specs), settings);
  record_engines(*impl);
  return CompiledModel(std::move(impl));
}

CompiledModel load(const std::filesystem::path& artifact, const CompileSettings& settings) {
  auto decoded = runtime::decode_artifact(MappedFile::open(artifact)->bytes(), artifact.string());
  auto impl = std::make_unique<CompiledModel::Impl>();
  impl->model_bytes = std::move(decoded.onnx);
  impl->model = frontend::import_onnx_bytes(impl->model_bytes, artifact.string());
  impl->compiled = runtime::CompiledModel::from_artifact(decoded, impl->model.graph, settings);
  record_engines(*impl);
  return CompiledModel(std::move(impl));
}

}  // namespace kiln
