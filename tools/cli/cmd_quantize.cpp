// `chimera quantize IN.gguf OUT.gguf TYPE [-t N]`: writes a copy of a model with its weight
// matrices converted to TYPE; the policy (what stays F32, fallbacks, the Q4_K_M mix) lives in
// gguf/quantize_model.h and each tensor's decision is printed.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "command.h"
#include "core/status.h"
#include "core/threads.h"
#include "gguf/quantize_model.h"

namespace chimera::cli {
namespace {

int run_quantize(int argc, char** argv) {
  CLI::App app{"Quantize (or convert) the weights of a GGUF model", "chimera quantize"};
  std::string in, out, type;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  bool quiet = false;
  app.add_option("input", in, "input GGUF file")->required();
  app.add_option("output", out, "output GGUF file (written atomically)")->required();
  app.add_option("type", type, StrCat("target type: ", quantize_target_names()))->required();
  app.add_option("-t,--threads", threads, "threads")->check(CLI::Range(1, 1024));
  app.add_flag("-q,--quiet", quiet, "print only the summary");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  Result<QuantizeTarget> target = parse_quantize_target(type);
  if (!target.ok()) {
    std::fprintf(stderr, "chimera quantize: %s\n", target.status().ToString().c_str());
    return 2;
  }
  ThreadContext ctx(threads);
  const auto start = std::chrono::steady_clock::now();
  Result<QuantizeSummary> sum =
      quantize_model(in, out, *target, ctx, [quiet](const std::string& line) {
        if (!quiet) std::printf("%s\n", line.c_str());
      });
  if (!sum.ok()) {
    std::fprintf(stderr, "chimera quantize: %s\n", sum.status().ToString().c_str());
    return 1;
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf(
      "%s: %llu tensors (%llu converted), %.2f MiB -> %.2f MiB of tensor data, %s, %.2f s\n",
      out.c_str(), static_cast<unsigned long long>(sum->tensors),
      static_cast<unsigned long long>(sum->converted), sum->bytes_in / 1048576.0,
      sum->bytes_out / 1048576.0, target->name.c_str(), secs);
  return 0;
}

const Registrar kRegistrar{
    Command{"quantize", "convert a GGUF model's weights to another type", run_quantize}};

}  // namespace
}  // namespace chimera::cli
