// Subcommand registry for the `chimera` tool. Each cmd_<name>.cpp defines one subcommand and
// registers it with a static Registrar, so main.cpp never changes when a command is added.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace chimera::cli {

struct Command {
  std::string name;
  std::string summary;  // one line for `chimera --help`
  // argv[0] is the subcommand name; returns the process exit code.
  std::function<int(int argc, char** argv)> run;
};

std::vector<Command>& command_registry();

struct Registrar {
  explicit Registrar(Command c) { command_registry().push_back(std::move(c)); }
};

}  // namespace chimera::cli
