// Hostile models: files built to crash, hang or exhaust the importer. Each
// must end in a clear kiln::Error (naming the file, and the node or value
// where there is one) with bounded memory and time, or import cleanly when
// it is in fact valid. Memory is checked against the process's peak RSS:
// a case that allocated what its header claims (terabytes) would fail.
// Existing importer tests (tests/unit/test_onnx_importer.cpp) cover
// truncated, garbage and empty files, an unknown op, an undefined input and
// a `../` external-data location.
#include <gtest/gtest.h>

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <onnx/onnx_pb.h>
#include <cstring>
#include <limits>

#include "frontend/onnx/onnx_importer.hpp"
#include "process.hpp"
#include "test_helpers.hpp"

namespace kiln::reliability {
namespace {

namespace fs = std::filesystem;
using frontend::import_onnx_bytes;
using frontend::import_onnx_file;

long peak_rss_mb() {
  struct rusage usage {};
  ::getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024;
}

// Imports `bytes` (or the file) expecting a kiln::Error with `code` whose
// message holds every string in `parts`, with the peak RSS growing by less
// than 256 MB.
void expect_import_error(const std::string& bytes, ErrorCode code, const std::vector<std::string>& parts,
                         const std::string& source = "hostile.onnx") {
  long before = peak_rss_mb();
  try {
    import_onnx_bytes(std::as_bytes(std::span<const char>(bytes)), source);
    ADD_FAILURE() << "imported without an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    for (const auto& part : parts) EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
  EXPECT_LT(peak_rss_mb() - before, 256) << "peak RSS grew by " << peak_rss_mb() - before << " MB";
}

void expect_file_error(const fs::path& path, ErrorCode code, const std::vector<std::string>& parts) {
  try {
    import_onnx_file(path);
    ADD_FAILURE() << path << " imported without an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    for (const auto& part : parts) EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

onnx::ValueInfoProto* add_float(google::protobuf::RepeatedPtrField<onnx::ValueInfoProto>* list,
                                const std::string& name, std::vector<int64_t> dims) {
  auto* v = list->Add();
  v->set_name(name);
  auto* t = v->mutable_type()->mutable_tensor_type();
  t->set_elem_type(onnx::TensorProto::FLOAT);
  auto* shape = t->mutable_shape();
  for (int64_t d : dims) shape->add_dim()->set_dim_value(d);
  return v;
}

// x[4] → Relu → y[4]
onnx::ModelProto relu_model() {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(17);
  auto* g = m.mutable_graph();
  g->set_name("g");
  add_float(g->mutable_input(), "x", {4});
  auto* n = g->add_node();
  n->set_op_type("Relu");
  n->set_name("relu");
  n->add_input("x");
  n->add_output("y");
  add_float(g->mutable_output(), "y", {4});
  return m;
}

onnx::TensorProto* add_initializer(onnx::ModelProto& m, const std::string& name, std::vector<int64_t> dims) {
  auto* w = m.mutable_graph()->add_initializer();
  w->set_name(name);
  w->set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims) w->add_dims(d);
  return w;
}

// x[4] + w → y, with w an initializer of `dims`.
onnx::ModelProto add_model(std::vector<int64_t> dims) {
  auto m = relu_model();
  auto* n = m.mutable_graph()->mutable_node(0);
  n->set_op_type("Add");
  n->set_name("add");
  n->add_input("w");
  add_initializer(m, "w", dims);
  return m;
}

std::string bytes_of(const onnx::ModelProto& m) { return m.SerializeAsString(); }

TEST(HostileModels, MalformedProtobufIsAnInvalidModel) {
  const std::string valid = bytes_of(relu_model());
  // A length-delimited field (graph, tag 7) claiming 2 GiB.
  expect_import_error(std::string("\x08\x08\x3a\xff\xff\xff\xff\x07", 8), ErrorCode::invalid_model,
                      {"hostile.onnx"});
  // An unterminated varint.
  expect_import_error(std::string("\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 11),
                      ErrorCode::invalid_model, {});
  // Wire types 6 and 7 do not exist.
  expect_import_error(std::string("\x0e\x00\x0f\x00", 4), ErrorCode::invalid_model, {});
  // A valid model with a junk field appended, and cut inside its last field.
  expect_import_error(valid + "\x3a\x05\x0a", ErrorCode::invalid_model, {});
  expect_import_error(valid.substr(0, valid.size() - 3), ErrorCode::invalid_model, {});
}

TEST(HostileModels, DeeplyNestedSubgraphsHitTheParserDepthLimit) {
  // Graph → If node → then_branch graph → ... 2000 levels: a recursion bomb
  // for a recursive-descent parser.
  onnx::GraphProto inner;
  inner.set_name("leaf");
  for (int depth = 0; depth < 2000; ++depth) {
    onnx::GraphProto outer;
    outer.set_name("level");
    auto* node = outer.add_node();
    node->set_op_type("If");
    auto* attr = node->add_attribute();
    attr->set_name("then_branch");
    attr->set_type(onnx::AttributeProto::GRAPH);
    *attr->mutable_g() = std::move(inner);
    inner = std::move(outer);
  }
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(17);
  *m.mutable_graph() = std::move(inner);
  expect_import_error(bytes_of(m), ErrorCode::invalid_model, {"hostile.onnx"});
}

TEST(HostileModels, CyclesAreInvalidModels) {
  // a = Relu(b), b = Relu(a): each node's input is the other's output.
  auto m = relu_model();
  auto* g = m.mutable_graph();
  g->mutable_node(0)->set_input(0, "b");
  g->mutable_node(0)->set_output(0, "a");
  auto* second = g->add_node();
  second->set_op_type("Relu");
  second->set_name("second");
  second->add_input("a");
  second->add_output("b");
  auto* third = g->add_node();
  third->set_op_type("Add");
  third->set_name("third");
  third->add_input("b");
  third->add_input("x");
  third->add_output("y");
  expect_import_error(bytes_of(m), ErrorCode::invalid_model, {"hostile.onnx"});

  // A node that consumes its own output.
  auto self = relu_model();
  self.mutable_graph()->mutable_node(0)->set_input(0, "y");
  expect_import_error(bytes_of(self), ErrorCode::invalid_model, {"hostile.onnx"});
}

TEST(HostileModels, DanglingAndDuplicateEdgesAreInvalidModels) {
  auto no_producer = relu_model();
  no_producer.mutable_graph()->mutable_output(0)->set_name("nowhere");
  expect_import_error(bytes_of(no_producer), ErrorCode::invalid_model, {"nowhere"});

  auto twice = relu_model();
  auto* again = twice.mutable_graph()->add_node();
  again->set_op_type("Relu");
  again->add_input("x");
  again->add_output("y");
  expect_import_error(bytes_of(twice), ErrorCode::invalid_model, {"hostile.onnx"});

  auto shadows_input = relu_model();
  shadows_input.mutable_graph()->mutable_node(0)->set_output(0, "x");
  expect_import_error(bytes_of(shadows_input), ErrorCode::invalid_model, {"hostile.onnx"});

  auto empty_input_name = relu_model();
  empty_input_name.mutable_graph()->mutable_node(0)->set_input(0, "");
  expect_import_error(bytes_of(empty_input_name), ErrorCode::invalid_model, {"hostile.onnx"});
}

TEST(HostileModels, NegativeAndHugeDimsAreInvalidModels) {
  // A negative dim in a graph input's declared shape.
  auto negative_input = relu_model();
  negative_input.mutable_graph()
      ->mutable_input(0)
      ->mutable_type()
      ->mutable_tensor_type()
      ->mutable_shape()
      ->mutable_dim(0)
      ->set_dim_value(-5);
  expect_import_error(bytes_of(negative_input), ErrorCode::invalid_model, {"'x'", "-5"});

  // A negative dim in an initializer.
  auto negative_weight = add_model({-4});
  negative_weight.mutable_graph()->mutable_initializer(0)->set_raw_data(std::string(16, '\0'));
  expect_import_error(bytes_of(negative_weight), ErrorCode::invalid_model, {"'w'", "negative"});

  // Declared input shapes whose element count overflows int64.
  const int64_t huge = int64_t{1} << 40;
  auto overflow_input = relu_model();
  auto* shape = overflow_input.mutable_graph()
                    ->mutable_input(0)
                    ->mutable_type()
                    ->mutable_tensor_type()
                    ->mutable_shape();
  shape->mutable_dim(0)->set_dim_value(huge);
  shape->add_dim()->set_dim_value(huge);
  expect_import_error(bytes_of(overflow_input), ErrorCode::invalid_model, {"'x'"});
}

TEST(HostileModels, InitializerShapesThatOverflowOrLieAboutTheirDataAreRefusedWithoutAllocating) {
  const int64_t big = int64_t{1} << 32;
  // 2^32 x 2^32 x 4 floats wraps to 0 elements in int64 arithmetic: with no
  // data it must not pass for an empty tensor.
  // (Without any data field the ONNX checker already refuses it.)
  expect_import_error(bytes_of(add_model({big, big, 4})), ErrorCode::invalid_model, {"hostile.onnx"});
  auto raw_empty = add_model({big, big, 4});
  raw_empty.mutable_graph()->mutable_initializer(0)->set_raw_data("");
  expect_import_error(bytes_of(raw_empty), ErrorCode::invalid_model, {"'w'"});
  // Near the int64 limit: 2^31 x 2^31 x 2 elements, 2^66 bytes.
  auto near_limit = add_model({int64_t{1} << 31, int64_t{1} << 31, 2});
  near_limit.mutable_graph()->mutable_initializer(0)->set_raw_data(std::string(8, '\0'));
  expect_import_error(bytes_of(near_limit), ErrorCode::invalid_model, {"'w'"});
  // A terabyte-sized float_data tensor with three values: refused before
  // anything of that size is allocated.
  auto claims_a_terabyte = add_model({int64_t{1} << 38});
  for (float f : {1.0f, 2.0f, 3.0f})
    claims_a_terabyte.mutable_graph()->mutable_initializer(0)->add_float_data(f);
  expect_import_error(bytes_of(claims_a_terabyte), ErrorCode::invalid_model, {"'w'"});
  // raw_data of the wrong size.
  auto short_raw = add_model({4});
  short_raw.mutable_graph()->mutable_initializer(0)->set_raw_data(std::string(15, '\0'));
  expect_import_error(bytes_of(short_raw), ErrorCode::invalid_model, {"'w'", "15"});
  // A huge tensor attribute (Constant) with no data.
  auto constant = relu_model();
  auto* node = constant.mutable_graph()->mutable_node(0);
  node->set_op_type("Constant");
  node->clear_input();
  auto* attr = node->add_attribute();
  attr->set_name("value");
  attr->set_type(onnx::AttributeProto::TENSOR);
  attr->mutable_t()->set_data_type(onnx::TensorProto::FLOAT);
  attr->mutable_t()->add_dims(int64_t{1} << 40);
  expect_import_error(bytes_of(constant), ErrorCode::invalid_model, {"hostile.onnx"});
}

// Found by fuzz_onnx: a Squeeze whose axes input is longer than the data's
// rank made static inference compute a negative rank (a vector of 2^64 dims).
// And a Reshape target of 10^9 dims must not allocate 10^9 dims.
TEST(HostileModels, ShapeInputsLongerThanAnyRankAreInvalidModels) {
  for (const char* op : {"Squeeze", "Reshape"}) {
    SCOPED_TRACE(op);
    auto m = relu_model();
    auto* g = m.mutable_graph();
    auto* axes = g->add_input();
    axes->set_name("axes");
    axes->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::INT64);
    axes->mutable_type()->mutable_tensor_type()->mutable_shape()->add_dim()->set_dim_value(
        std::string(op) == "Squeeze" ? 5 : 1'000'000'000);
    g->mutable_node(0)->set_op_type(op);
    g->mutable_node(0)->add_input("axes");
    g->mutable_output(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->clear_dim();
    expect_import_error(bytes_of(m), ErrorCode::invalid_model, {"hostile.onnx", op});
  }
}

// Found by fuzz_plan (the same shape code serves the importer): a Conv with
// a dilation of 2^56 overflowed int64 in the window arithmetic (signed
// overflow: undefined behaviour, caught by UBSan).
TEST(HostileModels, HugeConvWindowAttributesAreInvalidModels) {
  for (const char* attr : {"dilations", "strides", "pads", "kernel_shape"}) {
    SCOPED_TRACE(attr);
    auto m = relu_model();
    auto* g = m.mutable_graph();
    auto* shape = g->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape();
    shape->mutable_dim(0)->set_dim_value(1);
    for (int64_t d : {1, 8, 8}) shape->add_dim()->set_dim_value(d);
    auto* node = g->mutable_node(0);
    node->set_op_type("Conv");
    node->add_input("w");
    auto* w = add_initializer(m, "w", {1, 1, 3, 3});
    w->set_raw_data(std::string(9 * sizeof(float), '\0'));
    auto* a = node->add_attribute();
    a->set_name(attr);
    a->set_type(onnx::AttributeProto::INTS);
    const int64_t huge = int64_t{1} << 62;  // (3 - 1) * 2^62 and 8 + 2 * 2^62 overflow int64
    if (std::string(attr) == "pads") {
      for (int i = 0; i < 4; ++i) a->add_ints(huge);
    } else {
      a->add_ints(huge);
      a->add_ints(std::string(attr) == "kernel_shape" ? 3 : 1);
    }
    g->mutable_output(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->clear_dim();
    expect_import_error(bytes_of(m), ErrorCode::invalid_model, {"hostile.onnx"});
  }
}

TEST(HostileModels, HugeAttributeCountsEndInBoundedTime) {
  // 200,000 attributes on one node.
  auto many = relu_model();
  auto* node = many.mutable_graph()->mutable_node(0);
  for (int i = 0; i < 200000; ++i) {
    auto* a = node->add_attribute();
    a->set_name("a" + std::to_string(i));
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(i);
  }
  expect_import_error(bytes_of(many), ErrorCode::invalid_model, {"hostile.onnx", "a0"});

  // 200,000 attributes that all share one name.
  auto same = relu_model();
  node = same.mutable_graph()->mutable_node(0);
  for (int i = 0; i < 200000; ++i) {
    auto* a = node->add_attribute();
    a->set_name("alpha");
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(0.5f);
  }
  node->set_op_type("LeakyRelu");
  expect_import_error(bytes_of(same), ErrorCode::invalid_model, {"hostile.onnx", "'alpha'"});

  // One attribute with 4 million ints: parsed, then refused for its length
  // (a perm for a rank-1 input), in bounded time.
  auto long_list = relu_model();
  node = long_list.mutable_graph()->mutable_node(0);
  node->set_op_type("Transpose");
  auto* perm = node->add_attribute();
  perm->set_name("perm");
  perm->set_type(onnx::AttributeProto::INTS);
  for (int i = 0; i < 4'000'000; ++i) perm->add_ints(i);
  expect_import_error(bytes_of(long_list), ErrorCode::invalid_model,
                      {"hostile.onnx", "perm has 4000000 entries for rank 1"});
}

TEST(HostileModels, LongChainsImportInLinearTime) {
  // 20,000 Relu nodes in a chain: valid, and imported.
  auto m = relu_model();
  auto* g = m.mutable_graph();
  g->mutable_node(0)->set_output(0, "t0");
  for (int i = 1; i < 20000; ++i) {
    auto* n = g->add_node();
    n->set_op_type("Relu");
    n->add_input("t" + std::to_string(i - 1));
    n->add_output(i == 19999 ? "y" : "t" + std::to_string(i));
  }
  auto bytes = bytes_of(m);
  auto model = import_onnx_bytes(std::as_bytes(std::span<const char>(bytes)), "chain.onnx");
  EXPECT_EQ(model.graph.num_nodes(), 20000u);
}

TEST(HostileModels, BadVersionsAndTypesAreClearErrors) {
  auto future_ir = relu_model();
  future_ir.set_ir_version(1000);
  // Newer than kiln knows, not malformed: unsupported (the CLI's exit code 1 either way).
  expect_import_error(bytes_of(future_ir), ErrorCode::unsupported, {"IR version 1000", "newer"});
  auto future_opset = relu_model();
  future_opset.mutable_opset_import(0)->set_version(100000);
  // Default-domain opsets above the newest one kiln knows (21) are refused
  // before any node is read: unsupported, naming the opset and the limit.
  expect_import_error(bytes_of(future_opset), ErrorCode::unsupported,
                      {"hostile.onnx", "opset 100000", "newer", "(21)"});
  auto bad_type = relu_model();
  bad_type.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->set_elem_type(9999);
  expect_import_error(bytes_of(bad_type), ErrorCode::unsupported, {"hostile.onnx", "9999"});
}

// ---- external data that tries to leave the model's folder ----

onnx::ModelProto external_model(const std::string& location, int64_t offset = 0, int64_t length = 16) {
  auto m = add_model({4});
  auto* w = m.mutable_graph()->mutable_initializer(0);
  w->set_data_location(onnx::TensorProto::EXTERNAL);
  auto add = [&](const std::string& k, const std::string& v) {
    auto* e = w->add_external_data();
    e->set_key(k);
    e->set_value(v);
  };
  add("location", location);
  add("offset", std::to_string(offset));
  if (length >= 0) add("length", std::to_string(length));
  return m;
}

struct ModelFolder {
  kiln::testing::TempDir root;
  fs::path model_dir;
  fs::path outside;
  ModelFolder() {
    model_dir = root / "model";
    fs::create_directories(model_dir / "sub");
    outside = root / "secret.bin";
    kiln::testing::write_file(outside, std::string(64, 's'));
    kiln::testing::write_file(model_dir / "weights.bin", std::string(64, '\0'));
  }
  fs::path write(const onnx::ModelProto& m, const std::string& name = "model.onnx") {
    kiln::testing::write_file(model_dir / name, m.SerializeAsString());
    return model_dir / name;
  }
};

TEST(HostileModels, ExternalDataCannotLeaveTheModelFolder) {
  ModelFolder f;
  const std::vector<std::string> escapes = {"../secret.bin",   "sub/../../secret.bin",
                                            "./../secret.bin", f.outside.string(),
                                            "/etc/passwd",     "sub/../../model/../secret.bin"};
  for (const auto& location : escapes) {
    SCOPED_TRACE(location);
    // Absolute paths are already refused by the ONNX checker, in its words.
    bool absolute = location.starts_with("/");
    expect_file_error(
        f.write(external_model(location)), ErrorCode::invalid_model,
        absolute ? std::vector<std::string>{"model.onnx"} : std::vector<std::string>{"model.onnx", "leaves"});
  }
}

TEST(HostileModels, ExternalDataThroughSymlinksCannotLeaveTheModelFolder) {
  ModelFolder f;
  fs::create_symlink(f.outside, f.model_dir / "link.bin");
  fs::create_symlink(f.root.path(), f.model_dir / "up");
  fs::create_symlink("/dev/zero", f.model_dir / "zero.bin");
  fs::create_symlink(f.model_dir / "weights.bin", f.model_dir / "sub" / "inside.bin");
  for (const std::string location : {"link.bin", "up/secret.bin", "zero.bin"}) {
    SCOPED_TRACE(location);
    expect_file_error(f.write(external_model(location)), ErrorCode::invalid_model, {"model.onnx", "leaves"});
  }
  // A link that stays inside the folder is fine.
  auto model = import_onnx_file(f.write(external_model("sub/inside.bin")));
  EXPECT_TRUE(model.graph.find_value("w"));
}

TEST(HostileModels, ExternalDataThatIsNotARegularFileIsRefusedWithoutBlocking) {
  ModelFolder f;
  // A FIFO would block open(2) until a writer comes: forever.
  ASSERT_EQ(::mkfifo((f.model_dir / "pipe.bin").c_str(), 0644), 0);
  expect_file_error(f.write(external_model("pipe.bin")), ErrorCode::invalid_model,
                    {"model.onnx", "pipe.bin"});
  expect_file_error(f.write(external_model("sub")), ErrorCode::invalid_model, {"model.onnx", "sub"});
  expect_file_error(f.write(external_model("")), ErrorCode::invalid_model, {"model.onnx", "location"});
}

TEST(HostileModels, ExternalDataOffsetsAndLengthsAreChecked) {
  ModelFolder f;
  for (auto [offset, length] :
       std::vector<std::pair<int64_t, int64_t>>{{-1, 16},
                                                {65, 16},
                                                {60, 16},
                                                {0, 17},
                                                {std::numeric_limits<int64_t>::max(), 16},
                                                {8, std::numeric_limits<int64_t>::max()}}) {
    SCOPED_TRACE(std::to_string(offset) + "+" + std::to_string(length));
    expect_file_error(f.write(external_model("weights.bin", offset, length)), ErrorCode::invalid_model,
                      {"model.onnx", "'w'"});
  }
  // Not numbers at all.
  auto m = external_model("weights.bin");
  m.mutable_graph()->mutable_initializer(0)->mutable_external_data(1)->set_value("99999999999999999999999");
  expect_file_error(f.write(m), ErrorCode::invalid_model, {"model.onnx", "offset"});
}

#ifdef KILN_CLI
// Runs the CLI under a deadline; its exit code (128 + signal if killed).
struct CliResult {
  int status = -1;
  std::string output;
};
CliResult run_cli_with_deadline(std::vector<std::string> args, const fs::path& log, int seconds) {
  args.insert(args.begin(), KILN_CLI);
  Child child(args, log);
  for (int waited_ms = 0; !child.poll(); waited_ms += 20) {
    if (waited_ms > seconds * 1000) child.kill();
    ::usleep(20'000);
  }
  return {child.wait(), child.output()};
}

// A model may import cleanly and still ask for an absurd tensor at compile
// or run time: ConstantOfShape of 10^12 floats (4 TB). Every tensor kiln
// allocates is bounded by max_tensor_bytes() (16 GiB unless
// KILN_MAX_TENSOR_BYTES says otherwise): a clear invalid_model error naming
// the node and op, exit 1, never std::bad_alloc (exit 2) or an OOM kill.
TEST(HostileModels, TensorsAboveTheSizeLimitAreErrorsNamingTheNode) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(17);
  auto* g = m.mutable_graph();
  g->set_name("g");
  add_float(g->mutable_input(), "x", {1});
  auto* shape = g->add_initializer();
  shape->set_name("shape");
  shape->set_data_type(onnx::TensorProto::INT64);
  shape->add_dims(2);
  shape->add_int64_data(1'000'000);
  shape->add_int64_data(1'000'000);
  auto* fill = g->add_node();
  fill->set_op_type("ConstantOfShape");
  fill->set_name("terabytes");
  fill->add_input("shape");
  fill->add_output("big");
  auto* add = g->add_node();
  add->set_op_type("Add");
  add->set_name("add");
  add->add_input("big");
  add->add_input("x");
  add->add_output("y");
  add_float(g->mutable_output(), "y", {1'000'000, 1'000'000});
  kiln::testing::TempDir dir;
  kiln::testing::write_file(dir / "huge.onnx", bytes_of(m));
  for (const char* command : {"build", "run"}) {
    SCOPED_TRACE(command);
    auto result =
        run_cli_with_deadline({command, (dir / "huge.onnx").string(), "--cache-dir", (dir / "cache").string(),
                               "--optimization-level", "0", "--timing-cache", "-"},
                              dir / "cli.log", 120);
    EXPECT_EQ(result.status, 1) << result.output;
    for (const char* part :
         {"terabytes", "ConstantOfShape", "4000000000000 bytes", "KILN_MAX_TENSOR_BYTES"}) {
      EXPECT_NE(result.output.find(part), std::string::npos) << part << " not in: " << result.output;
    }
  }
}
#endif

}  // namespace
}  // namespace kiln::reliability
