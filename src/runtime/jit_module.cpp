// JitModule (include/kiln/jit.hpp): exact engines per shape, one range engine
// per dim once it keeps changing, every compile through kiln::compile and so
// through the engine cache.
//
// Only the public API compiles and runs; the importer and the lowering are
// used once per model, to learn its input names, dtypes and static dims and
// its architecture (what update_model compares) before the first compile.
#include "kiln/jit.hpp"

#include <algorithm>
#include <chrono>
#include <future>
#include <mutex>
#include <set>
#include <variant>

#include "frontend/onnx/onnx_importer.hpp"
#include "key/engine_key.hpp"
#include "kiln/error.hpp"
#include "passes/passes.hpp"
#include "runtime/clock.hpp"
#include "util/log.hpp"

namespace kiln {

namespace {

using runtime::Clock;
using runtime::ms_since;

using Shapes = std::vector<std::vector<int64_t>>;

// What the model declares about one input.
struct InputInfo {
  std::string name;
  DType dtype = DType::undefined;
  std::optional<size_t> rank;                 // nullopt: the model does not say
  std::vector<std::optional<int64_t>> fixed;  // per axis: the static size, if any
  std::vector<std::string> symbols;           // per axis: the symbolic name, or ""
  bool operator==(const InputInfo&) const = default;
};

std::vector<InputInfo> read_inputs(const ir::Graph& graph) {
  std::vector<InputInfo> infos;
  for (ir::ValueId id : graph.inputs()) {
    const ir::Value& v = graph.value(id);
    InputInfo info{v.name, v.type.dtype, std::nullopt, {}, {}};
    if (v.type.shape) {
      info.rank = v.type.shape->size();
      for (const ir::Dim& d : *v.type.shape) {
        info.fixed.push_back(d.is_static() ? std::optional<int64_t>(d.value()) : std::nullopt);
        info.symbols.push_back(d.is_symbolic() ? d.symbol_name() : std::string());
      }
    }
    infos.push_back(std::move(info));
  }
  return infos;
}

// Where a compile reads the model from. Shared: a compile in flight keeps the
// model it started with while update_model installs another.
struct ModelSource {
  std::variant<std::filesystem::path, std::vector<std::byte>> data;
  std::string name;  // names the model in errors
};

// A model imported once: its inputs and architecture, and its weights for a
// refit (borrowed from `imported`, which stays alive while they are read).
struct LoadedModel {
  frontend::ImportedModel imported;
  std::vector<InputInfo> inputs;
  // The canonical text the engine key's graph part hashes, of the lowered
  // graph: nodes, attributes, structural constants by value, refittable
  // weights by dtype, shape and recipe only. Equal texts: a refit suffices.
  std::string architecture;
};

LoadedModel load(const ModelSource& source) {
  LoadedModel m;
  if (const auto* path = std::get_if<std::filesystem::path>(&source.data)) {
    m.imported = frontend::import_onnx_file(*path);
  } else {
    const auto& bytes = std::get<std::vector<std::byte>>(source.data);
    m.imported = frontend::import_onnx_bytes(bytes, source.name);
  }
  m.inputs = read_inputs(m.imported.graph);
  passes::LoweringOptions lowering;
  lowering.defer_weight_values = true;  // only the structure is read
  m.architecture = key::canonical_graph_text(passes::lower(m.imported.graph, lowering));
  return m;
}

// One engine the module holds: compiling, then ready.
struct Slot {
  std::vector<InputSpec> specs;  // guarded by Impl::mutex: a failed range compile narrows it
  std::vector<InputSpec> tight;  // the ranges without headroom (max = largest value seen); empty if the same
  size_t record = 0;
  std::promise<void> done;
  std::shared_future<void> ready = done.get_future().share();
  std::optional<CompiledModel> model;  // written once, before `done` is set
  std::mutex run_mutex;                // one CompiledModel runs on one thread at a time
};

bool is_exact(std::span<const InputSpec> specs) {
  return std::all_of(specs.begin(), specs.end(), [](const InputSpec& s) { return s.is_static(); });
}

bool covers(std::span<const InputSpec> specs, const Shapes& shapes) {
  if (specs.size() != shapes.size()) return false;
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& s = specs[i];
    if (s.min.size() != shapes[i].size()) return false;
    for (size_t a = 0; a < shapes[i].size(); ++a) {
      if (shapes[i][a] < s.min[a] || shapes[i][a] > s.max[a]) return false;
    }
  }
  return true;
}

int64_t next_power_of_two(int64_t v) {
  int64_t p = 1;
  while (p < v) p *= 2;
  return p;
}

std::string dim_name(const InputInfo& info, size_t axis) {
  std::string text = "input '" + info.name + "' dim " + std::to_string(axis);
  if (axis < info.symbols.size() && !info.symbols[axis].empty()) text += " ('" + info.symbols[axis] + "')";
  return text;
}

}  // namespace

