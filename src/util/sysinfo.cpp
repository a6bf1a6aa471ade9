#include "util/sysinfo.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

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
std::string read_small(const std::string& path) {
  std::ifstream in(path);
  std::string text;
  std::getline(in, text, '\0');
  return text;
}

// CPUs of one quota and period in microseconds; 0 for none (negative, zero or unparsable).
int quota_cpus(double quota, double period) {
  if (!(quota > 0) || !(period > 0) || !std::isfinite(quota / period)) return 0;
  double n = std::ceil(quota / period);
  return n > 1e6 ? 0 : std::max(1, int(n));
}

// v2 "max 100000" or "150000 100000".
int v2_cpus(const std::string& text) {
  std::istringstream in(text);
  std::string q;
  double period = 100000;
  if (!(in >> q) || q == "max") return 0;
  in >> period;
  char* end = nullptr;
  double quota = std::strtod(q.c_str(), &end);
  return end && *end == '\0' ? quota_cpus(quota, period) : 0;
}

int v1_cpus(const std::string& dir) {
  std::string q = read_small(dir + "/cpu.cfs_quota_us"), p = read_small(dir + "/cpu.cfs_period_us");
  if (q.empty() || p.empty()) return 0;
  return quota_cpus(std::strtod(q.c_str(), nullptr), std::strtod(p.c_str(), nullptr));
}

// The smallest non-zero of cpus(dir) over `base` + every prefix of `path` (the group and its
// ancestors), and `base` alone when the path is not there (a container sees its group as root).
template <class F>
int smallest_along(const std::string& base, const std::string& path, F cpus) {
  int best = 0;
  auto take = [&](int n) {
    if (n > 0 && (best == 0 || n < best)) best = n;
  };
  take(cpus(base));
  std::string dir = base;
  std::istringstream parts(path);
  std::string part;
  while (std::getline(parts, part, '/')) {
    if (part.empty() || part == "." || part == "..") continue;
    dir += "/" + part;
    take(cpus(dir));
  }
  return best;
}

}  // namespace

int cgroup_cpu_quota(const std::string& proc_cgroup, const std::string& root) {
  std::istringstream lines(proc_cgroup);
  std::string line;
  int best = 0;
  auto take = [&](int n) {
    if (n > 0 && (best == 0 || n < best)) best = n;
  };
  while (std::getline(lines, line)) {
    // "hierarchy-id:controllers:path"; v2 is "0::path".
    size_t a = line.find(':'), b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    std::string controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    if (controllers.empty()) {
      take(smallest_along(root, path, [](const std::string& d) { return v2_cpus(read_small(d + "/cpu.max")); }));
      continue;
    }
    std::istringstream names(controllers);
    std::string name;
    bool cpu = false;
    while (std::getline(names, name, ',')) cpu = cpu || name == "cpu";
    if (!cpu) continue;
    for (const std::string& mount : {root + "/" + controllers, root + "/cpu"})
      take(smallest_along(mount, path, v1_cpus));
  }
  return best;
}

int cgroup_cpu_quota() { return cgroup_cpu_quota(read_small("/proc/self/cgroup"), "/sys/fs/cgroup"); }

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
