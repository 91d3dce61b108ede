#include "backends/cuda/cudnn_conv.hpp"

#include <algorithm>

#include "backends/cuda/cuda_check.hpp"
#include "kiln/error.hpp"

// cuDNN 9 deprecates the handle attributes of operation graphs and
// execution plans in favour of device properties, but still reads them, and
// a handle is what binds a plan to kiln's stream.
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

namespace kiln::cuda {

BackendDescriptor::BackendDescriptor(cudnnBackendDescriptorType_t type) {
  check(cudnnBackendCreateDescriptor(type, &m_desc), "cudnnBackendCreateDescriptor");
}

BackendDescriptor::~BackendDescriptor() {
  if (m_desc) cudnnBackendDestroyDescriptor(m_desc);
}

void BackendDescriptor::set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count,
                            const void* values) {
  check(cudnnBackendSetAttribute(m_desc, name, type, count, values),
        "cudnnBackendSetAttribute(" + std::to_string(static_cast<int>(name)) + ")");
}

void BackendDescriptor::set_int64(cudnnBackendAttributeName_t name, const std::vector<int64_t>& values) {
  set(name, CUDNN_TYPE_INT64, static_cast<int64_t>(values.size()), values.data());
}

void BackendDescriptor::set_descriptor(cudnnBackendAttributeName_t name, const BackendDescriptor& value) {
  cudnnBackendDescriptor_t d = value.get();
  set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &d);
}

void BackendDescriptor::finalize() { check(cudnnBackendFinalize(m_desc), "cudnnBackendFinalize"); }

std::string CudnnEngineChoice::name() const {
  std::string out = "cudnn:e" + std::to_string(engine);
  for (size_t i = 0; i < knobs.size(); ++i) {
    out += (i == 0 ? "/" : ",") + std::string("k") + std::to_string(knobs[i].first) + "=" +
           std::to_string(knobs[i].second);
  }
  return out;
}

ConvPlan::ConvPlan(std::shared_ptr<const std::vector<SharedDescriptor>> parts, SharedDescriptor plan,
                   ConvFusion fusion, size_t workspace)
    : m_parts(std::move(parts)), m_plan(std::move(plan)), m_fusion(fusion), m_workspace(workspace) {}

namespace {

// Unique ids of the graph's non-virtual tensors (the variant pack's keys).
enum Uid : int64_t { uid_x = 1, uid_w = 2, uid_y = 3, uid_bias = 4, uid_residual = 5 };
// Virtual intermediates between the fused nodes.
constexpr int64_t k_first_virtual_uid = 100;

// Element strides of packed [N, C, H, W] dims: NCHW, or channels-last
// (C innermost, then W, H, N), which for the weight [K, C/g, R, S] is KRSC.
std::vector<int64_t> packed_strides(const std::vector<int64_t>& dims, bool channels_last) {
  if (channels_last) {
    const int64_t c = dims[1], h = dims[2], w = dims[3];
    return {c * h * w, 1, w * c, c};
  }
  std::vector<int64_t> strides(dims.size(), 1);
  for (size_t i = dims.size(); i-- > 1;) strides[i - 1] = strides[i] * dims[i];
  return strides;
}

cudnnDataType_t cudnn_type(ElemType type) {
  switch (type) {
    case ElemType::f32:
      return CUDNN_DATA_FLOAT;
    case ElemType::f16:
      return CUDNN_DATA_HALF;
    case ElemType::bf16:
      return CUDNN_DATA_BFLOAT16;
  }
  throw Error(ErrorCode::internal, "cudnn: unknown element type " + std::to_string(static_cast<int>(type)));
}

// A packed 4-D tensor, NCHW or channels-last. Virtual tensors (between
// fused nodes, never in memory) are fp32 whatever the data type: the chain
// rounds once, at y; they take the layout of y, as cuDNN's fusion engines
// expect one layout through the graph.
SharedDescriptor tensor(const std::vector<int64_t>& dims, int64_t uid, bool is_virtual, ElemType data,
                        bool channels_last) {
  auto t = std::make_shared<BackendDescriptor>(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  const cudnnDataType_t type = is_virtual ? CUDNN_DATA_FLOAT : cudnn_type(data);
  t->set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type);
  t->set_int64(CUDNN_ATTR_TENSOR_DIMENSIONS, dims);
  t->set_int64(CUDNN_ATTR_TENSOR_STRIDES, packed_strides(dims, channels_last));
  t->set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
  const int64_t alignment = 16;  // the engine's arena aligns every tensor to 256 bytes
  t->set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment);
  const bool v = is_virtual;
  t->set(CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &v);
  t->finalize();
  return t;
}

