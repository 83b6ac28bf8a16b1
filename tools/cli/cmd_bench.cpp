// `chimera bench`: dispatches to the registered benchmark modes (cmd_bench.h).
#include "cmd_bench.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <vector>

#include "command.h"

namespace chimera::cli {
namespace {

std::vector<BenchMode>& bench_modes() {
  static std::vector<BenchMode> modes;
  return modes;
}

void print_bench_usage() {
  std::printf("usage: chimera bench <mode> [options]   (chimera bench <mode> --help)\n\nmodes:\n");
  auto modes = bench_modes();
  std::sort(modes.begin(), modes.end(), [](auto& a, auto& b) { return a.name < b.name; });
  for (const auto& m : modes) {
    std::printf("  %-12s %s\n", m.name.empty() ? "-m MODEL ..." : m.name.c_str(),
                m.summary.c_str());
  }
}

int run_bench(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    print_bench_usage();
    return argc < 2 ? 2 : 0;
  }
  for (const auto& m : bench_modes()) {
    if (!m.name.empty() && m.name == argv[1]) return m.run(argc - 1, argv + 1);
  }
  for (const auto& m : bench_modes()) {
    // The default (model) mode sees `bench -m ...`; a bare word is a mode name, known or not.
    if (m.name.empty() && argv[1][0] == '-') return m.run(argc, argv);
  }
  if (argv[1][0] == '-') {
    std::fprintf(stderr, "chimera bench: model benchmark not built yet\n");
  } else {
    std::fprintf(stderr, "chimera bench: unknown mode '%s'\n\n", argv[1]);
    print_bench_usage();
  }
  return 2;
}

const Registrar kRegistrar({"bench", "benchmarks: kernels (streaming read, GEMV/GEMM per type)",
                            run_bench});

}  // namespace

BenchModeRegistrar::BenchModeRegistrar(BenchMode mode) {
  bench_modes().push_back(std::move(mode));
}

}  // namespace chimera::cli
