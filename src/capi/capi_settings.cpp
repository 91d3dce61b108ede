// kiln_settings: the tutorial's setting names, set from text or JSON.
#include <algorithm>
#include <charconv>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "backends/registry/backend_registry.hpp"
#include "capi/capi_internal.hpp"

namespace kiln::capi {
namespace {

using nlohmann::json;

enum class Kind { boolean, integer, text, list };

struct Setting {
  Kind kind;
  std::function<void(kiln_settings&, const json&)> set;
  std::function<json(const kiln_settings&)> get;
};

[[noreturn]] void bad_value(const std::string& name, const std::string& expected, const json& value) {
  throw Error(ErrorCode::invalid_argument,
              "setting '" + name + "': expected " + expected + ", got " + value.dump());
}

bool as_bool(const std::string& name, const json& v) {
  if (!v.is_boolean()) bad_value(name, "a boolean", v);
  return v.get<bool>();
}

int64_t as_int(const std::string& name, const json& v, int64_t min, int64_t max) {
  if (!v.is_number_integer()) bad_value(name, "an integer", v);
  int64_t value = v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)
                      ? INT64_MAX
                      : v.get<int64_t>();
  if (value < min || value > max) {
    bad_value(name, "an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "]", v);
  }
  return value;
}

std::string as_text(const std::string& name, const json& v) {
  if (!v.is_string()) bad_value(name, "a string", v);
  return v.get<std::string>();
}

std::vector<std::string> as_list(const std::string& name, const json& v) {
  if (!v.is_array()) bad_value(name, "a list of strings", v);
  std::vector<std::string> items;
  for (const json& item : v) items.push_back(as_text(name, item));
  return items;
}

Precision parse_precision(const std::string& name, const std::string& text) {
  if (text == "fp32" || text == "float32" || text == "float") return Precision::fp32;
  if (text == "bf16" || text == "bfloat16") return Precision::bf16;
  if (text == "fp16" || text == "float16" || text == "half") return Precision::fp16;
  throw Error(ErrorCode::invalid_argument,
              "setting '" + name + "': unknown precision '" + text + "' (known: fp32, fp16, bf16)");
}

const char* precision_text(Precision p) {
  switch (p) {
    case Precision::fp32:
      return "fp32";
    case Precision::bf16:
      return "bf16";
    case Precision::fp16:
      return "fp16";
  }
  return "unknown";
}

const std::map<std::string, Setting>& table() {
  static const std::map<std::string, Setting> settings = [] {
    std::map<std::string, Setting> t;
    auto flag = [&t](const std::string& name, bool CompileSettings::*member, bool inverse) {
      t[name] = {Kind::boolean,
                 [=](kiln_settings& s, const json& v) { s.settings.*member = as_bool(name, v) != inverse; },
                 [=](const kiln_settings& s) { return json(s.settings.*member != inverse); }};
    };
    auto path = [&t](const std::string& name, std::filesystem::path CompileSettings::*member) {
      t[name] = {Kind::text, [=](kiln_settings& s, const json& v) { s.settings.*member = as_text(name, v); },
                 [=](const kiln_settings& s) { return json((s.settings.*member).string()); }};
    };
    auto number = [&t](const std::string& name, int CompileSettings::*member, int min, int max) {
      t[name] = {Kind::integer,
                 [=](kiln_settings& s, const json& v) {
                   s.settings.*member = static_cast<int>(as_int(name, v, min, max));
                 },
                 [=](const kiln_settings& s) { return json(s.settings.*member); }};
    };
    flag("cache_built_engines", &CompileSettings::cache_built_engines, false);
    flag("reuse_cached_engines", &CompileSettings::reuse_cached_engines, false);
    flag("refittable", &CompileSettings::refittable, false);
    flag("immutable_weights", &CompileSettings::refittable, true);
    flag("debug", &CompileSettings::debug, false);
    flag("cpu_fused_attention", &CompileSettings::cpu_fused_attention, false);
    path("engine_cache_dir", &CompileSettings::engine_cache_dir);
    path("engine_cache_secret_file", &CompileSettings::engine_cache_secret_file);
    path("timing_cache_path", &CompileSettings::timing_cache_path);
    number("min_block_size", &CompileSettings::min_block_size, 1, 1 << 20);
    number("optimization_level", &CompileSettings::optimization_level, 0, 5);
    number("num_threads", &CompileSettings::num_threads, 0, 1 << 16);
    t["engine_cache_size"] = {Kind::integer,
                              [](kiln_settings& s, const json& v) {
                                s.settings.engine_cache_size =
                                    static_cast<uint64_t>(as_int("engine_cache_size", v, 0, INT64_MAX));
                              },
                              [](const kiln_settings& s) { return json(s.settings.engine_cache_size); }};
    t["engine_cache_tiers"] = {Kind::list,
                               [](kiln_settings& s, const json& v) {
                                 s.settings.engine_cache_tiers = as_list("engine_cache_tiers", v);
                               },
                               [](const kiln_settings& s) { return json(s.settings.engine_cache_tiers); }};
    t["enabled_precisions"] = {Kind::list,
                               [](kiln_settings& s, const json& v) {
                                 std::set<Precision> precisions;
                                 for (const auto& p : as_list("enabled_precisions", v)) {
                                   precisions.insert(parse_precision("enabled_precisions", p));
                                 }
                                 if (precisions.empty()) {
                                   bad_value("enabled_precisions", "at least one precision", v);
                                 }
                                 s.settings.enabled_precisions = precisions;
                               },
                               [](const kiln_settings& s) {
                                 json list = json::array();
                                 for (Precision p : s.settings.enabled_precisions) {
                                   list.push_back(precision_text(p));
                                 }
                                 return list;
                               }};
    t["backend"] = {
        Kind::text,
        [](kiln_settings& s, const json& v) {
          std::string backend = as_text("backend", v);
          const std::vector<std::string> engines = backend_names();
          if (backend != "ref" && std::find(engines.begin(), engines.end(), backend) == engines.end()) {
            std::string known;
            for (const std::string& b : engines) known += b + ", ";
            throw Error(ErrorCode::invalid_argument, "setting 'backend': unknown backend '" + backend +
                                                         "' (this kiln has: " + known + "ref)");
          }
          s.backend = backend;
          if (backend != "ref") s.settings.backend = backend;
        },
        [](const kiln_settings& s) { return json(s.backend); }};
    return t;
  }();
  return settings;
}

const Setting& find_setting(const std::string& name) {
  auto it = table().find(name);
  if (it == table().end()) {
    std::string known;
    for (const auto& [n, setting] : table()) known += (known.empty() ? "" : ", ") + n;
    throw Error(ErrorCode::invalid_argument, "unknown setting '" + name + "' (known: " + known + ")");
  }
  return it->second;
}

// The text form of kiln_settings_set, as the JSON value of the setting's kind.
json from_text(const std::string& name, Kind kind, const std::string& text) {
  switch (kind) {
    case Kind::boolean:
      if (text == "true" || text == "1") return true;
      if (text == "false" || text == "0") return false;
      bad_value(name, "true, false, 1 or 0", json(text));
    case Kind::integer: {
      int64_t value = 0;
      auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
      if (ec != std::errc() || end != text.data() + text.size()) bad_value(name, "an integer", json(text));
      return value;
    }
    case Kind::text:
      return text;
    case Kind::list: {
      json list = json::array();
      size_t start = 0;
      while (start <= text.size() && !text.empty()) {
        size_t comma = text.find(',', start);
        if (comma == std::string::npos) comma = text.size();
        if (comma > start) list.push_back(text.substr(start, comma - start));
        start = comma + 1;
      }
      return list;
    }
  }
  return json();
}

void apply(kiln_settings& settings, const std::string& name, const json& value) {
  const Setting& setting = find_setting(name);
  // A JSON string is accepted for every kind, in the text form.
  if (value.is_string() && setting.kind != Kind::text) {
    setting.set(settings, from_text(name, setting.kind, value.get<std::string>()));
  } else {
    setting.set(settings, value);
  }
}

}  // namespace
}  // namespace kiln::capi

