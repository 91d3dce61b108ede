#include "backends/cuda/cuda_plan_format.hpp"

#include <cstring>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#include "backends/cuda/cuda_plan_generated.h"
#pragma GCC diagnostic pop
#include "backends/cuda/attention_layer.hpp"
#include "backends/cuda/cuda_layers.hpp"
#include "backends/plan/layer_fields.hpp"
#include "backends/plan/plan_graph.hpp"

namespace kiln::cuda {

namespace fbs = kiln::cuda::fb;
using flatbuffers::FlatBufferBuilder;
using flatbuffers::Offset;

namespace {

constexpr std::string_view k_what = "cuda plan";

[[noreturn]] void corrupt(const std::string& why) { plan::corrupt(k_what, why); }

}  // namespace

std::vector<std::byte> serialize_plan(const Plan& p) {
  FlatBufferBuilder b(64 * 1024);
  auto graph = plan::write_graph(b, p.graph);
  auto specs = plan::write_specs(b, p.specs);
  std::vector<Offset<fbs::Layer>> layers;
  for (const Layer& l : p.layers) {
    std::vector<Offset<fbs::Knob>> knobs;
    for (const auto& [type, value] : l.tactic.cudnn.knobs) knobs.push_back(fbs::CreateKnob(b, type, value));
    layers.push_back(fbs::CreateLayerDirect(b, static_cast<uint8_t>(l.kind), &l.nodes, l.bias_add,
                                            l.residual_add, l.residual_input, l.activation, l.output,
                                            l.tactic.name.c_str(), l.tactic.time_ms, l.tactic.fused,
                                            l.tactic.cudnn.engine, &knobs, &l.tactic.lt_algo));
  }
  const Fingerprint& f = p.fingerprint;
  auto root = fbs::CreatePlan(b, f.plan_version, b.CreateString(f.backend), b.CreateString(f.library_version),
                              b.CreateString(f.isa), graph, specs, b.CreateVector(layers),
                              p.source_weight_count, static_cast<uint8_t>(p.precision));
  fbs::FinishPlanBuffer(b, root);
  return plan::seal(b);
}

Plan parse_plan(std::span<const std::byte> bytes) {
  const std::vector<uint8_t> buffer = plan::unseal(bytes, k_what);
  if (!fbs::PlanBufferHasIdentifier(buffer.data())) corrupt("not a cuda plan");
  flatbuffers::Verifier verifier(buffer.data(), buffer.size());
  if (!fbs::VerifyPlanBuffer(verifier)) corrupt("fails FlatBuffers verification");
  const fbs::Plan* fp = fbs::GetPlan(buffer.data());
  if (fp->plan_version() != k_plan_version) {
    corrupt("plan version " + std::to_string(fp->plan_version()) + ", this kiln reads " +
            std::to_string(k_plan_version));
  }
  Plan p;
  p.fingerprint.backend = plan::read_string(fp->backend());
  p.fingerprint.plan_version = fp->plan_version();
  p.fingerprint.library_version = plan::read_string(fp->library_version());
  p.fingerprint.isa = plan::read_string(fp->isa());
  p.graph = plan::read_graph(fp->graph(), k_what);
  p.specs = plan::read_specs(fp->specs(), p.graph.inputs().size(), k_what);
  if (!fp->layers()) corrupt("no layers");
  plan::LayerFieldReader fields(p.graph, k_what);
  // A Split is a layer per output (a slice or gather layer each).
  std::vector<bool> splits(p.graph.num_nodes(), false);
  for (ir::NodeId id = 0; id < static_cast<ir::NodeId>(p.graph.num_nodes()); ++id)
    splits[static_cast<size_t>(id)] = p.graph.node(id).op_type == "Split";
  fields.allow_in_several_layers(std::move(splits));
  const std::vector<bool> host_nodes = host_shape_nodes(p.graph);
  for (const fbs::Layer* fl : *fp->layers()) {
    Layer l;
    if (fl->kind() > k_last_layer_kind) corrupt("bad layer kind");
    l.kind = static_cast<LayerKind>(fl->kind());
    fields
        .read(fl->nodes(), fl->bias_add(), fl->residual_add(), fl->residual_input(), fl->activation(),
              fl->output(), false)
        .move_into(l);
    // The layer builders trust a layer's kind: its anchor must be a node this
    // kiln runs as that kind.
    auto kind_of = [&](ir::NodeId id) { return layer_kind(p.graph, id, host_nodes); };
    if (l.kind == LayerKind::gather) {
      // [Slice or Split, views..., Transpose], every node one this kiln runs.
      bool fits = l.nodes.size() >= 2 && kind_of(l.nodes.front()) == LayerKind::slice &&
                  p.graph.node(l.nodes.front()).op_type != "Gather" &&
                  kind_of(l.nodes.back()) == LayerKind::transpose;
      for (size_t k = 0; fits && k < l.nodes.size(); ++k) {
        fits = !unsupported_reason(p.graph, l.nodes[k]) &&
               (k == 0 || k + 1 == l.nodes.size() || kind_of(l.nodes[k]) == LayerKind::view);
      }
      if (!fits) corrupt("a gather layer that is not a slice, views and a transpose");
    } else if (l.kind == LayerKind::attention) {
      std::string why;
      if (!attention_nodes(p.graph, l, &why)) corrupt("an attention layer that does not hold: " + why);
      for (ir::NodeId id : l.nodes) {
        if (unsupported_reason(p.graph, id)) corrupt("an attention layer with a node this kiln cannot run");
      }
    } else if (unsupported_reason(p.graph, l.anchor()) || kind_of(l.anchor()) != l.kind) {
      corrupt("a layer whose kind does not fit its node");
    }
    for (ir::NodeId fused : {l.bias_add, l.residual_add, l.activation}) {
      if (fused != ir::k_no_node && std::find(l.nodes.begin(), l.nodes.end(), fused) == l.nodes.end())
        corrupt("a fused node outside its layer");
    }
    l.tactic.name = plan::read_string(fl->tactic());
    l.tactic.time_ms = fl->time_ms();
    l.tactic.fused = fl->fused();
    l.tactic.cudnn.engine = fl->cudnn_engine();
    if (fl->knobs()) {
      for (const fbs::Knob* k : *fl->knobs()) l.tactic.cudnn.knobs.emplace_back(k->type(), k->value());
    }
    if (fl->lt_algo()) l.tactic.lt_algo.assign(fl->lt_algo()->begin(), fl->lt_algo()->end());
    if (l.kind == LayerKind::conv && l.tactic.cudnn.engine < 0)
      corrupt("a conv layer without a cuDNN engine");
    if (l.kind == LayerKind::matmul && l.tactic.lt_algo.size() != sizeof(cublasLtMatmulAlgo_t))
      corrupt("a matmul layer without a cuBLASLt algorithm");
    p.layers.push_back(std::move(l));
  }
  fields.check_every_node_covered();
  p.source_weight_count = fp->source_weight_count();
  if (p.source_weight_count < 0) corrupt("bad source weight count");
  if (fp->precision() > static_cast<uint8_t>(ElemType::bf16)) corrupt("bad precision");
  p.precision = static_cast<ElemType>(fp->precision());
  return p;
}

}  // namespace kiln::cuda
