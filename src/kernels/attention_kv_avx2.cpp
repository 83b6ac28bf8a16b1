// AVX2 (F16C) F32 -> F16 conversion of the rows kv_write_token stores. vcvtps2ph with
// round-to-nearest-even gives the same bits as the scalar f32_to_fp16 for every input (NaNs keep
// their top payload bits and become quiet, subnormals and overflow round the same way), so which
// path wrote a page never shows.
#include <immintrin.h>

#include "gguf/types.h"
#include "kernels/attention.h"

namespace chimera::ops_internal {

void f32_to_fp16_row_avx2(const float* x, uint16_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h =
        _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i), h);
  }
  for (; i < n; ++i) y[i] = f32_to_fp16(x[i]);
}

}  // namespace chimera::ops_internal
