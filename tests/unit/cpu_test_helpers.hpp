// Helpers shared by the cpu backend's tests: zoo models imported in memory,
// deterministic inputs, and output comparisons against the reference.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "backends/backend.hpp"
#include "builder/timing_cache.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "kiln/tensor.hpp"
#include "passes/passes.hpp"
#include "zoo/zoo.hpp"

namespace kiln::testing {

// The zoo model `name` with `seed`'s weights; `batch` fixes the batch dim
// (nullopt: symbolic).
inline ir::Graph import_zoo(const std::string& name, uint64_t seed,
                            std::optional<int64_t> batch = std::nullopt) {
  zoo::ZooOptions o;
  o.seed = seed;
  o.batch = batch;
  zoo::ZooModel m = zoo::build_zoo_model(name, o);
  return frontend::import_onnx_bytes(std::as_bytes(std::span<const char>(m.onnx_bytes)), name).graph;
}

// A [batch, 3, size, size] image of sin(0.37 i) + phase: smooth, signed, no zeros.
inline Tensor sine_images(int64_t batch, int64_t size, double phase = 0.0) {
  std::vector<float> pixels(static_cast<size_t>(batch * 3 * size * size));
  for (size_t i = 0; i < pixels.size(); ++i) {
    pixels[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i) + phase));
  }
  return Tensor::from_values<float>({batch, 3, size, size}, pixels);
}

// BERT's inputs: token ids spread over the first 1000 of the vocabulary, and
// an attention mask of ones (with batch > 1, the second sequence's last
// `masked` tokens masked out).
inline std::vector<Tensor> bert_inputs(int64_t batch, int64_t seq, int64_t masked = 5) {
  std::vector<int64_t> ids(static_cast<size_t>(batch * seq));
  std::vector<int64_t> mask(ids.size(), 1);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>((i * 7919 + 13) % 1000);
  if (batch > 1) {
    for (int64_t s = std::max<int64_t>(seq - masked, 1); s < seq; ++s) mask[static_cast<size_t>(seq + s)] = 0;
  }
  return {Tensor::from_values<int64_t>({batch, seq}, ids), Tensor::from_values<int64_t>({batch, seq}, mask)};
}

// Fixed input specs for `inputs`, named after the graph's inputs.
inline std::vector<InputSpec> fixed_specs(const ir::Graph& g, const std::vector<Tensor>& inputs) {
  std::vector<InputSpec> specs;
  for (size_t i = 0; i < inputs.size(); ++i) {
    specs.push_back(InputSpec::fixed(g.value(g.inputs()[i]).name, inputs[i].dtype(), inputs[i].shape()));
  }
  return specs;
}

// An engine of `backend` for `graph` (lowered here) at the fixed shapes of
// `inputs`, built at optimization `level` with a private timing cache.
inline std::unique_ptr<Engine> build_engine(Backend& backend, const ir::Graph& graph,
                                            const std::vector<Tensor>& inputs,
                                            const CompileSettings& settings) {
  builder::TimingCache cache;
  return backend.build(passes::lower(graph), fixed_specs(graph, inputs), settings, cache);
}

inline std::unique_ptr<Engine> build_engine(Backend& backend, const ir::Graph& graph,
                                            const std::vector<Tensor>& inputs, int level) {
  CompileSettings settings;
  settings.optimization_level = level;
  return build_engine(backend, graph, inputs, settings);
}

// Level 0 with bf16 kernels allowed: every conv's first choice is bf16.
inline std::unique_ptr<Engine> build_bf16_engine(Backend& backend, const ir::Graph& graph,
                                                 const std::vector<Tensor>& inputs) {
  CompileSettings settings;
  settings.optimization_level = 0;
  settings.enabled_precisions = {Precision::fp32, Precision::bf16};
  return build_engine(backend, graph, inputs, settings);
}

// Largest |got - want| over max|want|; 1e9 for a shape mismatch or a
// non-finite value.
inline double relative_error(const Tensor& got, const Tensor& want) {
  if (got.shape() != want.shape()) return 1e9;
  auto g = got.data<float>();
  auto w = want.data<float>();
  double max_ref = 1e-12;
  double max_diff = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    max_ref = std::max(max_ref, static_cast<double>(std::fabs(w[i])));
    const double d =
        std::isfinite(g[i]) ? std::fabs(static_cast<double>(g[i]) - static_cast<double>(w[i])) : 1e9;
    max_diff = std::max(max_diff, d);
  }
  return max_diff / max_ref;
}

inline bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::equal(a.bytes().begin(), a.bytes().end(), b.bytes().begin());
}

}  // namespace kiln::testing
