// The model zoo: every model passes the ONNX checker (through the importer),
// has its real architecture's parameter count and per-op node counts, is
// reproducible from its seed, honours --batch, and the tiny models run
// end to end on the reference backend with finite outputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <span>
#include <string>
#include <vector>

#include <onnx/onnx_pb.h>

#include "frontend/onnx/onnx_importer.hpp"
#include "kiln/error.hpp"
#include "reference/executor.hpp"
#include "zoo/zoo.hpp"

namespace kiln {
namespace {

using OpCounts = std::map<std::string, int>;

frontend::ImportedModel import_zoo_model(const zoo::ZooModel& model, const std::string& name) {
  return frontend::import_onnx_bytes(std::as_bytes(std::span<const char>(model.onnx_bytes)), name);
}

OpCounts count_ops(const ir::Graph& graph) {
  OpCounts counts;
  for (const auto& n : graph.nodes()) ++counts[n.op_type];
  return counts;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Trainable parameters as torchvision / Hugging Face count them: every float
// initializer except BatchNorm running statistics (buffers) and scalar
// constants (Clip bounds, 0.5, sqrt(2), ...). Integer buffers (position ids)
// are never parameters.
int64_t count_graph_parameters(const ir::Graph& graph) {
  int64_t total = 0;
  for (size_t i = 0; i < graph.num_values(); ++i) {
    const auto& v = graph.value(static_cast<ir::ValueId>(i));
    if (!v.initializer || v.initializer->dtype() != DType::float32 || v.initializer->rank() == 0) continue;
    if (ends_with(v.name, ".running_mean") || ends_with(v.name, ".running_var")) continue;
    total += v.initializer->numel();
  }
  return total;
}

zoo::ZooOptions seeded(uint64_t seed) {
  zoo::ZooOptions o;
  o.seed = seed;
  return o;
}

zoo::ZooOptions batched(int64_t batch) {
  zoo::ZooOptions o;
  o.batch = batch;
  return o;
}

std::string io_type(const ir::Graph& graph, ir::ValueId id) { return graph.value(id).type.to_string(); }

// The type the model file declares for graph output `index`, written as
// ir::ValueType::to_string does ("float32[batch,sequence,128]").
std::string declared_output_type(const zoo::ZooModel& model, int index) {
  onnx::ModelProto proto;
  if (!proto.ParseFromString(model.onnx_bytes)) return "<unparsable>";
  const auto& t = proto.graph().output(index).type().tensor_type();
  std::string s = t.elem_type() == onnx::TensorProto::FLOAT ? "float32[" : "other[";
  for (int i = 0; i < t.shape().dim_size(); ++i) {
    const auto& d = t.shape().dim(i);
    s += (i ? "," : "") + (d.has_dim_param() ? d.dim_param() : std::to_string(d.dim_value()));
  }
  return s + "]";
}

// The importer's inferred output type must agree with the declared one
// wherever it knows a dimension. Inference cannot see through the
// Shape → Slice → Concat chains of the BERT Reshapes, so it may leave the
// symbolic sequence dimension unknown.
void expect_compatible(const ir::ValueType& inferred, const std::vector<ir::Dim>& declared) {
  ASSERT_TRUE(inferred.has_rank()) << inferred.to_string();
  ASSERT_EQ(inferred.shape->size(), declared.size()) << inferred.to_string();
  for (size_t i = 0; i < declared.size(); ++i) {
    const ir::Dim& d = (*inferred.shape)[i];
    if (!d.is_unknown()) {
      EXPECT_EQ(d, declared[i]) << "dim " << i << " of " << inferred.to_string();
    }
  }
}

struct Expected {
  const char* name;
  int64_t parameters;
  OpCounts ops;
};

void check_structure(const Expected& e) {
  SCOPED_TRACE(e.name);
  zoo::ZooModel model = zoo::build_zoo_model(e.name, {});
  EXPECT_EQ(model.parameters, e.parameters);
  auto imported = import_zoo_model(model, e.name);  // runs the ONNX checker
  EXPECT_EQ(imported.opsets.at(""), 17);
  EXPECT_EQ(count_graph_parameters(imported.graph), e.parameters);
  EXPECT_EQ(count_ops(imported.graph), e.ops);
}

// ---- Convolutional models -------------------------------------------------

TEST(ZooResNet, ResNet18MatchesTorchvision) {
  check_structure({"resnet18",
                   11'689'512,
                   {{"Conv", 20},
                    {"BatchNormalization", 20},
                    {"Relu", 17},
                    {"Add", 8},
                    {"MaxPool", 1},
                    {"GlobalAveragePool", 1},
                    {"Flatten", 1},
                    {"Gemm", 1}}});
}

TEST(ZooResNet, ResNet50MatchesTorchvision) {
  // 1 stem conv + 16 Bottlenecks x 3 convs + 4 downsample convs = 53.
  check_structure({"resnet50",
                   25'557'032,
                   {{"Conv", 53},
                    {"BatchNormalization", 53},
                    {"Relu", 49},
                    {"Add", 16},
                    {"MaxPool", 1},
                    {"GlobalAveragePool", 1},
                    {"Flatten", 1},
                    {"Gemm", 1}}});
}

TEST(ZooResNet, ResNet50PutsTheStrideOnThe3x3Conv) {
  auto imported = import_zoo_model(zoo::build_zoo_model("resnet50", {}), "resnet50");
  std::map<std::string, std::vector<int64_t>> strides;
  for (const auto& n : imported.graph.nodes()) {
    if (n.op_type == "Conv") strides[n.name] = n.attrs.get_ints("strides");
  }
  EXPECT_EQ(strides.at("layer2.0.conv1/Conv"), (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(strides.at("layer2.0.conv2/Conv"), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(strides.at("layer2.0.downsample/Conv"), (std::vector<int64_t>{2, 2}));
}

TEST(ZooMobileNet, MobileNetV2MatchesTorchvision) {
  // 1 stem + 2 (t=1 block) + 16 x 3 + 1 final 1x1 = 52 convs; ReLU6 after
  // all but the 17 linear projections.
  check_structure({"mobilenet_v2",
                   3'504'872,
                   {{"Conv", 52},
                    {"BatchNormalization", 52},
                    {"Clip", 35},
                    {"Add", 10},
                    {"GlobalAveragePool", 1},
                    {"Flatten", 1},
                    {"Gemm", 1}}});
}

TEST(ZooMobileNet, DepthwiseConvsUseOneGroupPerChannel) {
  auto imported = import_zoo_model(zoo::build_zoo_model("mobilenet_v2", {}), "mobilenet_v2");
  int depthwise = 0;
  for (const auto& n : imported.graph.nodes()) {
    if (n.op_type != "Conv" || n.attrs.get_int("group") == 1) continue;
    ++depthwise;
    const auto& w = imported.graph.value(n.inputs[1]).initializer;
    ASSERT_TRUE(w);
    EXPECT_EQ(w->dim(0), n.attrs.get_int("group")) << n.name;
    EXPECT_EQ(w->dim(1), 1) << n.name;
  }
  EXPECT_EQ(depthwise, 17);
}

TEST(ZooResNet, ResNetTinyStructure) {
  // Stage 1 keeps 8 channels at stride 1, so it has no downsample conv.
  check_structure({"resnet_tiny",
                   78'962,
                   {{"Conv", 12},
                    {"BatchNormalization", 12},
                    {"Relu", 9},
                    {"Add", 4},
                    {"MaxPool", 1},
                    {"GlobalAveragePool", 1},
                    {"Flatten", 1},
                    {"Gemm", 1}}});
}

TEST(ZooMobileNet, MobileNetTinyStructure) {
  // 1 stem + 2 (t=1 block) + 7 x 3 + 1 = 25 convs; residual Adds in the
  // second block of the three repeated stages.
  check_structure({"mobilenet_tiny",
                   39'210,
                   {{"Conv", 25},
                    {"BatchNormalization", 25},
                    {"Clip", 17},
                    {"Add", 3},
                    {"GlobalAveragePool", 1},
                    {"Flatten", 1},
                    {"Gemm", 1}}});
}

// ---- BERT ------------------------------------------------------------------

// Per encoder layer: 6 weight MatMuls (Q, K, V, attention output,
// intermediate, output) + 2 attention MatMuls; 6 bias Adds + mask Add +
// 2 residual Adds + the Gelu's Add; 2 LayerNorms; 4 Reshapes (Q, K, V, merge
// back) whose targets come from Shape → Slice → Concat; 4 Transposes.
// Embeddings: 3 Gathers + 1 for the sequence length, 2 Adds, 1 LayerNorm,
// 2 Slices of the position / token-type buffers.
OpCounts bert_ops(int layers) {
  return {{"MatMul", 8 * layers},
          {"Add", 10 * layers + 2},
          {"LayerNormalization", 2 * layers + 1},
          {"Softmax", layers},
          {"Erf", layers},
          {"Div", 2 * layers},
          {"Mul", 2 * layers + 1},
          {"Reshape", 4 * layers},
          {"Transpose", 4 * layers},
          {"Shape", layers + 1},
          {"Slice", layers + 2},
          {"Concat", 2 * layers},
          {"Gather", 4},
          {"Unsqueeze", 2},
          {"Cast", 1},
          {"Sub", 1}};
}

TEST(ZooBert, BertBaseMatchesTheReferenceParameterCount) {
  // BERT-base (bert-base-uncased) without the pooler: 108,891,648 parameters
  // = 23,837,184 in the embeddings (word 30522x768, position 512x768, token
  // type 2x768, LayerNorm 2x768) + 12 x 7,087,872 in the encoder layers
  // (85,054,464). With the pooler (768x768 + 768) it is 109,482,240.
  check_structure({"bert_base", 108'891'648, bert_ops(12)});
}

TEST(ZooBert, BertTinyStructure) {
  // Embeddings 1000x128 + 128x128 + 2x128 + 256 = 144,896; each layer
  // 4 x (128x128 + 128) + 128x512 + 512 + 512x128 + 128 + 2 x 256 = 198,272.
  check_structure({"bert_tiny", 144'896 + 2 * 198'272, bert_ops(2)});
}

TEST(ZooBert, DecomposedLayerNormReplacesEachLayerNormalization) {
  OpCounts ops = bert_ops(2);
  const int norms = ops["LayerNormalization"];
  ops.erase("LayerNormalization");
  // Each: ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add.
  ops["ReduceMean"] += 2 * norms;
  ops["Sub"] += norms;
  ops["Pow"] += norms;
  ops["Add"] += 2 * norms;
  ops["Sqrt"] += norms;
  ops["Div"] += norms;
  ops["Mul"] += norms;
  check_structure({"bert_tiny_decomposed", 144'896 + 2 * 198'272, ops});
}

TEST(ZooBert, InputsAndOutputsAreNamedAsHuggingFaceExports) {
  auto model = zoo::build_zoo_model("bert_tiny", {});
  EXPECT_EQ(declared_output_type(model, 0), "float32[batch,sequence,128]");
  auto imported = import_zoo_model(model, "bert_tiny");
  const auto& g = imported.graph;
  ASSERT_EQ(g.inputs().size(), 2u);
  EXPECT_EQ(g.value(g.inputs()[0]).name, "input_ids");
  EXPECT_EQ(io_type(g, g.inputs()[0]), "int64[batch,sequence]");
  EXPECT_EQ(g.value(g.inputs()[1]).name, "attention_mask");
  EXPECT_EQ(io_type(g, g.inputs()[1]), "int64[batch,sequence]");
  ASSERT_EQ(g.outputs().size(), 1u);
  EXPECT_EQ(g.value(g.outputs()[0]).name, "last_hidden_state");
  EXPECT_EQ(g.value(g.outputs()[0]).type.dtype, DType::float32);
  expect_compatible(g.value(g.outputs()[0]).type,
                    {ir::Dim::symbol("batch"), ir::Dim::symbol("sequence"), 128});
}

// ---- Every model -----------------------------------------------------------

const std::vector<std::string> k_tiny_models = {"resnet_tiny", "mobilenet_tiny", "bert_tiny",
                                                "bert_tiny_decomposed"};

TEST(ZooModels, EveryListedModelBuildsAndUnknownNamesAreRejected) {
  std::vector<std::string> names;
  for (const auto& e : zoo::zoo_entries()) names.push_back(e.name);
  for (const char* n : {"resnet18", "resnet50", "resnet_tiny", "mobilenet_v2", "mobilenet_tiny", "bert_base",
                        "bert_tiny", "bert_tiny_decomposed"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  }
  try {
    zoo::build_zoo_model("resnet51", {});
    FAIL() << "expected a kiln::Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("bert_tiny"), std::string::npos) << e.what();
  }
}

TEST(ZooModels, SameSeedGivesSameBytesAndAnotherSeedOnlyOtherWeights) {
  for (const auto& name : k_tiny_models) {
    SCOPED_TRACE(name);
    auto a = zoo::build_zoo_model(name, seeded(1));
    auto again = zoo::build_zoo_model(name, seeded(1));
    auto b = zoo::build_zoo_model(name, seeded(2));
    EXPECT_EQ(a.onnx_bytes, again.onnx_bytes);
    EXPECT_NE(a.onnx_bytes, b.onnx_bytes);
    EXPECT_EQ(a.onnx_bytes.size(), b.onnx_bytes.size());  // same tensors, only other values
    EXPECT_EQ(a.parameters, b.parameters);
    auto ga = import_zoo_model(a, name);
    auto gb = import_zoo_model(b, name);
    EXPECT_EQ(count_ops(ga.graph), count_ops(gb.graph));
  }
}

TEST(ZooModels, FixedBatchGivesAStaticBatchDimension) {
  struct Case {
    std::string name, input, output;
  };
  for (const Case& c : std::vector<Case>{{"resnet_tiny", "float32[3,3,64,64]", "float32[3,10]"},
                                         {"mobilenet_tiny", "float32[3,3,64,64]", "float32[3,10]"},
                                         {"bert_tiny", "int64[3,sequence]", "float32[3,sequence,128]"}}) {
    SCOPED_TRACE(c.name);
    auto model = zoo::build_zoo_model(c.name, batched(3));
    EXPECT_EQ(declared_output_type(model, 0), c.output);
    auto imported = import_zoo_model(model, c.name);
    const auto& g = imported.graph;
    EXPECT_EQ(io_type(g, g.inputs()[0]), c.input);
    const ir::ValueType& out = g.value(g.outputs()[0]).type;
    ASSERT_TRUE(out.has_rank());
    EXPECT_EQ(out.shape->front(), ir::Dim(3)) << out.to_string();  // the batch is known statically
    if (c.name != "bert_tiny") {
      EXPECT_EQ(out.to_string(), c.output);
    }
  }
}

// ---- End to end on the reference backend ------------------------------------

void expect_finite(const Tensor& t) {
  auto values = t.data<float>();
  int64_t bad = 0;
  for (float v : values) bad += std::isfinite(v) ? 0 : 1;
  EXPECT_EQ(bad, 0) << "non-finite values in a " << t.shape_string() << " output";
}

std::vector<Tensor> run_reference(const std::string& name, const std::vector<Tensor>& inputs) {
  auto imported = import_zoo_model(zoo::build_zoo_model(name, seeded(5)), name);
  ref::Executor ex(imported.graph);
  return ex.run(inputs);
}

Tensor image_batch(int64_t batch, int64_t size) {
  std::vector<float> pixels(static_cast<size_t>(batch * 3 * size * size));
  for (size_t i = 0; i < pixels.size(); ++i)
    pixels[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)));
  return Tensor::from_values<float>({batch, 3, size, size}, pixels);
}

TEST(ZooRun, ConvolutionalTinyModelsRunOnTheReferenceBackend) {
  for (const std::string name : {"resnet_tiny", "mobilenet_tiny"}) {
    SCOPED_TRACE(name);
    auto outs = run_reference(name, {image_batch(2, 64)});
    ASSERT_EQ(outs.size(), 1u);
    EXPECT_EQ(outs[0].shape(), (std::vector<int64_t>{2, 10}));
    expect_finite(outs[0]);
    // He init and BN keep the logits O(1) and distinct, not collapsed or exploding.
    auto logits = outs[0].data<float>();
    auto [lo, hi] = std::minmax_element(logits.begin(), logits.end());
    EXPECT_GT(*hi - *lo, 1e-3f);
    EXPECT_LT(std::max(std::fabs(*lo), std::fabs(*hi)), 1e3f);
  }
}

// input_ids [2, 16] and a mask that drops the last 5 tokens of the second row.
std::vector<Tensor> bert_inputs() {
  const int64_t batch = 2, seq = 16;
  std::vector<int64_t> ids, mask;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t s = 0; s < seq; ++s) {
      ids.push_back((b * 389 + s * 61 + 7) % 1000);
      mask.push_back(b == 1 && s >= 11 ? 0 : 1);
    }
  }
  return {Tensor::from_values<int64_t>({batch, seq}, ids), Tensor::from_values<int64_t>({batch, seq}, mask)};
}

TEST(ZooRun, BertTinyRunsOnTheReferenceBackend) {
  auto outs = run_reference("bert_tiny", bert_inputs());
  ASSERT_EQ(outs.size(), 1u);
  EXPECT_EQ(outs[0].shape(), (std::vector<int64_t>{2, 16, 128}));
  expect_finite(outs[0]);
  // Each token is LayerNorm-ed: gamma ≈ 1, beta ≈ 0 keep values O(1).
  double max_abs = 0;
  for (float v : outs[0].data<float>()) max_abs = std::max(max_abs, static_cast<double>(std::fabs(v)));
  EXPECT_GT(max_abs, 0.1);
  EXPECT_LT(max_abs, 20.0);
}

TEST(ZooRun, BertMaskedTokensDoNotReachTheOthers) {
  // Row 1 masks its last 5 tokens: changing their ids may change only their
  // own outputs, since the -10000 mask drives their attention weight to 0.
  auto inputs = bert_inputs();
  auto base = run_reference("bert_tiny", inputs);
  Tensor ids = inputs[0].clone();
  auto id_values = ids.mutable_data<int64_t>();
  for (int64_t s = 11; s < 16; ++s) id_values[static_cast<size_t>(16 + s)] = 999 - s;
  auto changed = run_reference("bert_tiny", {ids, inputs[1]});
  auto a = base[0].data<float>();
  auto b = changed[0].data<float>();
  const size_t hidden = 128;
  double kept_diff = 0, masked_diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const size_t token = i / hidden;  // row-major [2, 16, 128]: tokens 16..31 are row 1
    double diff = std::fabs(a[i] - b[i]);
    if (token >= 16 + 11) {
      masked_diff = std::max(masked_diff, diff);
    } else {
      kept_diff = std::max(kept_diff, diff);
    }
  }
  EXPECT_LT(kept_diff, 1e-5);
  EXPECT_GT(masked_diff, 1e-2);  // the changed tokens themselves do change
}

TEST(ZooRun, DecomposedLayerNormComputesTheSameFunction) {
  // Same seed, same weights drawn in the same order: only the LayerNorm
  // spelling differs, so the outputs must agree to float rounding.
  auto fused = run_reference("bert_tiny", bert_inputs());
  auto decomposed = run_reference("bert_tiny_decomposed", bert_inputs());
  ASSERT_EQ(fused.size(), 1u);
  ASSERT_EQ(decomposed.size(), 1u);
  ASSERT_EQ(fused[0].shape(), decomposed[0].shape());
  auto a = fused[0].data<float>();
  auto b = decomposed[0].data<float>();
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, static_cast<double>(std::fabs(a[i] - b[i])));
  EXPECT_LT(worst, 1e-3);
}

}  // namespace
}  // namespace kiln
