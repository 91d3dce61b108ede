// BERT encoders (bert_base, bert_tiny, bert_tiny_decomposed), laid out op by
// op as torch.onnx exports Hugging Face's BertModel (no pooler) at opset 17:
//
//   embeddings: Gather(word) + Gather(token type) + Gather(position) → LN,
//     with position and token-type ids sliced from the model's constant
//     buffers (arange and zeros) to the input's sequence length
//     (Shape → Gather → Unsqueeze → Slice), as HF does when token_type_ids
//     is not passed;
//   extended mask: Unsqueeze → Cast → Sub(1, ·) → Mul(-10000);
//   per layer: Linear as MatMul (weight stored transposed, [in, out]) + Add;
//     Q/K/V Reshape to [batch, seq, heads, head_dim] with the target built
//     from Shape/Slice/Concat of the hidden state, Transpose; Q·Kᵀ, Div by
//     sqrt(head_dim), Add mask, Softmax(-1), MatMul V, Transpose/Reshape
//     back; residual Add → LN; FFN with Gelu as x * (1 + Erf(x / sqrt 2)) / 2.
//
// LN is one LayerNormalization node, or with decomposed_layer_norm the
// ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add chain that exporters
// emit below opset 17.
//
// Weights follow BERT's init: N(0, 0.02²) for linears and embeddings (biases
// too, rather than zeros, so a compiler bug in a bias Add shows), LayerNorm
// gamma ≈ 1 and beta ≈ 0.
#include <onnx/onnx_pb.h>
#include <cmath>
#include <numeric>

#include "kiln/error.hpp"
#include "zoo/model_builder.hpp"
#include "zoo/zoo.hpp"

namespace kiln::zoo {

namespace {

constexpr float k_init_std = 0.02f;
constexpr float k_layer_norm_epsilon = 1e-12f;
constexpr float k_mask_value = -10000.0f;

class BertWriter {
 public:
  BertWriter(ModelBuilder& b, const BertConfig& config) : m_b(b), m_c(config) {
    const int64_t head_dim = m_c.hidden / m_c.heads;
    // Scalars and small shape constants, shared by every use (an exporter
    // with constant folding on dedups them the same way). None is a parameter.
    m_one = m_b.float_constant("const_one", {}, {1.0f});
    m_half = m_b.float_constant("const_half", {}, {0.5f});
    m_sqrt2 = m_b.float_constant("const_sqrt2", {}, {static_cast<float>(std::sqrt(2.0))});
    m_scale = m_b.float_constant("const_attention_scale", {}, {std::sqrt(static_cast<float>(head_dim))});
    m_mask_value = m_b.float_constant("const_mask_value", {}, {k_mask_value});
    m_zero_1d = m_b.int64_constant("const_zero_1d", {1}, {0});
    m_one_1d = m_b.int64_constant("const_one_1d", {1}, {1});
    m_minus_one_1d = m_b.int64_constant("const_minus_one_1d", {1}, {-1});
    m_heads_shape = m_b.int64_constant("const_heads_shape", {2}, {m_c.heads, head_dim});
    m_hidden_shape = m_b.int64_constant("const_hidden_shape", {1}, {m_c.hidden});
    if (m_c.decomposed_layer_norm) {
      m_two = m_b.float_constant("const_two", {}, {2.0f});
      m_epsilon = m_b.float_constant("const_layer_norm_epsilon", {}, {k_layer_norm_epsilon});
    }
  }

