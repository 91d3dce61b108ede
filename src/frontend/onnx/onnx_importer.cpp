#include "frontend/onnx/onnx_importer.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <google/protobuf/io/zero_copy_stream_impl.h>
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <future>
#include <limits>
#include <unordered_map>

#include "frontend/onnx/model_parser.hpp"
#include "frontend/onnx/model_validator.hpp"
#include "frontend/onnx/tensor_proto.hpp"
#include "ir/op_schema.hpp"
#include "util/log.hpp"
#include "util/mapped_file.hpp"

namespace kiln::frontend {

namespace {

using ir::ValueId;

ir::ValueType value_type_from_proto(const onnx::ValueInfoProto& info, const std::string& where) {
  ir::ValueType type;
  if (!info.has_type() || !info.type().has_tensor_type()) {
    throw Error(ErrorCode::unsupported, where + ": value '" + info.name() + "' is not a tensor");
  }
  const auto& tensor_type = info.type().tensor_type();
  auto dtype = dtype_from_onnx(tensor_type.elem_type());
  if (!dtype) {
    throw Error(ErrorCode::unsupported, where + ": value '" + info.name() + "' has element type " +
                                            onnx_type_name(tensor_type.elem_type()) +
                                            ", which kiln does not support");
  }
  type.dtype = *dtype;
  if (tensor_type.has_shape()) {
    ir::Dims dims;
    // Declared sizes are checked here so that shape inference and every
    // later product of static dims works on counts that fit in int64.
    uint64_t count = 1;
    for (const auto& d : tensor_type.shape().dim()) {
      if (d.has_dim_value()) {
        int64_t size = d.dim_value();
        if (size < 0) {
          throw Error(ErrorCode::invalid_model, where + ": value '" + info.name() +
                                                    "' has a negative dimension " + std::to_string(size));
        }
        if (size != 0 && count > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) /
                                     static_cast<uint64_t>(size)) {
          throw Error(ErrorCode::invalid_model,
                      where + ": value '" + info.name() + "' has more elements than int64 counts");
        }
        count *= static_cast<uint64_t>(size);
        dims.emplace_back(size);
      } else if (d.has_dim_param() && !d.dim_param().empty()) {
        dims.push_back(ir::Dim::symbol(d.dim_param()));
      } else {
        dims.emplace_back();
      }
    }
    type.shape = std::move(dims);
  }
  return type;
}

std::optional<ir::AttributeValue> attribute_from_proto(const onnx::AttributeProto& a, TensorSource& source) {
  using A = onnx::AttributeProto;
  switch (a.type()) {
    case A::INT:
      return ir::AttributeValue(static_cast<int64_t>(a.i()));
    case A::FLOAT:
      return ir::AttributeValue(a.f());
    case A::STRING:
      return ir::AttributeValue(a.s());
    case A::INTS:
      return ir::AttributeValue(std::vector<int64_t>(a.ints().begin(), a.ints().end()));
    case A::FLOATS:
      return ir::AttributeValue(std::vector<float>(a.floats().begin(), a.floats().end()));
    case A::STRINGS:
      return ir::AttributeValue(std::vector<std::string>(a.strings().begin(), a.strings().end()));
    case A::TENSOR:
      return ir::AttributeValue(tensor_from_proto(a.t(), source));
    default:
      // Subgraphs, sparse tensors and type protos: only ops kiln does not
      // support use them, and those are reported by op type.
      return std::nullopt;
  }
}

class GraphBuilder {
 public:
  GraphBuilder(const onnx::ModelProto& model, std::shared_ptr<const void> owner,
               std::unordered_map<const onnx::TensorProto*, TensorSource::Payload> elided, std::string source,
               std::filesystem::path base_dir)
      : m_model(model), m_source(std::move(source)) {
    m_tensor_source.owner = std::move(owner);
    m_tensor_source.elided = std::move(elided);
    m_tensor_source.base_dir = std::move(base_dir);
  }