using namespace kiln;
using namespace kiln::capi;

extern "C" {

kiln_status kiln_settings_create(kiln_settings** settings_out) {
  return guard([&] {
    require(settings_out, "settings_out");
    *settings_out = new kiln_settings();
  });
}

kiln_status kiln_settings_clone(const kiln_settings* settings, kiln_settings** settings_out) {
  return guard([&] {
    require(settings, "settings");
    require(settings_out, "settings_out");
    *settings_out = new kiln_settings(*settings);
  });
}

void kiln_settings_destroy(kiln_settings* settings) { delete settings; }

kiln_status kiln_settings_set(kiln_settings* settings, const char* name, const char* value) {
  return guard([&] {
    require(settings, "settings");
    require(name, "name");
    require(value, "value");
    const Setting& setting = find_setting(name);
    kiln_settings updated = *settings;
    setting.set(updated, from_text(name, setting.kind, value));
    *settings = std::move(updated);
  });
}

kiln_status kiln_settings_set_json(kiln_settings* settings, const char* json_object) {
  return guard([&] {
    require(settings, "settings");
    require(json_object, "json_object");
    json object = json::parse(json_object, nullptr, false);
    if (object.is_discarded() || !object.is_object()) {
      throw Error(ErrorCode::invalid_argument, "settings: not a JSON object: " + std::string(json_object));
    }
    kiln_settings updated = *settings;
    for (const auto& [name, value] : object.items()) apply(updated, name, value);
    *settings = std::move(updated);
  });
}

kiln_status kiln_settings_to_json(const kiln_settings* settings, char** json_out) {
  return guard([&] {
    require(settings, "settings");
    require(json_out, "json_out");
    json object = json::object();
    for (const auto& [name, setting] : table()) object[name] = setting.get(*settings);
    object["custom_engine_cache"] = settings->settings.custom_engine_cache != nullptr;
    *json_out = copy_string(object.dump());
  });
}

}  // extern "C"
