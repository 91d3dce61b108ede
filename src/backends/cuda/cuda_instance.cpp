#include "backends/cuda/cuda_instance.hpp"

#include <algorithm>
#include <numeric>
#include <string>

#include "backends/cuda/cuda_layers.hpp"
#include "backends/cuda/log_timing.hpp"
#include "backends/cuda/precision.hpp"
#include "util/log.hpp"

namespace kiln::cuda {

using ir::k_no_value;
using ir::ValueId;

namespace {

constexpr size_t k_alignment = 256;

size_t aligned(size_t bytes) { return (bytes + k_alignment - 1) / k_alignment * k_alignment; }

// The instance's value tables over the graph's values and the layout copies
// (each of its source's shape), and its arena: every activation's lifetime
// over layer indices, then a greedy placement by size. Views share their
// input's memory (`root`); constants and values only shape layers read get
// none.
void plan_arena(const Plan& plan, const ActivationLayouts& layouts,
                const std::vector<std::optional<Tensor>>& host, Instance& inst) {
  const ir::Graph& g = plan.graph;
  // The graph's values, then the layout copies, each of its source's shape.
  const size_t nv = layouts.num_values();
  inst.shapes.resize(nv);
  for (const LayoutConversion& c : layouts.conversions())
    inst.shapes[static_cast<size_t>(c.copy)] = inst.shapes[static_cast<size_t>(c.from)];
  inst.root.resize(nv);
  std::iota(inst.root.begin(), inst.root.end(), 0);
  // Lifetimes over layer indices: a graph input lives from -1, an output to the end.
  const auto n_layers = static_cast<int64_t>(plan.layers.size());
  std::vector<int64_t> first(nv, -2), last(nv, -2);
  for (ValueId v : g.inputs()) first[static_cast<size_t>(v)] = -1;
  for (int64_t i = 0; i < n_layers; ++i) {
    const Layer& layer = plan.layers[static_cast<size_t>(i)];
    const ir::Node& anchor = g.node(layer.anchor());
    // A shape layer reads shapes, not memory, and its outputs live on the host.
    if (layer.kind == LayerKind::shape) continue;
    const auto li = static_cast<size_t>(i);
    if (layer.kind == LayerKind::view) {
      inst.root[static_cast<size_t>(layer.output)] =
          inst.root[static_cast<size_t>(layouts.read(li, anchor.inputs[0]))];
    } else {
      first[static_cast<size_t>(layer.output)] = i;
    }
    for (ir::NodeId id : layer.nodes) {
      for (ValueId in : g.node(id).inputs) {
        if (in == k_no_value || host[static_cast<size_t>(in)]) continue;
        auto& l = last[static_cast<size_t>(inst.root[static_cast<size_t>(layouts.read(li, in))])];
        l = std::max(l, i);
      }
    }
    // Layout copies made after this layer live from it on; so does their source.
    for (size_t c : layouts.after(li)) {
      const LayoutConversion& conv = layouts.conversions()[c];
      first[static_cast<size_t>(conv.copy)] = i;
      auto& l = last[static_cast<size_t>(inst.root[static_cast<size_t>(conv.from)])];
      l = std::max(l, i);
    }
  }
  // Copies made before a layer (of graph inputs) live from that layer on.
  for (const LayoutConversion& conv : layouts.conversions()) {
    if (!conv.before) continue;
    first[static_cast<size_t>(conv.copy)] = static_cast<int64_t>(conv.layer);
    auto& l = last[static_cast<size_t>(inst.root[static_cast<size_t>(conv.from)])];
    l = std::max(l, static_cast<int64_t>(conv.layer));
  }
  for (ValueId v : g.outputs())
    last[static_cast<size_t>(inst.root[static_cast<size_t>(layouts.output(v))])] = n_layers;
  // Greedy by size: largest first, each at the lowest offset free over its lifetime.
  struct Block {
    ValueId value;
    size_t bytes;
    int64_t first, last;
    size_t offset = 0;
  };
  std::vector<Block> blocks;
  for (size_t v = 0; v < nv; ++v) {
    const bool graph_value = v < g.num_values();
    if (first[v] == -2 || inst.root[v] != static_cast<ValueId>(v) ||
        (graph_value && is_constant(g, static_cast<ValueId>(v))))
      continue;
    // An input only shape layers read (its shape is all they need) is not
    // copied to the GPU.
    if (first[v] == -1 && last[v] == -2) continue;
    if (!inst.shapes[v]) {
      throw Error(ErrorCode::unsupported,
                  "cuda engine: the shape of '" +
                      (graph_value ? g.value(static_cast<ValueId>(v)).name : std::string("a layout copy")) +
                      "' is not known at these input shapes");
    }
    const size_t bytes = aligned(static_cast<size_t>(numel(*inst.shapes[v])) * elem_size(plan.precision));
    blocks.push_back(
        {static_cast<ValueId>(v), std::max(bytes, k_alignment), first[v], std::max(last[v], first[v])});
  }
  std::sort(blocks.begin(), blocks.end(), [](const Block& a, const Block& b) { return a.bytes > b.bytes; });
  std::vector<const Block*> placed;
  inst.offset.assign(nv, -1);
  for (Block& b : blocks) {
    std::vector<const Block*> live;
    for (const Block* p : placed) {
      if (p->first <= b.last && b.first <= p->last) live.push_back(p);
    }
    std::sort(live.begin(), live.end(), [](const Block* x, const Block* y) { return x->offset < y->offset; });
    size_t offset = 0;
    for (const Block* p : live) {
      if (offset + b.bytes <= p->offset) break;
      offset = std::max(offset, p->offset + p->bytes);
    }
    b.offset = offset;
    inst.arena_bytes = std::max(inst.arena_bytes, offset + b.bytes);
    inst.offset[static_cast<size_t>(b.value)] = static_cast<int64_t>(offset);
    placed.push_back(&b);
  }
  inst.arena = DeviceBuffer(inst.arena_bytes);
}

// fp16/bf16 engines: the fp32 staging buffer of the boundary, as large as
// the largest graph input or output.
void allocate_boundary(const Plan& plan, Instance& inst) {
  const ir::Graph& g = plan.graph;
  if (plan.precision != ElemType::f32) {
    size_t boundary = 0;
    for (const auto* values : {&g.inputs(), &g.outputs()}) {
      for (ValueId v : *values) {
        if (inst.shapes[static_cast<size_t>(v)])
          boundary = std::max(boundary, static_cast<size_t>(numel(*inst.shapes[static_cast<size_t>(v)])));
      }
    }
    inst.boundary = DeviceBuffer(std::max<size_t>(boundary * sizeof(float), 4));
  }
}

// The exec data of every layer but convs and matmuls (their library plans
// come next), from the instance's shapes and host values.
void prepare_layer_parts(const Plan& plan, const std::vector<std::optional<Tensor>>& host, Instance& inst) {
  const ir::Graph& g = plan.graph;
  inst.layers.resize(plan.layers.size());
  for (size_t i = 0; i < plan.layers.size(); ++i) {
    const Layer& layer = plan.layers[i];
    if (layer.kind == LayerKind::slice) inst.layers[i].slice = slice_parts(g, layer, inst.shapes, host);
    if (layer.kind == LayerKind::gather)
      inst.layers[i].gather = gather_parts(g, layer, inst, host, plan.precision);
    if (layer.kind == LayerKind::attention)
      inst.layers[i].attention = attention_exec(g, layer, inst, host, plan.precision);
    if (layer.kind == LayerKind::expand) {
      inst.layers[i].expand_strides =
          expand_strides(inst.shape(g.node(layer.anchor()).inputs[0]), inst.shape(layer.output));
    }
  }
}

struct LibraryPlans {
  double conv_ms = 0, matmul_ms = 0;
  size_t convs = 0, matmuls = 0;
};

// Conv and matmul layers at these shapes, from the plan's choices; each
// layer's workspace counts toward the instance's.
LibraryPlans prepare_library_plans(const Plan& plan, const ActivationLayouts& layouts,
                                   const DeviceContext& device, Instance& inst) {
  const ir::Graph& g = plan.graph;
  LibraryPlans made;
  for (size_t i = 0; i < plan.layers.size(); ++i) {
    const auto layer_start = Clock::now();
    const Layer& layer = plan.layers[i];
    if (layer.kind == LayerKind::conv && layer.tactic.cudnn.engine >= 0) {
      const ConvGeometry geo = conv_geometry(plan, layer, inst, layouts.of_layer(i));
      const ConvFusion fusion = layer.tactic.fused ? *cudnn_fusion(g, layer) : ConvFusion{};
      try {
        inst.layers[i].conv.emplace(conv_plan(device.cudnn(), geo, fusion, layer.tactic.cudnn));
      } catch (const Error&) {
        // The recorded engine does not take these shapes (another batch size
        // of a dynamic range): cuDNN's first heuristic choice does.
        // The layer's fusion is fixed by the plan, so any engine will do.
        auto candidates = conv_candidates(device.cudnn(), geo, fusion, 1, false, true);
        if (candidates.empty()) throw;
        inst.layers[i].conv.emplace(std::move(candidates.front().plan));
      }
      inst.workspace_bytes = std::max(inst.workspace_bytes, inst.layers[i].conv->workspace());
      made.conv_ms += ms_since(layer_start);
      ++made.convs;
    } else if (layer.kind == LayerKind::matmul && !layer.tactic.lt_algo.empty()) {
      const MatmulParts& parts = inst.layers[i].matmul_parts = matmul_parts(plan, layer, inst);
      auto mm = std::make_unique<LtMatmul>(device.cublaslt(), parts.shape);
      LtAlgoBytes algo{};
      std::copy_n(layer.tactic.lt_algo.begin(), algo.size(), algo.begin());
      if (!mm->select(algo)) {
        auto offered = mm->candidates(1, k_max_matmul_workspace);
        if (offered.empty() || !mm->select(offered.front())) {
          throw Error(ErrorCode::unsupported, "cuda: cuBLASLt has no algorithm for " +
                                                  g.node(layer.anchor()).describe() + " at these shapes");
        }
      }
      inst.workspace_bytes = std::max(inst.workspace_bytes, mm->workspace());
      inst.layers[i].matmul = std::move(mm);
      made.matmul_ms += ms_since(layer_start);
      ++made.matmuls;
    }
  }
  return made;
}

}  // namespace

std::unique_ptr<Instance> create_instance(const Plan& plan, const ActivationLayouts& layouts,
                                          const DeviceContext& device,
                                          const std::vector<std::vector<int64_t>>& input_shapes) {
  const auto start = Clock::now();
  const ir::Graph& g = plan.graph;
  auto inst = std::make_unique<Instance>();
  inst->input_shapes = input_shapes;
  // Shapes at these input shapes, and the host values of the shape layers
  // (a Reshape's run-time target is a constant of the instance).
  InstanceValues known = instance_values(g, plan.specs, input_shapes, plan.layers);
  inst->layouts = &layouts;
  inst->shapes = std::move(known.shapes);
  for (const Layer& layer : plan.layers) {
    if (auto problem = instance_problem(g, layer, inst->shapes))
      throw Error(ErrorCode::unsupported, "cuda engine: " + *problem);
  }
  plan_arena(plan, layouts, known.host, *inst);
  allocate_boundary(plan, *inst);
  const double memory_ms = ms_since(start);
  prepare_layer_parts(plan, known.host, *inst);
  const LibraryPlans made = prepare_library_plans(plan, layouts, device, *inst);
  inst->workspace = DeviceBuffer(inst->workspace_bytes);
  log::info("cuda engine: instance for input shapes " +
            (input_shapes.empty() ? std::string("()") : shape_to_string(input_shapes.front())) + " in " +
            ms_text(ms_since(start)) + ": memory plan and arena " + ms_text(memory_ms) + ", " +
            std::to_string(made.convs) + " cuDNN plans " + ms_text(made.conv_ms) + ", " +
            std::to_string(made.matmuls) + " cuBLASLt matmuls " + ms_text(made.matmul_ms) + ", " +
            std::to_string(layouts.conversions().size()) + " layout conversions");
  return inst;
}

void* InstanceTensors::ptr(ValueId v) const {
  const ValueId r = inst.root[static_cast<size_t>(v)];
  if (static_cast<size_t>(r) < graph.num_values() && is_constant(graph, r))
    return const_cast<void*>(constant(r));
  const int64_t off = inst.offset[static_cast<size_t>(r)];
  if (off < 0) {
    const std::string name =
        static_cast<size_t>(v) < graph.num_values() ? graph.value(v).name : "a layout copy";
    throw Error(ErrorCode::internal, "cuda engine: value '" + name + "' has no memory");
  }
  return static_cast<char*>(inst.arena.data()) + off;
}

}  // namespace kiln::cuda
