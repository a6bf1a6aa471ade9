#include "util/staging_dir.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>

#include "util/error.h"

namespace metharme {

namespace fs = std::filesystem;

namespace {

// Whether `a` equals or lies inside `b` (both made absolute, symlinks resolved where they exist).
bool within(const fs::path& a, const fs::path& b) {
  auto norm = [](const fs::path& p) {
    fs::path c = fs::weakly_canonical(fs::absolute(p));
    return c.has_filename() ? c : c.parent_path();  // drop a trailing '/'
  };
  fs::path ca = norm(a), cb = norm(b);
  return std::mismatch(ca.begin(), ca.end(), cb.begin(), cb.end()).second == cb.end();
}

void fsync_dir(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// Removes `<final>.tmp-<pid>` folders beside `final` whose process no longer exists: what a run
// killed mid-write (SIGKILL, power loss) left behind. A live process's folder is never touched.
void remove_stale_staging(const fs::path& final) {
  const std::string prefix = final.filename().string() + ".tmp-";
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs::absolute(final).parent_path(), ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string digits = name.substr(prefix.size());
    if (digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = pid_t(std::stol(digits));
    if (pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH) fs::remove_all(e.path(), ec);
  }
}

}  // namespace

StagingDir::StagingDir(std::string final_path, bool force, const std::vector<std::string>& inputs)
    : final_(std::move(final_path)), force_(force) {
  while (final_.size() > 1 && final_.back() == '/') final_.pop_back();
  if (final_.empty()) fail("output folder name is empty");
  for (const auto& in : inputs)
    if (within(final_, in) || within(in, final_))
      fail(final_, ": the output folder must not be, contain or lie inside the input folder ", in);
  if (fs::exists(final_)) {
    if (!fs::is_directory(final_)) fail(final_, ": exists and is not a folder");
    if (!force_) fail(final_, ": already exists; pass --force to replace it");
  }
  fs::path parent = fs::absolute(final_).parent_path();
  if (!fs::is_directory(parent)) fail(final_, ": parent folder ", parent.string(), " does not exist");
  remove_stale_staging(final_);
  tmp_ = final_ + ".tmp-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp_, ec);  // left by an earlier run that had our pid and crashed
  if (!fs::create_directory(tmp_, ec)) fail(tmp_, ": cannot create folder: ", ec.message());
}

StagingDir::~StagingDir() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(tmp_, ec);
  }
}

void StagingDir::commit() {
  MH_CHECK(!committed_, final_, ": already committed");
  std::error_code ec;
  std::string old;
  if (fs::exists(final_)) {  // force was checked in the constructor
    old = final_ + ".old-" + std::to_string(::getpid());
    fs::remove_all(old, ec);
    fs::rename(final_, old, ec);
    if (ec) fail(final_, ": cannot move the old folder aside: ", ec.message());
  }
  fs::rename(tmp_, final_, ec);
  if (ec) {
    std::error_code ec2;
    if (!old.empty()) fs::rename(old, final_, ec2);
    fail(final_, ": cannot rename ", tmp_, " into place: ", ec.message());
  }
  committed_ = true;
  fsync_dir(fs::absolute(final_).parent_path());
  if (!old.empty()) fs::remove_all(old, ec);
}

}  // namespace metharme
