// Builds an output folder under a temporary name beside it and renames it into place on commit(),
// so a crash or an error never leaves a half-written folder at the final path.
#pragma once

#include <string>
#include <vector>

namespace metharme {

class StagingDir {
 public:
  // Fails (naming `final_path`) when it exists and `force` is false, when it exists but is not a
  // folder, or when it is, contains or lies inside one of `inputs` (replacing it would destroy
  // what is being read).
  StagingDir(std::string final_path, bool force, const std::vector<std::string>& inputs = {});
  ~StagingDir();  // removes the staging folder unless committed
  StagingDir(const StagingDir&) = delete;
  StagingDir& operator=(const StagingDir&) = delete;

  const std::string& path() const { return tmp_; }  // write the files here
  std::string operator/(const std::string& name) const { return tmp_ + "/" + name; }
  const std::string& final_path() const { return final_; }
  // Renames the staging folder to the final path (replacing an old folder there when forced).
  void commit();

 private:
  std::string final_, tmp_;
  bool force_, committed_ = false;
};

}  // namespace metharme
