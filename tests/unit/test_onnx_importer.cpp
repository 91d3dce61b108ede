#include <gtest/gtest.h>

#include <onnx/onnx_pb.h>
#include <cmath>
#include <cstring>

#include "frontend/onnx/onnx_importer.hpp"
#include "reference/executor.hpp"
#include "test_helpers.hpp"
#include "zoo/model_builder.hpp"
#include "zoo/zoo.hpp"

namespace kiln {
namespace {

using testing::expect_error;

using frontend::import_onnx_bytes;
using frontend::import_onnx_file;
using testing::TempDir;
using testing::write_file;

std::string tiny_model() { return zoo::build_zoo_model("resnet_tiny", {}).onnx_bytes; }

// Expects `fn` to throw a kiln::Error with `code` whose message contains every
// string in `parts`.
TEST(OnnxImporter, ImportsZooModelWithoutCopyingWeights) {
  TempDir dir;
  write_file(dir / "tiny.onnx", tiny_model());
  auto model = import_onnx_file(dir / "tiny.onnx");
  size_t weights = 0;
  for (size_t i = 0; i < model.graph.num_values(); ++i) {
    const auto& v = model.graph.value(static_cast<ir::ValueId>(i));
    if (v.initializer && v.initializer->dtype() == DType::float32) {
      // raw_data weights are borrowed from the parsed model, not copied.
      EXPECT_TRUE(v.initializer->is_borrowed()) << v.name;
      ++weights;
    }
  }
  EXPECT_GT(weights, 10u);
  EXPECT_EQ(model.opsets.at(""), 17);
  ASSERT_EQ(model.graph.inputs().size(), 1u);
  EXPECT_EQ(model.graph.value(model.graph.inputs()[0]).type.to_string(), "float32[batch,3,64,64]");
}

TEST(OnnxImporter, WeightsOutliveTheImportedModelObject) {
  std::optional<Tensor> weight;
  {
    std::string bytes = tiny_model();
    auto model = import_onnx_bytes(std::as_bytes(std::span<const char>(bytes)));
    for (size_t i = 0; i < model.graph.num_values() && !weight; ++i) {
      const auto& v = model.graph.value(static_cast<ir::ValueId>(i));
      if (v.name == "fc.weight") weight = *v.initializer;
    }
  }
  ASSERT_TRUE(weight);
  // The borrowed tensor keeps the parsed model alive: reading it is safe.
  EXPECT_EQ(weight->shape(), (std::vector<int64_t>{10, 64}));
  EXPECT_TRUE(std::isfinite(weight->data<float>()[639]));
}

TEST(OnnxImporter, MissingFileIsAnIoErrorNamingThePath) {
  expect_error([] { import_onnx_file("/nonexistent/model.onnx"); }, ErrorCode::io,
               {"/nonexistent/model.onnx"});
}

TEST(OnnxImporter, TruncatedFilesAreInvalidModels) {
  TempDir dir;
  std::string bytes = tiny_model();
  // Cut at many points: each must be a clean error, never a crash.
  for (size_t cut :
       {size_t{1}, size_t{7}, size_t{100}, bytes.size() / 3, bytes.size() / 2, bytes.size() - 1}) {
    auto path = dir / ("cut" + std::to_string(cut) + ".onnx");
    write_file(path, bytes.substr(0, cut));
    expect_error([&] { import_onnx_file(path); }, ErrorCode::invalid_model, {path.string()});
  }
}

TEST(OnnxImporter, GarbageAndEmptyFilesAreInvalidModels) {
  TempDir dir;
  std::string garbage(4096, '\0');
  uint64_t state = 42;
  for (char& c : garbage) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    c = static_cast<char>(state >> 56);
  }
  write_file(dir / "garbage.onnx", garbage);
  expect_error([&] { import_onnx_file(dir / "garbage.onnx"); }, ErrorCode::invalid_model, {"garbage.onnx"});
  write_file(dir / "empty.onnx", "");
  expect_error([&] { import_onnx_file(dir / "empty.onnx"); }, ErrorCode::invalid_model, {"empty.onnx"});
  write_file(dir / "text.onnx", "this is not a model\n");
  expect_error([&] { import_onnx_file(dir / "text.onnx"); }, ErrorCode::invalid_model, {"text.onnx"});
}

// A one-node model built directly as a proto, for the edge cases below.
onnx::ModelProto single_node_model(const std::string& op_type) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(17);
  auto* g = m.mutable_graph();
  g->set_name("g");
  auto* in = g->add_input();
  in->set_name("x");
  in->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  in->mutable_type()->mutable_tensor_type()->mutable_shape()->add_dim()->set_dim_value(4);
  auto* n = g->add_node();
  n->set_op_type(op_type);
  n->set_name("the_node");
  n->add_input("x");
  n->add_output("y");
  auto* out = g->add_output();
  out->set_name("y");
  out->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  out->mutable_type()->mutable_tensor_type()->mutable_shape()->add_dim()->set_dim_value(4);
  return m;
}