SharedDescriptor pointwise_op(cudnnPointwiseMode_t mode, const BackendDescriptor& x,
                              const BackendDescriptor* b, const BackendDescriptor& y,
                              std::vector<SharedDescriptor>& parts) {
  auto pw = std::make_shared<BackendDescriptor>(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
  pw->set(CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode);
  const cudnnDataType_t precision = CUDNN_DATA_FLOAT;
  pw->set(CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &precision);
  pw->finalize();
  parts.push_back(pw);
  auto op = std::make_shared<BackendDescriptor>(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
  op->set_descriptor(CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, *pw);
  op->set_descriptor(CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x);
  if (b) op->set_descriptor(CUDNN_ATTR_OPERATION_POINTWISE_BDESC, *b);
  op->set_descriptor(CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y);
  op->finalize();
  return op;
}

// The operation graph of the convolution and its fused pointwise nodes.
// Returns the graph; `parts` receives every descriptor it references.
SharedDescriptor operation_graph(cudnnHandle_t handle, const ConvGeometry& g, ConvFusion fusion,
                                 std::vector<SharedDescriptor>& parts) {
  const std::vector<int64_t> x_dims(g.x.begin(), g.x.end()), w_dims(g.w.begin(), g.w.end()),
      y_dims(g.y.begin(), g.y.end());
  auto x = tensor(x_dims, uid_x, false, g.type, g.nhwc);
  auto w = tensor(w_dims, uid_w, false, g.type, g.nhwc);
  parts.insert(parts.end(), {x, w});

  auto conv = std::make_shared<BackendDescriptor>(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
  const cudnnDataType_t compute = CUDNN_DATA_FLOAT;
  conv->set(CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute);
  const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  conv->set(CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode);
  const int64_t spatial = 2;
  conv->set(CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &spatial);
  conv->set_int64(CUDNN_ATTR_CONVOLUTION_DILATIONS, {g.dilation[0], g.dilation[1]});
  conv->set_int64(CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, {g.stride[0], g.stride[1]});
  conv->set_int64(CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, {g.pad_begin[0], g.pad_begin[1]});
  conv->set_int64(CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, {g.pad_end[0], g.pad_end[1]});
  conv->finalize();
  parts.push_back(conv);

  // The chain conv -> [+bias] -> [+residual] -> [relu]; the last node writes y.
  const int steps = (fusion.bias ? 1 : 0) + (fusion.residual ? 1 : 0) + (fusion.relu ? 1 : 0);
  // Each node writes a virtual tensor, except the last, which writes y.
  int64_t next_virtual = k_first_virtual_uid;
  int remaining = steps;
  auto node_output = [&] {
    auto t = remaining == 0 ? tensor(y_dims, uid_y, false, g.type, g.nhwc)
                            : tensor(y_dims, next_virtual++, true, g.type, g.nhwc);
    parts.push_back(t);
    return t;
  };
  SharedDescriptor current = node_output();
  auto conv_op = std::make_shared<BackendDescriptor>(CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR);
  conv_op->set_descriptor(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, *x);
  conv_op->set_descriptor(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, *w);
  conv_op->set_descriptor(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, *current);
  conv_op->set_descriptor(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, *conv);
  const float alpha = 1.0f, beta = 0.0f;
  conv_op->set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_TYPE_FLOAT, 1, &alpha);
  conv_op->set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, CUDNN_TYPE_FLOAT, 1, &beta);
  conv_op->finalize();
  parts.push_back(conv_op);
  std::vector<cudnnBackendDescriptor_t> ops{conv_op->get()};

  if (fusion.bias) {
    auto bias = tensor({1, g.y[1], 1, 1}, uid_bias, false, g.type, g.nhwc);
    parts.push_back(bias);
    --remaining;
    auto out = node_output();
    auto op = pointwise_op(CUDNN_POINTWISE_ADD, *current, bias.get(), *out, parts);
    parts.push_back(op);
    ops.push_back(op->get());
    current = out;
  }
  if (fusion.residual) {
    auto residual = tensor(y_dims, uid_residual, false, g.type, g.nhwc);
    parts.push_back(residual);
    --remaining;
    auto out = node_output();
    auto op = pointwise_op(CUDNN_POINTWISE_ADD, *current, residual.get(), *out, parts);
    parts.push_back(op);
    ops.push_back(op->get());
    current = out;
  }
  if (fusion.relu) {
    --remaining;
    auto out = node_output();
    auto op = pointwise_op(CUDNN_POINTWISE_RELU_FWD, *current, nullptr, *out, parts);
    parts.push_back(op);
    ops.push_back(op->get());
  }

  auto graph = std::make_shared<BackendDescriptor>(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  graph->set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, static_cast<int64_t>(ops.size()),
             ops.data());
  graph->set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
  graph->finalize();
  parts.push_back(graph);
  return graph;
}

// A finalized execution plan of `config`, or null when cuDNN cannot make one.
SharedDescriptor try_plan(cudnnHandle_t handle, const BackendDescriptor& config, size_t& workspace) {
  auto plan = std::make_shared<BackendDescriptor>(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
  plan->set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
  plan->set_descriptor(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, config);
  if (cudnnBackendFinalize(plan->get()) != CUDNN_STATUS_SUCCESS) return nullptr;
  int64_t bytes = 0, count = 0;
  check(cudnnBackendGetAttribute(plan->get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1,
                                 &count, &bytes),
        "execution plan workspace size");
  workspace = static_cast<size_t>(bytes);
  return plan;
}

// The engine and knob choices of a heuristics result; false when the
// engine's numerical notes exclude it. `compiles` says whether the engine
// compiles its kernel when a plan is finalized (cuDNN's runtime fusion
// engines, through NVRTC): seconds per plan, at every build and every load
// of a plan that chose it.
bool read_choice(const BackendDescriptor& config, ElemType data_type, bool allow_tf32,
                 CudnnEngineChoice& choice, bool& compiles) {
  BackendDescriptor engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
  cudnnBackendDescriptor_t engine_handle = engine.get();
  int64_t count = 0;
  check(cudnnBackendGetAttribute(config.get(), CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                 &count, &engine_handle),
        "engine config's engine");
  check(cudnnBackendGetAttribute(engine.get(), CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &count,
                                 &choice.engine),
        "engine global index");
  cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
  int64_t note_count = 0;
  check(cudnnBackendGetAttribute(engine.get(), CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                                 CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &note_count, notes),
        "engine numerical notes");
  cudnnBackendBehaviorNote_t behaviors[CUDNN_BEHAVIOR_NOTE_TYPE_COUNT];
  int64_t behavior_count = 0;
  check(cudnnBackendGetAttribute(engine.get(), CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE, CUDNN_TYPE_BEHAVIOR_NOTE,
                                 CUDNN_BEHAVIOR_NOTE_TYPE_COUNT, &behavior_count, behaviors),
        "engine behavior notes");
  compiles = std::find(behaviors, behaviors + behavior_count, CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION) !=
             behaviors + behavior_count;
  for (int64_t i = 0; i < note_count; ++i) {
    // A refit must compute what a fresh build does, bit for bit: no engine
    // whose sums depend on the order atomics land in.
    if (notes[i] == CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC) return false;
    if (data_type == ElemType::f32) {
      // fp32 on tensor cores is TF32, a precision the user has to ask for.
      if (!allow_tf32 && (notes[i] == CUDNN_NUMERICAL_NOTE_TENSOR_CORE ||
                          notes[i] == CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS)) {
        return false;
      }
    } else if (notes[i] == CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION) {
      // Half tensors on tensor cores are what fp16/bf16 asks for; sums
      // accumulated in half are not (kiln's half engines accumulate in fp32).
      return false;
    }
  }
  std::vector<std::unique_ptr<BackendDescriptor>> knobs;
  std::vector<cudnnBackendDescriptor_t> knob_handles;
  for (int i = 0; i < CUDNN_KNOB_TYPE_COUNTS; ++i) {
    knobs.push_back(std::make_unique<BackendDescriptor>(CUDNN_BACKEND_KNOB_CHOICE_DESCRIPTOR));
    knob_handles.push_back(knobs.back()->get());
  }
  int64_t knob_count = 0;
  check(
      cudnnBackendGetAttribute(config.get(), CUDNN_ATTR_ENGINECFG_KNOB_CHOICES, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                               static_cast<int64_t>(knob_handles.size()), &knob_count, knob_handles.data()),
      "engine config's knob choices");
  for (int64_t i = 0; i < knob_count; ++i) {
    cudnnBackendKnobType_t type{};
    int64_t value = 0;
    check(cudnnBackendGetAttribute(knob_handles[static_cast<size_t>(i)], CUDNN_ATTR_KNOB_CHOICE_KNOB_TYPE,
                                   CUDNN_TYPE_KNOB_TYPE, 1, &count, &type),
          "knob type");
    check(cudnnBackendGetAttribute(knob_handles[static_cast<size_t>(i)], CUDNN_ATTR_KNOB_CHOICE_KNOB_VALUE,
                                   CUDNN_TYPE_INT64, 1, &count, &value),
          "knob value");
    choice.knobs.emplace_back(static_cast<int64_t>(type), value);
  }
  return true;
}

// Heuristics results for the graph in `mode`.
std::vector<SharedDescriptor> heuristics(const BackendDescriptor& graph, cudnnBackendHeurMode_t mode) {
  BackendDescriptor heur(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
  heur.set_descriptor(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph);
  heur.set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
  if (cudnnBackendFinalize(heur.get()) != CUDNN_STATUS_SUCCESS) return {};
  int64_t available = 0;
  check(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0,
                                 &available, nullptr),
        "heuristics result count");
  std::vector<SharedDescriptor> configs;
  std::vector<cudnnBackendDescriptor_t> handles;
  for (int64_t i = 0; i < available; ++i) {
    configs.push_back(std::make_shared<BackendDescriptor>(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR));
    handles.push_back(configs.back()->get());
  }
  int64_t got = 0;
  check(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                 available, &got, handles.data()),
        "heuristics results");
  configs.resize(static_cast<size_t>(got));
  return configs;
}

}  // namespace

