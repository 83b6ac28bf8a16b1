// Run-time CPU feature detection (cpuid + xgetbv) and the choice of kernel instruction set.
//
// Kernels are compiled per ISA (files *_avx2.cpp / *_avx512.cpp get their flags from CMake) and
// picked here at run time, never with -march=native. AMX is never used: it faults on our VMs.
#pragma once

#include <string>
#include <string_view>

#include "core/status.h"

namespace chimera {

struct CpuFeatures {
  // Instruction sets the CPU reports *and* the OS saves the register state of (xgetbv).
  bool sse42 = false;
  bool avx = false;
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512dq = false;
  bool avx512vnni = false;
  bool avx512bf16 = false;
  // What the OS enabled in XCR0: YMM (AVX) and ZMM/opmask (AVX-512) state.
  bool os_ymm = false;
  bool os_zmm = false;
  // The vendor is Intel, whose AVX-512 cores run 512-bit operations at full width (two 512-bit
  // pipes), where AMD's Zen 4 splits each in two: a kernel may then prefer 512-bit tiles.
  bool intel = false;

  std::string ToString() const;  // "avx2 fma f16c avx512f ..." (only the ones present)
};

// Detected once per process (thread-safe).
const CpuFeatures& cpu_features();

// The instruction sets a kernel family can be compiled for, slowest first.
enum class Isa { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

const char* isa_name(Isa isa);
// "scalar" | "avx2" | "avx512" (case-sensitive, as in CHIMERA_ISA).
Result<Isa> parse_isa(std::string_view name);

// The CPU (and OS) can run kernels compiled for `isa`. AVX2 needs AVX2 + FMA + F16C with YMM
// state; AVX-512 needs F + BW + VL + DQ + VNNI with ZMM state, plus what AVX2 needs (the path
// runs the AVX2 kernels for what it has no AVX-512 kernel for).
bool isa_supported(Isa isa);

// The best supported ISA for which chimera has kernels, unless the environment variable
// CHIMERA_ISA=scalar|avx2|avx512 forces one (for testing). A forced ISA the CPU cannot run, or an
// unknown name, falls back to the best supported one with a warning on stderr. Fixed for the
// process after the first call: results are bit-exact only within one path.
Isa active_isa();

// The best supported ISA ignoring CHIMERA_ISA.
Isa best_isa();

// Whether the AVX-512 path runs its 512-bit tiles where it has two equivalent ones (the results
// are identical bit for bit either way; MatmulWorkspace::zmm_tiles): on Intel's cores, off
// elsewhere, unless the environment variable CHIMERA_ZMM_TILES=0|1 says otherwise (an A/B on one
// host; any other value warns on stderr and is ignored). Fixed for the process after the first
// call.
bool prefer_zmm_tiles();

}  // namespace chimera
