// Silences kiln's warnings for one test's scope (the cache warns about what
// a killed neighbour or a corrupt entry leaves behind: that is the point of
// these tests, not news) and restores the level afterwards, so a later test
// in the same process can still check its warnings.
#pragma once

#include "util/log.hpp"

namespace kiln::reliability {

class QuietLogs {
 public:
  QuietLogs() : m_saved(log::level()) { log::set_level(log::Level::error); }
  ~QuietLogs() { log::set_level(m_saved); }
  QuietLogs(const QuietLogs&) = delete;
  QuietLogs& operator=(const QuietLogs&) = delete;

 private:
  log::Level m_saved;
};

}  // namespace kiln::reliability