  ImportedModel build() {
    ImportedModel result;
    result.ir_version = m_model.ir_version();
    result.producer = m_model.producer_name();
    for (const auto& op : m_model.opset_import()) {
      result.opsets[op.domain() == "ai.onnx" ? "" : op.domain()] = op.version();
    }
    ir::Graph& g = result.graph;
    g.source = m_source;
    const onnx::GraphProto& gp = m_model.graph();

    for (const auto& init : gp.initializer()) {
      Tensor t;
      try {
        t = tensor_from_proto(init, m_tensor_source);
      } catch (const Error& e) {
        throw e.with_context(m_source + ": initializer '" + init.name() + "': ");
      }
      define(init.name(), g.add_initializer(init.name(), std::move(t)));
    }
    for (const auto& input : gp.input()) {
      if (m_by_name.count(input.name())) continue;  // IR < 4 lists initializers as inputs too
      ValueId id = g.add_value(input.name(), value_type_from_proto(input, m_source));
      define(input.name(), id);
      g.add_input(id);
    }
    // Outputs first, so that nodes listed out of order still resolve.
    for (int n = 0; n < gp.node_size(); ++n) {
      for (const auto& out : gp.node(n).output()) {
        if (out.empty()) continue;
        if (m_by_name.count(out)) {
          throw Error(ErrorCode::invalid_model,
                      m_source + ": " + describe(gp.node(n), n) + ": output '" + out + "' is defined twice");
        }
        define(out, g.add_value(out));
      }
    }
    for (const auto& info : gp.value_info()) {
      auto it = m_by_name.find(info.name());
      if (it == m_by_name.end() || !info.type().has_tensor_type()) continue;
      auto dtype = dtype_from_onnx(info.type().tensor_type().elem_type());
      if (dtype) g.value(it->second).type = value_type_from_proto(info, m_source);
    }
    for (int n = 0; n < gp.node_size(); ++n) g.add_node(convert_node(gp.node(n), n, result.opsets));
    for (const auto& out : gp.output()) {
      auto it = m_by_name.find(out.name());
      if (it == m_by_name.end()) {
        throw Error(ErrorCode::invalid_model,
                    m_source + ": graph output '" + out.name() + "' is not produced by any node");
      }
      ir::Value& v = g.value(it->second);
      if (v.type.dtype == DType::undefined) v.type = value_type_from_proto(out, m_source);
      g.add_output(it->second);
    }
    ir::infer_shapes(g);
    return result;
  }

 private:
  void define(const std::string& name, ValueId id) { m_by_name[name] = id; }

  static std::string describe(const onnx::NodeProto& node, int index) {
    std::string name = node.name().empty() ? node.op_type() + "_" + std::to_string(index) : node.name();
    return "node '" + name + "' (" + node.op_type() + ")";
  }

  ir::Node convert_node(const onnx::NodeProto& np, int index, const std::map<std::string, int64_t>& opsets) {
    ir::Node node;
    node.name = np.name().empty() ? np.op_type() + "_" + std::to_string(index) : np.name();
    node.op_type = np.op_type();
    node.domain = np.domain() == "ai.onnx" ? "" : np.domain();
    auto opset = opsets.find(node.domain);
    node.opset = opset == opsets.end() ? 0 : opset->second;
    std::string where = m_source + ": " + describe(np, index);
    check_node_fields(np, where);
    for (const auto& in : np.input()) {
      if (in.empty()) {
        node.inputs.push_back(ir::k_no_value);
        continue;
      }
      auto it = m_by_name.find(in);
      if (it == m_by_name.end()) {
        throw Error(ErrorCode::invalid_model,
                    where + ": input '" + in + "' is not produced by any node, input or initializer");
      }
      node.inputs.push_back(it->second);
    }
    for (const auto& out : np.output()) {
      node.outputs.push_back(out.empty() ? ir::k_no_value : m_by_name.at(out));
    }
    for (const auto& a : np.attribute()) {
      try {
        if (auto value = attribute_from_proto(a, m_tensor_source))
          node.attrs.set(a.name(), std::move(*value));
      } catch (const Error& e) {
        throw e.with_context(where + ": attribute '" + a.name() + "': ");
      }
    }
    return node;
  }

  const onnx::ModelProto& m_model;
  std::string m_source;
  TensorSource m_tensor_source;
  std::unordered_map<std::string, ValueId> m_by_name;
};

// Times an import's phases for the info log: on an engine-cache hit the
// import can cost more than the hit itself, so where its milliseconds go is
// worth one line.
class PhaseClock {
 public:
  void mark(const char* phase) {
    auto now = std::chrono::steady_clock::now();
    double ms = std::chrono::duration<double, std::milli>(now - m_last).count();
    char text[64];
    std::snprintf(text, sizeof text, "%s%s %.1f ms", m_line.empty() ? "" : ", ", phase, ms);
    m_line += text;
    m_last = now;
  }
  void log(const std::string& source) const { log::info("import " + source + ": " + m_line); }

