// Progress reporting for long jobs: a redrawn bar on a terminal, plain periodic lines otherwise.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace metharme {

class Progress {
 public:
  // `label` prefixes every line; `total` units of `unit` (e.g. "tok", "layer", "MB").
  Progress(std::string label, int64_t total, std::string unit, bool enabled = true);
  ~Progress();
  void update(int64_t done, const std::string& detail = "");
  void finish(const std::string& detail = "");
  void finish(int64_t done, const std::string& detail) {  // the last step's count, drawn only as the final line
    done_ = done;
    finish(detail);
  }

  static std::string format_duration(double seconds);

 private:
  void draw(bool final_line, const std::string& detail);
  std::string label_, unit_;
  int64_t total_, done_ = 0;
  bool enabled_, tty_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace metharme
