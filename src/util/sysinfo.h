// Facts about this process and machine for benchmark reports.
#pragma once

#include <cstddef>
#include <string>

namespace metharme {

size_t peak_rss_bytes();     // VmHWM of /proc/self/status (0 if unknown)
size_t current_rss_bytes();  // VmRSS
std::string cpu_model_name();  // "model name" of /proc/cpuinfo

// CPUs that the cgroup CPU quota lets this process use, rounded up: cgroup v2 `cpu.max` or v1
// `cpu.cfs_quota_us` / `cpu.cfs_period_us`, the smallest along the path from the process's group
// up to the root. 0 when no quota applies or none can be read. `proc_cgroup` is the text of
// /proc/self/cgroup, `root` the cgroup file system's mount point (tests pass their own).
int cgroup_cpu_quota(const std::string& proc_cgroup, const std::string& root);
int cgroup_cpu_quota();  // this process: /proc/self/cgroup under /sys/fs/cgroup

}  // namespace metharme
