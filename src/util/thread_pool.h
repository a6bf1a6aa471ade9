// A persistent pool of worker threads. The caller thread takes part in every job, so a pool of
// n threads starts n-1 workers. Jobs are split into tasks taken with an atomic counter.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace metharme {

// Non-owning reference to a callable; avoids std::function's allocation in hot loops.
template <class Sig>
class FunctionRef;
template <class R, class... A>
class FunctionRef<R(A...)> {
 public:
  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, FunctionRef>>>
  FunctionRef(F&& f)  // NOLINT(google-explicit-constructor)
      : obj_(const_cast<void*>(static_cast<const void*>(&f))),
        call_([](void* o, A... a) -> R { return (*static_cast<std::remove_reference_t<F>*>(o))(std::forward<A>(a)...); }) {}
  R operator()(A... a) const { return call_(obj_, std::forward<A>(a)...); }

 private:
  void* obj_;
  R (*call_)(void*, A...);
};

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Runs fn(task, thread) for every task in [0, n_tasks); thread in [0, size()).
  // Returns when all tasks are done. Not re-entrant: one job at a time per pool.
  // A task that throws: tasks not yet started are skipped, and once no thread runs any task of
  // the job any more, the first exception is rethrown here (the others are dropped).
  void run(int n_tasks, FunctionRef<void(int, int)> fn);

  // Splits [0, n) into about `chunks_per_thread * size()` contiguous ranges (each a multiple of
  // `align` except the last) and runs fn(begin, end, thread) for each.
  void parallel_for(int64_t n, int64_t align, FunctionRef<void(int64_t, int64_t, int)> fn,
                    int chunks_per_thread = 1);

 private:
  void worker(int index);
  // Claims and runs tasks of job `gen` until none are left; returns how many it ran.
  void work_on_job(uint32_t gen, int thread);

  int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  // (job generation << 32) | next unclaimed task. A worker that wakes up late sees a newer
  // generation and claims nothing of a finished job, so the caller never waits for sleepers.
  std::atomic<uint64_t> work_{0};
  std::atomic<int> n_tasks_{0};
  std::atomic<int> done_{0};
  FunctionRef<void(int, int)>* job_ = nullptr;
  uint32_t gen_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<bool> failed_{false};  // a task of the current job threw
  std::exception_ptr error_;         // its exception, set by the thread that set failed_
};

// Threads to use when the user gives none: the number of CPUs this process may run on.
int default_thread_count();

}  // namespace metharme