TEST(OnnxImporter, UnsupportedOpIsReportedWithNodeAndOp) {
  TempDir dir;
  auto path = dir / "det.onnx";
  write_file(path, single_node_model("Det").SerializeAsString());
  auto model = import_onnx_file(path);  // importing works; running says why not
  auto unsupported = ref::find_unsupported(model.graph);
  ASSERT_EQ(unsupported.size(), 1u);
  EXPECT_EQ(unsupported[0].op_type, "Det");
  expect_error([&] { ref::Executor executor(model.graph); }, ErrorCode::unsupported,
               {path.string(), "node 'the_node' (Det)"});
}

TEST(OnnxImporter, CheckerRejectsUnknownOpWithFileName) {
  TempDir dir;
  auto path = dir / "bogus.onnx";
  write_file(path, single_node_model("NoSuchOp").SerializeAsString());
  expect_error([&] { import_onnx_file(path); }, ErrorCode::invalid_model, {path.string(), "NoSuchOp"});
}

TEST(OnnxImporter, UndefinedInputNamesTheNode) {
  auto m = single_node_model("Relu");
  m.mutable_graph()->mutable_node(0)->set_input(0, "nowhere");
  std::string bytes = m.SerializeAsString();
  expect_error([&] { import_onnx_bytes(std::as_bytes(std::span<const char>(bytes)), "dangling.onnx"); },
               ErrorCode::invalid_model, {"dangling.onnx", "nowhere"});
}

onnx::ModelProto external_data_model(const std::string& location, int64_t offset) {
  auto m = single_node_model("Add");
  auto* n = m.mutable_graph()->mutable_node(0);
  n->add_input("w");
  auto* w = m.mutable_graph()->add_initializer();
  w->set_name("w");
  w->set_data_type(onnx::TensorProto::FLOAT);
  w->add_dims(4);
  w->set_data_location(onnx::TensorProto::EXTERNAL);
  auto* loc = w->add_external_data();
  loc->set_key("location");
  loc->set_value(location);
  auto* off = w->add_external_data();
  off->set_key("offset");
  off->set_value(std::to_string(offset));
  auto* len = w->add_external_data();
  len->set_key("length");
  len->set_value("16");
  return m;
}

TEST(OnnxImporter, ExternalDataIsMappedAndBorrowed) {
  TempDir dir;
  std::string side(64 + 16, '\0');
  float values[4] = {1.5f, -2.0f, 3.25f, 0.5f};
  std::memcpy(side.data() + 64, values, sizeof values);
  write_file(dir / "weights.bin", side);
  write_file(dir / "model.onnx", external_data_model("weights.bin", 64).SerializeAsString());
  auto model = import_onnx_file(dir / "model.onnx");
  auto id = model.graph.find_value("w");
  ASSERT_TRUE(id);
  const Tensor& w = *model.graph.value(*id).initializer;
  EXPECT_TRUE(w.is_borrowed());
  EXPECT_EQ(w.data<float>()[2], 3.25f);

  ref::Executor executor(model.graph);
  std::vector<Tensor> inputs{Tensor::from_values<float>({4}, std::vector<float>{1, 1, 1, 1})};
  auto out = executor.run(inputs);
  EXPECT_EQ(out[0].data<float>()[1], -1.0f);
}

TEST(OnnxImporter, ExternalDataOutsideTheModelFolderIsRefused) {
  TempDir dir;
  write_file(dir / "model.onnx", external_data_model("../../etc/passwd", 0).SerializeAsString());
  expect_error([&] { import_onnx_file(dir / "model.onnx"); }, ErrorCode::invalid_model, {"model.onnx"});
}

TEST(OnnxImporter, ExternalDataBeyondTheFileIsRefused) {
  TempDir dir;
  write_file(dir / "weights.bin", std::string(8, '\0'));
  write_file(dir / "model.onnx", external_data_model("weights.bin", 0).SerializeAsString());
  expect_error([&] { import_onnx_file(dir / "model.onnx"); }, ErrorCode::invalid_model,
               {"model.onnx", "initializer 'w'", "overruns"});
}

}  // namespace
}  // namespace kiln
