// Subcommands register themselves: each cli/cmd_*.cpp adds one with a static Registrar.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace metharme::cli {

struct Command {
  std::string name, help;
  // Adds options to `sub` and returns the function that runs the command (exit code).
  std::function<std::function<int()>(CLI::App& sub)> setup;
};

std::vector<Command>& registry();

struct Registrar {
  Registrar(std::string name, std::string help, std::function<std::function<int()>(CLI::App&)> setup) {
    registry().push_back({std::move(name), std::move(help), std::move(setup)});
  }
};

// Common options.
void add_threads_option(CLI::App& app, int& threads);

}  // namespace metharme::cli
