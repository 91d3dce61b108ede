// The public kiln::compile, on top of runtime::CompiledModel.
#include "frontend/onnx/onnx_importer.hpp"
#include "kiln/compile.hpp"
#include "runtime/compiled_model.hpp"

namespace kiln {

struct CompiledModel::Impl {
  frontend::ImportedModel model;  // keeps the graph (and its borrowed weights) alive
  std::optional<runtime::CompiledModel> compiled;
  std::vector<EngineStatus> engines;
};

CompiledModel::CompiledModel(std::unique_ptr<Impl> impl) : m_impl(std::move(impl)) {}
CompiledModel::CompiledModel(CompiledModel&&) noexcept = default;
CompiledModel& CompiledModel::operator=(CompiledModel&&) noexcept = default;
CompiledModel::~CompiledModel() = default;

std::vector<Tensor> CompiledModel::run(std::span<const Tensor> inputs) { return m_impl->compiled->run(inputs); }
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

namespace {
CompiledModel finish(frontend::ImportedModel model, std::vector<InputSpec> specs, const CompileSettings& settings) {
  auto impl = std::make_unique<CompiledModel::Impl>();
  impl->model = std::move(model);
  impl->compiled = runtime::CompiledModel::compile(impl->model.graph, std::move(specs), settings);
  for (const auto& e : impl->compiled->report().engines) {
    impl->engines.push_back({e.key, e.status, e.reason, e.build_ms, e.load_ms, e.refit_ms});
  }
  return CompiledModel(std::move(impl));
}
}  // namespace

CompiledModel compile(const std::filesystem::path& onnx_model, std::vector<InputSpec> specs,
                      const CompileSettings& settings) {
  return finish(frontend::import_onnx_file(onnx_model), std::move(specs), settings);
}

CompiledModel compile(std::span<const std::byte> onnx_model, std::vector<InputSpec> specs,
                      const CompileSettings& settings) {
  return finish(frontend::import_onnx_bytes(onnx_model), std::move(specs), settings);
}

}  // namespace kiln
