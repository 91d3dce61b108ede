#include "builder/progress.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>

namespace kiln::builder {

namespace {

std::string format_seconds(double seconds) {
  char buffer[48];
  if (seconds < 10)
    std::snprintf(buffer, sizeof buffer, "%.1f s", seconds);
  else if (seconds < 60)
    std::snprintf(buffer, sizeof buffer, "%.0f s", seconds);
  else
    std::snprintf(buffer, sizeof buffer, "%.0f min %02.0f s", std::floor(seconds / 60),
                  std::floor(std::fmod(seconds, 60)));
  return buffer;
}

void write_all(int fd, std::string_view text) {
  while (!text.empty()) {
    ssize_t n = ::write(fd, text.data(), text.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // progress is cosmetic: a closed stderr is not an error
    }
    text.remove_prefix(static_cast<size_t>(n));
  }
}

}  // namespace

bool is_terminal(int fd) { return ::isatty(fd) == 1; }

BuildProgress::BuildProgress(std::string label, size_t total, Mode mode, int fd)
    : m_label(std::move(label)),
      m_total(total),
      m_fd(fd),
      m_enabled(mode == Mode::always || (mode == Mode::automatic && is_terminal(fd))),
      m_start(Clock::now()) {
  std::lock_guard lock(m_mutex);
  draw_locked(true);
}

BuildProgress::~BuildProgress() { finish(); }

size_t BuildProgress::done() const {
  std::lock_guard lock(m_mutex);
  return m_done;
}

void BuildProgress::advance(size_t steps) {
  std::lock_guard lock(m_mutex);
  if (m_finished) return;
  m_done = std::min(m_total, m_done + steps);
  draw_locked(m_done == m_total);
}

void BuildProgress::finish() {
  std::lock_guard lock(m_mutex);
  if (m_finished) return;
  draw_locked(true);
  if (m_enabled) write_all(m_fd, "\n");
  m_finished = true;
}

std::string BuildProgress::format(std::string_view label, size_t done, size_t total,
                                  std::optional<double> seconds_left) {
  size_t percent = total == 0 ? 100 : done * 100 / total;
  std::string line(label);
  line += ": " + std::to_string(done) + "/" + std::to_string(total) + " (" + std::to_string(percent) + "%)";
  if (seconds_left) line += ", ~" + format_seconds(*seconds_left) + " left";
  return line;
}

void BuildProgress::draw_locked(bool force) {
  if (!m_enabled) return;
  auto now = Clock::now();
  if (!force && now - m_last_draw < std::chrono::milliseconds(100)) return;
  m_last_draw = now;

  std::optional<double> seconds_left;
  if (m_done > 0 && m_done < m_total) {
    double elapsed = std::chrono::duration<double>(now - m_start).count();
    seconds_left = elapsed / static_cast<double>(m_done) * static_cast<double>(m_total - m_done);
  }
  std::string line = format(m_label, m_done, m_total, seconds_left);
  size_t width = line.size();
  // Spaces rather than an ANSI erase: works on any terminal and when forced
  // onto a file.
  if (width < m_last_width) line.append(m_last_width - width, ' ');
  m_last_width = width;
  write_all(m_fd, "\r" + line);
}

}  // namespace kiln::builder
