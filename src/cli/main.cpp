// metharme: one binary, many subcommands (see README.md).
#include <cblas.h>

#include <algorithm>
#include <cstdio>
#include <map>

#include "cli/command.h"
#include "cli/runtime_flags.h"
#include "util/error.h"

namespace metharme::cli {

std::vector<Command>& registry() {
  static std::vector<Command> r;
  return r;
}

void add_threads_option(CLI::App& app, int& threads) {
  app.add_option("-t,--threads", threads,
                 "Worker threads, 1..1024 (default: the CPUs this process may use: affinity and cgroup CPU quota)")
      ->check(CLI::Range(1, 1024));
}

}  // namespace metharme::cli

int main(int argc, char** argv) {
  using namespace metharme;
  // Our own pool parallelizes matmuls; OpenBLAS must not start threads of its own on top.
  openblas_set_num_threads(1);
  CLI::App app{"metharme: LLaMA / GPTQ 4-bit tool chain (load, quantize, evaluate, chat, serve)", "metharme"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("metharme ") + METHARME_VERSION);
  auto& cmds = cli::registry();
  std::sort(cmds.begin(), cmds.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  std::map<CLI::App*, std::function<int()>> runners;
  for (auto& c : cmds) {
    CLI::App* sub = app.add_subcommand(c.name, c.help);
    runners[sub] = c.setup(*sub);
  }
  cli::rewrite_runtime_aliases(argc, argv);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  for (auto& [sub, run] : runners) {
    if (!sub->parsed()) continue;
    try {
      return run();
    } catch (const Error& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      return 1;
    } catch (const std::bad_alloc&) {
      std::fprintf(stderr, "error: out of memory\n");
      return 1;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      return 1;
    }
  }
  return 0;
}
