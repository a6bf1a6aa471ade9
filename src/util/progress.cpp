#include "util/progress.h"

#include <unistd.h>

#include <cstdio>

namespace metharme {

Progress::Progress(std::string label, int64_t total, std::string unit, bool enabled)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), enabled_(enabled),
      tty_(::isatty(STDERR_FILENO) != 0), start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

Progress::~Progress() {
  if (!finished_ && enabled_ && tty_ && done_ > 0) std::fputc('\n', stderr);
}

std::string Progress::format_duration(double s) {
  if (s < 0 || s > 1e7) return "?";
  char buf[32];
  int t = int(s + 0.5);
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%dh%02dm%02ds", t / 3600, t / 60 % 60, t % 60);
  else if (t >= 60)
    std::snprintf(buf, sizeof buf, "%dm%02ds", t / 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%.1fs", s);
  return buf;
}

void Progress::update(int64_t done, const std::string& detail) {
  done_ = done;
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  double since = std::chrono::duration<double>(now - last_draw_).count();
  // Terminals redraw a few times a second; logs get a line every 10 s.
  if (since < (tty_ ? 0.2 : 10.0) && done < total_) return;
  last_draw_ = now;
  draw(false, detail);
}

void Progress::finish(const std::string& detail) {
  if (finished_) return;
  finished_ = true;
  if (!enabled_) return;
  draw(true, detail);
}

void Progress::draw(bool final_line, const std::string& detail) {
  double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double rate = el > 0 ? double(done_) / el : 0;
  double eta = rate > 0 ? double(total_ - done_) / rate : -1;
  int pct = total_ > 0 ? int(100.0 * double(done_) / double(total_)) : 100;
  char line[512];
  if (tty_) {
    constexpr int kWidth = 24;
    int fill = total_ > 0 ? int(kWidth * done_ / total_) : kWidth;
    std::string bar(size_t(fill), '#');
    bar.resize(kWidth, '.');
    std::snprintf(line, sizeof line, "\r%s [%s] %3d%% %lld/%lld %s, %.2f %s/s, %s %s %s\x1b[K",
                  label_.c_str(), bar.c_str(), pct, (long long)done_, (long long)total_,
                  unit_.c_str(), rate, unit_.c_str(), final_line ? "elapsed" : "ETA",
                  format_duration(final_line ? el : eta).c_str(), detail.c_str());
    std::fputs(line, stderr);
    if (final_line) std::fputc('\n', stderr);
  } else {
    std::snprintf(line, sizeof line, "%s: %lld/%lld %s (%d%%), %.2f %s/s, %s %s %s\n", label_.c_str(),
                  (long long)done_, (long long)total_, unit_.c_str(), pct, rate, unit_.c_str(),
                  final_line ? "elapsed" : "ETA", format_duration(final_line ? el : eta).c_str(),
                  detail.c_str());
    std::fputs(line, stderr);
  }
  std::fflush(stderr);
}

}  // namespace metharme
