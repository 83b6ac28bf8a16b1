#include "memory/memory_config.h"

#include <cstring>

namespace chimera {

uint64_t checksum64(const void* data, size_t n, uint64_t h) {
  const auto* p = static_cast<const uint8_t*>(data);
  auto mix = [](uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
  };
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = mix(h ^ w) * 0x9e3779b97f4a7c15ull;
  }
  uint64_t tail = 0;
  if (n > i) std::memcpy(&tail, p + i, n - i);  // p may be null when n == 0
  return mix(h ^ tail ^ (static_cast<uint64_t>(n) << 56));
}

Status MemoryConfig::validate() const {
  if (layers.empty()) return Error(ErrorCode::kInvalidArgument, "memory config: no layers");
  if (n_vocab == 0) return Error(ErrorCode::kInvalidArgument, "memory config: n_vocab is 0");
  if (max_seqs == 0 || max_seqs > 65536)
    return Error(ErrorCode::kInvalidArgument, "memory config: max_seqs ", max_seqs,
                 " not in [1, 65536]");
  if (page_size == 0 || page_size > 4096)
    return Error(ErrorCode::kInvalidArgument, "memory config: page_size ", page_size,
                 " not in [1, 4096]");
  if (kv_type != GgmlType::F32 && kv_type != GgmlType::F16 && kv_type != GgmlType::BF16)
    return Error(ErrorCode::kUnsupported, "memory config: KV element type ", type_name(kv_type),
                 " (supported: F32, F16, BF16)");
  if (max_ubatch_tokens == 0)
    return Error(ErrorCode::kInvalidArgument, "memory config: max_ubatch_tokens is 0");
  for (size_t i = 0; i < layers.size(); ++i) {
    const MemoryLayer& l = layers[i];
    switch (l.kind) {
      case LayerKind::kNone:
        break;
      case LayerKind::kAttention:
        if (l.kv_dim == 0 || l.kv_dim > (1u << 20))
          return Error(ErrorCode::kInvalidArgument, "memory config: layer ", i,
                       " (attention) kv_dim ", l.kv_dim, " not in [1, 2^20]");
        if (l.kv_heads == 0 || l.kv_dim % l.kv_heads != 0)
          return Error(ErrorCode::kInvalidArgument, "memory config: layer ", i,
                       " (attention) kv_heads ", l.kv_heads, " does not divide kv_dim ", l.kv_dim);
        if (l.window > (1u << 30))
          return Error(ErrorCode::kInvalidArgument, "memory config: layer ", i, " window ",
                       l.window, " > 2^30");
        break;
      case LayerKind::kRecurrent:
        if (l.window != 0)
          return Error(ErrorCode::kInvalidArgument, "memory config: layer ", i,
                       " (recurrent) has a window");
        if (l.conv_floats + l.ssm_floats == 0 || l.conv_floats > (1ull << 32) ||
            l.ssm_floats > (1ull << 32))
          return Error(ErrorCode::kInvalidArgument, "memory config: layer ", i,
                       " (recurrent) state sizes conv ", l.conv_floats, " ssm ", l.ssm_floats,
                       " invalid");
        break;
      default:
        return Error(ErrorCode::kInvalidArgument, "memory config: layer ", i, " has kind ",
                     static_cast<int>(l.kind));
    }
  }
  return Status::Ok();
}

uint64_t MemoryConfig::layout_fingerprint() const {
  uint64_t h = checksum64("chimera-memory-layout", 21);
  auto add = [&h](uint64_t v) { h = checksum64(&v, sizeof(v), h); };
  add(layers.size());
  for (const MemoryLayer& l : layers) {
    add(static_cast<uint64_t>(l.kind));
    add(l.kv_dim);
    add(l.conv_floats);
    add(l.ssm_floats);
    if (l.window != 0) add(uint64_t{l.window} << 32);  // absent for global layers: old identities
  }
  add(n_vocab);
  add(static_cast<uint64_t>(kv_type));
  return h;
}

std::string MemoryConfig::describe() const {
  size_t n_attn = 0, n_rec = 0, n_win = 0;
  for (const MemoryLayer& l : layers) {
    n_attn += l.kind == LayerKind::kAttention;
    n_win += l.kind == LayerKind::kAttention && l.window != 0;
    n_rec += l.kind == LayerKind::kRecurrent;
  }
  return StrCat(layers.size(), " layers: ", n_attn, " attention (", n_win, " windowed), ", n_rec,
                " recurrent; n_vocab ", n_vocab, ", KV ", type_name(kv_type), ", page ", page_size,
                " tokens");
}

}  // namespace chimera
