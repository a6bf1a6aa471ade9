#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "support/test_util.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/thread_pool.h"

namespace metharme {
namespace {

TEST(ThreadPool, RunsEveryTaskOnceWithValidThreadIndex) {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    for (int n_tasks : {0, 1, 2, 5, 100, 1000}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n_tasks));
      std::atomic<bool> bad_thread{false};
      pool.run(n_tasks, [&](int t, int th) {
        hits[size_t(t)].fetch_add(1);
        if (th < 0 || th >= threads) bad_thread = true;
      });
      for (auto& h : hits) ASSERT_EQ(h.load(), 1);
      ASSERT_FALSE(bad_thread);
    }
  }
}

TEST(ThreadPool, ManyBackToBackJobs) {
  ThreadPool pool(4);
  std::atomic<int64_t> sum{0};
  for (int j = 0; j < 20000; ++j) pool.run(3, [&](int t, int) { sum += t + 1; });
  EXPECT_EQ(sum.load(), 20000 * 6);
}

// A job with more tasks than the previous one: a worker still finishing the previous job must not
// claim one of the new tasks through the old job's work word (a task would run twice and run()
// would wait forever).
TEST(ThreadPool, GrowingJobsRunEveryTaskOnce) {
  ThreadPool pool(6);  // more threads than this machine's cores: workers get preempted mid-claim
  std::vector<std::atomic<int>> hits(16);
  for (int j = 0; j < 200000; ++j) {
    const int n = j % 2 ? 16 : 1 + j % 5;
    for (int t = 0; t < n; ++t) hits[size_t(t)].store(0, std::memory_order_relaxed);
    pool.run(n, [&](int t, int) {
      volatile int spin = 0;  // long enough that the workers take part
      for (int i = 0; i < 200; ++i) spin = spin + i;
      hits[size_t(t)].fetch_add(1, std::memory_order_relaxed);
    });
    for (int t = 0; t < n; ++t) ASSERT_EQ(hits[size_t(t)].load(), 1) << "job " << j << " task " << t;
  }
}

TEST(ThreadPool, ParallelForCoversRangeWithAlignedChunks) {
  ThreadPool pool(3);
  for (int64_t n : {1, 7, 64, 1000, 1001}) {
    std::vector<int> seen(static_cast<size_t>(n), 0);
    pool.parallel_for(n, 8, [&](int64_t b, int64_t e, int) {
      EXPECT_EQ(b % 8, 0);
      for (int64_t i = b; i < e; ++i) seen[size_t(i)]++;
    });
    for (int v : seen) ASSERT_EQ(v, 1);
  }
}

TEST(AtomicFile, UncommittedWriteLeavesNothingAndCommitReplaces) {
  test::TempDir tmp;
  std::string path = tmp / "out.txt";
  write_file_atomic(path, "old");
  {
    AtomicFile f(path);
    f.write("new content");
    // destroyed without commit, as after an exception
  }
  EXPECT_EQ(read_text_file(path), "old");
  for (const auto& e : std::filesystem::directory_iterator(tmp.path()))
    EXPECT_EQ(e.path().filename(), "out.txt") << "temp file left behind";
  write_file_atomic(path, "new");
  EXPECT_EQ(read_text_file(path), "new");
}

TEST(AtomicFile, UnwritableFolderIsAClearError) {
  try {
    write_file_atomic("/nonexistent-dir/x.txt", "a");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent-dir/x.txt"), std::string::npos);
  }
}

}  // namespace
}  // namespace metharme
