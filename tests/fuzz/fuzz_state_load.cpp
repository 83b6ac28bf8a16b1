// libFuzzer target for HybridMemory::load / load_seq. Input byte 0 holds flags: bit 0 repairs the
// length and checksums of the rest (so mutations reach the parser behind them), bit 1 loads one
// sequence (into the sequence named by bits 2-4) instead of the whole memory. A failed load must
// leave the memory bit-identical (fingerprint); a successful one must save and reload to the
// same state.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "../memory/fake_model.h"

namespace {

using namespace chimera;

constexpr size_t kHeaderBytes = 72;  // state_io.cpp: the fixed header

MemoryConfig fuzz_config() {
  MemoryConfig c;
  c.layers = {{LayerKind::kAttention, 4, 0, 0}, {LayerKind::kRecurrent, 0, 5, 3}};
  c.n_vocab = 64;
  c.max_seqs = 6;
  c.page_size = 3;
  c.kv_type = GgmlType::F16;
  c.budget_bytes = 64 << 10;
  c.snapshot_budget_bytes = 16 << 10;
  c.snapshot_interval = 4;
  return c;
}

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_state_load: %s\n", what);
  __builtin_trap();
}

std::unique_ptr<HybridMemory> populated() {
  auto m = HybridMemory::create(fuzz_config());
  if (!m.ok()) fail("create");
  for (int32_t s = 0; s < 3; ++s) {
    Batch b;
    for (int i = 0; i < 5 + 3 * s; ++i) b.add((7 * i + s) % 64, i, s);
    auto plan = (*m)->begin_batch(b);
    std::string why;
    if (!plan.ok() || !fake::run_batch(**m, b, **plan, nullptr, &why)) fail("populate");
    if (!(*m)->commit().ok()) fail("commit");
  }
  return std::move(m).value();
}

void repair(std::vector<uint8_t>& v) {
  if (v.size() < kHeaderBytes) return;
  const uint64_t payload = v.size() - kHeaderBytes;
  std::memcpy(v.data() + 48, &payload, 8);
  const uint64_t psum = checksum64(v.data() + kHeaderBytes, payload);
  std::memcpy(v.data() + 56, &psum, 8);
  const uint64_t hsum = checksum64(v.data(), 64);
  std::memcpy(v.data() + 64, &hsum, 8);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t flags = data[0];
  std::vector<uint8_t> v(data + 1, data + size);
  if (flags & 1) repair(v);
  auto mem = populated();
  const uint64_t before = mem->fingerprint();
  const bool one = flags & 2;
  const int32_t dst = (flags >> 2) & 7;  // 6 and 7 are out of range: must be refused
  Status st = one ? mem->load_seq(v.data(), v.size(), dst) : mem->load(v.data(), v.size());
  if (!st.ok()) {
    if (st.message().empty()) fail("error without a message");
    if (mem->fingerprint() != before) fail("failed load changed the memory");
    return 0;
  }
  // Loaded: the state must survive a save/load round trip unchanged.
  auto again = mem->save();
  if (!again.ok()) fail("save after load");
  auto fresh = HybridMemory::create(fuzz_config());
  if (!fresh.ok() || !(*fresh)->load(again->data(), again->size()).ok()) fail("reload");
  auto twice = (*fresh)->save();
  if (!twice.ok() || *twice != *again) fail("round trip differs");
  for (int32_t s = 0; s < 6; ++s)
    for (int32_t t : mem->tokens(s))
      if (t < 0 || t >= 64) fail("token out of range after load");
  return 0;
}