std::string describe_specs(std::span<const InputSpec> specs) {
  std::string out;
  for (const InputSpec& s : specs) {
    if (!out.empty()) out += ", ";
    out += s.name + "=";
    if (s.min.empty()) out += "scalar";
    for (size_t a = 0; a < s.min.size(); ++a) {
      if (a) out += "x";
      if (s.min[a] == s.max[a]) {
        out += std::to_string(s.min[a]);
      } else {
        out += "[" + std::to_string(s.min[a]) + ".." + std::to_string(s.max[a]) + ", opt " +
               std::to_string(s.opt[a]) + "]";
      }
    }
  }
  return out;
}

struct JitModule::Impl {
  CompileSettings settings;
  JitOptions options;

  std::mutex update_mutex;   // held through one update_model, refits included
  mutable std::mutex mutex;  // guards everything below; never held while compiling or running
  std::shared_ptr<const ModelSource> model;
  std::string source;  // model->name
  std::vector<InputInfo> inputs;
  std::string architecture;
  size_t refits = 0;
  std::string restart = "first call since reset()";  // the trigger once live engines were dropped
  std::vector<std::shared_ptr<Slot>> live;
  std::vector<std::vector<std::set<int64_t>>> seen;  // [input][axis]: distinct values that compiled
  std::vector<std::vector<bool>> dynamic;            // [input][axis]: switched to a range
  bool headroom_off = false;  // a range with headroom failed: ranges end at the largest value seen
  std::string ranges_off;     // why range engines are off, after a tight one failed too
  std::vector<JitCompileRecord> log;
  std::optional<size_t> last_finished;

  void validate(std::span<const Tensor> values) const;
  std::shared_ptr<Slot> find(const Shapes& shapes) const;
  struct Plan {
    std::vector<InputSpec> specs;
    std::vector<InputSpec> tight;
    std::string trigger;
  };
  Plan plan(const Shapes& shapes);
  void compile(Slot& slot, const Shapes& shapes);
  void install(std::shared_ptr<const ModelSource> source, std::vector<InputInfo> model_inputs,
               std::string model_architecture);
  void forget_shapes();
  JitUpdate update(std::shared_ptr<const ModelSource> source);
};

void JitModule::Impl::validate(std::span<const Tensor> values) const {
  if (values.size() != inputs.size()) {
    throw Error(ErrorCode::invalid_argument, source + ": " + std::to_string(values.size()) +
                                                 " inputs for a model with " + std::to_string(inputs.size()));
  }
  for (size_t i = 0; i < values.size(); ++i) {
    const InputInfo& info = inputs[i];
    const Tensor& t = values[i];
    if (t.dtype() != info.dtype) {
      throw Error(ErrorCode::invalid_argument, source + ": input '" + info.name + "' is " +
                                                   std::string(dtype_name(info.dtype)) + ", got " +
                                                   std::string(dtype_name(t.dtype())));
    }
    if (info.rank && static_cast<size_t>(t.rank()) != *info.rank) {
      throw Error(ErrorCode::invalid_argument, source + ": input '" + info.name + "' has rank " +
                                                   std::to_string(*info.rank) + ", got shape " +
                                                   t.shape_string());
    }
    for (size_t a = 0; a < info.fixed.size(); ++a) {
      int64_t v = t.shape()[a];
      if (info.fixed[a] && *info.fixed[a] != v) {
        throw Error(ErrorCode::invalid_argument, source + ": " + dim_name(info, a) + " is " +
                                                     std::to_string(*info.fixed[a]) + ", got " +
                                                     std::to_string(v));
      }
      auto declared =
          info.symbols[a].empty() ? options.dim_ranges.end() : options.dim_ranges.find(info.symbols[a]);
      if (declared != options.dim_ranges.end() &&
          (v < declared->second.min || (declared->second.max > 0 && v > declared->second.max))) {
        throw Error(
            ErrorCode::invalid_argument,
            source + ": " + dim_name(info, a) + " is " + std::to_string(v) +
                ", outside its declared range [" + std::to_string(declared->second.min) + ", " +
                (declared->second.max > 0 ? std::to_string(declared->second.max) : std::string("inf")) + "]");
      }
    }
  }
}

