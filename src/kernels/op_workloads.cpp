#include "kernels/op_workloads.h"

#include <random>

namespace chimera {

std::vector<float> random_floats(size_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
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

Result<std::unique_ptr<AttentionWorkload>> make_attention_workload(int n_ctx, int n_queries) {
  if (n_ctx < 1 || n_queries < 1 || n_queries > n_ctx) {
    return Error(ErrorCode::kInvalidArgument, "attention workload: ", n_queries, " queries over ",
                 n_ctx, " keys");
  }
  auto w = std::make_unique<AttentionWorkload>();
  AttentionParams& p = w->params;
  p.n_head = 32;
  p.n_head_kv = 8;
  p.head_dim = 128;
  p.page_size = 64;
  p.kv_type = GgmlType::F16;
  p.scale = 0.088388f;
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
  w->kv_bytes_per_query = 2ll * n_ctx * row * 2;
  return w;
}

}  // namespace chimera
