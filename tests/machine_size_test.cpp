// Any machine size and failing tasks: the thread pool hands a task's exception to the caller,
// the linears split work by size for any thread count (results identical to one thread), the
// default thread count follows affinity and the cgroup CPU quota (parsed from files written
// here), and the CLI runs with 257 and 1024 threads on a tiny model.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>

#include "ops/linear.h"
#include "ops/q4_linear.h"
#include "support/test_util.h"
#include "util/half.h"
#include "util/sysinfo.h"
#include "util/thread_pool.h"

namespace metharme {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

TEST(ThreadPoolErrors, AWorkerThrowReachesTheCallerAfterEveryTaskEnded) {
  for (int threads : {1, 2, 8}) {
    ThreadPool pool(threads);
    std::atomic<int> running{0}, ran{0};
    bool caught = false;
    try {
      pool.run(64, [&](int t, int) {
        running.fetch_add(1);
        ran.fetch_add(1);
        if (t == 5) {
          running.fetch_sub(1);
          throw std::runtime_error("task 5 failed");
        }
        volatile double s = 0;  // keep the others busy for a moment
        for (int i = 0; i < 20000; ++i) s = s + i;
        running.fetch_sub(1);
      });
    } catch (const std::runtime_error& e) {
      caught = true;
      EXPECT_STREQ(e.what(), "task 5 failed");
      EXPECT_EQ(running.load(), 0) << "a task still ran when the exception arrived";
    }
    EXPECT_TRUE(caught) << threads << " threads";
    EXPECT_LE(ran.load(), 64);
    // The pool keeps working after a failed job.
    std::atomic<int> sum{0};
    pool.run(100, [&](int t, int) { sum.fetch_add(t); });
    EXPECT_EQ(sum.load(), 4950);
  }
}

TEST(ThreadPoolErrors, ManyThrowsGiveOneException) {
  ThreadPool pool(4);
  int caught = 0;
  for (int round = 0; round < 20; ++round) {
    try {
      pool.run(50, [&](int t, int) {
        if (t % 3 == 0) throw std::logic_error("bad task");
      });
    } catch (const std::logic_error&) {
      ++caught;
    }
  }
  EXPECT_EQ(caught, 20);
}

TEST(ThreadPoolErrors, CallerThrowWaitsForWorkersBeforeUnwinding) {
  ThreadPool pool(4);
  for (int round = 0; round < 20; ++round) {
    std::vector<int> frame(64, 0);  // the caller's data, used by every task
    try {
      pool.run(64, [&](int t, int thread) {
        if (thread == 0 && t < 8) throw std::runtime_error("caller task failed");
        frame[size_t(t)] = t + 1;
      });
    } catch (const std::runtime_error&) {
      continue;
    }
  }
  SUCCEED();  // under ASan a worker writing into an unwound frame is reported here
}

void write_file(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << text;
}

TEST(CgroupQuota, V2QuotaOfTheGroupAndItsParents) {
  TempDir d;
  write_file(d / "cpu.max", "max 100000\n");
  write_file(d / "a/cpu.max", "400000 100000\n");
  write_file(d / "a/b/cpu.max", "150000 100000\n");
  EXPECT_EQ(cgroup_cpu_quota("0::/a/b\n", d.path()), 2);  // 1.5 CPUs round up
  write_file(d / "a/b/cpu.max", "max 100000\n");
  EXPECT_EQ(cgroup_cpu_quota("0::/a/b\n", d.path()), 4);  // the parent's quota applies
  EXPECT_EQ(cgroup_cpu_quota("0::/\n", d.path()), 0);     // unlimited
  EXPECT_EQ(cgroup_cpu_quota("0::/missing/group\n", d.path()), 0);
  write_file(d / "cpu.max", "50000 100000\n");  // half a CPU is still one thread
  EXPECT_EQ(cgroup_cpu_quota("0::/\n", d.path()), 1);
  write_file(d / "cpu.max", "garbage\n");
  EXPECT_EQ(cgroup_cpu_quota("0::/\n", d.path()), 0);
}

TEST(CgroupQuota, V1CfsQuota) {
  TempDir d;
  write_file(d / "cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
  write_file(d / "cpu,cpuacct/cpu.cfs_period_us", "100000\n");
  write_file(d / "cpu,cpuacct/docker/x/cpu.cfs_quota_us", "300000\n");
  write_file(d / "cpu,cpuacct/docker/x/cpu.cfs_period_us", "100000\n");
  const std::string self = "12:memory:/docker/x\n4:cpu,cpuacct:/docker/x\n1:name=systemd:/docker/x\n";
  EXPECT_EQ(cgroup_cpu_quota(self, d.path()), 3);
  EXPECT_EQ(cgroup_cpu_quota("4:cpu,cpuacct:/\n", d.path()), 0);
  EXPECT_EQ(cgroup_cpu_quota("", d.path()), 0);
  EXPECT_EQ(cgroup_cpu_quota("nonsense line\n::\n", d.path()), 0);
}

TEST(CgroupQuota, DefaultThreadsNeverExceedAffinityOrQuota) {
  int n = default_thread_count();
  EXPECT_GE(n, 1);
  EXPECT_LE(n, int(std::thread::hardware_concurrency()));
  int q = cgroup_cpu_quota();
  if (q > 0) {
    EXPECT_LE(n, q);
  }
}

// y from a pool of `threads` equals y from one thread, bit for bit: every row is computed alone.
TEST(LinearThreads, DenseAnyThreadCountMatchesOneThread) {
  const int N = 8192 + 24, K = 32;  // > 1024 aligned chunks: beyond any old fixed piece table
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  std::vector<float> w(size_t(N) * K), w2(size_t(40) * K);
  for (auto& v : w) v = nd(rng);
  for (auto& v : w2) v = nd(rng);
  ops::Linear a = ops::make_dense_linear(kernels::WType::kF32, w.data(), N, K);
  ops::Linear b = ops::make_dense_linear(kernels::WType::kF32, w2.data(), 40, K);
  for (int M : {1, 3, 20}) {
    std::vector<float> x(size_t(M) * K);
    for (auto& v : x) v = nd(rng);
    std::vector<float> ya1(size_t(M) * N), yb1(size_t(M) * 40);
    ThreadPool one(1);
    ops::LinearOut o1[2] = {{&a, ya1.data()}, {&b, yb1.data()}};
    ops::linear_multi(o1, 2, x.data(), M, one);
    for (int threads : {257, 1024}) {
      ThreadPool pool(threads);
      std::vector<float> ya(size_t(M) * N, -1), yb(size_t(M) * 40, -1);
      ops::LinearOut o[2] = {{&a, ya.data()}, {&b, yb.data()}};
      ops::linear_multi(o, 2, x.data(), M, pool);
      EXPECT_EQ(ya, ya1) << "M " << M << ", " << threads << " threads";
      EXPECT_EQ(yb, yb1) << "M " << M << ", " << threads << " threads";
    }
  }
}

TEST(LinearThreads, Int4AnyThreadCountMatchesOneThread) {
  const int N = 8192 + 40, K = 64;
  std::mt19937 rng(11);
  std::uniform_int_distribution<uint32_t> word;
  std::vector<uint32_t> qweight(size_t(K / 8) * N), qzeros(size_t((N + 7) / 8));
  for (auto& v : qweight) v = word(rng);
  for (auto& v : qzeros) v = word(rng) & 0xEEEEEEEEu;
  std::vector<uint16_t> scales(size_t(N), 0);
  std::uniform_real_distribution<float> sd(1e-3f, 2e-2f);
  for (auto& v : scales) v = f32_to_fp16(sd(rng));
  ops::GptqSource src;
  src.n = N;
  src.k = K;
  src.n_groups = 1;
  src.group_size = K;
  src.qweight = qweight.data();
  src.qzeros = qzeros.data();
  src.scales = scales.data();
  src.name = "wide";
  ops::Linear l;
  l.kind = ops::Linear::Kind::kQ4;
  l.n_out = N;
  l.n_in = K;
  l.q4 = ops::q4_repack(src, 1);
  std::normal_distribution<float> nd;
  for (int M : {1, 40}) {
    std::vector<float> x(size_t(M) * K);
    for (auto& v : x) v = nd(rng);
    std::vector<float> y1(size_t(M) * N);
    ThreadPool one(1);
    ops::linear(l, x.data(), M, y1.data(), one);
    for (int threads : {257, 1024}) {
      ThreadPool pool(threads);
      std::vector<float> y(size_t(M) * N, -1);
      ops::linear(l, x.data(), M, y.data(), pool);
      EXPECT_EQ(y, y1) << "M " << M << ", " << threads << " threads";
    }
  }
}

// The CLI with as many threads as anyone may ask for, on a tiny fp16 model (the dense path that
// failed from 64 threads).
const char* kTiny = "models/llama-rand-h256";
class CliThreads : public ::testing::TestWithParam<int> {};

TEST_P(CliThreads, GenerateIsTheSameGreedyText) {
  const std::string model = test::fixture(kTiny);
  auto run = [&](int threads) {
    return test::run_cli(
        {"generate", "-m", model, "-p", "Once upon a time", "-n", "12", "--temp", "0", "-t", std::to_string(threads)});
  };
  auto base = run(1);
  ASSERT_EQ(base.exit_code, 0) << base.err;
  ASSERT_FALSE(base.out.empty());
  auto r = run(GetParam());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, base.out);
}

TEST_P(CliThreads, PerplexityIsTheSame) {
  const std::string model = test::fixture(kTiny);
  TempDir d;
  std::ofstream(d / "text.txt") << "Once upon a time there was a little girl named Lily. She liked to play outside "
                                   "with her friends in the park near her house, and every day she ran home.\n";
  auto run = [&](int threads) {
    auto r = test::run_cli({"perplexity", "-m", model, "--data", d / "text.txt", "--seqlen", "16", "--json",
                            "--no-progress", "-t", std::to_string(threads)});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? nlohmann::json::parse(r.out)["results"][0]["ppl"].get<double>() : -1.0;
  };
  double base = run(1), got = run(GetParam());
  ASSERT_GT(base, 0);
  EXPECT_NEAR(got / base, 1.0, 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Threads, CliThreads, ::testing::Values(257, 1024));

}  // namespace
}  // namespace metharme