// The live engine for `shapes`: an exact one first (its tactics were timed
// at this very shape), else the newest range engine covering them.
std::shared_ptr<Slot> JitModule::Impl::find(const Shapes& shapes) const {
  std::shared_ptr<Slot> best;
  for (const auto& slot : live) {
    if (!covers(slot->specs, shapes)) continue;
    if (is_exact(slot->specs)) return slot;
    if (!best || slot->record > best->record) best = slot;
  }
  return best;
}

// Records `shapes` as seen and chooses what to compile for them: exact
// shapes, with a range for every dim that has shown more than dynamic_after
// distinct values.
JitModule::Impl::Plan JitModule::Impl::plan(const Shapes& shapes) {
  const size_t limit = static_cast<size_t>(std::max(options.dynamic_after, 1));
  if (seen.size() < shapes.size()) {
    seen.resize(shapes.size());
    dynamic.resize(shapes.size());
  }
  std::string changed;   // a dim that took a new value
  std::string switched;  // a dim that just became dynamic
  for (size_t i = 0; i < shapes.size(); ++i) {
    if (seen[i].size() < shapes[i].size()) {
      seen[i].resize(shapes[i].size());
      dynamic[i].resize(shapes[i].size(), false);
    }
    for (size_t a = 0; a < shapes[i].size(); ++a) {
      bool fixed_by_model = a < inputs[i].fixed.size() && inputs[i].fixed[a];
      bool is_new = seen[i][a].insert(shapes[i][a]).second;
      if (fixed_by_model) continue;
      if (is_new && seen[i][a].size() > 1 && changed.empty()) {
        changed = dim_name(inputs[i], a) + " = " + std::to_string(shapes[i][a]);
      }
      if (!dynamic[i][a] && seen[i][a].size() > limit && ranges_off.empty()) {
        dynamic[i][a] = true;
        if (switched.empty()) {
          switched =
              dim_name(inputs[i], a) + " has shown " + std::to_string(seen[i][a].size()) + " distinct values";
        }
      }
    }
  }

  Plan result;
  bool range = false;
  bool headroom = false;
  for (size_t i = 0; i < shapes.size(); ++i) {
    InputSpec spec = InputSpec::fixed(inputs[i].name, inputs[i].dtype, shapes[i]);
    InputSpec tight = spec;
    for (size_t a = 0; a < shapes[i].size(); ++a) {
      if (a >= dynamic[i].size() || !dynamic[i][a]) continue;
      DimRange bounds;
      const std::string& symbol = a < inputs[i].symbols.size() ? inputs[i].symbols[a] : std::string();
      if (auto it = options.dim_ranges.find(symbol); !symbol.empty() && it != options.dim_ranges.end()) {
        bounds = it->second;
      }
      int64_t largest = *seen[i][a].rbegin();
      tight.min[a] = spec.min[a] = std::min(bounds.min, shapes[i][a]);
      tight.max[a] = bounds.max > 0 ? bounds.max : largest;
      if (bounds.max <= 0 && !headroom_off) {
        bounds.max = next_power_of_two(std::max<int64_t>(options.range_headroom, 1) * largest);
      }
      spec.max[a] = bounds.max > 0 ? bounds.max : largest;
      range = range || spec.min[a] < spec.max[a];
      headroom = headroom || spec.max[a] != tight.max[a];
    }
    result.specs.push_back(std::move(spec));
    result.tight.push_back(std::move(tight));
  }
  if (!headroom) result.tight.clear();

  std::string trigger;
  if (live.empty()) {
    trigger = log.empty() ? "first call" : restart;
  } else if (range && !switched.empty()) {
    trigger = "range engine: " + switched;
  } else if (range) {
    trigger = "range engine: a value outside the live ranges (" +
              (changed.empty() ? std::string("?") : changed) + ")";
  } else {
    trigger = "new shape: " + (changed.empty() ? std::string("inputs changed") : changed);
  }
  result.trigger = std::move(trigger);
  return result;
}

