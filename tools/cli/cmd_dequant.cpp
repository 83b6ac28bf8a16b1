// `chimera dequant FILE --tensor NAME [-o OUT]`: dequantizes one tensor with the scalar reference
// (gguf/quants.h). With -o, writes its values as raw little-endian float32 in ggml order (ne0
// fastest), for comparison with other tools; without, prints shape, type and value statistics.
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "command.h"
#include "core/status.h"
#include "gguf/gguf_file.h"
#include "gguf/quants.h"

namespace chimera::cli {
namespace {

struct ValueStats {
  uint64_t count = 0, nan = 0, inf = 0;
  double min = std::numeric_limits<double>::infinity();
  double max = -std::numeric_limits<double>::infinity();
  double sum = 0, sum_sq = 0;  // over finite values

  void add(const float* v, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      ++count;
      if (std::isnan(v[i])) {
        ++nan;
      } else if (std::isinf(v[i])) {
        ++inf;
      } else {
        const double x = v[i];
        min = std::min(min, x);
        max = std::max(max, x);
        sum += x;
        sum_sq += x * x;
      }
    }
  }
};

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

Status dequant(const std::string& path, const std::string& tensor_name, const std::string& out) {
  CHIMERA_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> file, GgufFile::open(path));
  const GgufTensorInfo* t = file->find_tensor(tensor_name);
  if (t == nullptr)
    return Error(ErrorCode::kNotFound, path, ": no tensor named '", tensor_name, "'");
  if (!can_dequantize(t->type))
    return Error(ErrorCode::kUnsupported, path, ": tensor '", t->name, "' has type ",
                 type_name(t->type),
                 ", which chimera cannot dequantize (supported: ", supported_type_names(), ")");

  const int64_t row_len = t->ne[0];
  const uint64_t n_rows = row_len > 0 ? t->n_elements() / static_cast<uint64_t>(row_len) : 0;
  const uint64_t src_row_bytes = t->row_bytes();
  std::unique_ptr<std::FILE, FileCloser> f;
  if (!out.empty()) {
    f.reset(std::fopen(out.c_str(), "wb"));
    if (!f) return Error(ErrorCode::kIo, "cannot open '", out, "' for writing");
  }
  std::vector<float> row(static_cast<size_t>(row_len));
  ValueStats stats;
  for (uint64_t r = 0; r < n_rows; ++r) {
    CHIMERA_RETURN_IF_ERROR(
        dequantize_row(t->type, t->data + r * src_row_bytes, row.data(), row_len));
    if (f) {
      // Raw little-endian float32: chimera only builds for little-endian hosts.
      if (std::fwrite(row.data(), sizeof(float), row.size(), f.get()) != row.size())
        return Error(ErrorCode::kIo, "write to '", out, "' failed at row ", r);
    } else {
      stats.add(row.data(), row_len);
    }
  }
  if (f) {
    if (std::fclose(f.release()) != 0) return Error(ErrorCode::kIo, "closing '", out, "' failed");
    std::printf("%s: %s %s -> %s (%llu float32 values)\n", t->name.c_str(), type_name(t->type),
                t->shape_string().c_str(), out.c_str(),
                static_cast<unsigned long long>(t->n_elements()));
    return Status::Ok();
  }
  const uint64_t finite = stats.count - stats.nan - stats.inf;
  const double mean = finite ? stats.sum / static_cast<double>(finite) : 0.0;
  const double rms = finite ? std::sqrt(stats.sum_sq / static_cast<double>(finite)) : 0.0;
  std::printf("tensor   %s\ntype     %s\nshape    %s\nelements %llu\n", t->name.c_str(),
              type_name(t->type), t->shape_string().c_str(),
              static_cast<unsigned long long>(stats.count));
  if (finite > 0)
    std::printf("min      %.9g\nmax      %.9g\nmean     %.9g\nrms      %.9g\n", stats.min,
                stats.max, mean, rms);
  std::printf("nan      %llu\ninf      %llu\n", static_cast<unsigned long long>(stats.nan),
              static_cast<unsigned long long>(stats.inf));
  return Status::Ok();
}

int run_dequant(int argc, char** argv) {
  CLI::App app{"Dequantize one tensor of a GGUF file to float32 (raw dump or statistics)",
               "chimera dequant"};
  std::string path, tensor, out;
  app.add_option("file", path, "GGUF file")->required();
  app.add_option("--tensor", tensor, "tensor name")->required();
  app.add_option("-o,--output", out,
                 "write the values as raw little-endian float32 (ne0 fastest) to this file");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  Status st = dequant(path, tensor, out);
  if (!st.ok()) {
    std::fprintf(stderr, "chimera dequant: %s\n", st.ToString().c_str());
    return 1;
  }
  return 0;
}

const Registrar kRegistrar{
    Command{"dequant", "dequantize a tensor to raw float32 or print its statistics", run_dequant}};

}  // namespace
}  // namespace chimera::cli
