#include "kernels/cpu_features.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define CHIMERA_X86 1
#endif

namespace chimera {
namespace {

#if defined(CHIMERA_X86)
struct CpuidRegs {
  uint32_t eax = 0, ebx = 0, ecx = 0, edx = 0;
};

CpuidRegs cpuid(uint32_t leaf, uint32_t subleaf) {
  CpuidRegs r;
  __cpuid_count(leaf, subleaf, r.eax, r.ebx, r.ecx, r.edx);
  return r;
}

// xgetbv(0) without needing -mxsave on this file.
uint64_t read_xcr0() {
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t(hi) << 32) | lo;
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#if defined(CHIMERA_X86)
  const uint32_t max_leaf = __get_cpuid_max(0, nullptr);
  if (max_leaf < 1) return f;
  {  // "GenuineIntel": EBX, EDX, ECX of leaf 0
    const CpuidRegs l0 = cpuid(0, 0);
    f.intel = l0.ebx == 0x756e6547 && l0.edx == 0x49656e69 && l0.ecx == 0x6c65746e;
  }
  const CpuidRegs l1 = cpuid(1, 0);
  const bool osxsave = (l1.ecx >> 27) & 1;
  f.sse42 = (l1.ecx >> 20) & 1;
  f.fma = (l1.ecx >> 12) & 1;
  f.f16c = (l1.ecx >> 29) & 1;
  const bool cpu_avx = (l1.ecx >> 28) & 1;
  if (osxsave) {
    const uint64_t xcr0 = read_xcr0();
    f.os_ymm = (xcr0 & 0x6) == 0x6;    // XMM + YMM state
    f.os_zmm = (xcr0 & 0xE6) == 0xE6;  // + opmask, ZMM_Hi256, Hi16_ZMM
  }
  f.avx = cpu_avx && f.os_ymm;
  if (!f.avx) {  // the OS does not save YMM: no AVX-family instruction is usable
    f.fma = f.f16c = false;
    return f;
  }
  if (max_leaf >= 7) {
    const CpuidRegs l7 = cpuid(7, 0);
    f.avx2 = (l7.ebx >> 5) & 1;
    if (f.os_zmm) {
      f.avx512f = (l7.ebx >> 16) & 1;
      f.avx512dq = (l7.ebx >> 17) & 1;
      f.avx512bw = (l7.ebx >> 30) & 1;
      f.avx512vl = (l7.ebx >> 31) & 1;
      f.avx512vnni = (l7.ecx >> 11) & 1;
      if (l7.eax >= 1) f.avx512bf16 = (cpuid(7, 1).eax >> 5) & 1;
    }
  }
#endif
  return f;
}

bool compiled_for(Isa isa) {
  return isa == Isa::kScalar || isa == Isa::kAvx2 || isa == Isa::kAvx512;
}

Isa choose_active() {
  const Isa best = best_isa();
  const char* env = std::getenv("CHIMERA_ISA");
  if (env == nullptr || *env == '\0') return best;
  Result<Isa> forced = parse_isa(env);
  if (!forced.ok()) {
    std::fprintf(stderr, "chimera: warning: %s; using %s\n", forced.status().message().c_str(),
                 isa_name(best));
    return best;
  }
  if (!isa_supported(*forced) || !compiled_for(*forced)) {
    std::fprintf(stderr, "chimera: warning: CHIMERA_ISA=%s is not available here; using %s\n", env,
                 isa_name(best));
    return best;
  }
  return *forced;
}

}  // namespace

std::string CpuFeatures::ToString() const {
  std::string s;
  auto add = [&](bool on, const char* name) {
    if (!on) return;
    if (!s.empty()) s += ' ';
    s += name;
  };
  add(sse42, "sse4.2");
  add(avx, "avx");
  add(avx2, "avx2");
  add(fma, "fma");
  add(f16c, "f16c");
  add(avx512f, "avx512f");
  add(avx512bw, "avx512bw");
  add(avx512vl, "avx512vl");
  add(avx512dq, "avx512dq");
  add(avx512vnni, "avx512vnni");
  add(avx512bf16, "avx512bf16");
  return s.empty() ? "none" : s;
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
  }
  return "unknown";
}

Result<Isa> parse_isa(std::string_view name) {
  if (name == "scalar") return Isa::kScalar;
  if (name == "avx2") return Isa::kAvx2;
  if (name == "avx512") return Isa::kAvx512;
  return Error(ErrorCode::kInvalidArgument, "unknown ISA '", name,
               "' (expected scalar, avx2 or avx512)");
}

bool isa_supported(Isa isa) {
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case Isa::kScalar:
      return true;
    case Isa::kAvx2:
      return f.avx2 && f.fma && f.f16c && f.os_ymm;
    case Isa::kAvx512:
      return f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512vnni && f.os_zmm &&
             f.avx2 && f.fma && f.f16c;
  }
  return false;
}

Isa best_isa() {
  for (Isa isa : {Isa::kAvx512, Isa::kAvx2}) {
    if (compiled_for(isa) && isa_supported(isa)) return isa;
  }
  return Isa::kScalar;
}

Isa active_isa() {
  static const Isa isa = choose_active();
  return isa;
}

bool prefer_zmm_tiles() {
  static const bool on = [] {
    const bool vendor_default = cpu_features().intel;
    const char* env = std::getenv("CHIMERA_ZMM_TILES");
    if (env == nullptr || *env == '\0') return vendor_default;
    if (std::string_view(env) == "0") return false;
    if (std::string_view(env) == "1") return true;
    std::fprintf(stderr, "chimera: warning: CHIMERA_ZMM_TILES=%s is not 0 or 1; using %d\n", env,
                 vendor_default ? 1 : 0);
    return vendor_default;
  }();
  return on;
}

}  // namespace chimera
