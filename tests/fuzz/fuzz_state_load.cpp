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
#include "../memory/state_load_world.h"

namespace {

using namespace chimera;

using fake::repair_state_checksums;
using fake::state_load_config;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_state_load: %s\n", what);
  __builtin_trap();
}

std::unique_ptr<HybridMemory> populated() {
  auto m = HybridMemory::create(state_load_config());
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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t flags = data[0];
  std::vector<uint8_t> v(data + 1, data + size);
  if (flags & 1) repair_state_checksums(v);
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
  auto fresh = HybridMemory::create(state_load_config());
  if (!fresh.ok() || !(*fresh)->load(again->data(), again->size()).ok()) fail("reload");
  auto twice = (*fresh)->save();
  if (!twice.ok() || *twice != *again) fail("round trip differs");
  for (int32_t s = 0; s < 6; ++s) {
    for (int32_t t : mem->tokens(s))
      if (t < 0 || t >= 64) fail("token out of range after load");
    // Positions are int32 in a batch: a loaded sequence must be continuable from where it ends.
    if (mem->next_pos(s) < 0 || mem->next_pos(s) > INT32_MAX) fail("positions out of range");
  }
  return 0;
}
