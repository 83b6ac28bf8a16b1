#include "kernels/activation.h"

#include <cmath>

namespace chimera {

bool ops_path_supported(OpsPath path) {
  switch (path) {
    case OpsPath::kScalar:
      return true;
    case OpsPath::kAvx2:
#if defined(__x86_64__) || defined(__i386__)
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("f16c");
#else
      return false;
#endif
  }
  return false;
}

OpsPath ops_best_path() {
  static const OpsPath best =
      ops_path_supported(OpsPath::kAvx2) ? OpsPath::kAvx2 : OpsPath::kScalar;
  return best;
}

const char* ops_path_name(OpsPath path) {
  return path == OpsPath::kAvx2 ? "avx2" : "scalar";
}

float silu_scalar(float x) {
  return x / (1.0f + std::exp(-x));
}

float softplus(float x) {
  return x > 20.0f ? x : std::log1p(std::exp(x));
}

void silu(const float* x, float* y, int64_t n, OpsPath path) {
  if (path == OpsPath::kAvx2) return ops_internal::silu_avx2(x, y, n);
  for (int64_t i = 0; i < n; ++i) y[i] = silu_scalar(x[i]);
}

void swiglu(const float* gate, const float* up, float* y, int64_t n, OpsPath path) {
  if (path == OpsPath::kAvx2) return ops_internal::swiglu_avx2(gate, up, y, n);
  for (int64_t i = 0; i < n; ++i) y[i] = silu_scalar(gate[i]) * up[i];
}

}  // namespace chimera
