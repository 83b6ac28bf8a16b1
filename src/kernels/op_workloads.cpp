#include "kernels/op_workloads.h"

#include <cstddef>
#include <cstring>
#include <random>

namespace chimera {

std::vector<float> random_floats(size_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

void fill_random_weights(GgmlType t, uint8_t* buf, uint64_t matrix_bytes, uint64_t total_bytes) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  const TypeTraits& tt = type_traits(t);
  for (uint64_t off = 0; off + tt.type_size <= matrix_bytes; off += tt.type_size) {
    uint8_t* blk = buf + off;
    if (t == GgmlType::F32) {
      const float v = uni(rng);
      std::memcpy(blk, &v, 4);
      continue;
    }
    if (t == GgmlType::F16 || t == GgmlType::BF16) {
      const uint16_t h = t == GgmlType::F16 ? f32_to_fp16(uni(rng)) : f32_to_bf16(uni(rng));
      std::memcpy(blk, &h, 2);
      continue;
    }
    for (uint32_t k = 0; k < tt.type_size; ++k) blk[k] = static_cast<uint8_t>(byte(rng));
    const uint16_t d = f32_to_fp16(0.01f * (1.5f + uni(rng)));
    const size_t d_off = t == GgmlType::Q6_K ? offsetof(BlockQ6_K, d) : 0;
    std::memcpy(blk + d_off, &d, 2);
    // dmin of Q4_K/Q5_K, m of Q4_1/Q5_1 (random bytes there could be NaN or infinite)
    if (t == GgmlType::Q4_K || t == GgmlType::Q5_K || t == GgmlType::Q4_1 || t == GgmlType::Q5_1)
      std::memcpy(blk + 2, &d, 2);
  }
  for (uint64_t off = matrix_bytes; off + matrix_bytes <= total_bytes; off += matrix_bytes) {
    std::memcpy(buf + off, buf, matrix_bytes);
  }
}

std::unique_ptr<DeltaNetWorkload> make_delta_net_workload(int n_tokens) {
  const int T = n_tokens, Hk = 16, Hv = 16, S = 128;
  const int64_t C = int64_t(2 * Hk + Hv) * S;
  auto w = std::make_unique<DeltaNetWorkload>();
  w->qkv = random_floats(static_cast<size_t>(T) * C, 11);
  w->ab = random_floats(static_cast<size_t>(T) * 2 * Hv, 12, -3, 3);
  w->z = random_floats(static_cast<size_t>(T) * Hv * S, 13);
  w->dt_bias = random_floats(Hv, 14);
  w->A = random_floats(Hv, 15, -4, -0.5f);
  w->norm = random_floats(S, 16, 0.5f, 1.5f);
  w->out.resize(static_cast<size_t>(T) * Hv * S);
  w->state.assign(static_cast<size_t>(Hv) * S * S, 0.0f);
  DeltaNetArgs& a = w->args;
  a.n_tokens = T;
  a.n_k_heads = Hk;
  a.n_v_heads = Hv;
  a.head_dim = S;
  a.q = w->qkv.data();
  a.k = a.q + Hk * S;
  a.v = a.q + 2 * Hk * S;
  a.qkv_stride = C;
  a.beta = w->ab.data();
  a.alpha = a.beta + Hv;
  a.ab_stride = 2 * Hv;
  a.dt_bias = w->dt_bias.data();
  a.A = w->A.data();
  a.z = w->z.data();
  a.z_stride = Hv * S;
  a.norm_weight = w->norm.data();
  a.out = w->out.data();
  a.out_stride = Hv * S;
  a.state = w->state.data();
  return w;
}

std::unique_ptr<ScanWorkload> make_scan_workload(int n_tokens) {
  const int T = n_tokens, H = 48, P = 32, N = 128, G = 1;
  auto w = std::make_unique<ScanWorkload>();
  w->x = random_floats(static_cast<size_t>(T) * H * P, 3);
  w->dt = random_floats(static_cast<size_t>(T) * H, 4, -5, 0);
  w->bc = random_floats(static_cast<size_t>(T) * 2 * G * N, 5);
  w->A = random_floats(H, 6, -4, -0.5f);
  w->D = random_floats(H, 7);
  w->y.resize(w->x.size());
  w->state.assign(static_cast<size_t>(H) * P * N, 0.0f);
  SsmScanArgs& a = w->args;
  a.n_tokens = T;
  a.n_head = H;
  a.head_dim = P;
  a.n_group = G;
  a.state_size = N;
  a.x = w->x.data();
  a.x_stride = H * P;
  a.dt = w->dt.data();
  a.dt_stride = H;
  a.A = w->A.data();
  a.B = w->bc.data();
  a.B_stride = 2 * G * N;
  a.C = w->bc.data() + G * N;
  a.C_stride = 2 * G * N;
  a.D = w->D.data();
  a.y = w->y.data();
  a.y_stride = H * P;
  a.state = w->state.data();
  return w;
}

namespace {
AttentionParams f16_attention(int32_t n_head, int32_t n_head_kv, int32_t head_dim,
                              int32_t page_size, float scale) {
  AttentionParams p;
  p.n_head = n_head;
  p.n_head_kv = n_head_kv;
  p.head_dim = head_dim;
  p.page_size = page_size;
  p.kv_type = GgmlType::F16;
  p.scale = scale;
  return p;
}
}  // namespace

AttentionParams granite_small_attention() {
  return f16_attention(32, 8, 128, 64, 0.088388f);
}

AttentionParams draft_model_attention() {
  return f16_attention(4, 2, 12, 32, 0.288675f);
}

Result<std::unique_ptr<AttentionWorkload>> make_attention_workload(int n_ctx, int n_queries,
                                                                   const AttentionParams& shape) {
  if (n_ctx < 1 || n_queries < 1 || n_queries > n_ctx) {
    return Error(ErrorCode::kInvalidArgument, "attention workload: ", n_queries, " queries over ",
                 n_ctx, " keys");
  }
  auto w = std::make_unique<AttentionWorkload>();
  AttentionParams& p = w->params;
  p = shape;
  const int row = p.n_head_kv * p.head_dim;
  const int n_pages = (n_ctx + p.page_size - 1) / p.page_size;
  const std::vector<float> k = random_floats(row, 1), v = random_floats(row, 2);
  w->pages.resize(2 * static_cast<size_t>(n_pages));
  for (int i = 0; i < n_pages; ++i) {
    std::vector<uint8_t>& kp = w->pages[2 * i];
    std::vector<uint8_t>& vp = w->pages[2 * i + 1];
    kp.resize(kv_page_bytes(p));
    vp.resize(kv_page_bytes(p));
    w->k_pages.push_back(kp.data());
    w->v_pages.push_back(vp.data());
    for (int s = 0; s < p.page_size; ++s) {
      CHIMERA_RETURN_IF_ERROR(kv_write_token(p, k.data(), v.data(), kp.data(), vp.data(), s));
    }
  }
  w->table = KvPageTable{w->k_pages.data(), w->v_pages.data(), n_pages};
  const int width = p.n_head * p.head_dim;
  w->q = random_floats(static_cast<size_t>(n_queries) * width, 8);
  w->out.resize(w->q.size());
  w->n_visible.resize(n_queries);
  w->seq.assign(n_queries, 0);
  for (int i = 0; i < n_queries; ++i) w->n_visible[i] = n_ctx - n_queries + 1 + i;
  w->batch =
      AttentionBatch{n_queries, w->q.data(),   width, w->n_visible.data(), w->seq.data(), &w->table,
                     1,         w->out.data(), width};
  w->kv_bytes_per_query = 2ll * n_ctx * row * (p.kv_type == GgmlType::F32 ? 4 : 2);
  return w;
}

}  // namespace chimera