void ConvPlan::run(cudnnHandle_t handle, const ConvPointers& p, void* workspace) const {
  std::vector<void*> pointers{const_cast<void*>(p.x), const_cast<void*>(p.w), p.y};
  std::vector<int64_t> uids{uid_x, uid_w, uid_y};
  if (m_fusion.bias) {
    pointers.push_back(const_cast<void*>(p.bias));
    uids.push_back(uid_bias);
  }
  if (m_fusion.residual) {
    pointers.push_back(const_cast<void*>(p.residual));
    uids.push_back(uid_residual);
  }
  BackendDescriptor pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  pack.set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, static_cast<int64_t>(pointers.size()),
           pointers.data());
  pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, static_cast<int64_t>(uids.size()),
           uids.data());
  pack.set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace);
  pack.finalize();
  check(cudnnBackendExecute(handle, m_plan->get(), pack.get()), "cudnnBackendExecute(conv)");
}

std::vector<ConvCandidate> conv_candidates(cudnnHandle_t handle, const ConvGeometry& geometry,
                                           ConvFusion fusion, size_t max_count, bool allow_tf32,
                                           bool compiling_fused) {
  auto parts = std::make_shared<std::vector<SharedDescriptor>>();
  SharedDescriptor graph = operation_graph(handle, geometry, fusion, *parts);
  std::vector<ConvCandidate> out;
  std::vector<int64_t> seen;
  // Measured on the H100: ResNet-18's fp16 build took 36.6 s while every
  // engine was a candidate, most of it compiling fused channels-last kernels.
  for (bool allow_compiling : {false, true}) {
    if (!out.empty() || (allow_compiling && fusion.any() && !compiling_fused)) break;
    for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
      for (const SharedDescriptor& config : heuristics(*graph, mode)) {
        if (out.size() >= max_count) return out;
        CudnnEngineChoice choice;
        bool compiles = false;
        if (!read_choice(*config, geometry.type, allow_tf32, choice, compiles)) continue;
        if (compiles && !allow_compiling) continue;
        if (std::find(seen.begin(), seen.end(), choice.engine) != seen.end()) continue;
        size_t workspace = 0;
        SharedDescriptor plan = try_plan(handle, *config, workspace);
        if (!plan) continue;
        seen.push_back(choice.engine);
        parts->push_back(config);
        out.push_back({std::move(choice), ConvPlan(parts, plan, fusion, workspace)});
      }
    }
  }
  return out;
}

