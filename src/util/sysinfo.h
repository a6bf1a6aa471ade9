// Facts about this process and machine for benchmark reports.
#pragma once

#include <cstddef>
#include <string>

namespace metharme {

size_t peak_rss_bytes();     // VmHWM of /proc/self/status (0 if unknown)
size_t current_rss_bytes();  // VmRSS
std::string cpu_model_name();  // "model name" of /proc/cpuinfo

}  // namespace metharme
