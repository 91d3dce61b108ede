// The wire-format scanner that cuts initializer weights out of a model before
// protobuf parses it (raw_data_scanner.hpp), and the importer paths built on
// it: weights borrowed from the file's mapping or read into an aligned
// buffer must be the very bytes protobuf would have parsed, and malformed
// input must stay a clear error.
#include <gtest/gtest.h>

#include <onnx/onnx_pb.h>
#include <cstring>
#include <functional>

#include "frontend/onnx/onnx_importer.hpp"
#include "frontend/onnx/raw_data_scanner.hpp"
#include "test_helpers.hpp"
#include "zoo/model_builder.hpp"
#include "zoo/zoo.hpp"

namespace kiln {
namespace {

using testing::expect_error;

using frontend::elide_initializer_payloads;
using frontend::import_onnx_bytes;
using frontend::import_onnx_file;
using testing::TempDir;
using testing::write_file;

std::span<const std::byte> bytes_of(const std::string& s) { return std::as_bytes(std::span<const char>(s)); }

std::string raw_string(const Tensor& t) {
  return std::string(reinterpret_cast<const char*>(t.bytes().data()), t.bytes().size());
}

// Every initializer of `model` against the raw_data protobuf parses from
// `bytes`: same names, same bytes.
void expect_weights_match_protobuf(const frontend::ImportedModel& model, const std::string& bytes) {
  onnx::ModelProto proto;
  ASSERT_TRUE(proto.ParseFromString(bytes));
  ASSERT_GT(proto.graph().initializer_size(), 0);
  for (const auto& init : proto.graph().initializer()) {
    auto id = model.graph.find_value(init.name());
    ASSERT_TRUE(id) << init.name();
    const auto& tensor = model.graph.value(*id).initializer;
    ASSERT_TRUE(tensor) << init.name();
    ASSERT_TRUE(init.has_raw_data()) << init.name();
    EXPECT_TRUE(raw_string(*tensor) == init.raw_data()) << init.name() << " differs";
  }
}

// x[1, n] → MatMul(w0) → ... → y, with float weights w<i> of `dims`; `name`
// pads the weights' names so that their payloads land at other offsets.
std::string matmul_chain(int64_t n, int layers, const std::string& name = "w") {
  zoo::ModelBuilder b("chain", 17, 11);
  b.add_input("x", onnx::TensorProto::FLOAT, {{1, {}}, {n, {}}});
  std::string x = "x";
  for (int i = 0; i < layers; ++i) {
    std::string w = b.weight(name + std::to_string(i), {n, n}, 0.5f);
    x = b.node("MatMul", "matmul" + std::to_string(i), {x, w});
  }
  b.node("Relu", "relu", {x}, {}, {"y"});
  b.add_output("y", onnx::TensorProto::FLOAT, {{1, {}}, {n, {}}});
  return b.serialize();
}

TEST(RawDataScanner, PrunedModelIsTheOriginalWithPlaceholdersAndPayloadsAreItsRawData) {
  const std::string bytes = zoo::build_zoo_model("resnet_tiny", {}).onnx_bytes;
  auto elided = elide_initializer_payloads(bytes_of(bytes));
  ASSERT_TRUE(elided);
  EXPECT_LT(elided->pruned.size(), bytes.size() / 4);

  onnx::ModelProto original;
  ASSERT_TRUE(original.ParseFromString(bytes));
  ASSERT_EQ(elided->initializer_payloads.size(), static_cast<size_t>(original.graph().initializer_size()));
  int cut = 0;
  for (int i = 0; i < original.graph().initializer_size(); ++i) {
    auto* init = original.mutable_graph()->mutable_initializer(i);
    const auto& payload = elided->initializer_payloads[static_cast<size_t>(i)];
    if (init->raw_data().size() < frontend::k_min_elided_raw_data) {
      EXPECT_FALSE(payload) << init->name() << " is small and stays in the model";
      continue;
    }
    ASSERT_TRUE(payload) << init->name();
    std::string cut_bytes(reinterpret_cast<const char*>(payload->data()), payload->size());
    EXPECT_TRUE(cut_bytes == init->raw_data()) << init->name();
    // The payload is a view of the scanned bytes, not a copy.
    EXPECT_GE(payload->data(), bytes_of(bytes).data());
    EXPECT_LE(payload->data() + payload->size(), bytes_of(bytes).data() + bytes.size());
    init->set_raw_data(std::string(1, '\0'));
    ++cut;
  }
  EXPECT_GT(cut, 5);
  onnx::ModelProto pruned;
  ASSERT_TRUE(pruned.ParseFromString(elided->pruned));
  EXPECT_EQ(pruned.SerializeAsString(), original.SerializeAsString());
}

TEST(RawDataScanner, ImportedWeightsEqualProtobufsBitForBitOnARealModel) {
  TempDir dir;
  const std::string bytes = zoo::build_zoo_model("resnet_tiny", {}).onnx_bytes;
  write_file(dir / "tiny.onnx", bytes);
  auto from_file = import_onnx_file(dir / "tiny.onnx");
  expect_weights_match_protobuf(from_file, bytes);
  auto from_bytes = import_onnx_bytes(bytes_of(bytes), "tiny.onnx");
  expect_weights_match_protobuf(from_bytes, bytes);
}

TEST(RawDataScanner, WeightsAtEveryAlignmentImportIntact) {
  // Names of 1 to 8 characters shift the payloads through every offset
  // modulo 8: some are borrowed from the mapping, the rest read into the
  // aligned buffer, and every tensor's data is aligned for float.
  TempDir dir;
  for (int pad = 1; pad <= 8; ++pad) {
    const std::string bytes = matmul_chain(24, 3, std::string(static_cast<size_t>(pad), 'w'));
    auto path = dir / ("chain" + std::to_string(pad) + ".onnx");
    write_file(path, bytes);
    auto model = import_onnx_file(path);
    expect_weights_match_protobuf(model, bytes);
    for (size_t i = 0; i < model.graph.num_values(); ++i) {
      const auto& v = model.graph.value(static_cast<ir::ValueId>(i));
      if (!v.initializer) continue;
      EXPECT_TRUE(v.initializer->is_borrowed()) << v.name;
      EXPECT_EQ(reinterpret_cast<uintptr_t>(v.initializer->bytes().data()) % alignof(float), 0u) << v.name;
    }
  }
}

TEST(RawDataScanner, AModelFromBytesKeepsItsWeightsAfterTheBufferIsGone) {
  std::string bytes = matmul_chain(32, 2);
  const std::string kept = bytes;
  auto model = import_onnx_bytes(bytes_of(bytes), "chain.onnx");
  // The weights were copied: overwriting and freeing the caller's buffer
  // changes nothing.
  std::fill(bytes.begin(), bytes.end(), '\x7f');
  bytes.clear();
  bytes.shrink_to_fit();
  expect_weights_match_protobuf(model, kept);
}

TEST(RawDataScanner, TruncatedAndOverlongPayloadsAreErrors) {
  TempDir dir;
  const std::string bytes = matmul_chain(32, 2);
  auto elided = elide_initializer_payloads(bytes_of(bytes));
  ASSERT_TRUE(elided);
  ASSERT_TRUE(elided->initializer_payloads.back());
  const auto last = *elided->initializer_payloads.back();
  const size_t middle = static_cast<size_t>(last.data() - bytes_of(bytes).data()) + last.size() / 2;
  // Cut inside the last weight's payload: its length runs past the end.
  const std::string cut = bytes.substr(0, middle);
  EXPECT_FALSE(elide_initializer_payloads(bytes_of(cut)));
  write_file(dir / "cut.onnx", cut);
  expect_error([&] { import_onnx_file(dir / "cut.onnx"); }, ErrorCode::invalid_model, {"cut.onnx"});
  expect_error([&] { import_onnx_bytes(bytes_of(cut), "cut.onnx"); }, ErrorCode::invalid_model, {"cut.onnx"});
}

TEST(RawDataScanner, ElidedRawDataOfTheWrongSizeNamesTheTensorAndItsTrueSize) {
  // A large raw_data for a 4x4 float tensor: the error counts the payload's
  // real bytes, not the placeholder's one.
  zoo::ModelBuilder b("wrong", 17, 3);
  b.add_input("x", onnx::TensorProto::FLOAT, {{4, {}}, {4, {}}});
  std::string w = b.weight("w", {4, 4}, 1.0f);
  b.node("Add", "add", {"x", w}, {}, {"y"});
  b.add_output("y", onnx::TensorProto::FLOAT, {{4, {}}, {4, {}}});
  onnx::ModelProto m = b.model();
  m.mutable_graph()->mutable_initializer(0)->set_raw_data(std::string(4000, '\1'));
  const std::string bytes = m.SerializeAsString();
  ASSERT_TRUE(elide_initializer_payloads(bytes_of(bytes)));
  TempDir dir;
  write_file(dir / "wrong.onnx", bytes);
  for (auto import : {std::function<void()>([&] { import_onnx_file(dir / "wrong.onnx"); }),
                      std::function<void()>([&] { import_onnx_bytes(bytes_of(bytes), "wrong.onnx"); })}) {
    expect_error(import, ErrorCode::invalid_model, {"wrong.onnx", "initializer 'w'", "4000", "64"});
  }
}

TEST(RawDataScanner, TheCheckerStillSeesElidedData) {
  // raw_data and float_data together, and data in a 0-element tensor: the
  // checker refuses both, placeholder or not.
  auto base = [] {
    zoo::ModelBuilder b("checked", 17, 5);
    b.add_input("x", onnx::TensorProto::FLOAT, {{512, {}}});
    std::string w = b.weight("w", {512}, 1.0f);
    b.node("Add", "add", {"x", w}, {}, {"y"});
    b.add_output("y", onnx::TensorProto::FLOAT, {{512, {}}});
    return onnx::ModelProto(b.model());
  };
  auto both = base();
  both.mutable_graph()->mutable_initializer(0)->add_float_data(1.0f);
  auto empty = base();
  empty.mutable_graph()->mutable_initializer(0)->set_dims(0, 0);
  for (const auto& m : {both, empty}) {
    const std::string bytes = m.SerializeAsString();
    ASSERT_TRUE(elide_initializer_payloads(bytes_of(bytes)));
    expect_error([&] { import_onnx_bytes(bytes_of(bytes), "checked.onnx"); }, ErrorCode::invalid_model,
                 {"checked.onnx", "checker", "tensor name: w"});
  }
}

void append_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

std::string length_delimited(int field, const std::string& payload) {
  std::string out;
  append_varint(out, static_cast<uint64_t>(field) << 3 | 2);
  append_varint(out, payload.size());
  return out + payload;
}

TEST(RawDataScanner, RepeatedFieldsMergeAsProtobufMergesThem) {
  // The initializer comes in a second occurrence of the graph field, and
  // its tensor carries raw_data twice: protobuf appends the graph's
  // initializers and keeps the last raw_data. The import must agree.
  zoo::ModelBuilder b("merged", 17, 7);
  b.add_input("x", onnx::TensorProto::FLOAT, {{512, {}}});
  std::string w = b.weight("w", {512}, 1.0f);
  b.node("Add", "add", {"x", w}, {}, {"y"});
  b.add_output("y", onnx::TensorProto::FLOAT, {{512, {}}});
  onnx::ModelProto m = b.model();
  onnx::TensorProto tensor = m.graph().initializer(0);
  m.mutable_graph()->clear_initializer();
  std::string first(2048, '\0'), last(2048, '\0');
  for (size_t i = 0; i < 512; ++i) {
    const float a = 1.0f, z = static_cast<float>(i);
    std::memcpy(first.data() + 4 * i, &a, 4);
    std::memcpy(last.data() + 4 * i, &z, 4);
  }
  tensor.set_raw_data(last);
  const std::string tensor_bytes = length_delimited(9, first) + tensor.SerializeAsString();
  const std::string bytes = m.SerializeAsString() + length_delimited(7, length_delimited(5, tensor_bytes));

  onnx::ModelProto parsed;
  ASSERT_TRUE(parsed.ParseFromString(bytes));
  ASSERT_EQ(parsed.graph().initializer_size(), 1);
  ASSERT_TRUE(parsed.graph().initializer(0).raw_data() == last);
  auto elided = elide_initializer_payloads(bytes_of(bytes));
  ASSERT_TRUE(elided);
  ASSERT_EQ(elided->initializer_payloads.size(), 1u);

  auto model = import_onnx_bytes(bytes_of(bytes), "merged.onnx");
  expect_weights_match_protobuf(model, bytes);
  EXPECT_EQ(model.graph.value(*model.graph.find_value("w")).initializer->data<float>()[511], 511.0f);
}

TEST(RawDataScanner, InputTheScannerDoesNotWalkGoesToProtobufWhole) {
  const std::string valid = matmul_chain(32, 1);
  ASSERT_TRUE(elide_initializer_payloads(bytes_of(valid)));
  // A group (wire type 3) at the top level, wire types 6 and 7, field 0 and
  // an unterminated varint: nothing to elide, protobuf decides.
  for (std::string junk : {std::string("\x0b\x0c", 2), std::string("\x0e\x00", 2), std::string("\x0f\x00", 2),
                           std::string("\x00\x00", 2), std::string("\x08\xff\xff", 3)}) {
    EXPECT_FALSE(elide_initializer_payloads(bytes_of(junk + valid)));
  }
  // A small model has nothing worth eliding.
  EXPECT_FALSE(elide_initializer_payloads(bytes_of(matmul_chain(4, 1))));
}

TEST(RawDataScanner, ScanAgreesWithProtobufOnCorruptedModels) {
  // Every byte of a model with two elided weights, overwritten with values
  // that break tags, lengths and varints: where the scanner returns a pruned
  // model, protobuf must accept it exactly when it accepts the corrupted
  // original, with the same initializers and raw_data. And the import ends
  // in a model or a kiln::Error, never anything else.
  const std::string valid = matmul_chain(16, 2);
  ASSERT_TRUE(elide_initializer_payloads(bytes_of(valid)));
  int scanned = 0;
  for (size_t at = 0; at < valid.size(); at += (at < 600 || at + 600 > valid.size()) ? 1 : 97) {
    for (unsigned char value : {0x00, 0x01, 0x7f, 0x80, 0xff}) {
      std::string bytes = valid;
      bytes[at] = static_cast<char>(value);
      onnx::ModelProto original;
      const bool original_ok = original.ParseFromString(bytes);
      auto elided = elide_initializer_payloads(bytes_of(bytes), 64);
      if (elided) {
        ++scanned;
        onnx::ModelProto pruned;
        ASSERT_EQ(pruned.ParseFromString(elided->pruned), original_ok)
            << "byte " << at << " = " << int(value);
        if (original_ok) {
          ASSERT_EQ(static_cast<size_t>(pruned.graph().initializer_size()),
                    elided->initializer_payloads.size());
          for (int i = 0; i < original.graph().initializer_size(); ++i) {
            const auto& payload = elided->initializer_payloads[static_cast<size_t>(i)];
            const std::string& raw = original.graph().initializer(i).raw_data();
            if (payload) {
              EXPECT_TRUE(std::string(reinterpret_cast<const char*>(payload->data()), payload->size()) == raw)
                  << "byte " << at;
            } else {
              EXPECT_TRUE(pruned.graph().initializer(i).raw_data() == raw) << "byte " << at;
            }
          }
        }
      }
      try {
        (void)import_onnx_bytes(bytes_of(bytes), "corrupt.onnx");
      } catch (const Error&) {
      }
    }
  }
  EXPECT_GT(scanned, 1000);
}

}  // namespace
}  // namespace kiln
