// libFuzzer target for batch validation and planning. Input: byte 0 = ubatch size, byte 1 = mode
// (commit / abort mid-batch / injected allocation failure), then one entry per 3 bytes (token,
// sequence, position offset), mostly valid so that planning and the transaction are reached.
// Invalid batches must be refused with an error naming the entry and leave the memory
// bit-identical; valid ones must plan every entry exactly once, in order, and end (committed or
// aborted) in exactly the state the fake model's oracle predicts.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "../memory/fake_model.h"

namespace {

using namespace chimera;

constexpr int32_t kSeqs = 8, kVocab = 50;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_batch: %s\n", what);
  __builtin_trap();
}

struct World {
  std::unique_ptr<HybridMemory> mem;
  std::vector<std::vector<int32_t>> ref;
};

World make_world() {
  MemoryConfig c;
  c.layers = {{LayerKind::kRecurrent, 0, 4, 4}, {LayerKind::kAttention, 6, 0, 0}};
  c.n_vocab = kVocab;
  c.max_seqs = kSeqs;
  c.page_size = 3;
  c.kv_type = GgmlType::BF16;
  c.budget_bytes = 12 << 10;  // small: long batches run out of memory
  c.snapshot_budget_bytes = 2 << 10;
  c.snapshot_interval = 4;
  auto m = HybridMemory::create(c);
  if (!m.ok()) fail("create");
  World w{std::move(m).value(), std::vector<std::vector<int32_t>>(kSeqs)};
  for (int32_t s = 0; s < 4; ++s) {
    Batch b;
    for (int i = 0; i < 2 * s + 1; ++i) {
      b.add((i * 3 + s) % kVocab, i, s);
      w.ref[s].push_back((i * 3 + s) % kVocab);
    }
    auto plan = w.mem->begin_batch(b);
    std::string why;
    if (!plan.ok() || !fake::run_batch(*w.mem, b, **plan, nullptr, &why) || !w.mem->commit().ok())
      fail("populate");
  }
  return w;
}

void check_plan(const Batch& b, const BatchPlan& plan, uint32_t max_tokens,
                const std::vector<std::vector<int32_t>>& ref) {
  std::vector<int> seen(b.size(), 0);
  std::vector<int64_t> next_first(kSeqs, -1);
  for (const Ubatch& ub : plan.ubatches) {
    if (ub.n_tokens() == 0 || ub.n_tokens() > max_tokens) fail("ubatch size");
    std::vector<int> in_ub(kSeqs, 0);
    uint32_t offset = 0;
    for (const SeqRun& r : ub.runs) {
      if (in_ub[r.seq]++) fail("sequence twice in a ubatch");
      if (r.offset != offset || r.n_tokens == 0) fail("run offsets");
      const int64_t expect =
          next_first[r.seq] < 0 ? static_cast<int64_t>(ref[r.seq].size()) : next_first[r.seq];
      if (r.first != expect) fail("runs of a sequence not contiguous");
      next_first[r.seq] = r.first + r.n_tokens;
      for (uint32_t t = 0; t < r.n_tokens; ++t) {
        const int32_t e = ub.batch_index[offset + t];
        if (e < 0 || static_cast<size_t>(e) >= b.size() || seen[e]++) fail("entry coverage");
        if (b.seq[e] != r.seq || b.pos[e] != r.pos0 + static_cast<int32_t>(t)) fail("entry order");
      }
      offset += r.n_tokens;
    }
  }
  for (int s : seen)
    if (s != 1) fail("entry not planned");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  World w = make_world();
  HybridMemory& mem = *w.mem;
  const uint32_t ubatch = 1 + data[0] % 16;
  const uint8_t mode = data[1] % 4;  // 0, 1: commit; 2: abort; 3: injected failure
  mem.set_max_ubatch_tokens(ubatch);
  Batch b;
  std::vector<int64_t> next(kSeqs);
  for (int32_t s = 0; s < kSeqs; ++s) next[s] = mem.next_pos(s);
  for (size_t i = 2; i + 3 <= size && b.size() < 4096; i += 3) {
    const int32_t tok = data[i] < 240 ? data[i] % kVocab : kVocab - 245 + data[i];
    const int32_t seq = data[i + 1] % (kSeqs + 2) - 1;
    int32_t pos = 0;
    if (seq >= 0 && seq < kSeqs) pos = static_cast<int32_t>(next[seq]++);
    if (data[i + 2] >= 250) pos += data[i + 2] - 252;
    b.add(tok, pos, seq);
  }
  const uint64_t before = mem.fingerprint();
  const uint32_t snaps_before = mem.usage().n_snapshots;
  if (mode == 3) mem.inject_alloc_failure(data[1] / 4 % 5);
  auto plan = mem.begin_batch(b);
  mem.inject_alloc_failure(-1);
  if (!plan.ok()) {
    const Status& st = plan.status();
    if (st.code() != ErrorCode::kInvalidArgument && st.code() != ErrorCode::kOutOfMemory)
      fail("unexpected error code");
    if (st.message().find("batch") == std::string::npos) fail("error does not name the batch");
    // Validation fails before anything is touched. A failed reservation may have evicted
    // automatic snapshots to make room (fewer snapshots, so another fingerprint); otherwise the
    // memory is bit-identical. Either way every sequence still holds its tokens.
    const uint32_t snaps_after = mem.usage().n_snapshots;
    const bool evicted = st.code() == ErrorCode::kOutOfMemory && snaps_after < snaps_before;
    if (snaps_after > snaps_before) fail("refused batch added snapshots");
    if (!evicted && mem.fingerprint() != before) fail("refused batch changed the memory");
    for (int32_t s = 0; s < kSeqs; ++s)
      if (!fake::check_seq(mem, s, w.ref[s], 0).empty()) fail("refused batch changed a sequence");
    return 0;
  }
  check_plan(b, **plan, ubatch, w.ref);
  std::vector<std::vector<int32_t>> expect = w.ref;
  for (size_t i = 0; i < b.size(); ++i) expect[b.seq[i]].push_back(b.tokens[i]);
  std::string why;
  const int abort_at = mode == 2 ? static_cast<int>(data[1] / 4 % (*plan)->ubatches.size()) : -1;
  if (!fake::run_batch(mem, b, **plan, &expect, &why, abort_at)) fail(why.c_str());
  if (mode == 2) {
    mem.abort();
    expect = w.ref;
  } else if (!mem.commit().ok()) {
    fail("commit");
  }
  for (int32_t s = 0; s < kSeqs; ++s)
    if (!fake::check_seq(mem, s, expect[s], 0).empty()) fail("memory differs from the oracle");
  return 0;
}