  std::string embeddings(const std::string& input_ids) {
    const std::string p = "embeddings";
    // The sequence length as a 1-d tensor: Shape → Gather(1) → Unsqueeze.
    std::string shape = m_b.node("Shape", p + "/Shape", {input_ids});
    std::string index = m_b.int64_constant("const_sequence_axis", {}, {1});
    std::string seq = m_b.node("Gather", p + "/Gather_seq", {shape, index}, {Attr::of("axis", int64_t{0})});
    seq = m_b.node("Unsqueeze", p + "/Unsqueeze", {seq, m_zero_1d});
    // HF's registered buffers: position_ids = arange(max_positions),
    // token_type_ids = zeros, both [1, max_positions], sliced to [1, seq].
    std::vector<int64_t> positions(static_cast<size_t>(m_c.max_positions));
    std::iota(positions.begin(), positions.end(), int64_t{0});
    std::string position_buffer = m_b.int64_constant(p + ".position_ids", {1, m_c.max_positions}, positions);
    std::string type_buffer = m_b.int64_constant(p + ".token_type_ids", {1, m_c.max_positions},
                                                 std::vector<int64_t>(positions.size(), 0));
    std::string position_ids =
        m_b.node("Slice", p + "/Slice_position_ids", {position_buffer, m_zero_1d, seq, m_one_1d});
    std::string type_ids =
        m_b.node("Slice", p + "/Slice_token_type_ids", {type_buffer, m_zero_1d, seq, m_one_1d});

    std::string word_table = m_b.weight(p + ".word_embeddings.weight", {m_c.vocab, m_c.hidden}, k_init_std);
    std::string position_table =
        m_b.weight(p + ".position_embeddings.weight", {m_c.max_positions, m_c.hidden}, k_init_std);
    std::string type_table =
        m_b.weight(p + ".token_type_embeddings.weight", {m_c.type_vocab, m_c.hidden}, k_init_std);
    std::string words = m_b.node("Gather", p + ".word_embeddings/Gather", {word_table, input_ids});
    std::string types = m_b.node("Gather", p + ".token_type_embeddings/Gather", {type_table, type_ids});
    std::string x = m_b.node("Add", p + "/Add", {words, types});
    std::string positions_embedded =
        m_b.node("Gather", p + ".position_embeddings/Gather", {position_table, position_ids});
    x = m_b.node("Add", p + "/Add_1", {x, positions_embedded});
    return layer_norm(p + ".LayerNorm", x);
  }

  // [batch, seq] 0/1 mask → additive [batch, 1, 1, seq] mask: 0 to keep, -10000 to drop.
  std::string extended_mask(const std::string& attention_mask) {
    std::string axes = m_b.int64_constant("const_mask_axes", {2}, {1, 2});
    std::string m = m_b.node("Unsqueeze", "extended_mask/Unsqueeze", {attention_mask, axes});
    m = m_b.node("Cast", "extended_mask/Cast", {m}, {Attr::of("to", int64_t{onnx::TensorProto::FLOAT})});
    m = m_b.node("Sub", "extended_mask/Sub", {m_one, m});
    return m_b.node("Mul", "extended_mask/Mul", {m, m_mask_value});
  }

  std::string layer(int index, const std::string& x, const std::string& mask,
                    const std::string& output_name) {
    const std::string p = "encoder.layer." + std::to_string(index);
    const std::string att = p + ".attention.self";
    // [batch, seq] of the hidden state, for the Reshape targets.
    std::string shape = m_b.node("Shape", att + "/Shape", {x});
    std::string input_shape =
        m_b.node("Slice", att + "/Slice", {shape, m_zero_1d, m_minus_one_1d, m_zero_1d});
    std::string heads_shape =
        m_b.node("Concat", att + "/Concat", {input_shape, m_heads_shape}, {Attr::of("axis", int64_t{0})});

    auto split_heads = [&](const std::string& name, std::vector<int64_t> perm) {
      std::string y = linear(att + "." + name, x, m_c.hidden, m_c.hidden);
      y = m_b.node("Reshape", att + "." + name + "/Reshape", {y, heads_shape});
      return m_b.node("Transpose", att + "." + name + "/Transpose", {y}, {Attr::of("perm", std::move(perm))});
    };
    std::string q = split_heads("query", {0, 2, 1, 3});
    std::string k = split_heads("key", {0, 2, 3, 1});  // Kᵀ directly: [batch, heads, head_dim, seq]
    std::string v = split_heads("value", {0, 2, 1, 3});

    std::string scores = m_b.node("MatMul", att + "/MatMul", {q, k});
    scores = m_b.node("Div", att + "/Div", {scores, m_scale});
    scores = m_b.node("Add", att + "/Add", {scores, mask});
    std::string probs = m_b.node("Softmax", att + "/Softmax", {scores}, {Attr::of("axis", int64_t{-1})});
    std::string context = m_b.node("MatMul", att + "/MatMul_1", {probs, v});
    context = m_b.node("Transpose", att + "/Transpose", {context},
                       {Attr::of("perm", std::vector<int64_t>{0, 2, 1, 3})});
    std::string merged_shape =
        m_b.node("Concat", att + "/Concat_1", {input_shape, m_hidden_shape}, {Attr::of("axis", int64_t{0})});
    context = m_b.node("Reshape", att + "/Reshape", {context, merged_shape});

    std::string attended = linear(p + ".attention.output.dense", context, m_c.hidden, m_c.hidden);
    attended = m_b.node("Add", p + ".attention.output/Add", {attended, x});
    attended = layer_norm(p + ".attention.output.LayerNorm", attended);

    std::string h = linear(p + ".intermediate.dense", attended, m_c.hidden, m_c.intermediate);
    h = gelu(p + ".intermediate", h);
    h = linear(p + ".output.dense", h, m_c.intermediate, m_c.hidden);
    h = m_b.node("Add", p + ".output/Add", {h, attended});
    return layer_norm(p + ".output.LayerNorm", h, output_name);
  }

