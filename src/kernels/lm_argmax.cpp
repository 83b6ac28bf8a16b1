#include "kernels/lm_argmax.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "gguf/types.h"

namespace chimera {

// A branch-free lane-wise maximum the compiler vectorises, then one scan for its first index: a
// compare-and-branch per entry cost ~2.5 us per drafted token over 2,048 logits.
int32_t first_argmax(const float* v, int32_t n) {
  if (n <= 0) return 0;
  constexpr int32_t kLanes = 8;
  float lane[kLanes];
  for (int32_t j = 0; j < kLanes; ++j) lane[j] = v[0];
  int32_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int32_t j = 0; j < kLanes; ++j) lane[j] = v[i + j] > lane[j] ? v[i + j] : lane[j];
  float top = lane[0];
  for (int32_t j = 1; j < kLanes; ++j) top = lane[j] > top ? lane[j] : top;
  for (; i < n; ++i) top = v[i] > top ? v[i] : top;
  for (int32_t k = 0; k < n; ++k)
    if (v[k] == top) return k;
  return 0;  // NaNs only
}

namespace {

constexpr int64_t kMaxIn = 64;  // the search keeps a row's int8 copy in one vector

// The smallest float >= d.
float round_up(double d) {
  float f = static_cast<float>(d);
  if (static_cast<double>(f) < d) f = std::nextafter(f, INFINITY);
  return f;
}

}  // namespace

namespace ops_internal {
bool argmax_avx512_available() {
  return isa_supported(Isa::kAvx512);
}
}  // namespace ops_internal

std::unique_ptr<ArgmaxHead> ArgmaxHead::pack(const WeightMatrix& w) {
  if (!ops_internal::argmax_avx512_available()) return nullptr;
  if (w.type != GgmlType::F16 && w.type != GgmlType::BF16 && w.type != GgmlType::F32)
    return nullptr;
  if (w.n_expert != 1 || w.n_in < 1 || w.n_in > kMaxIn || w.n_out < 1 || !w.data) return nullptr;
  auto h = std::make_unique<ArgmaxHead>();
  h->n_in = w.n_in;
  h->n_out = w.n_out;
  h->n_kg = (w.n_in + 3) / 4;
  const int64_t n_groups = (w.n_out + 15) / 16, n_pad = n_groups * 16;
  h->q.assign(static_cast<size_t>(n_groups * h->n_kg * 64), 128);
  h->scale.assign(n_pad, 0.0f);
  h->qmax.assign(n_pad, 0.0f);
  h->dmax.assign(n_pad, 0.0f);
  h->l1.assign(n_pad, 0.0f);
  std::vector<float> e(static_cast<size_t>(w.n_in));
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
  for (int64_t v = 0; v < w.n_out; ++v) {
    const uint8_t* row = base + v * w.row_bytes();
    for (int64_t i = 0; i < w.n_in; ++i) {
      if (w.type == GgmlType::F32) {
        std::memcpy(&e[i], row + 4 * i, 4);
      } else {
        uint16_t b;
        std::memcpy(&b, row + 2 * i, 2);
        e[i] = w.type == GgmlType::F16 ? fp16_to_f32(b) : bf16_to_f32(b);
      }
    }
    double amax = 0, l1 = 0;
    for (float x : e) {
      if (!std::isfinite(x)) return nullptr;
      amax = std::max(amax, std::fabs(double(x)));
      l1 += std::fabs(double(x));
    }
    // Scale products must stay normal (lm_argmax_avx512.cpp): extreme rows disable the search.
    if (amax > 0x1p30 || (amax > 0 && amax < 0x1p-30)) return nullptr;
    const float s = amax > 0 ? static_cast<float>(amax / 127.0) : 1.0f;
    double qm = 0, dm = 0;
    const int64_t g = v / 16, lane = v % 16;
    for (int64_t i = 0; i < w.n_in; ++i) {
      const double q = std::clamp(std::nearbyint(double(e[i]) / s), -127.0, 127.0);
      qm = std::max(qm, std::fabs(q));
      dm = std::max(dm, std::fabs(double(e[i]) - double(s) * q));
      h->q[static_cast<size_t>(((g * h->n_kg + i / 4) * 16 + lane) * 4 + i % 4)] =
          static_cast<uint8_t>(static_cast<int>(q) + 128);
    }
    h->scale[v] = s;
    h->qmax[v] = round_up(double(s) * qm * (1 + 0x1p-40));
    h->dmax[v] = round_up(dm * (1 + 0x1p-40));
    h->l1[v] = round_up(l1 * (1 + 0x1p-40));
  }
  return h;
}

Status matmul_argmax(ThreadContext& ctx, const WeightMatrix& w, const ArgmaxHead* head,
                     const float* x, int64_t m, int32_t* out, MatmulWorkspace& ws,
                     std::vector<float>& scratch) {
  if (m <= 0) return Status::Ok();
  int64_t left = m;
  const int64_t n_pad = (w.n_out + 15) / 16 * 16;
  if (head && ws.isa() == Isa::kAvx512 && head->n_in == w.n_in && head->n_out == w.n_out) {
    scratch.resize(static_cast<size_t>(16 * n_pad));
    left = ops_internal::argmax_rows_avx512(*head, w, x, w.n_in, m, out, scratch.data());
  } else {
    std::fill(out, out + m, -1);
  }
  if (left == 0) return Status::Ok();
  // The rest: every logit, as the caller would have computed them.
  scratch.resize(static_cast<size_t>(left * (w.n_in + w.n_out)));
  float* xs = scratch.data();
  float* y = xs + left * w.n_in;
  int64_t n = 0;
  for (int64_t i = 0; i < m; ++i)
    if (out[i] < 0) std::memcpy(xs + (n++) * w.n_in, x + i * w.n_in, w.n_in * sizeof(float));
  CHIMERA_RETURN_IF_ERROR(matmul(ctx, w, xs, left, y, ws));
  n = 0;
  for (int64_t i = 0; i < m; ++i)
    if (out[i] < 0) out[i] = first_argmax(y + (n++) * w.n_out, static_cast<int32_t>(w.n_out));
  return Status::Ok();
}

}  // namespace chimera
