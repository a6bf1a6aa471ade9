// Helpers shared by the tests: fixture paths, JSON files, running the CLI.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace metharme::test {

std::string shared(const std::string& rel);  // ../shared/<rel>
std::string repo(const std::string& rel);    // <repo>/<rel>
std::string fixture(const std::string& rel);  // ../shared/fixtures/<rel>
nlohmann::json read_json(const std::string& path);
std::vector<nlohmann::json> read_jsonl(const std::string& path);

// A fresh temporary folder removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

struct RunResult {
  int exit_code;
  std::string out, err;
};
// Runs the metharme binary with `args` (shell-quoted here), optional stdin text.
RunResult run_cli(const std::vector<std::string>& args, const std::string& stdin_text = "");
std::string shell_quote(const std::string& s);

}  // namespace metharme::test