 private:
  // nn.Linear as exported for a 3-d input: MatMul with the transposed weight, then Add.
  std::string linear(const std::string& prefix, const std::string& x, int64_t in, int64_t out) {
    std::string w = m_b.weight(prefix + ".weight", {in, out}, k_init_std);
    std::string bias = m_b.weight(prefix + ".bias", {out}, k_init_std);
    std::string y = m_b.node("MatMul", prefix + "/MatMul", {x, w});
    return m_b.node("Add", prefix + "/Add", {bias, y});
  }

  // The exact-erf Gelu that torch exports: x * 0.5 * (1 + erf(x / sqrt 2)).
  std::string gelu(const std::string& prefix, const std::string& x) {
    std::string y = m_b.node("Div", prefix + "/Div", {x, m_sqrt2});
    y = m_b.node("Erf", prefix + "/Erf", {y});
    y = m_b.node("Add", prefix + "/Add", {y, m_one});
    y = m_b.node("Mul", prefix + "/Mul", {x, y});
    return m_b.node("Mul", prefix + "/Mul_1", {y, m_half});
  }

  std::string layer_norm(const std::string& prefix, const std::string& x,
                         const std::string& output_name = {}) {
    std::vector<std::string> outputs;
    if (!output_name.empty()) outputs.push_back(output_name);
    std::string gamma = m_b.uniform_weight(prefix + ".weight", {m_c.hidden}, 0.9f, 1.1f);
    std::string beta = m_b.weight(prefix + ".bias", {m_c.hidden}, k_init_std);
    if (!m_c.decomposed_layer_norm) {
      return m_b.node("LayerNormalization", prefix + "/LayerNormalization", {x, gamma, beta},
                      {Attr::of("axis", int64_t{-1}), Attr::of("epsilon", k_layer_norm_epsilon)}, outputs);
    }
    const std::vector<Attr> last_axis = {Attr::of("axes", std::vector<int64_t>{-1}),
                                         Attr::of("keepdims", int64_t{1})};
    std::string mean = m_b.node("ReduceMean", prefix + "/ReduceMean", {x}, last_axis);
    std::string centered = m_b.node("Sub", prefix + "/Sub", {x, mean});
    std::string squared = m_b.node("Pow", prefix + "/Pow", {centered, m_two});
    std::string variance = m_b.node("ReduceMean", prefix + "/ReduceMean_1", {squared}, last_axis);
    std::string y = m_b.node("Add", prefix + "/Add", {variance, m_epsilon});
    y = m_b.node("Sqrt", prefix + "/Sqrt", {y});
    y = m_b.node("Div", prefix + "/Div", {centered, y});
    y = m_b.node("Mul", prefix + "/Mul", {y, gamma});
    return m_b.node("Add", prefix + "/Add_1", {y, beta}, {}, outputs);
  }

  ModelBuilder& m_b;
  const BertConfig& m_c;
  std::string m_one, m_half, m_sqrt2, m_scale, m_mask_value, m_two, m_epsilon;
  std::string m_zero_1d, m_one_1d, m_minus_one_1d, m_heads_shape, m_hidden_shape;
};

}  // namespace

ZooModel build_bert(const std::string& name, const BertConfig& config, const ZooOptions& options) {
  if (config.layers < 1 || config.heads < 1 || config.hidden % config.heads != 0) {
    throw Error(ErrorCode::internal,
                "zoo: BERT config '" + name + "' needs layers >= 1 and heads dividing hidden");
  }
  ModelBuilder b(name, 17, options.seed);
  IoDim batch = options.batch ? IoDim{*options.batch, {}} : IoDim{0, "batch"};
  const IoDim sequence{0, "sequence"};
  b.add_input("input_ids", onnx::TensorProto::INT64, {batch, sequence});
  b.add_input("attention_mask", onnx::TensorProto::INT64, {batch, sequence});
  BertWriter w(b, config);
  std::string x = w.embeddings("input_ids");
  std::string mask = w.extended_mask("attention_mask");
  for (int i = 0; i < config.layers; ++i) {
    x = w.layer(i, x, mask, i + 1 == config.layers ? "last_hidden_state" : std::string());
  }
  b.add_output("last_hidden_state", onnx::TensorProto::FLOAT, {batch, sequence, {config.hidden, {}}});
  return {b.serialize(), b.parameter_count()};
}

}  // namespace kiln::zoo
