// Matmul's input validation (clear errors, nothing written) and ISA selection.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "kernels/cpu_features.h"
#include "matmul_test_util.h"

namespace chimera {
namespace {

class MatmulErrors : public testing::Test {
 protected:
  std::vector<uint8_t> wq = matmul_test::random_weights(GgmlType::Q8_0, 64, 4, 1);
  std::vector<float> x = std::vector<float>(3 * 64, 0.5f);
  std::vector<float> y = std::vector<float>(3 * 4, -3.0f);
  ThreadContext ctx{2};
  MatmulWorkspace ws;

  void expect_error(const Status& st, ErrorCode code, const std::string& needle) {
    EXPECT_EQ(st.code(), code) << st.ToString();
    EXPECT_NE(st.message().find(needle), std::string::npos) << st.message();
    for (float v : y) ASSERT_EQ(v, -3.0f) << "output changed on error";
  }
};

TEST_F(MatmulErrors, UnsupportedType) {
  const WeightMatrix w{GgmlType::Q8_1, wq.data(), 64, 4};
  expect_error(matmul(ctx, w, x.data(), 3, y.data(), ws), ErrorCode::kUnsupported, "Q8_1");
}

TEST_F(MatmulErrors, RowLengthNotAMultipleOfTheBlock) {
  const WeightMatrix w{GgmlType::Q8_0, wq.data(), 48, 4};
  expect_error(matmul(ctx, w, x.data(), 3, y.data(), ws), ErrorCode::kInvalidArgument,
               "not a multiple");
}

TEST_F(MatmulErrors, BadShapesPointersStrides) {
  const WeightMatrix ok{GgmlType::Q8_0, wq.data(), 64, 4};
  expect_error(
      matmul(ctx, WeightMatrix{GgmlType::Q8_0, wq.data(), 64, 0}, x.data(), 3, y.data(), ws),
      ErrorCode::kInvalidArgument, "non-positive");
  expect_error(matmul(ctx, WeightMatrix{GgmlType::Q8_0, nullptr, 64, 4}, x.data(), 3, y.data(), ws),
               ErrorCode::kInvalidArgument, "no data");
  expect_error(matmul(ctx, ok, x.data(), -1, y.data(), ws), ErrorCode::kInvalidArgument,
               "negative");
  expect_error(matmul(ctx, ok, nullptr, 3, y.data(), ws), ErrorCode::kInvalidArgument, "null");
  expect_error(matmul(ctx, ok, x.data(), 3, y.data(), ws, 32), ErrorCode::kInvalidArgument,
               "stride");
  expect_error(matmul(ctx, ok, x.data(), 3, reinterpret_cast<float*>(x.data()) + 10, ws),
               ErrorCode::kInvalidArgument, "overlap");
  EXPECT_TRUE(matmul(ctx, ok, x.data(), 0, y.data(), ws).ok());  // empty batch: nothing to do
}

TEST_F(MatmulErrors, ExpertChecks) {
  const WeightMatrix stack{GgmlType::Q8_0, wq.data(), 64, 2, 2};
  expect_error(matmul_expert(ctx, stack, 2, x.data(), 3, y.data(), ws), ErrorCode::kInvalidArgument,
               "out of range");
  expect_error(matmul_expert(ctx, stack, -1, x.data(), 3, y.data(), ws),
               ErrorCode::kInvalidArgument, "out of range");
  expect_error(matmul(ctx, stack, x.data(), 3, y.data(), ws), ErrorCode::kInvalidArgument,
               "matmul_expert");
}

TEST(MatmulSupport, TypeList) {
  for (GgmlType t : matmul_test::kAllTypes) EXPECT_TRUE(matmul_supports(t)) << type_name(t);
  EXPECT_FALSE(matmul_supports(GgmlType::Q8_1));
  EXPECT_FALSE(matmul_supports(GgmlType::Q2_K));
}

TEST(MatmulIsa, ParseAndSupport) {
  EXPECT_EQ(*parse_isa("scalar"), Isa::kScalar);
  EXPECT_EQ(*parse_isa("avx2"), Isa::kAvx2);
  EXPECT_EQ(*parse_isa("avx512"), Isa::kAvx512);
  const auto bad = parse_isa("sse9");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("sse9"), std::string::npos);
  EXPECT_TRUE(isa_supported(Isa::kScalar));
  // AVX2 support implies the features it needs, as reported by cpuid.
  const CpuFeatures& f = cpu_features();
  if (isa_supported(Isa::kAvx2)) {
    EXPECT_TRUE(f.avx2 && f.fma && f.f16c && f.os_ymm);
  }
  if (f.avx512f) {
    EXPECT_TRUE(f.os_zmm);
  }
  EXPECT_TRUE(isa_supported(best_isa()));
  EXPECT_TRUE(isa_supported(active_isa()));
  // CHIMERA_ISA, when set for this run, is honoured if the CPU can run it.
  if (const char* env = std::getenv("CHIMERA_ISA")) {
    auto forced = parse_isa(env);
    if (forced.ok() && isa_supported(*forced)) {
      EXPECT_EQ(active_isa(), *forced);
    }
  }
}

TEST(MatmulIsa, UnavailablePathIsAnError) {
  // A workspace for a path this CPU cannot run is refused, leaving the output untouched.
  std::vector<Isa> unavailable;
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512})
    if (!isa_supported(isa)) unavailable.push_back(isa);
  if (unavailable.empty()) GTEST_SKIP() << "this CPU runs every path";
  const auto wq = matmul_test::random_weights(GgmlType::F32, 8, 2, 3);
  std::vector<float> x(8, 1.0f), y(2, -3.0f);
  ThreadContext ctx(1);
  for (Isa isa : unavailable) {
    MatmulWorkspace ws(isa);
    const Status st =
        matmul(ctx, WeightMatrix{GgmlType::F32, wq.data(), 8, 2}, x.data(), 1, y.data(), ws);
    EXPECT_EQ(st.code(), ErrorCode::kUnsupported) << isa_name(isa);
    EXPECT_EQ(y[0], -3.0f);
  }
}

