#include "support/test_util.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace metharme::test {

namespace fs = std::filesystem;

std::string shared(const std::string& rel) { return std::string(METHARME_SHARED) + "/" + rel; }
std::string repo(const std::string& rel) { return std::string(METHARME_REPO) + "/" + rel; }
std::string fixture(const std::string& rel) { return shared("fixtures/" + rel); }

static std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(slurp(path)); }

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::istringstream in(slurp(path));
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

TempDir::TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "metharme-test-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

RunResult run_cli(const std::vector<std::string>& args, const std::string& stdin_text) {
  TempDir tmp;
  std::string in = tmp / "stdin", out = tmp / "stdout", err = tmp / "stderr";
  std::ofstream(in, std::ios::binary) << stdin_text;
  std::string cmd = shell_quote(METHARME_BIN);
  for (const auto& a : args) cmd += " " + shell_quote(a);
  cmd += " <" + shell_quote(in) + " >" + shell_quote(out) + " 2>" + shell_quote(err);
  int st = std::system(cmd.c_str());
  RunResult r;
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

}  // namespace metharme::test
