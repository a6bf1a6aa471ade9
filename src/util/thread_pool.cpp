#include "util/thread_pool.h"

#include <sched.h>

#include <algorithm>
#include <cerrno>

#include "util/sysinfo.h"

namespace metharme {

namespace {
// Workers poll this many times for the next job before sleeping: decode issues a job every few
// microseconds and a futex wake-up costs more than that. Polling yields the CPU regularly so an
// oversubscribed machine (other processes, more threads than cores) still makes progress.
constexpr int kSpinPolls = 20000;
constexpr int kYieldEvery = 64;
constexpr uint32_t kClosed = 0x7FFFFFFF;  // task index of a finished job: above any n_tasks

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

inline void backoff(int i) {
  if (i % kYieldEvery == kYieldEvery - 1)
    sched_yield();
  else
    cpu_relax();
}
}  // namespace

int default_thread_count() {
  int n = int(std::max(1u, std::thread::hardware_concurrency()));
  // The CPUs this process may run on; the set is sized at run time for machines beyond 1024.
  for (int cpus = 1024; cpus <= (1 << 20); cpus *= 4) {
    cpu_set_t* set = CPU_ALLOC(size_t(cpus));
    if (!set) break;
    const size_t bytes = CPU_ALLOC_SIZE(size_t(cpus));
    CPU_ZERO_S(bytes, set);
    int rc = sched_getaffinity(0, bytes, set);
    if (rc == 0) n = std::max(1, CPU_COUNT_S(bytes, set));
    CPU_FREE(set);
    if (rc == 0 || errno != EINVAL) break;
  }
  // A container's CPU quota caps it further: more threads than that only wait for each other.
  int quota = cgroup_cpu_quota();
  return quota > 0 ? std::min(n, quota) : n;
}

ThreadPool::ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
  workers_.reserve(size_t(n_threads_ - 1));
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true, std::memory_order_release);
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::work_on_job(uint32_t gen, int thread) {
  uint64_t w = work_.load(std::memory_order_acquire);
  for (;;) {
    if (uint32_t(w >> 32) != gen) return;  // that job is over
    uint32_t idx = uint32_t(w);
    if (int(idx) >= n_tasks_.load(std::memory_order_relaxed)) return;
    if (!work_.compare_exchange_weak(w, w + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
    // The job cannot finish (and job_ cannot change) before this claimed task is done.
    if (!failed_.load(std::memory_order_relaxed)) {
      try {
        (*job_)(int(idx), thread);
      } catch (...) {
        if (!failed_.exchange(true, std::memory_order_acq_rel)) error_ = std::current_exception();
      }
    }
    done_.fetch_add(1, std::memory_order_acq_rel);
    w = work_.load(std::memory_order_acquire);
  }
}

void ThreadPool::worker(int index) {
  uint32_t seen = 0;
  for (;;) {
    uint32_t gen = uint32_t(work_.load(std::memory_order_acquire) >> 32);
    for (int i = 0; gen == seen && i < kSpinPolls; ++i) {
      backoff(i);
      if (stop_.load(std::memory_order_acquire)) return;
      gen = uint32_t(work_.load(std::memory_order_acquire) >> 32);
    }
    if (gen == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] {
        return stop_.load(std::memory_order_acquire) || uint32_t(work_.load(std::memory_order_acquire) >> 32) != seen;
      });
      if (stop_.load(std::memory_order_acquire)) return;
      gen = uint32_t(work_.load(std::memory_order_acquire) >> 32);
    }
    seen = gen;
    work_on_job(gen, index);
  }
}

void ThreadPool::run(int n_tasks, FunctionRef<void(int, int)> fn) {
  if (n_tasks <= 0) return;
  if (n_threads_ == 1 || n_tasks == 1) {
    for (int t = 0; t < n_tasks; ++t) fn(t, 0);
    return;
  }
  job_ = &fn;
  failed_.store(false, std::memory_order_relaxed);
  error_ = nullptr;
  n_tasks_.store(n_tasks, std::memory_order_relaxed);
  done_.store(0, std::memory_order_relaxed);
  const uint32_t gen = ++gen_;
  {
    // The lock orders the publish against a worker that is about to sleep.
    std::lock_guard<std::mutex> lock(mu_);
    work_.store(uint64_t(gen) << 32, std::memory_order_release);
  }
  cv_.notify_all();
  work_on_job(gen, 0);
  for (int i = 0; done_.load(std::memory_order_acquire) != n_tasks; ++i) backoff(i);
  // Close the job: a worker that still holds this generation's work word must not claim a task
  // once the next run() has published a new n_tasks_ and job_ (it would run a task of the next
  // job twice, and that job would never see done_ == n_tasks).
  work_.store((uint64_t(gen) << 32) | kClosed, std::memory_order_release);
  job_ = nullptr;
  // Every task has returned, so no worker touches fn or the caller's frame any more.
  if (failed_.load(std::memory_order_acquire)) {
    std::exception_ptr e = std::move(error_);
    error_ = nullptr;
    std::rethrow_exception(e);
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t align, FunctionRef<void(int64_t, int64_t, int)> fn,
                              int chunks_per_thread) {
  if (n <= 0) return;
  align = std::max<int64_t>(1, align);
  int64_t units = (n + align - 1) / align;
  int64_t chunks = std::min<int64_t>(units, int64_t(n_threads_) * std::max(1, chunks_per_thread));
  int64_t per = (units + chunks - 1) / chunks;
  chunks = (units + per - 1) / per;
  run(int(chunks), [&](int c, int thread) {
    int64_t b = int64_t(c) * per * align;
    int64_t e = std::min(n, b + per * align);
    if (b < e) fn(b, e, thread);
  });
}

}  // namespace metharme
