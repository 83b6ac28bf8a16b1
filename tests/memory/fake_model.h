// A fake model for testing the memory without real compute (MEMORY.md section 7 item 1): its
// attention "state" is the token at each position (K/V rows derived from token, index, layer)
// and its recurrent "state" is a running hash of the token list, written into the real conv and
// ssm buffers. Both are exactly representable in F32, F16 and BF16, so the oracle can predict
// every stored bit from a sequence's token list alone.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gguf/types.h"
#include "memory/hybrid_memory.h"

namespace chimera::fake {

inline uint64_t mix(uint64_t x) {
  x ^= x >> 31;
  x *= 0x7fb5d329728ea185ull;
  x ^= x >> 27;
  x *= 0x81dadef4bc2dd44dull;
  x ^= x >> 33;
  return x;
}

// Value of element j of the K (which = 0) or V (which = 1) row of `token` at token index t.
// Integers in [-128, 128) are exact in every element type.
inline float kv_value(int32_t token, uint32_t t, uint32_t layer, uint32_t j, int which) {
  const uint64_t h = mix((uint64_t(uint32_t(token)) << 32) ^ (uint64_t(t) * 0x9e37) ^
                         (uint64_t(layer) << 20) ^ (uint64_t(j) << 8) ^ uint64_t(which));
  return static_cast<float>(static_cast<int>(h & 255) - 128);
}

inline void store(GgmlType type, float v, void* dst) {
  if (type == GgmlType::F32) {
    std::memcpy(dst, &v, 4);
  } else {
    const uint16_t b = type == GgmlType::F16 ? f32_to_fp16(v) : f32_to_bf16(v);
    std::memcpy(dst, &b, 2);
  }
}

// Running hash of a token list: h(empty) = 0 (the zero state decodes to 0).
inline uint64_t step(uint64_t h, int32_t token, uint32_t t) {
  return mix(h ^ (uint64_t(uint32_t(token)) * 0x100000001b3ull) ^ (uint64_t(t) << 40)) | 1;
}
inline uint64_t hash_of(const std::vector<int32_t>& tokens, size_t n) {
  uint64_t h = 0;
  for (size_t i = 0; i < n; ++i) h = step(h, tokens[i], static_cast<uint32_t>(i));
  return h;
}

// Recurrent layer state for hash h: the hash in the first four conv floats (16 bits each, exact),
// then values derived from (h, layer, index), all integers < 2^16 (exact in float).
inline float state_value(uint64_t h, uint32_t layer, uint64_t j, int which) {
  if (h == 0) return 0.0f;  // the empty list: the memory's zero state
  if (which == 0 && j < 4) return static_cast<float>((h >> (16 * j)) & 0xffff);
  return static_cast<float>(mix(h ^ (uint64_t(layer) << 48) ^ (j << 1) ^ uint64_t(which)) & 0xffff);
}
inline uint64_t decode_hash(const float* conv) {
  uint64_t h = 0;
  for (int j = 0; j < 4; ++j) h |= static_cast<uint64_t>(conv[j]) << (16 * j);
  return h;
}
inline void write_state(uint64_t h, uint32_t layer, float* conv, uint64_t n_conv, float* ssm,
                        uint64_t n_ssm) {
  for (uint64_t j = 0; j < n_conv; ++j) conv[j] = state_value(h, layer, j, 0);
  for (uint64_t j = 0; j < n_ssm; ++j) ssm[j] = state_value(h, layer, j, 1);
}

// Runs the fake model over a begun batch the way an engine would. If `tables_ref` is given (the
// expected token list of every sequence, including the batch's tokens), the attention step also
// reads every visible key row through the page tables and checks it. Returns false (with `why`)
// on a mismatch. abort_at_ubatch >= 0 stops after writing that ubatch (simulated failure).
inline bool run_batch(HybridMemory& mem, const Batch& batch, const BatchPlan& plan,
                      const std::vector<std::vector<int32_t>>* tables_ref, std::string* why,
                      int abort_at_ubatch = -1) {
  const MemoryConfig& cfg = mem.config();
  for (size_t u = 0; u < plan.ubatches.size(); ++u) {
    const Ubatch& ub = plan.ubatches[u];
    for (size_t r = 0; r < ub.runs.size(); ++r) {
      const SeqRun& run = ub.runs[r];
      for (uint32_t il = 0; il < cfg.layers.size(); ++il) {
        const MemoryLayer& L = cfg.layers[il];
        if (L.kind == LayerKind::kAttention) {
          const size_t esz = cfg.kv_type == GgmlType::F32 ? 4 : 2;
          const KvPageLayout& layout = mem.kv_layout(il);
          if (layout.n_heads != L.kv_heads || layout.n_heads * layout.head_dim != L.kv_dim ||
              layout.page_size != cfg.page_size || layout.elem_bytes != esz) {
            *why = "kv_layout disagrees with the config";
            return false;
          }
          std::vector<uint8_t> k(L.kv_dim * esz), v(L.kv_dim * esz);
          for (uint32_t t = 0; t < run.n_tokens; ++t) {
            const int32_t tok = batch.tokens[ub.batch_index[run.offset + t]];
            const KvSlot slot = mem.kv_slot(il, u, r, t);
            if (slot.slot != static_cast<int32_t>((run.first + t) % cfg.page_size)) {
              *why = "kv_slot row";
              return false;
            }
            for (uint32_t j = 0; j < L.kv_dim; ++j) {
              store(cfg.kv_type, kv_value(tok, run.first + t, il, j, 0), k.data() + j * esz);
              store(cfg.kv_type, kv_value(tok, run.first + t, il, j, 1), v.data() + j * esz);
            }
            layout.write_row(slot.k_page, slot.slot, k.data());
            layout.write_row(slot.v_page, slot.slot, v.data());
          }
          if (tables_ref) {
            const AttentionRun a = mem.attention(il, u, r);
            const std::vector<int32_t>& ref = (*tables_ref)[run.seq];
            if (a.first != run.first || a.n_kv != run.first + run.n_tokens ||
                a.n_pages != (a.n_kv + a.page_size - 1) / a.page_size) {
              *why = "attention run geometry";
              return false;
            }
            std::vector<uint8_t> want(L.kv_dim * esz), got(L.kv_dim * esz);
            // A window layer: the keys its first query reads, (first - window, n_kv).
            const uint32_t t0 = L.window && run.first + 1 > L.window ? run.first + 1 - L.window : 0;
            for (uint32_t t = t0; t < a.n_kv; ++t) {
              for (int w = 0; w < 2; ++w) {
                for (uint32_t j = 0; j < L.kv_dim; ++j)
                  store(cfg.kv_type, kv_value(ref[t], t, il, j, w), want.data() + j * esz);
                // Head-major page: head h of token t at ((h * page_size) + t % page_size) rows.
                const auto* page =
                    static_cast<const uint8_t*>((w == 0 ? a.k_pages : a.v_pages)[t / a.page_size]);
                if (page == nullptr) {
                  *why = "page table: visible row " + std::to_string(t) + " of window layer " +
                         std::to_string(il) + " released";
                  return false;
                }
                const uint32_t hd = L.kv_dim / L.kv_heads;
                for (uint32_t h = 0; h < L.kv_heads; ++h)
                  std::memcpy(got.data() + h * hd * esz,
                              page + (h * a.page_size + t % a.page_size) * hd * esz, hd * esz);
                if (std::memcmp(got.data(), want.data(), want.size()) != 0) {
                  *why = "page table row mismatch: seq " + std::to_string(run.seq) + " layer " +
                         std::to_string(il) + " token " + std::to_string(t);
                  return false;
                }
              }
            }
          }
        } else if (L.kind == LayerKind::kRecurrent) {
          const RecurrentRun s = mem.recurrent(il, u, r);
          if (s.conv_src == s.conv_dst || s.ssm_src == s.ssm_dst) {
            *why = "recurrent src aliases dst";
            return false;
          }
          if (s.n_steps != 0 && s.n_steps + 1 != run.n_tokens) {
            *why = "per-token state buffers: " + std::to_string(s.n_steps) + " for a run of " +
                   std::to_string(run.n_tokens);
            return false;
          }
          uint64_t h = decode_hash(s.conv_src);
          for (uint32_t t = 0; t < run.n_tokens; ++t) {
            h = step(h, batch.tokens[ub.batch_index[run.offset + t]], run.first + t);
            if (t < s.n_steps)  // speculative verification: the state after every token
              write_state(h, il, s.conv_step(t), s.conv_floats, s.ssm_step(t), s.ssm_floats);
          }
          write_state(h, il, s.conv_dst, s.conv_floats, s.ssm_dst, s.ssm_floats);
        }
      }
    }
    if (static_cast<int>(u) == abort_at_ubatch) return true;
  }
  return true;
}

// Checks one sequence's stored state (tokens, positions, KV rows, live state, snapshots on its
// path) against its token list. Returns "" when everything matches.
inline std::string check_seq(const HybridMemory& mem, int32_t seq, const std::vector<int32_t>& ref,
                             int64_t pos_base) {
  const MemoryConfig& cfg = mem.config();
  const std::string where = "seq " + std::to_string(seq) + ": ";
  if (mem.n_tokens(seq) != ref.size())
    return where + "n_tokens " + std::to_string(mem.n_tokens(seq)) + " want " +
           std::to_string(ref.size());
  if (mem.tokens(seq) != ref) return where + "token list differs";
  if (mem.next_pos(seq) != pos_base + static_cast<int64_t>(ref.size()))
    return where + "next_pos " + std::to_string(mem.next_pos(seq));
  if (!ref.empty() && (mem.pos_min(seq) != pos_base ||
                       mem.pos_max(seq) != pos_base + static_cast<int64_t>(ref.size()) - 1))
    return where + "pos_min/pos_max";
  const size_t esz = cfg.kv_type == GgmlType::F32 ? 4 : 2;
  // Window layers: the rows the next token reads are held, and the rows released are those
  // the memory promises to release (pages wholly before n + 1 - window - reserve): a sequence
  // holds its window (+ reserve), not its length. After a truncation within the reserve a
  // sequence may hold less than its reserve (never less than its window).
  const uint32_t wf = mem.window_from(seq);
  uint32_t window = 0;
  for (const MemoryLayer& L : cfg.layers) window = std::max(window, L.window);
  if (window > 0) {
    const uint64_t n = ref.size();
    const uint64_t need = n + 1 > window ? n + 1 - window : 0;
    if (wf % cfg.page_size != 0 || wf > need)
      return where + "window rows from " + std::to_string(wf) + ", the next token reads from " +
             std::to_string(need);
    if (cfg.window_reserve == UINT32_MAX && wf != 0) return where + "released with no release";
    if (!mem.has_window() && wf != 0) return where + "window_from without window layers";
  } else if (wf != 0) {
    return where + "window_from " + std::to_string(wf) + " without window layers";
  }
  std::vector<uint8_t> want, got;
  for (uint32_t il = 0; il < cfg.layers.size(); ++il) {
    const MemoryLayer& L = cfg.layers[il];
    if (L.kind == LayerKind::kAttention) {
      want.resize(L.kv_dim * esz);
      got.resize(L.kv_dim * esz);
      for (uint32_t t = L.window ? wf : 0; t < ref.size(); ++t)
        for (int w = 0; w < 2; ++w) {
          for (uint32_t j = 0; j < L.kv_dim; ++j)
            store(cfg.kv_type, kv_value(ref[t], t, il, j, w), want.data() + j * esz);
          if (w == 0) {
            mem.k_at(il, seq, t, got.data());
          } else {
            mem.v_at(il, seq, t, got.data());
          }
          if (std::memcmp(got.data(), want.data(), want.size()) != 0)
            return where + (w ? "V" : "K") + " row " + std::to_string(t) + " layer " +
                   std::to_string(il);
        }
    } else if (L.kind == LayerKind::kRecurrent) {
      std::vector<float> c(L.conv_floats), s(L.ssm_floats);
      write_state(hash_of(ref, ref.size()), il, c.data(), c.size(), s.data(), s.size());
      if (std::memcmp(c.data(), mem.conv_state(il, seq), c.size() * 4) != 0 ||
          std::memcmp(s.data(), mem.ssm_state(il, seq), s.size() * 4) != 0)
        return where + "recurrent state of layer " + std::to_string(il);
    }
  }
  // Snapshots on the path: each holds the state of its prefix.
  for (auto [id, n] : mem.snapshots_of(seq)) {
    if (n > ref.size()) return where + "snapshot past the end";
    const float* st = mem.snapshot_state(id);
    if (!mem.has_recurrent()) continue;
    if (!st) return where + "snapshot without state";
    const uint64_t h = hash_of(ref, n);
    uint64_t off = 0;
    for (uint32_t il = 0; il < cfg.layers.size(); ++il) {
      const MemoryLayer& L = cfg.layers[il];
      if (L.kind != LayerKind::kRecurrent) continue;
      for (uint64_t j = 0; j < L.conv_floats; ++j)
        if (st[off + j] != state_value(h, il, j, 0))
          return where + "snapshot at " + std::to_string(n) + " conv state";
      off += L.conv_floats;
      for (uint64_t j = 0; j < L.ssm_floats; ++j)
        if (st[off + j] != state_value(h, il, j, 1))
          return where + "snapshot at " + std::to_string(n) + " ssm state";
      off += L.ssm_floats;
    }
  }
  return "";
}

}  // namespace chimera::fake
