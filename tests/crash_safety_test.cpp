// SIGKILL at spread-out moments of `metharme convert` and `metharme xor-decode`, from before the
// first byte to after the rename, including while output files are being written: afterwards the
// destination is either absent or complete and correct, and a rerun succeeds with the same bytes
// and leaves no staging folder behind.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "support/test_util.h"

extern char** environ;

namespace metharme {
namespace {

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Relative path -> bytes of every file under dir.
std::map<std::string, std::string> tree(const fs::path& dir) {
  std::map<std::string, std::string> m;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) m[fs::relative(e.path(), dir).string()] = slurp(e.path());
  return m;
}

pid_t spawn(const std::vector<std::string>& args) {
  std::vector<std::string> all = {METHARME_BIN};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  return rc == 0 ? pid : -1;
}

// Staging folders of `out` (out.tmp-*) with at least one file in them.
int staging_with_files(const fs::path& out) {
  int n = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(out.parent_path(), ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(out.filename().string() + ".tmp-", 0) != 0) continue;
    for (const auto& f : fs::recursive_directory_iterator(e.path(), ec))
      if (f.is_regular_file() && f.file_size(ec) > 0) {
        ++n;
        break;
      }
  }
  return n;
}

bool any_staging(const fs::path& out) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(out.parent_path(), ec))
    if (e.path().filename().string().rfind(out.filename().string() + ".tmp-", 0) == 0) return true;
  return false;
}

// Runs `args` (writing to `out`) to completion once for the reference, then kills it at `kills`
// moments spread over that run time and checks the destination and a rerun each time.
void kill_and_rerun(const std::vector<std::string>& args, const fs::path& out, int kills) {
  // The shortest of three runs: the moments below are spread over it.
  double t_full = 1e9;
  for (int r = 0; r < 3; ++r) {
    auto t0 = clock_type::now();
    pid_t ref_pid = spawn(args);
    ASSERT_GT(ref_pid, 0);
    int ref_status = 0;
    waitpid(ref_pid, &ref_status, 0);
    t_full = std::min(t_full, std::chrono::duration<double>(clock_type::now() - t0).count());
    ASSERT_TRUE(WIFEXITED(ref_status) && WEXITSTATUS(ref_status) == 0) << test::run_cli(args).err;
    if (r < 2) fs::remove_all(out);
  }
  const auto ref = tree(out);
  ASSERT_FALSE(ref.empty());
  fs::remove_all(out);

  std::mt19937 rng(12345);
  std::uniform_real_distribution<double> jitter(0.0, 1.0);
  int killed = 0, mid_write = 0, finished = 0;
  for (int i = 0; i < kills; ++i) {
    // Even runs: a moment spread over the run time with jitter (early, mid-write and late ones).
    // Odd runs: the moment the first output bytes appear in the staging folder, plus up to 2 ms.
    const bool watch = i % 2 == 1;
    const double at = t_full * (i + jitter(rng)) / kills;
    pid_t pid = spawn(args);
    ASSERT_GT(pid, 0);
    auto deadline = clock_type::now() + std::chrono::duration<double>(watch ? 60.0 : at);
    int status = 0;
    bool exited = false;
    while (clock_type::now() < deadline && !exited) {
      exited = waitpid(pid, &status, WNOHANG) == pid;
      if (!exited && watch && staging_with_files(out) > 0) {
        deadline = std::min(deadline, clock_type::now() + std::chrono::duration<double>(0.002 * jitter(rng)));
      }
      if (!exited) std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    if (!exited) {
      mid_write += staging_with_files(out) > 0;
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      ++killed;
    } else {
      ++finished;
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    // The destination is absent or complete: never partial.
    if (fs::exists(out)) {
      EXPECT_EQ(tree(out), ref) << "kill " << i << " at " << at << " s left a different output";
      fs::remove_all(out);
    }
    auto again = test::run_cli(args);
    ASSERT_EQ(again.exit_code, 0) << "rerun after kill " << i << ": " << again.err;
    EXPECT_EQ(tree(out), ref) << "rerun after kill " << i;
    EXPECT_FALSE(any_staging(out)) << "a staging folder was left after the rerun";
    fs::remove_all(out);
  }
  std::printf("killed %d runs (%d while files were being written), %d finished first; full run %.3f s\n", killed,
              mid_write, finished, t_full);
  EXPECT_GE(killed, kills / 4);
  EXPECT_GT(mid_write, 0) << "no kill landed while output files were being written";
}

TEST(CrashSafety, ConvertKilledAnywhereLeavesNoPartialOutput) {
  test::TempDir tmp;
  const fs::path out = tmp / "converted";
  // Small shards: many files written one after another.
  kill_and_rerun(
      {"convert", "-q", "--shard-size", "64KB", "-m", test::fixture("torch/stories260k-zip"), "-o", out.string()}, out,
      16);
}

TEST(CrashSafety, XorDecodeKilledAnywhereLeavesNoPartialOutput) {
  test::TempDir tmp;
  const fs::path out = tmp / "decoded";
  kill_and_rerun({"xor-decode", "-q", "--base", test::fixture("xor/base"), "--xor", test::fixture("xor/payload"), "-o",
                  out.string()},
                 out, 16);
}

}  // namespace
}  // namespace metharme
