#include "compile_report.hpp"

#include <iomanip>

#include "runtime/report_json.hpp"

namespace kiln::cli {

nlohmann::json compile_report_json(const runtime::CompileReport& r, bool with_layers) {
  nlohmann::json j;
  j["backend"] = r.backend;
  j["lower_ms"] = r.lower_ms;
  j["compile_ms"] = r.compile_ms;
  j["engines"] = nlohmann::json::array();
  for (const auto& e : r.engines) {
    nlohmann::json ej{{"key", e.key},
                      {"status", e.status},
                      {"key_ms", e.key_ms},
                      {"load_ms", e.load_ms},
                      {"refit_ms", e.refit_ms},
                      {"build_ms", e.build_ms},
                      {"save_ms", e.save_ms},
                      {"layers", e.info.layers.size()},
                      {"activation_bytes", e.info.activation_bytes},
                      {"weight_bytes", e.info.weight_bytes}};
    if (!e.reason.empty()) ej["reason"] = e.reason;
    if (with_layers) {
      for (const auto& l : e.info.layers) {
        ej["layer_tactics"].push_back(
            {{"name", l.name}, {"op", l.op}, {"tactic", l.tactic}, {"time_ms", l.time_ms}});
      }
    }
    j["engines"].push_back(ej);
  }
  j["segments"] = runtime::segments_json(r);
  if (!r.timing_cache_path.empty()) {
    j["timing_cache"] = {{"path", r.timing_cache_path.string()},
                         {"entries", r.timing_cache_entries},
                         {"hits", r.timing_cache_hits},
                         {"misses", r.timing_cache_misses}};
  }
  return j;
}

void print_compile_report(std::ostream& out, const runtime::CompileReport& r, bool with_layers) {
  out << std::fixed << std::setprecision(1);
  for (const auto& e : r.engines) {
    out << "engine  " << (e.key.empty() ? std::string("(uncached)") : e.key.substr(0, 16)) << "  "
        << e.status;
    if (e.status == "hit") {
      out << "  load " << e.load_ms << " ms, refit " << e.refit_ms << " ms";
    } else {
      out << "  build " << e.build_ms << " ms";
      if (e.save_ms > 0) out << ", save " << e.save_ms << " ms";
    }
    out << "  (" << e.info.layers.size() << " layers, " << std::setprecision(2)
        << static_cast<double>(e.info.activation_bytes) / 1e6 << " MB activations)" << std::setprecision(1);
    if (!e.reason.empty()) out << "\n        miss: " << e.reason;
    out << "\n";
    if (with_layers) {
      for (const auto& l : e.info.layers) {
        out << "  layer " << l.name << " (" << l.op << "): " << l.tactic;
        if (l.time_ms > 0) out << "  " << std::setprecision(3) << l.time_ms << " ms" << std::setprecision(1);
        out << "\n";
      }
    }
  }
  size_t values = 0, bytes = 0, unsized = 0;
  for (const auto& seg : r.segments) {
    if (!seg.engine)
      out << "fallback " << seg.nodes << " node(s) on the reference backend: " << seg.reason << "\n";
    values += seg.values_in;
    bytes += seg.bytes_in;
    unsized += seg.values_unsized;
  }
  if (values > 0) {
    // Each passes through the host: on the cuda backend a copy off the
    // device and one back on, at every run.
    out << "between " << r.segments.size() << " segments: " << values << " value(s), " << std::setprecision(3)
        << static_cast<double>(bytes) / 1e6 << " MB per run at the opt shapes" << std::setprecision(1);
    if (unsized > 0) out << " (" << unsized << " of them sized only at run time, not counted)";
    out << "\n";
  }
  out << "compile " << r.backend << " backend: " << r.compile_ms << " ms (lowering " << r.lower_ms << " ms)";
  if (!r.timing_cache_path.empty()) {
    out << "; timing cache " << r.timing_cache_hits << " hits, " << r.timing_cache_misses << " misses";
  }
  out << "\n";
}

}  // namespace kiln::cli
