// Small helpers over oneDNN's C++ API shared by the CPU backend's files:
// memory descriptors for kiln shapes, layout tests, readable descriptor
// strings (for timing-cache keys and logs), and the mapping of ONNX
// activations to oneDNN eltwise algorithms.
//
// Stateless; every function is thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "ir/graph.hpp"

namespace kiln::cpu {

using Md = dnnl::memory::desc;
using Dt = dnnl::memory::data_type;
using Dims = dnnl::memory::dims;

Dims to_dims(std::span<const int64_t> shape);
// Dense row-major; a rank-0 shape becomes {1} (oneDNN has no scalars).
Md plain_md(std::span<const int64_t> shape, Dt dt);
Md plain_md(const Dims& dims, Dt dt);
// Row-major strides for `dims`.
Dims dense_strides(const Dims& dims);

// No inner blocks (a strided view, possibly permuted).
bool is_strided(const Md& md);
// Dense row-major, exactly what plain_md gives.
bool is_plain(const Md& md);
// `md`'s layout with another data type (same dims and blocking).
Md with_data_type(const Md& md, Dt dt);
// `like`'s layout (its stride order and inner blocks, dense) over other
// dims of the same rank: a broadcast operand or a concat input laid out like
// its partner, which oneDNN's jit kernels need (given a plain vector beside a
// blocked or permuted tensor, binary falls back to its reference kernel).
// nullopt for layouts this cannot describe (offset views, non-blocked).
std::optional<Md> layout_like(const Md& like, const Dims& dims);
// The dims of a blocked descriptor as its bytes nest, outermost first: each
// logical dim's outer part (its padded size over its block) in the order of
// `order` (logical dims, outermost first), then the inner blocks. nhwc
// [N,C,H,W] is [N,H,W,C]; nChw16c is [N,C/16,H,W,16]. nullopt unless the
// bytes are dense in that order (a view with gaps, a non-blocked format).
std::optional<Dims> nested_dims(const Md& md, std::span<const size_t> order);
// A blocked descriptor's logical dims by stride, outermost first (ties keep
// the logical order).
std::vector<size_t> stride_order(const Md& md);
// Whether two blocked descriptors address the same bytes for every element
// (data type, dims, inner blocks and offset equal, and the strides of every
// dim that has more than one outer step): a stride of a size-1 dim never
// matters, so [1,C,H,W] in nChw16c is one layout whatever its batch stride.
bool same_addressing(const Md& a, const Md& b);
// The window of `whole` over `dims` at `offsets`, where it is itself a dense
// tensor in `whole`'s layout: that dense descriptor (layout_like) and the
// byte at which it starts in `whole`'s storage. A whole-block channel window
// of NCHW or nChw16c is one at batch 1 (its channels are outermost); nhwc's,
// or any with a gap between images, is not (nullopt).
struct DenseWindow {
  Md md;
  size_t byte_offset = 0;
};
std::optional<DenseWindow> dense_window(const Md& whole, const Dims& dims, const Dims& offsets);

// "f32[1,64,56,56]{s:200704,1,3584,64}" or with inner blocks "{...|b:1x16}".
std::string md_string(const Md& md);

std::optional<Dt> to_dnnl(DType dtype);

// An ONNX activation as a oneDNN eltwise algorithm with its alpha and beta.
struct Eltwise {
  dnnl::algorithm alg;
  float alpha = 0;
  float beta = 0;
  // Then clip to [0, 1]: HardSigmoid is alpha * x + beta clipped, and
  // oneDNN 2.6 has no single algorithm for it (a second eltwise post-op).
  bool clip_unit = false;
  // Then times this: Selu is gamma * elu(x) (an eltwise post-op's scale; a
  // second, linear primitive for a layer of its own).
  float scale = 1;
  // First times this: Celu is alpha * elu(x / alpha) (a layer of its own
  // only: a linear primitive before the algorithm).
  float input_scale = 1;
};
// nullopt (with `why` set) when oneDNN has no exact equivalent. Clip bounds
// must be constants (`graph` supplies them).
std::optional<Eltwise> eltwise_for(const ir::Graph& graph, const ir::Node& node, std::string* why = nullptr);
std::string eltwise_name(const Eltwise& e);

std::string dnnl_version_string();  // "oneDNN 2.6.3"
std::string isa_string();           // "avx512_core_bf16"

}  // namespace kiln::cpu