 private:
  std::chrono::steady_clock::time_point m_last = std::chrono::steady_clock::now();
  std::string m_line;
};

// Runs only on models whose versions the library knows (checker_knows).
// onnx::checker::check_model(ModelProto) resolves external-data files against
// the current directory, and check_model(path) parses the whole file a second
// time (two copies of the weights). This runs the same checks as the former
// with the model's own folder as the base.
void run_checker(const onnx::ModelProto& model, const std::filesystem::path& base_dir) {
  std::unordered_map<std::string, int> opsets;
  for (const auto& op : model.opset_import()) opsets[op.domain()] = static_cast<int>(op.version());
  if (model.ir_version() >= 3 && opsets.empty()) throw std::runtime_error("the model has no opset_import");
  onnx::checker::CheckerContext ctx;
  ctx.set_ir_version(static_cast<int>(model.ir_version()));
  ctx.set_opset_imports(opsets);
  ctx.set_model_dir(base_dir.string());
  onnx::checker::LexicalScopeContext scope;
  onnx::checker::check_model_local_functions(model, ctx, scope);
  onnx::checker::check_graph(model.graph(), ctx, scope);
}

ImportedModel check_and_convert(ParsedModel parsed, const std::string& source,
                                const std::filesystem::path& base_dir, PhaseClock& clock) {
  const onnx::ModelProto& model = *parsed.proto;
  check_versions(model, source);
  if (checker_knows(model)) {
    try {
      run_checker(model, base_dir);
    } catch (const std::exception& e) {
      throw Error(ErrorCode::invalid_model, source + ": rejected by the ONNX checker: " + e.what());
    }
  } else {
    // IR 9 and 10, and opsets 18 to 21: newer than the checker knows.
    validate_newer_model(model, source);
  }
  if (!model.has_graph()) throw Error(ErrorCode::invalid_model, source + ": model has no graph");
  clock.mark("check");
  GraphBuilder builder(model, std::shared_ptr<const void>(std::move(parsed.proto)), std::move(parsed.elided),
                       source, base_dir);
  ImportedModel result = builder.build();
  clock.mark("graph");
  clock.log(source);
  return result;
}

}  // namespace

// The ONNX library registers its operator schemas on first use, about 15 ms
// that a fresh process's first import would pay inside the checker, after
// the parse. The first import starts it on a thread of its own so it
// overlaps the parse (the registry is a function-local static: the checker
// waits for it if it has not finished). The future joins when the import
// returns or throws.
std::future<void> start_schema_registration() {
  static std::atomic<bool> started{false};
  if (started.exchange(true)) return {};
  return std::async(std::launch::async, [] { onnx::OpSchemaRegistry::Schema("Relu", 14, ""); });
}

ImportedModel import_onnx_file(const std::filesystem::path& path) {
  const std::string source = path.string();
  const std::future<void> schemas = start_schema_registration();
  PhaseClock clock;
  // "model.onnx" has no parent: its folder is the current one.
  auto folder = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  // Only a regular file can be mapped. stat before open: opening a FIFO
  // blocks until a writer comes, which only a pipe's reader should wait for.
  struct stat st {};
  const bool regular = ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(ErrorCode::io, source + ": cannot open: " + std::strerror(errno));
  ParsedModel parsed;
  if (regular && ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
    // Weights are borrowed from a read-only mapping of the file where they
    // are aligned (model_parser.hpp): they are not read at all until a
    // tensor is used, and their pages are the page cache's.
    try {
      parsed = parse_model(MappedFile::map(fd, path), fd, source);
    } catch (...) {
      ::close(fd);
      throw;
    }
    ::close(fd);
  } else {
    // A pipe or device: streamed, so that it is never held in memory beside
    // the parsed model.
    parsed.proto = std::make_shared<onnx::ModelProto>();
    google::protobuf::io::FileInputStream stream(fd);
    stream.SetCloseOnDelete(true);
    if (!parsed.proto->ParseFromZeroCopyStream(&stream)) throw_not_a_model(source);
  }
  clock.mark("parse");
  return check_and_convert(std::move(parsed), source, folder, clock);
}

ImportedModel import_onnx_bytes(std::span<const std::byte> bytes, const std::string& source,
                                const std::filesystem::path& base_dir) {
  const std::future<void> schemas = start_schema_registration();
  PhaseClock clock;
  // The caller's buffer may not outlive the model: payloads are copied.
  ParsedModel parsed = parse_model(bytes, source);
  clock.mark("parse");
  return check_and_convert(std::move(parsed), source, base_dir, clock);
}

Tensor read_tensor_proto_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::io, path.string() + ": cannot open");
  auto proto = std::make_shared<onnx::TensorProto>();
  if (!proto->ParseFromIstream(&in)) {
    throw Error(ErrorCode::invalid_model, path.string() + ": not a valid onnx.TensorProto");
  }
  TensorSource source;
  source.base_dir = path.parent_path();
  const onnx::TensorProto& ref = *proto;
  source.owner = std::shared_ptr<const void>(std::move(proto));
  try {
    return tensor_from_proto(ref, source).clone();
  } catch (const Error& e) {
    throw e.with_context(path.string() + ": ");
  }
}

}  // namespace kiln::frontend
