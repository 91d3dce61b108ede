#include "util/log.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <mutex>
#include <set>
#include <string>

namespace kiln::log {

namespace {

std::shared_ptr<spdlog::logger> logger() {
  static std::shared_ptr<spdlog::logger> instance = [] {
    auto l = spdlog::stderr_color_mt("kiln");
    l->set_pattern("kiln: %^%l%$: %v");
    l->set_level(spdlog::level::warn);
    return l;
  }();
  return instance;
}

spdlog::level::level_enum to_spdlog(Level level) {
  switch (level) {
    case Level::debug:
      return spdlog::level::debug;
    case Level::info:
      return spdlog::level::info;
    case Level::warning:
      return spdlog::level::warn;
    case Level::error:
      return spdlog::level::err;
    case Level::off:
      return spdlog::level::off;
  }
  return spdlog::level::warn;
}

}  // namespace

void set_level(Level level) { logger()->set_level(to_spdlog(level)); }

Level level() {
  switch (logger()->level()) {
    case spdlog::level::trace:
    case spdlog::level::debug:
      return Level::debug;
    case spdlog::level::info:
      return Level::info;
    case spdlog::level::warn:
      return Level::warning;
    case spdlog::level::err:
    case spdlog::level::critical:
      return Level::error;
    default:
      return Level::off;
  }
}

void debug(std::string_view message) { logger()->debug("{}", message); }
void info(std::string_view message) { logger()->info("{}", message); }
void warn(std::string_view message) { logger()->warn("{}", message); }
void error(std::string_view message) { logger()->error("{}", message); }

void warn_once(std::string_view key, std::string_view message) {
  static std::mutex mutex;
  static std::set<std::string, std::less<>> seen;
  {
    std::lock_guard lock(mutex);
    if (!seen.insert(std::string(key)).second) return;
  }
  warn(message);
}

}  // namespace kiln::log
