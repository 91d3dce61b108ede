#include "backends/cpu/plan_format.hpp"

#include <algorithm>
#include <cstring>
#include <limits>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#include "backends/cpu/cpu_plan_generated.h"
#pragma GCC diagnostic pop
#include "backends/cpu/attention_fusion.hpp"
#include "backends/cpu/layer_partition.hpp"
#include "backends/plan/layer_fields.hpp"
#include "backends/plan/plan_graph.hpp"

namespace kiln::cpu {

namespace fbs = kiln::cpu::fb;
using flatbuffers::FlatBufferBuilder;
using flatbuffers::Offset;

namespace {

constexpr std::string_view k_what = "cpu plan";

[[noreturn]] void corrupt(const std::string& why) { plan::corrupt(k_what, why); }

}  // namespace

std::vector<std::byte> serialize_plan(const EnginePlan& plan) {
  FlatBufferBuilder b(64 * 1024);
  auto graph = plan::write_graph(b, plan.graph);
  auto specs = plan::write_specs(b, plan.specs);
  std::vector<Offset<fbs::Layer>> layers;
  for (const LayerDesc& l : plan.layers) {
    Offset<fbs::ConvTactic> dw_tactic = 0;
    if (l.dw_conv != ir::k_no_node && !l.dw_fused) {
      const Tactic& t = l.dw_tactic;
      dw_tactic = fbs::CreateConvTacticDirect(b, static_cast<uint8_t>(t.algo), static_cast<uint8_t>(t.layout),
                                              static_cast<uint8_t>(t.precision), t.name.c_str(), t.time_ms);
    }
    layers.push_back(fbs::CreateLayerDirect(
        b, static_cast<uint8_t>(l.kind), &l.nodes, l.bias_add, l.residual_add, l.residual_input, l.activation,
        l.output, static_cast<uint8_t>(l.tactic.algo), static_cast<uint8_t>(l.tactic.layout),
        static_cast<uint8_t>(l.tactic.precision), l.tactic.name.c_str(), l.tactic.time_ms,
        static_cast<uint8_t>(l.tactic.weights), l.tactic.impl.empty() ? nullptr : l.tactic.impl.c_str(),
        l.dw_conv, l.dw_activation, l.dw_fused, dw_tactic, l.tactic.native_swish));
  }
  const Fingerprint& f = plan.fingerprint;
  auto root = fbs::CreatePlan(b, f.plan_version, b.CreateString(f.backend), b.CreateString(f.library_version),
                              b.CreateString(f.isa), graph, specs, b.CreateVector(layers), plan.num_threads,
                              plan.activation_bytes, plan.weight_bytes, plan.source_weight_count);
  fbs::FinishPlanBuffer(b, root);
  return plan::seal(b);
}

EnginePlan parse_plan(std::span<const std::byte> bytes) {
  const std::vector<uint8_t> buffer = plan::unseal(bytes, k_what);
  if (!fbs::PlanBufferHasIdentifier(buffer.data())) corrupt("not a CPU plan");
  flatbuffers::Verifier verifier(buffer.data(), buffer.size());
  if (!fbs::VerifyPlanBuffer(verifier)) corrupt("fails FlatBuffers verification");
  const fbs::Plan* p = fbs::GetPlan(buffer.data());
  if (p->plan_version() != k_plan_version) {
    corrupt("plan version " + std::to_string(p->plan_version()) + ", this kiln reads " +
            std::to_string(k_plan_version));
  }
  EnginePlan plan;
  plan.fingerprint.backend = plan::read_string(p->backend());
  plan.fingerprint.plan_version = p->plan_version();
  plan.fingerprint.library_version = plan::read_string(p->library_version());
  plan.fingerprint.isa = plan::read_string(p->isa());
  plan.graph = plan::read_graph(p->graph(), k_what);
  plan.specs = plan::read_specs(p->specs(), plan.graph.inputs().size(), k_what);
  if (!p->layers()) corrupt("no layers");
  plan::LayerFieldReader fields(plan.graph, k_what);
  for (const fbs::Layer* fl : *p->layers()) {
    LayerDesc l;
    if (fl->kind() > k_last_layer_kind) corrupt("bad layer kind");
    l.kind = static_cast<LayerKind>(fl->kind());
    fields
        .read(fl->nodes(), fl->bias_add(), fl->residual_add(), fl->residual_input(), fl->activation(),
              fl->output(), true)
        .move_into(l);
    if (fl->algo() > k_last_conv_algo || fl->layout() > k_last_layout || fl->precision() > 1 ||
        fl->weight_layout() > k_last_weight_layout) {
      corrupt("bad tactic");
    }
    l.tactic.algo = static_cast<ConvAlgo>(fl->algo());
    l.tactic.layout = static_cast<Layout>(fl->layout());
    l.tactic.precision = static_cast<Prec>(fl->precision());
    l.tactic.name = plan::read_string(fl->tactic());
    l.tactic.time_ms = fl->time_ms();
    l.tactic.weights = static_cast<WeightLayout>(fl->weight_layout());
    l.tactic.impl = plan::read_string(fl->impl());
    l.tactic.native_swish = fl->native_swish();
    l.dw_conv = fields.optional_node(fl->dw_conv());
    l.dw_activation = fields.optional_node(fl->dw_activation());
    l.dw_fused = fl->dw_fused();
    if (l.dw_conv != ir::k_no_node && !l.dw_fused) {
      const fbs::ConvTactic* t = fl->dw_tactic();
      if (!t || t->algo() > k_last_conv_algo || t->layout() > k_last_layout || t->precision() > 1)
        corrupt("bad depthwise tactic");
      l.dw_tactic = Tactic(static_cast<ConvAlgo>(t->algo()), static_cast<Layout>(t->layout()),
                           static_cast<Prec>(t->precision()), plan::read_string(t->name()), t->time_ms());
    }
    plan.layers.push_back(std::move(l));
  }
  fields.check_every_node_covered();
  // The conv and matmul builders trust their layer's kind (a conv layer reads
  // a rank-4 input and a weight): the anchor must be a node this kiln would
  // build as that kind, or the plan is corrupt, not a crash.
  for (const LayerDesc& l : plan.layers) {
    if (l.kind == LayerKind::resample && native_kind(plan.graph, l.anchor()) != l.kind)
      corrupt("a resample layer oneDNN cannot compute");
    if (l.kind == LayerKind::attention) {
      // The attention builder re-derives Q, K, V, mask and scales from the
      // nodes: they must be exactly one attention this kiln would fuse.
      auto m = match_attention_layer(plan.graph, l.nodes);
      if (!m || m->output != l.output) corrupt("an attention layer whose nodes are not one attention");
      continue;
    }
    if (l.kind != LayerKind::conv && l.kind != LayerKind::matmul) continue;
    const ir::Node& anchor = plan.graph.node(l.anchor());
    if (anchor.inputs.size() < 2 || anchor.inputs[0] == ir::k_no_value ||
        anchor.inputs[1] == ir::k_no_value || native_kind(plan.graph, l.anchor()) != l.kind) {
      corrupt("a layer whose kind does not fit its node");
    }
    if (l.dw_activation != ir::k_no_node && l.dw_conv == ir::k_no_node)
      corrupt("a depthwise activation alone");
    if (l.dw_conv == ir::k_no_node) continue;
    // The conv builder reads the depthwise node's weights and bias and the
    // 1x1 node's geometry; both must be what the partition would attach.
    const auto in_layer = [&](ir::NodeId n) {
      return std::find(l.nodes.begin(), l.nodes.end(), n) != l.nodes.end();
    };
    if (l.kind != LayerKind::conv || !in_layer(l.dw_conv) || l.residual_add != ir::k_no_node ||
        (l.dw_activation != ir::k_no_node && !in_layer(l.dw_activation)) ||
        !can_attach_depthwise(plan.graph, l.anchor(), l.dw_conv)) {
      corrupt("a depthwise conv that cannot be attached to its layer");
    }
    // The chain the builder assumes: 1x1 conv (-> activation) -> depthwise
    // conv (-> activation) = the layer's output.
    const ir::Node& dw = plan.graph.node(l.dw_conv);
    const ir::NodeId feeds_dw = l.activation != ir::k_no_node ? l.activation : l.anchor();
    const ir::Node& pw_last = plan.graph.node(feeds_dw);
    const ir::ValueId dw_out = dw.outputs.empty() ? ir::k_no_value : dw.outputs[0];
    const ir::ValueId last =
        l.dw_activation != ir::k_no_node && !plan.graph.node(l.dw_activation).outputs.empty()
            ? plan.graph.node(l.dw_activation).outputs[0]
            : dw_out;
    if (pw_last.outputs.empty() || dw.inputs[0] != pw_last.outputs[0] || l.output != last ||
        (l.dw_activation != ir::k_no_node && (plan.graph.node(l.dw_activation).inputs.empty() ||
                                              plan.graph.node(l.dw_activation).inputs[0] != dw_out))) {
      corrupt("a depthwise conv that does not read its layer's 1x1 conv");
    }
  }
  plan.num_threads = p->num_threads();
  plan.activation_bytes = p->activation_bytes();
  plan.weight_bytes = p->weight_bytes();
  plan.source_weight_count = p->source_weight_count();
  if (plan.source_weight_count < 0) corrupt("bad source weight count");
  return plan;
}

}  // namespace kiln::cpu
