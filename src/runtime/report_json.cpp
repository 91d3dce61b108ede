#include "runtime/report_json.hpp"

namespace kiln::runtime {

nlohmann::json segments_json(const CompileReport& report) {
  nlohmann::json segments = nlohmann::json::array();
  for (const SegmentRecord& seg : report.segments) {
    nlohmann::json j{{"kind", seg.engine ? "engine" : "fallback"},
                     {"nodes", seg.nodes},
                     {"values_in", seg.values_in},
                     {"bytes_in", seg.bytes_in},
                     {"values_unsized", seg.values_unsized}};
    if (seg.engine) j["engine"] = seg.engine_index;
    if (!seg.reason.empty()) j["reason"] = seg.reason;
    segments.push_back(std::move(j));
  }
  return segments;
}

}  // namespace kiln::runtime