CompiledModel compile_now(const ModelSource& model, const std::vector<InputSpec>& specs,
                          const CompileSettings& settings) {
  if (auto* path = std::get_if<std::filesystem::path>(&model.data))
    return kiln::compile(*path, specs, settings);
  return kiln::compile(std::span<const std::byte>(std::get<std::vector<std::byte>>(model.data)), specs,
                       settings);
}

// Runs the compile for `slot` (its owner is the caller that missed first) and
// publishes the engine, or the failure, to everyone waiting on it.
void JitModule::Impl::compile(Slot& slot, const Shapes& shapes) {
  // What to try, widest first: the planned ranges; the ranges without
  // headroom; exact shapes. A model can bound a dim (BERT's sequence by its
  // position table), so a range past what has been seen may not build.
  std::vector<std::vector<InputSpec>> attempts;
  std::shared_ptr<const ModelSource> source_model;
  {
    std::lock_guard lock(mutex);
    source_model = model;
    attempts.push_back(slot.specs);
    if (!slot.tight.empty()) attempts.push_back(slot.tight);
  }
  if (!is_exact(attempts.front())) {
    std::vector<InputSpec> exact;
    for (size_t i = 0; i < shapes.size(); ++i) {
      exact.push_back(InputSpec::fixed(attempts.front()[i].name, attempts.front()[i].dtype, shapes[i]));
    }
    attempts.push_back(std::move(exact));
  }
  auto start = Clock::now();
  try {
    std::optional<CompiledModel> compiled;
    for (size_t k = 0; !compiled; ++k) {
      try {
        compiled.emplace(compile_now(*source_model, attempts[k], settings));
      } catch (const Error& e) {
        if (k + 1 == attempts.size()) throw;
        const std::vector<InputSpec>& next = attempts[k + 1];
        bool to_exact = is_exact(next);
        log::warn(source_model->name + ": range compile for " + describe_specs(attempts[k]) + " failed (" +
                  e.what() + "); " +
                  (to_exact ? "compiling exact shapes instead, and no more range engines"
                            : "trying " + describe_specs(next) + ", and no more headroom"));
        std::lock_guard lock(mutex);
        if (to_exact) {
          ranges_off = e.what();
          for (auto& dims : dynamic) std::fill(dims.begin(), dims.end(), false);
        } else {
          headroom_off = true;
        }
        slot.specs = next;
        JitCompileRecord& r = log[slot.record];
        r.trigger += "; " + describe_specs(attempts[k]) + " failed (" + std::string(e.what()) + ")";
        r.specs = next;
        r.signature = describe_specs(next);
        r.range = !to_exact;
      }
    }
    double ms = ms_since(start);
    std::lock_guard lock(mutex);
    JitCompileRecord& r = log[slot.record];
    r.finished = true;
    r.engines = compiled->engines();
    r.compile_ms = ms;
    last_finished = slot.record;
    slot.model = std::move(compiled);
  } catch (...) {
    std::string what = "unknown error";
    try {
      throw;
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    {
      std::lock_guard lock(mutex);
      std::erase_if(live, [&](const std::shared_ptr<Slot>& s) { return s.get() == &slot; });
      JitCompileRecord& r = log[slot.record];
      r.finished = true;
      r.failed = true;
      r.error = what;
      r.compile_ms = ms_since(start);
    }
    slot.done.set_exception(std::current_exception());
    throw;
  }
  slot.done.set_value();
}

void JitModule::Impl::install(std::shared_ptr<const ModelSource> source_model,
                              std::vector<InputInfo> model_inputs, std::string model_architecture) {
  model = std::move(source_model);
  source = model->name;
  inputs = std::move(model_inputs);
  architecture = std::move(model_architecture);
}

void JitModule::Impl::forget_shapes() {
  live.clear();
  seen.clear();
  dynamic.clear();
  headroom_off = false;
  ranges_off.clear();
}

JitUpdate JitModule::Impl::update(std::shared_ptr<const ModelSource> next) {
  // One update at a time: two interleaved ones could leave an engine with the
  // weights of the one that installed its model first.
  std::lock_guard serial(update_mutex);
  LoadedModel loaded = load(*next);  // throws before anything changes
  const std::string name = next->name;
  JitUpdate result;
  std::vector<std::shared_ptr<Slot>> slots;
  {
    std::lock_guard lock(mutex);
    if (loaded.inputs != inputs) {
      result.recompile_reason = "the model's inputs changed";
    } else if (loaded.architecture != architecture) {
      result.recompile_reason =
          "the graph changed (nodes, attributes, structural constants or weight shapes)";
    }
    if (!result.recompile_reason.empty()) {
      result.engines_dropped = live.size();
      forget_shapes();
      restart = "first call since update_model(): " + result.recompile_reason;
      install(std::move(next), std::move(loaded.inputs), std::move(loaded.architecture));
      return result;
    }
    // From here on compiles read the new model; engines compiled from the
    // old one (live now, some perhaps still compiling) are refitted below.
    slots = live;
    install(std::move(next), loaded.inputs, std::move(loaded.architecture));
  }

  // The canonical order is the same in both graphs (same architecture), so
  // the new weights go to the engines' names position by position.
  const std::vector<Tensor> weights = passes::source_weights(loaded.imported.graph);
  std::vector<std::shared_ptr<Slot>> refused;
  for (const auto& slot : slots) {
    try {
      slot->ready.get();
    } catch (...) {
      continue;  // its compile failed and it left `live` already
    }
    std::lock_guard run_lock(slot->run_mutex);
    const std::vector<WeightInfo>& infos = slot->model->weights();
    if (infos.size() != weights.size()) {
      throw Error(ErrorCode::internal, name + ": update_model: " + std::to_string(weights.size()) +
                                           " weights for an engine with " + std::to_string(infos.size()));
    }
    std::vector<WeightUpdate> updates;
    updates.reserve(weights.size());
    for (size_t i = 0; i < weights.size(); ++i) updates.push_back({infos[i].name, weights[i]});
    try {
      RefitStats stats = slot->model->refit(updates);
      result.stats.weights = std::max(result.stats.weights, stats.weights);
      result.stats.engines += stats.engines;
      result.stats.fallback_weights += stats.fallback_weights;
      result.stats.check_ms += stats.check_ms;
      result.stats.refit_ms += stats.refit_ms;
      ++result.engines_refit;
    } catch (const Error& e) {
      // refittable = false: this engine keeps old weights, so it must go.
      log::warn(name + ": update_model: " + std::string(e.what()) + "; its shapes compile again");
      refused.push_back(slot);
    }
  }
  std::lock_guard lock(mutex);
  for (const auto& slot : refused) std::erase(live, slot);
  result.engines_dropped = refused.size();
  result.refit = true;
  ++refits;
  return result;
}

JitModule::JitModule(std::filesystem::path onnx_model, CompileSettings settings, JitOptions options)
    : m_impl(std::make_unique<Impl>()) {
  auto source = std::make_shared<const ModelSource>(ModelSource{onnx_model, onnx_model.string()});
  LoadedModel loaded = load(*source);
  m_impl->install(source, std::move(loaded.inputs), std::move(loaded.architecture));
  m_impl->settings = std::move(settings);
  m_impl->options = std::move(options);
}

JitModule::JitModule(std::span<const std::byte> onnx_model, CompileSettings settings, JitOptions options)
    : m_impl(std::make_unique<Impl>()) {
  auto source = std::make_shared<const ModelSource>(
      ModelSource{std::vector<std::byte>(onnx_model.begin(), onnx_model.end()), "<memory>"});
  LoadedModel loaded = load(*source);
  m_impl->install(source, std::move(loaded.inputs), std::move(loaded.architecture));
  m_impl->settings = std::move(settings);
  m_impl->options = std::move(options);
}

JitModule::JitModule(JitModule&&) noexcept = default;
JitModule& JitModule::operator=(JitModule&&) noexcept = default;
JitModule::~JitModule() = default;

std::vector<Tensor> JitModule::run(std::span<const Tensor> inputs, JitCallInfo* info) {
  Impl& impl = *m_impl;
  {
    std::lock_guard lock(impl.mutex);  // update_model may replace the inputs
    impl.validate(inputs);
  }
  Shapes shapes;
  for (const Tensor& t : inputs) shapes.push_back(t.shape());

  JitCallInfo call;
  auto start = Clock::now();
  for (;;) {
    std::shared_ptr<Slot> slot;
    bool mine = false;
    {
      std::lock_guard lock(impl.mutex);
      slot = impl.find(shapes);
      if (!slot) {
        auto plan = impl.plan(shapes);
        slot = std::make_shared<Slot>();
        slot->specs = std::move(plan.specs);
        slot->tight = std::move(plan.tight);
        slot->record = impl.log.size();
        JitCompileRecord record;
        record.specs = slot->specs;
        record.signature = describe_specs(slot->specs);
        record.trigger = std::move(plan.trigger);
        record.range = !is_exact(slot->specs);
        impl.log.push_back(std::move(record));
        impl.live.push_back(slot);
        mine = true;
      }
    }
    if (mine) {
      impl.compile(*slot, shapes);
      call.compiled = true;
    } else if (slot->ready.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
      call.waited = true;
    }
    slot->ready.get();  // rethrows a failed compile's error
    {
      // A range compile that fell back to exact shapes may no longer cover
      // a waiter's shapes: look again.
      std::lock_guard lock(impl.mutex);
      if (!covers(slot->specs, shapes)) continue;
      call.engine = slot->record;
      call.range = !is_exact(slot->specs);
    }
    if (call.compiled || call.waited) call.compile_ms = ms_since(start);
    auto run_start = Clock::now();
    std::vector<Tensor> outputs;
    {
      std::lock_guard run_lock(slot->run_mutex);
      outputs = slot->model->run(inputs);
    }
    call.run_ms = ms_since(run_start);
    if (info) *info = call;
    return outputs;
  }
}

void JitModule::reset() {
  std::lock_guard lock(m_impl->mutex);
  m_impl->forget_shapes();
  m_impl->restart = "first call since reset()";
}

JitUpdate JitModule::update_model(const std::filesystem::path& onnx_model) {
  return m_impl->update(std::make_shared<const ModelSource>(ModelSource{onnx_model, onnx_model.string()}));
}

JitUpdate JitModule::update_model(std::span<const std::byte> onnx_model) {
  return m_impl->update(std::make_shared<const ModelSource>(
      ModelSource{std::vector<std::byte>(onnx_model.begin(), onnx_model.end()), "<memory>"}));
}

size_t JitModule::refits() const {
  std::lock_guard lock(m_impl->mutex);
  return m_impl->refits;
}

size_t JitModule::compiles() const {
  std::lock_guard lock(m_impl->mutex);
  return m_impl->log.size();
}

std::vector<JitCompileRecord> JitModule::compile_log() const {
  std::lock_guard lock(m_impl->mutex);
  return m_impl->log;
}

std::vector<EngineStatus> JitModule::last_engines() const {
  std::lock_guard lock(m_impl->mutex);
  if (!m_impl->last_finished) return {};
  return m_impl->log[*m_impl->last_finished].engines;
}

size_t JitModule::live_engines() const {
  std::lock_guard lock(m_impl->mutex);
  return m_impl->live.size();
}

std::optional<size_t> JitModule::engine_for(std::span<const std::vector<int64_t>> shapes) const {
  std::lock_guard lock(m_impl->mutex);
  auto slot = m_impl->find(Shapes(shapes.begin(), shapes.end()));
  if (!slot) return std::nullopt;
  return slot->record;
}

std::vector<std::string> JitModule::input_names() const {
  std::lock_guard lock(m_impl->mutex);
  std::vector<std::string> names;
  for (const auto& i : m_impl->inputs) names.push_back(i.name);
  return names;
}

const CompileSettings& JitModule::settings() const { return m_impl->settings; }
const JitOptions& JitModule::options() const { return m_impl->options; }

}  // namespace kiln
