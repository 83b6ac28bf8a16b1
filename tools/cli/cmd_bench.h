// `chimera bench <mode> ...`: benchmark modes register here, one file each, so adding a mode never
// edits cmd_bench.cpp. bench_kernels.cpp registers "kernels". A model benchmark
// (`chimera bench -m MODEL -p 512 -n 128`) goes in its own file (e.g. bench_model.cpp) and
// registers itself as the default mode: it then receives every invocation whose first argument
// is not a named mode (such as `-m ...`).
#pragma once

#include <functional>
#include <string>

namespace chimera::cli {

struct BenchMode {
  std::string name;     // first argument after `bench`; empty = the default mode
  std::string summary;  // one line for `chimera bench --help`
  // argv[0] is the mode name (or "bench" for the default mode); returns the exit code.
  std::function<int(int argc, char** argv)> run;
};

struct BenchModeRegistrar {
  explicit BenchModeRegistrar(BenchMode mode);
};

}  // namespace chimera::cli
