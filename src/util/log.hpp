// Logging for kiln's libraries: warnings and debug detail go to stderr, never
// to stdout (which belongs to the CLI's results and --json).
//
// warn_once() exists for degraded modes (a read-only cache folder, a Redis
// that is down): the user hears about it once per process and reason, not once
// per lookup.
#pragma once

#include <string_view>

namespace kiln::log {

enum class Level { debug, info, warning, error, off };

void set_level(Level level);
Level level();

void debug(std::string_view message);
void info(std::string_view message);
void warn(std::string_view message);
void error(std::string_view message);
// Logs `message` at warning level the first time `key` is seen in this
// process; later calls with the same key are counted but silent.
void warn_once(std::string_view key, std::string_view message);

}  // namespace kiln::log