ConvPlan conv_plan(cudnnHandle_t handle, const ConvGeometry& geometry, ConvFusion fusion,
                   const CudnnEngineChoice& choice) {
  auto parts = std::make_shared<std::vector<SharedDescriptor>>();
  SharedDescriptor graph = operation_graph(handle, geometry, fusion, *parts);
  auto engine = std::make_shared<BackendDescriptor>(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
  engine->set_descriptor(CUDNN_ATTR_ENGINE_OPERATION_GRAPH, *graph);
  engine->set(CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &choice.engine);
  if (cudnnBackendFinalize(engine->get()) != CUDNN_STATUS_SUCCESS) {
    throw Error(ErrorCode::invalid_model, "cuda plan: cuDNN engine " + std::to_string(choice.engine) +
                                              " does not support this convolution");
  }
  std::vector<SharedDescriptor> knobs;
  std::vector<cudnnBackendDescriptor_t> knob_handles;
  for (const auto& [type, value] : choice.knobs) {
    auto knob = std::make_shared<BackendDescriptor>(CUDNN_BACKEND_KNOB_CHOICE_DESCRIPTOR);
    const auto knob_type = static_cast<cudnnBackendKnobType_t>(type);
    knob->set(CUDNN_ATTR_KNOB_CHOICE_KNOB_TYPE, CUDNN_TYPE_KNOB_TYPE, 1, &knob_type);
    knob->set(CUDNN_ATTR_KNOB_CHOICE_KNOB_VALUE, CUDNN_TYPE_INT64, 1, &value);
    knob->finalize();
    knob_handles.push_back(knob->get());
    knobs.push_back(knob);
  }
  auto config = std::make_shared<BackendDescriptor>(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
  config->set_descriptor(CUDNN_ATTR_ENGINECFG_ENGINE, *engine);
  if (!knob_handles.empty()) {
    config->set(CUDNN_ATTR_ENGINECFG_KNOB_CHOICES, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                static_cast<int64_t>(knob_handles.size()), knob_handles.data());
  }
  config->finalize();
  size_t workspace = 0;
  SharedDescriptor plan = try_plan(handle, *config, workspace);
  if (!plan) {
    throw Error(ErrorCode::invalid_model,
                "cuda plan: cuDNN cannot make a plan of " + choice.name() + " for this convolution");
  }
  parts->insert(parts->end(), {engine, config});
  parts->insert(parts->end(), knobs.begin(), knobs.end());
  return ConvPlan(parts, plan, fusion, workspace);
}

}  // namespace kiln::cuda
