#include "util/sysinfo.h"

#include <fstream>
#include <sstream>

namespace metharme {

namespace {
size_t status_kb(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string k = std::string(key) + ":";
  while (std::getline(in, line))
    if (line.compare(0, k.size(), k) == 0) return size_t(std::stoull(line.substr(k.size()))) * 1024;
  return 0;
}
}  // namespace

size_t peak_rss_bytes() { return status_kb("VmHWM"); }
size_t current_rss_bytes() { return status_kb("VmRSS"); }

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.compare(0, 10, "model name") == 0) {
      auto p = line.find(':');
      if (p != std::string::npos) return line.substr(line.find_first_not_of(' ', p + 1));
    }
  return "unknown CPU";
}

}  // namespace metharme
