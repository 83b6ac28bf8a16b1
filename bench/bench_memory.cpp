// Memory benchmarks with the fake model (tests/memory/fake_model.h):
//   DecodeStep64/bookkeeping: begin_batch + commit of one token for each of 64 sequences (no
//     model writes): the memory's overhead per decode step;
//   DecodeStep64/fake_model: the same plus the fake model writing every K/V row and state;
//   SeqCp/<tokens>: seq_cp of a sequence of that length (should not grow with it);
//   SnapshotDecode/<MiB>: a decode step of one sequence with a state of that size, with and
//     without a snapshot taken before it (the snapshot keeps the old state alive, so the step
//     writes a freshly allocated buffer: that is the snapshot's whole cost), and a plain memcpy of
//     one state for reference.
#include <benchmark/benchmark.h>

#include <cstring>
#include <vector>

#include "../tests/memory/fake_model.h"

namespace {

using namespace chimera;

MemoryConfig decode_config() {
  MemoryConfig c;
  for (int i = 0; i < 12; ++i) {
    if (i % 3 == 2)
      c.layers.push_back({LayerKind::kAttention, 256, 0, 0});
    else
      c.layers.push_back({LayerKind::kRecurrent, 0, 3 * 1024, 16 * 1024});
  }
  c.n_vocab = 32000;
  c.max_seqs = 64;
  c.page_size = 32;
  c.kv_type = GgmlType::F16;
  c.budget_bytes = 2ull << 30;
  c.snapshot_budget_bytes = 256ull << 20;
  c.snapshot_interval = 256;
  return c;
}

void fill(HybridMemory& m, int32_t seq, uint32_t n, bool run_model) {
  Batch b;
  for (uint32_t i = 0; i < n; ++i)
    b.add(static_cast<int32_t>(i % 1000), static_cast<int32_t>(m.next_pos(seq) + i), seq);
  auto plan = m.begin_batch(b);
  if (!plan.ok()) std::abort();
  std::string why;
  if (run_model) fake::run_batch(m, b, **plan, nullptr, &why);
  if (!m.commit().ok()) std::abort();
}

void DecodeStep64(benchmark::State& state) {
  const bool run_model = state.range(0) != 0;
  auto m = std::move(HybridMemory::create(decode_config())).value();
  for (int32_t s = 0; s < 64; ++s) fill(*m, s, 500, run_model);
  Batch b;
  for (int32_t s = 0; s < 64; ++s) b.add(1, 0, s);
  std::string why;
  for (auto _ : state) {
    for (int32_t s = 0; s < 64; ++s) {
      b.pos[s] = static_cast<int32_t>(m->next_pos(s));
      b.tokens[s] = (b.pos[s] * 7) % 32000;
    }
    auto plan = m->begin_batch(b);
    if (!plan.ok()) {
      state.SkipWithError(plan.status().ToString().c_str());
      break;
    }
    if (run_model) fake::run_batch(*m, b, **plan, nullptr, &why);
    if (!m->commit().ok()) std::abort();
    if (m->n_tokens(0) >= 1500) {  // keep sequence lengths in a steady range
      state.PauseTiming();
      m->clear();
      for (int32_t s = 0; s < 64; ++s) fill(*m, s, 500, run_model);
      state.ResumeTiming();
    }
  }
  state.counters["steps/s"] = benchmark::Counter(state.iterations(), benchmark::Counter::kIsRate);
  state.counters["s/token"] = benchmark::Counter(
      64, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(DecodeStep64)->ArgName("fake_model")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

void SeqCp(benchmark::State& state) {
  MemoryConfig c;
  c.layers = {{LayerKind::kAttention, 64, 0, 0}, {LayerKind::kRecurrent, 0, 1024, 4096}};
  c.n_vocab = 32000;
  c.max_seqs = 4;
  c.page_size = 32;
  c.budget_bytes = 1ull << 30;
  c.snapshot_interval = 4096;
  auto m = std::move(HybridMemory::create(c)).value();
  const uint32_t n = static_cast<uint32_t>(state.range(0));
  for (uint32_t done = 0; done < n; done += 4096) fill(*m, 0, std::min(4096u, n - done), false);
  int32_t dst = 1;
  for (auto _ : state) {
    if (!m->seq_cp(0, dst).ok()) std::abort();
    dst = dst == 1 ? 2 : 1;
  }
  state.counters["snapshots"] = static_cast<double>(m->snapshots_of(0).size());
}
BENCHMARK(SeqCp)->Arg(1024)->Arg(16384)->Arg(131072)->Unit(benchmark::kNanosecond);

MemoryConfig big_state_config(uint64_t mib) {
  MemoryConfig c;
  c.layers = {{LayerKind::kRecurrent, 0, 1024, mib * 262144 - 1024}};
  c.n_vocab = 32000;
  c.max_seqs = 2;
  c.budget_bytes = 64 * mib << 20;
  c.snapshot_budget_bytes = 32 * mib << 20;
  c.snapshot_interval = 0;
  c.snapshot_prompt_end = false;
  c.snapshot_prompt_start = false;
  return c;
}

void SnapshotDecode(benchmark::State& state) {
  const uint64_t mib = static_cast<uint64_t>(state.range(0));
  const bool snap = state.range(1) != 0;
  auto m = std::move(HybridMemory::create(big_state_config(mib))).value();
  fill(*m, 0, 1, true);
  for (auto _ : state) {
    uint64_t id = 0;
    if (snap) id = m->snapshot(0).value();
    fill(*m, 0, 1, true);
    if (snap) {
      state.PauseTiming();
      (void)m->release(id);
      (void)m->seq_rm(0, 0, -1);  // drops the snapshot from the path too
      fill(*m, 0, 1, true);
      state.ResumeTiming();
    }
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(mib << 20));
}
BENCHMARK(SnapshotDecode)
    ->ArgNames({"MiB", "snapshot"})
    ->Args({64, 0})
    ->Args({64, 1})
    ->Unit(benchmark::kMillisecond);

void StateMemcpy(benchmark::State& state) {
  const size_t bytes = static_cast<size_t>(state.range(0)) << 20;
  std::vector<uint8_t> a(bytes, 1), b(bytes, 2);
  for (auto _ : state) {
    std::memcpy(b.data(), a.data(), bytes);
    benchmark::DoNotOptimize(b.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(bytes));
}
BENCHMARK(StateMemcpy)->ArgName("MiB")->Arg(64)->Unit(benchmark::kMillisecond);

}  // namespace
