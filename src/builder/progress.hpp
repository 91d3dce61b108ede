// BuildProgress: a one-line progress report for long builds, e.g.
//   "timing layers: 12/57 (21%), ~3.4 s left"
// redrawn in place on stderr with '\r' and ended with a newline by finish()
// (or the destructor).
//
// By default it draws only when the stream is a terminal, so logs, pipes and
// CI output never collect carriage-return noise; Mode::always/never override
// that. The estimate is the mean time per completed step times the steps left.
// Redraws are limited to about ten a second; the last step always draws.
//
// Thread-safety: all methods may be called from any thread; one builder thread
// calling advance() is the intended use. The object does not own the fd.
#pragma once

#include <chrono>
#include <cstddef>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace kiln::builder {

// True when `fd` refers to a terminal.
bool is_terminal(int fd);

class BuildProgress {
 public:
  enum class Mode { automatic, always, never };

  BuildProgress(std::string label, size_t total, Mode mode = Mode::automatic, int fd = 2);
  ~BuildProgress();
  BuildProgress(const BuildProgress&) = delete;
  BuildProgress& operator=(const BuildProgress&) = delete;

  // Marks `steps` more steps done and redraws (rate-limited).
  void advance(size_t steps = 1);
  // Draws the final state and the newline; later calls do nothing.
  void finish();

  bool enabled() const { return m_enabled; }
  size_t done() const;

  // The line without '\r' or padding, e.g. "timing layers: 12/57 (21%), ~3.4 s left";
  // no estimate part when `seconds_left` is empty.
  static std::string format(std::string_view label, size_t done, size_t total,
                            std::optional<double> seconds_left);

 private:
  void draw_locked(bool force);

  using Clock = std::chrono::steady_clock;

  mutable std::mutex m_mutex;
  std::string m_label;
  size_t m_total;
  size_t m_done = 0;
  int m_fd;
  bool m_enabled;
  bool m_finished = false;
  Clock::time_point m_start;
  Clock::time_point m_last_draw;
  size_t m_last_width = 0;  // chars drawn last time, to blank a longer old line
};

}  // namespace kiln::builder
