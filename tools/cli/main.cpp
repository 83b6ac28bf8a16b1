#include <algorithm>
#include <cstdio>
#include <cstring>

#include "command.h"

namespace chimera::cli {

std::vector<Command>& command_registry() {
  static std::vector<Command> commands;
  return commands;
}

}  // namespace chimera::cli

namespace {

void print_usage() {
  auto cmds = chimera::cli::command_registry();
  std::sort(cmds.begin(), cmds.end(), [](auto& a, auto& b) { return a.name < b.name; });
  std::printf("chimera: inference engine for hybrid (attention + state-space) language models\n\n");
  std::printf("usage: chimera <command> [options]   (chimera <command> --help for details)\n\n");
  std::printf("commands:\n");
  for (const auto& c : cmds) std::printf("  %-12s %s\n", c.name.c_str(), c.summary.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
      !std::strcmp(argv[1], "help")) {
    print_usage();
    return argc < 2 ? 2 : 0;
  }
  for (const auto& c : chimera::cli::command_registry()) {
    if (c.name == argv[1]) return c.run(argc - 1, argv + 1);
  }
  std::fprintf(stderr, "chimera: unknown command '%s'\n\n", argv[1]);
  print_usage();
  return 2;
}
