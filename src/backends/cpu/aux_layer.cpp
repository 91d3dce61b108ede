// Aux layers: nodes oneDNN has no primitive for (BERT's embedding Gathers,
// Cast, Erf, integer ops, ...) run inside the engine on the reference
// kernels, so whole models build as one engine. Inputs are read in place
// (plain layouts; a blocked input is reordered to plain first) and outputs
// are written into tensors allocated once per instance.
#include <algorithm>
#include <cstring>

#include "backends/cpu/instance_builder.hpp"
#include "backends/cpu/layer_partition.hpp"
#include "ir/op_schema.hpp"
#include "reference/kernel.hpp"

namespace kiln::cpu {

using ir::k_no_value;
using ir::ValueId;

namespace {

struct AuxInput {
  ValueKind kind = ValueKind::unset;  // unset: an omitted optional input
  ValueId value = k_no_value;
  int index = -1;  // input index or slot
  DType dtype = DType::undefined;
  std::vector<int64_t> shape;
};

// Whether `v` is read only by the caller: a graph output (listed once) that
// no node reads. Such an aux output can be handed out instead of copied.
bool caller_only(const ir::Graph& g, ValueId v) {
  if (std::count(g.outputs().begin(), g.outputs().end(), v) != 1) return false;
  for (size_t n = 0; n < g.num_nodes(); ++n) {
    const std::vector<ValueId>& ins = g.node(static_cast<ir::NodeId>(n)).inputs;
    if (std::find(ins.begin(), ins.end(), v) != ins.end()) return false;
  }
  return true;
}

}  // namespace

void build_aux_layer(InstanceBuilder& b, LayerDesc& layer) {
  const ir::Node node = b.node(layer.anchor());
  const ref::KernelDef* kernel = ref::kernels().find(node.op_type);
  if (!kernel) throw Error(ErrorCode::unsupported, "no reference kernel");
  Instance* inst = &b.instance();
  std::vector<AuxInput> inputs;
  std::vector<ir::ValueType> types;
  std::vector<const Tensor*> known;
  for (ValueId v : node.inputs) {
    AuxInput in;
    in.value = v;
    if (v == k_no_value) {
      inputs.push_back(in);
      types.emplace_back();
      known.push_back(nullptr);
      continue;
    }
    const ir::ValueType& type = inst->types[static_cast<size_t>(v)];
    types.push_back(type);
    known.push_back(b.known(v));
    in.dtype = type.dtype;
    in.shape = type.static_shape();
    if (b.gathered(v)) b.use_current(v);  // written now, as an ordinary value
    ValueState& st = b.state(v);
    in.kind = st.kind;
    if (st.kind == ValueKind::input) {
      in.index = st.input_index;
    } else if (st.kind == ValueKind::slot) {
      auto dt = to_dnnl(type.dtype);
      if (!dt)
        throw Error(ErrorCode::internal, "a oneDNN value of type " + std::string(dtype_name(type.dtype)));
      in.index = b.use_plain(v, *dt);
    }
    inputs.push_back(std::move(in));
  }
  ir::InferResult inferred = ir::infer_node(node, types, known);
  std::vector<Tensor> outputs;
  std::vector<char> handed_out(node.outputs.size(), 0);
  for (size_t o = 0; o < node.outputs.size(); ++o) {
    if (node.outputs[o] == k_no_value) {
      outputs.emplace_back();
      continue;
    }
    if (caller_only(b.graph(), node.outputs[o])) {
      // A segmentation map upsampled here is the model's largest tensor: a
      // copy of it per run would cost as much as computing it.
      handed_out[o] = 1;
      b.set_aux_output(node.outputs[o], Tensor());
      b.state(node.outputs[o]).handed_out = true;
      outputs.emplace_back();
      continue;
    }
    Tensor t = Tensor::zeros(inferred.types[o].dtype, inferred.types[o].static_shape());
    b.set_aux_output(node.outputs[o], t);
    outputs.push_back(std::move(t));
  }
  layer.tactic.name = "aux:" + node.op_type;
  if (node.op_type == "Resize" || node.op_type == "Upsample") {
    // Most of these run on oneDNN's resampling: the report says why this one does not.
    std::string why;
    if (!native_kind(b.graph(), layer.anchor(), &why)) layer.tactic.name += " (" + why + ")";
  }
  const int threads = b.num_threads();
  b.add_function([inst, node, kernel, inputs, inferred, outputs, handed_out,
                  threads](RunContext& ctx) mutable {
    std::vector<Tensor> held(inputs.size());
    std::vector<const Tensor*> ptrs(inputs.size(), nullptr);
    for (size_t i = 0; i < inputs.size(); ++i) {
      const AuxInput& in = inputs[i];
      switch (in.kind) {
        case ValueKind::unset:
        case ValueKind::gathered:  // written before this layer (above)
        case ValueKind::elided:
          break;
        case ValueKind::input:
          ptrs[i] = &ctx.inputs[static_cast<size_t>(in.index)];
          break;
        case ValueKind::weight:
          ptrs[i] = &(*ctx.weights)[static_cast<size_t>(in.value)];
          break;
        case ValueKind::constant:
        case ValueKind::aux_tensor:
          ptrs[i] = &inst->values[static_cast<size_t>(in.value)].tensor;
          break;
        case ValueKind::slot: {
          const Slot& s = inst->slots[static_cast<size_t>(in.index)];
          const size_t bytes = static_cast<size_t>(shape_numel(in.shape)) * dtype_size(in.dtype);
          held[i] = Tensor::borrow(in.dtype, in.shape,
                                   {static_cast<const std::byte*>(s.mem.get_data_handle()), bytes}, nullptr);
          ptrs[i] = &held[i];
          break;
        }
      }
    }
    std::vector<Tensor> outs = outputs;  // shares storage with the instance's tensors
    for (size_t o = 0; o < outs.size(); ++o) {
      if (handed_out[o]) {
        outs[o] = Tensor::zeros(inferred.types[o].dtype, inferred.types[o].static_shape());
      } else if (outs[o].defined()) {
        std::memset(outs[o].mutable_bytes().data(), 0, outs[o].byte_size());
      }
    }
    ref::KernelContext kc(node, ptrs, inferred, outs);
    kc.set_threads(threads);  // the engine's threads are idle while an aux step runs
    kernel->run(kc);
    for (size_t o = 0; o < outs.size(); ++o) {
      if (handed_out[o]) {
        inst->values[static_cast<size_t>(node.outputs[o])].tensor = std::move(outs[o]);
        continue;
      }
      Tensor& want = outputs[o];
      if (!want.defined() || !outs[o].defined() || outs[o].bytes().data() == want.bytes().data()) continue;
      if (outs[o].byte_size() != want.byte_size()) {
        throw Error(ErrorCode::internal, node.describe() + ": kernel output size differs from inference");
      }
      std::memcpy(want.mutable_bytes().data(), outs[o].bytes().data(), want.byte_size());
    }
  });
}

}  // namespace kiln::cpu