TEST(MatmulIsa, Avx512NeedsVnniAndTheAvx2Features) {
  const CpuFeatures& f = cpu_features();
  if (isa_supported(Isa::kAvx512)) {
    EXPECT_TRUE(f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512vnni && f.os_zmm);
    EXPECT_TRUE(isa_supported(Isa::kAvx2));
    EXPECT_EQ(best_isa(), Isa::kAvx512);
  }
  if (!f.avx512vnni) {
    EXPECT_FALSE(isa_supported(Isa::kAvx512));
  }
}

// The vendor flag (which picks the AVX-512 path's 512-bit tiles by default) agrees with the
// kernel's own reading of cpuid in /proc/cpuinfo, and a workspace starts from prefer_zmm_tiles()
// (the vendor's default unless CHIMERA_ZMM_TILES says otherwise).
TEST(MatmulIsa, VendorMatchesProcCpuinfoAndSetsTheTileDefault) {
  std::ifstream in("/proc/cpuinfo");
  if (!in) GTEST_SKIP() << "no /proc/cpuinfo";
  std::string line, vendor;
  while (std::getline(in, line))
    if (line.rfind("vendor_id", 0) == 0) {
      vendor = line.substr(line.find(':') + 2);
      break;
    }
  if (vendor.empty()) GTEST_SKIP() << "/proc/cpuinfo names no vendor";
  EXPECT_EQ(cpu_features().intel, vendor == "GenuineIntel") << vendor;
  const char* env = std::getenv("CHIMERA_ZMM_TILES");
  if (env == nullptr || *env == '\0') {
    EXPECT_EQ(prefer_zmm_tiles(), cpu_features().intel);
  } else if (std::string(env) == "0" || std::string(env) == "1") {
    EXPECT_EQ(prefer_zmm_tiles(), std::string(env) == "1");
  }
  MatmulWorkspace ws(Isa::kScalar);
  EXPECT_EQ(ws.zmm_tiles(), prefer_zmm_tiles());
  ws.set_zmm_tiles(!ws.zmm_tiles());
  EXPECT_NE(ws.zmm_tiles(), prefer_zmm_tiles());
}

TEST(MatmulWorkspace, GrowsAndKeepsAlignment) {
  MatmulWorkspace ws(Isa::kScalar);
  void* p = ws.reserve(100);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
  EXPECT_GE(ws.capacity(), 100u);
  EXPECT_EQ(ws.reserve(50), p);  // no reallocation when it fits
  void* q = ws.reserve(1 << 20);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(q) % 64, 0u);
  EXPECT_GE(ws.capacity(), size_t(1) << 20);
}

}  // namespace
}  // namespace chimera

namespace chimera {
namespace {

// A read-ahead is a hint: with one (ranges with a gap, a null range, windows of every size) the
// output bytes are those of the call without, for every path, batch size and thread count (the
// calls then run in column blocks with prefetches between them).
TEST(MatmulReadAhead, ResultsAreTheSameBytes) {
  std::vector<float> side(5000, 1.0f);
  const ReadAhead::Range ranges[] = {{side.data(), 4096}, {nullptr, 100}, {side.data() + 1111, 7}};
  const uint64_t total = 4096 + 100 + 7;
  const int64_t n_in = 96, n_out = 1061;  // several 256-column blocks and a ragged end
  for (GgmlType t : {GgmlType::F32, GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4_K}) {
    const int64_t k = t == GgmlType::Q4_K ? 256 : n_in;
    const auto wbytes = matmul_test::random_weights(t, k, n_out, 5);
    const WeightMatrix w{t, wbytes.data(), k, n_out};
    const auto x = matmul_test::random_activations(16, k, 6);
    for (Isa isa : matmul_test::runnable_isas()) {
      MatmulWorkspace ws(isa);
      for (int threads : {1, 2, 3}) {
        ThreadContext ctx(threads);
        for (int64_t m : {1, 4, 16}) {
          std::vector<float> plain(m * n_out, -1.0f);
          ASSERT_TRUE(matmul(ctx, w, x.data(), m, plain.data(), ws).ok());
          for (auto [b, e] : {std::pair<uint64_t, uint64_t>{0, total}, {10, 4100}, {4196, total}}) {
            const ReadAhead ra{ranges, 3, b, e};
            std::vector<float> with(m * n_out, -2.0f);
            ASSERT_TRUE(matmul(ctx, w, x.data(), m, with.data(), ws, 0, 0, &ra).ok());
            ASSERT_EQ(std::memcmp(plain.data(), with.data(), plain.size() * sizeof(float)), 0)
                << type_name(t) << " m=" << m << " threads=" << threads << " window " << b << ".."
                << e;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace chimera
