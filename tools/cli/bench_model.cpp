// `chimera bench -m MODEL [-p 512[,..]] [-n 128[,..]] [-t 2[,..]] [-d 0[,..]] [--parallel B[,..]]
//  [-r R] [--json]`: what llama.cpp's llama-bench and llama-batched-bench measure, on chimera.
//   - ppP at depth d: a P-token prompt in one batch, appended to a sequence already holding d
//     tokens (llama-bench -p P -d d); tgN at depth d: N tokens decoded one at a time after d
//     tokens (llama-bench -n N -d d). The d tokens are processed once per configuration, then
//     every repetition starts from an O(1) copy of that sequence (seq_cp), untimed.
//   - parallel B: B sequences, each with its own --npp-token prompt (one batch, timed as pp),
//     then --ntg steps decoding one token of every sequence per step; reports the aggregate
//     decode tokens/s, B * ntg / time (llama-batched-bench -npp 128 -ntg 64 -npl B, its S_TG).
//   - decode bandwidth: bytes each decode step reads, counted from the model (weights read once
//     per step, plus per sequence the visible K/V rows of every attention layer and the read and
//     write of its recurrent state), times steps/s, and its share of a streaming read
//     (a reference point, not a ceiling: GEMV can beat it) measured in the same run with the same
//     thread count.
//   - with --spec/--draft: speculative against plain greedy generation of a text prompt (the
//     first non-zero -n tokens), with the acceptance per draft position and whether the outputs
//     are identical.
// Random token ids (but for the speculative test): speed does not depend on them.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "bench_kernels.h"
#include "cmd_bench.h"
#include "model_options.h"

namespace chimera::cli {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The block index of a "blk.N.*" tensor name, or -1 for the tensors outside the blocks.
int64_t block_of(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return -1;
  int64_t n = 0;
  size_t i = 4;
  for (; i < name.size() && name[i] >= '0' && name[i] <= '9' && n < (1 << 20); ++i)
    n = n * 10 + (name[i] - '0');
  return i > 4 && i < name.size() && name[i] == '.' ? n : -1;
}

// Bytes of weights one decode step of one sequence reads, from the file's tensors: every tensor
// of the model's layers and head once (a tied LM head is the embedding table: counted once);
// of an untied embedding table only the token's row; of an MoE expert stack (3-D) the
// n_expert_used experts a token uses; nothing of the blocks past the model's layers (the
// multi-token-prediction blocks llama.cpp's converter appends, which decode never reads).
uint64_t weight_bytes_per_step(const Model& m) {
  uint64_t total = 0;
  for (const GgufTensorInfo& t : m.file->tensors()) {
    if (block_of(t.name) >= static_cast<int64_t>(m.hp.n_layer)) continue;
    uint64_t b = t.nbytes;
    if (&t == m.token_embd && m.output != m.token_embd) b = t.row_bytes();
    if (m.hp.n_expert > 0 && t.n_dims == 3) b = b / m.hp.n_expert * m.hp.n_expert_used;
    total += b;
  }
  return total;
}

// Per-sequence memory traffic of one decoded token: K and V rows per visible key (all attention
// layers) and the recurrent state read and written once (all recurrent layers).
struct SeqTraffic {
  uint64_t kv_bytes_per_key = 0;
  uint64_t state_bytes = 0;
};
SeqTraffic seq_traffic(const MemoryConfig& cfg) {
  const uint64_t elem = cfg.kv_type == GgmlType::F32 ? 4 : 2;
  SeqTraffic s;
  for (const MemoryLayer& l : cfg.layers) {
    if (l.kind == LayerKind::kAttention) s.kv_bytes_per_key += 2 * l.kv_dim * elem;
    if (l.kind == LayerKind::kRecurrent) s.state_bytes += 2 * 4 * (l.conv_floats + l.ssm_floats);
  }
  return s;
}

struct Stat {
  double mean = 0, sd = 0;
};
Stat stat(const std::vector<double>& v) {
  Stat s;
  if (v.empty()) return s;
  for (double x : v) s.mean += x;
  s.mean /= v.size();
  for (double x : v) s.sd += (x - s.mean) * (x - s.mean);
  s.sd = v.size() > 1 ? std::sqrt(s.sd / (v.size() - 1)) : 0;
  return s;
}

// The q-quantile of v (0.5: the median), interpolated between neighbours.
double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double x = q * double(v.size() - 1);
  const size_t i = static_cast<size_t>(x);
  return i + 1 < v.size() ? v[i] + (x - i) * (v[i + 1] - v[i]) : v[i];
}

struct SpecBenchOptions {
  std::string prompt = "And God said";
  float temperature = 0;       // 0: greedy; otherwise seeded sampling (seed 1 in every repetition)
  bool verify_states = false;  // store every verified token's state instead of recomputing
  bool costs = false;          // also measure the step costs apart (spec_costs)
};

// Where a speculative step's time goes, each part timed apart, interleaved per repetition: the
// target's plain step, its verification of n = 2..K+1 tokens (all kept), and one forward of the
// draft model. Wall time, and process CPU time (which leaves out time the process did not run on
// a loaded machine; with -t 1 it is the step's own time). Medians, in seconds.
struct SpecStepCosts {
  std::vector<double> verify_wall, verify_cpu;  // [n], n = 1: the plain step
  double draft_wall = 0, draft_cpu = 0;         // one draft model forward (0: no draft model)
  // One drafter call for K tokens in the steady state (the previous K all accepted): its
  // forwards plus everything around them (snapshots, rollback marks, p-min, copies).
  double call_wall = 0, call_cpu = 0;
  // The same after the previous call's second draft token was rejected (a snapshot restored).
  double rcall_wall = 0, rcall_cpu = 0;
  // Verification of K+1 tokens of which half are kept (the kept prefix recomputed).
  double half_wall = 0, half_cpu = 0;
};

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

Result<SpecStepCosts> measure_spec_step_costs(Context& ctx, Drafter* drafter,
                                              const std::vector<TokenId>& prompt, int32_t k_max,
                                              int reps) {
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
  };
  std::vector<std::vector<double>> vw(k_max + 2), vc(k_max + 2);
  std::vector<double> dw, dc, cw, cc, hw, hc, rw, rc;
  auto* model_drafter = dynamic_cast<ModelDrafter*>(drafter);
  auto run_prompt = [&](Context& c) {
    c.memory().clear();
    Batch b;
    for (size_t i = 0; i < prompt.size(); ++i)
      b.add(prompt[i], static_cast<int32_t>(i), 0, i + 1 == prompt.size());
    return c.decode(b);
  };
  auto tok = [&](size_t i) { return prompt[i % prompt.size()]; };
  for (int r = 0; r <= reps; ++r) {
    CHIMERA_RETURN_IF_ERROR(run_prompt(ctx));
    // Plain steps first and last too: the first step after a prompt may pay for caches.
    std::vector<int32_t> order = {1};
    for (int32_t n = 2; n <= k_max + 1; ++n) order.push_back(n);
    order.push_back(1);
    order.push_back(1);
    for (int32_t n : order) {
      Batch b;
      const int32_t p0 = static_cast<int32_t>(ctx.memory().next_pos(0));
      for (int32_t i = 0; i < n; ++i) b.add(tok(p0 + i), p0 + i, 0, true);
      const double w0 = now_seconds(), c0 = process_cpu_seconds();
      if (n == 1) {
        CHIMERA_RETURN_IF_ERROR(ctx.decode(b));
      } else {
        CHIMERA_RETURN_IF_ERROR(ctx.decode_open(b, {0}));
        CHIMERA_RETURN_IF_ERROR(ctx.accept({{0, static_cast<uint32_t>(n)}}));
      }
      if (r > 0) vw[n].push_back(now_seconds() - w0), vc[n].push_back(process_cpu_seconds() - c0);
    }
    {
      Batch b;
      const int32_t p0 = static_cast<int32_t>(ctx.memory().next_pos(0));
      for (int32_t i = 0; i <= k_max; ++i) b.add(tok(p0 + i), p0 + i, 0, true);
      const double w0 = now_seconds(), c0 = process_cpu_seconds();
      CHIMERA_RETURN_IF_ERROR(ctx.decode_open(b, {0}));
      CHIMERA_RETURN_IF_ERROR(ctx.accept({{0, static_cast<uint32_t>((k_max + 2) / 2)}}));
      if (r > 0) hw.push_back(now_seconds() - w0), hc.push_back(process_cpu_seconds() - c0);
    }
    if (drafter && k_max > 0) {
      drafter->forget(0);
      std::vector<TokenId> history = prompt;
      for (int i = 0; i < 8; ++i) {
        const double w0 = now_seconds(), c0 = process_cpu_seconds();
        CHIMERA_ASSIGN_OR_RETURN(std::vector<TokenId> d, drafter->draft(0, history, k_max));
        const double w = now_seconds() - w0, c = process_cpu_seconds() - c0;
        // Odd calls: all of the previous drafts were accepted; even ones: the second was not.
        if (r > 0 && i > 1) (i % 2 ? cw : rw).push_back(w), (i % 2 ? cc : rc).push_back(c);
        if (i % 2 == 0 || d.size() < 2) {
          history.insert(history.end(), d.begin(), d.end());
        } else {
          history.push_back(d[0]);
        }
        // The target's own next token (after a rejection: one that differs from the draft).
        TokenId next = tok(history.size());
        if (i % 2 == 1 && d.size() >= 2 && next == d[1]) next = tok(history.size() + 1);
        history.push_back(next);
      }
      drafter->forget(0);
    }
    if (model_drafter) {
      Context& d = model_drafter->context();
      CHIMERA_RETURN_IF_ERROR(run_prompt(d));
      for (int i = 0; i < 3; ++i) {
        Batch b;
        const int32_t p = static_cast<int32_t>(d.memory().next_pos(0));
        b.add(tok(p), p, 0, true);
        const double w0 = now_seconds(), c0 = process_cpu_seconds();
        CHIMERA_RETURN_IF_ERROR(d.decode(b));
        if (r > 0) dw.push_back(now_seconds() - w0), dc.push_back(process_cpu_seconds() - c0);
      }
      d.memory().clear();
    }
  }
  ctx.memory().clear();
  if (drafter) drafter->forget(0);
  SpecStepCosts out;
  out.verify_wall.assign(k_max + 2, 0);
  out.verify_cpu.assign(k_max + 2, 0);
  for (int32_t n = 1; n <= k_max + 1; ++n)
    out.verify_wall[n] = median(vw[n]), out.verify_cpu[n] = median(vc[n]);
  out.draft_wall = median(dw);
  out.draft_cpu = median(dc);
  out.call_wall = median(cw);
  out.call_cpu = median(cc);
  out.rcall_wall = median(rw);
  out.rcall_cpu = median(rc);
  out.half_wall = median(hw);
  out.half_cpu = median(hc);
  return out;
}

// Speculative decoding against plain decoding, interleaved per repetition (r == 0 warms up):
// greedy generation of n_gen tokens from a text prompt, timed from the first generated token.
struct SpecBench {
  std::vector<double> plain, spec;  // tokens/s
  // Per repetition: spec / plain tokens/s of the pair run back to back. Their median is the
  // speed-up reported: on a shared host a burst of another process's work slows the one or two
  // runs it overlaps, which moves a ratio of means over a few runs by several percent, while the
  // pairs it spares keep the median; slow drifts (clock, other load) cancel within a pair.
  std::vector<double> ratio;
  SpecStats stats;
  SpecCosts costs;     // the controller's measurements in the last repetition
  SpecStepCosts step;  // --spec-costs
  bool identical = true;
  std::string drafter;
  LookupStats lookup;  // a draft model's lookup staging, over the timed repetitions
};

Result<SpecBench> bench_speculative(LoadedModel& lm, const ModelOptions& mo, const SpecOptions& so,
                                    const SpecBenchOptions& bo, int n_gen, int reps) {
  const std::string& text = bo.prompt;
  if (!lm.tokenizer)
    return Error(ErrorCode::kInvalidArgument,
                 "speculative benchmark: the model has no vocabulary to encode the prompt with");
  CHIMERA_ASSIGN_OR_RETURN(LoadedDrafter dr, load_drafter(so, mo, lm));
  CHIMERA_ASSIGN_OR_RETURN(std::vector<TokenId> prompt, lm.tokenizer->encode(text));
  SpecBench out;
  out.drafter = dr.describe();
  LookupStats lookup0;  // after the untimed repetition
  GenerateParams g;
  g.sampling.temperature = bo.temperature;
  g.sampling.seed = 1;
  g.n_predict = n_gen;
  g.ignore_eos = true;
  g.n_ctx = mo.n_ctx;
  Context& ctx = *lm.ctx;
  ctx.set_verify_by_recompute(!bo.verify_states);
  GenerateParams gs = g;
  gs.drafter = dr.drafter.get();
  gs.spec = so.params();
  auto run_plain = [&]() -> Result<GenerateResult> {
    ctx.memory().clear();
    Sampler s(g.sampling);
    return generate(ctx, *lm.tokenizer, 0, prompt, g, s);
  };
  auto run_spec = [&]() -> Result<GenerateResult> {
    ctx.memory().clear();
    dr.drafter->forget(0);
    Sampler s(g.sampling);
    return generate(ctx, *lm.tokenizer, 0, prompt, gs, s);
  };
  // Repetition 0 runs both paths untimed (first-use costs: pages, scratch buffers, threads);
  // the timed ones alternate which runs first, so neither gains from running second (caches,
  // clock ramp-up) in every pair.
  for (int r = 0; r <= reps; ++r) {
    GenerateResult plain, spec;
    if (r % 2 == 0) {
      CHIMERA_ASSIGN_OR_RETURN(plain, run_plain());
      CHIMERA_ASSIGN_OR_RETURN(spec, run_spec());
    } else {
      CHIMERA_ASSIGN_OR_RETURN(spec, run_spec());
      CHIMERA_ASSIGN_OR_RETURN(plain, run_plain());
    }
    out.identical = out.identical && plain.tokens == spec.tokens;
    if (r == 0) {
      if (auto* md = dynamic_cast<const ModelDrafter*>(dr.drafter.get()))
        lookup0 = md->lookup_stats();
      continue;
    }
    out.plain.push_back(plain.tokens.size() / plain.gen_seconds);
    out.spec.push_back(spec.tokens.size() / spec.gen_seconds);
    out.ratio.push_back(out.spec.back() / out.plain.back());
    out.costs = spec.spec_costs;
    const SpecStats& st = spec.spec;
    out.stats.steps += st.steps;
    out.stats.drafted += st.drafted;
    out.stats.accepted += st.accepted;
    if (out.stats.drafted_at.size() < st.drafted_at.size()) {
      out.stats.drafted_at.resize(st.drafted_at.size(), 0);
      out.stats.accepted_at.resize(st.drafted_at.size(), 0);
    }
    for (size_t i = 0; i < st.drafted_at.size(); ++i) {
      out.stats.drafted_at[i] += st.drafted_at[i];
      out.stats.accepted_at[i] += st.accepted_at[i];
    }
  }
  if (auto* md = dynamic_cast<const ModelDrafter*>(dr.drafter.get())) {
    out.lookup = md->lookup_stats().since(lookup0);
  }
  if (bo.costs) {
    CHIMERA_ASSIGN_OR_RETURN(out.step, measure_spec_step_costs(ctx, dr.drafter.get(), prompt,
                                                               so.draft_max, std::max(reps, 3)));
  }
  return out;
}

// "512,1024" -> {512, 1024}; every value must lie in [lo, hi].
Result<std::vector<int>> parse_list(const std::string& flag, const std::string& s, int lo, int hi) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    int v = 0;
    try {
      v = std::stoi(item, &used);
    } catch (...) {
      used = 0;
    }
    if (used == 0 || used != item.size() || v < lo || v > hi)
      return Error(ErrorCode::kInvalidArgument, flag, " '", s, "': '", item,
                   "' is not an integer in [", lo, ", ", hi, "]");
    out.push_back(v);
  }
  if (out.empty()) return Error(ErrorCode::kInvalidArgument, flag, " is empty");
  return out;
}

struct TestResult {
  std::string name;  // "pp512", "tg128", "pp128+tg64 x4" ...
  std::string kind;  // "pp", "tg", "parallel"
  int threads = 0, depth = 0, n_prompt = 0, n_gen = 0, parallel = 1;
  Stat tps;                   // tokens/s (aggregate for parallel)
  Stat pp_tps;                // parallel only: prompt tokens/s of the B prompts
  double bytes_per_step = 0;  // decode: bytes one step reads (tg, parallel)
  double gbps = 0, pct_of_streaming_read = 0;
  double streaming_read_gbps = 0;  // the reference this test's share is taken against
};

TestResult make_test(std::string name, std::string kind, int threads, int depth, int n_prompt,
                     int n_gen, int parallel) {
  TestResult t;
  t.name = std::move(name);
  t.kind = std::move(kind);
  t.threads = threads;
  t.depth = depth;
  t.n_prompt = n_prompt;
  t.n_gen = n_gen;
  t.parallel = parallel;
  return t;
}

class Runner {
 public:
  Runner(Context& ctx, int reps) : ctx_(ctx), reps_(reps) {}

  // Fills sequence 0 with `depth` random tokens (untimed) unless it already holds them.
  Status fill_depth(int depth) {
    HybridMemory& mem = ctx_.memory();
    if (static_cast<int>(mem.n_tokens(0)) == depth && depth_ready_) return Status::Ok();
    mem.clear();
    depth_ready_ = true;
    for (int i = 0; i < depth; i += 512) {
      Batch b;
      for (int j = i; j < std::min(depth, i + 512); ++j) b.add(token(), j, 0, false);
      CHIMERA_RETURN_IF_ERROR(ctx_.decode(b));
    }
    return Status::Ok();
  }

  // Prompt of n tokens on a copy (sequence 1) of the depth-d sequence 0, per repetition.
  Result<Stat> pp(int depth, int n) {
    CHIMERA_RETURN_IF_ERROR(fill_depth(depth));
    std::vector<double> v;
    for (int r = 0; r <= reps_; ++r) {  // r == 0 warms up
      CHIMERA_RETURN_IF_ERROR(ctx_.memory().seq_cp(0, 1));
      Batch b;
      for (int i = 0; i < n; ++i) b.add(token(), depth + i, 1, i + 1 == n);
      const auto t0 = Clock::now();
      CHIMERA_RETURN_IF_ERROR(ctx_.decode(b));
      if (r > 0) v.push_back(n / since(t0));
    }
    return stat(v);
  }

  Result<Stat> tg(int depth, int n) {
    CHIMERA_RETURN_IF_ERROR(fill_depth(depth));
    std::vector<double> v;
    for (int r = 0; r <= reps_; ++r) {
      CHIMERA_RETURN_IF_ERROR(ctx_.memory().seq_cp(0, 1));
      const auto t0 = Clock::now();
      for (int i = 0; i < n; ++i) {
        Batch b;
        b.add(token(), depth + i, 1, true);
        CHIMERA_RETURN_IF_ERROR(ctx_.decode(b));
      }
      if (r > 0) v.push_back(n / since(t0));
    }
    return stat(v);
  }

  // B prompts of npp tokens in one batch, then ntg steps of B tokens. {pp t/s, tg t/s}.
  Result<std::pair<Stat, Stat>> parallel(int n_seq, int npp, int ntg) {
    std::vector<double> pv, tv;
    for (int r = 0; r <= reps_; ++r) {
      ctx_.memory().clear();
      depth_ready_ = false;
      Batch b;
      for (int s = 0; s < n_seq; ++s)
        for (int i = 0; i < npp; ++i) b.add(token(), i, s, i + 1 == npp);
      const auto t0 = Clock::now();
      CHIMERA_RETURN_IF_ERROR(ctx_.decode(b));
      if (r > 0) pv.push_back(double(n_seq) * npp / since(t0));
      const auto t1 = Clock::now();
      for (int i = 0; i < ntg; ++i) {
        Batch d;
        for (int s = 0; s < n_seq; ++s) d.add(token(), npp + i, s, true);
        CHIMERA_RETURN_IF_ERROR(ctx_.decode(d));
      }
      if (r > 0) tv.push_back(double(n_seq) * ntg / since(t1));
    }
    return std::make_pair(stat(pv), stat(tv));
  }

 private:
  int32_t token() { return static_cast<int32_t>(rng_() % ctx_.n_vocab()); }
  Context& ctx_;
  int reps_;
  std::mt19937 rng_{1};
  bool depth_ready_ = false;
};

int bench_model_main(int argc, char** argv) {
  CLI::App app{
      "Prompt processing (pp), decode (tg) and batched decode speed of a model, like llama-bench "
      "and llama-batched-bench.",
      "chimera bench"};
  ModelOptions mo;
  std::string p_list = "512", n_list = "128", t_list, d_list = "0", par_list;
  int reps = 3, npp = 128, ntg = 64;
  bool json = false;
  mo.snapshots = SnapshotPolicy::one_shot();  // as `chimera run`; llama-bench keeps none
  mo.add_to(app);
  app.remove_option(app.get_option("-t"));
  app.add_option("-p,--n-prompt", p_list, "prompt tokens for pp, comma-separated (0 = skip)");
  app.add_option("-n,--n-gen", n_list, "decoded tokens for tg, comma-separated (0 = skip)");
  app.add_option("-t,--threads", t_list, "thread counts, comma-separated (default 2)");
  app.add_option("-d,--n-depth", d_list,
                 "context depths: tokens already in the sequence before pp/tg (default 0)");
  app.add_option("--parallel", par_list,
                 "sequence counts for batched decode, comma-separated (like llama-batched-bench "
                 "-npl)");
  app.add_option("--npp", npp, "parallel: prompt tokens per sequence (default 128)")
      ->check(CLI::Range(1, 1 << 16));
  app.add_option("--ntg", ntg, "parallel: decoded tokens per sequence (default 64)")
      ->check(CLI::Range(1, 1 << 16));
  app.add_option("-r,--repetitions", reps, "repetitions of each test (default 3)")
      ->check(CLI::Range(1, 100));
  app.add_flag("--json", json, "print one JSON object");
  SpecOptions spec_opts;
  SpecBenchOptions spec_bench;
  const std::string& spec_prompt = spec_bench.prompt;
  spec_opts.add_to(app);
  app.add_option("--spec-prompt", spec_bench.prompt,
                 "with --draft/--spec: the prompt of the speculative test (greedy, the first "
                 "non-zero -n tokens, the first -t threads)");
  app.add_option("--spec-temp", spec_bench.temperature,
                 "with --draft/--spec: sample at this temperature (seed 1) instead of greedy")
      ->check(CLI::Range(0.0, 10.0));
  app.add_flag("--spec-costs", spec_bench.costs,
               "with --draft/--spec: also time the parts of a speculative step apart (plain "
               "step, verification of 2..K+1 tokens, one draft forward; wall and CPU time)");
  bool spec_only = false;
  app.add_flag("--spec-only", spec_only,
               "with --draft/--spec: run only the speculative test (no pp/tg/parallel tests, no "
               "streaming-read probe)");
  app.add_flag("--spec-verify-states", spec_bench.verify_states,
               "with --draft/--spec: keep the recurrent state after every verified token instead "
               "of recomputing the kept prefix (the slower path, for comparison)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  auto ps = parse_list("-p", p_list, 0, 1 << 20);
  auto ns = parse_list("-n", n_list, 0, 1 << 20);
  auto ts = parse_list("-t", t_list.empty() ? std::to_string(mo.n_threads) : t_list, 1, 256);
  auto ds = parse_list("-d", d_list, 0, 1 << 24);
  auto bs = par_list.empty() ? Result<std::vector<int>>(std::vector<int>{})
                             : parse_list("--parallel", par_list, 1, 4096);
  for (const Status& st : {ps.status(), ns.status(), ts.status(), ds.status(), bs.status()})
    if (!st.ok()) return report_error("bench", st);

  mo.quiet = true;
  int max_p = 1;
  for (int p : *ps) max_p = std::max(max_p, p);
  mo.ubatch = std::max<uint32_t>(mo.ubatch, static_cast<uint32_t>(max_p));
  int max_b = 1;
  for (int b : *bs) max_b = std::max(max_b, b);
  const auto t_load = Clock::now();
  mo.n_threads = ts->front();
  auto lm = load_for_inference(mo, false);
  if (!lm.ok()) return report_error("bench", lm.status());
  const double load_s = since(t_load);
  auto cp = mo.context_params();
  if (!cp.ok()) return report_error("bench", cp.status());
  cp->max_seqs = std::max<uint32_t>(cp->max_seqs, static_cast<uint32_t>(max_b) + 2);

  const Model& model = *lm->model;
  const uint64_t weights = weight_bytes_per_step(model);
  std::vector<TestResult> results;
  nlohmann::json roofs = nlohmann::json::object();
  for (int nt : *ts) {
    if (spec_only && spec_opts.enabled()) break;
    ContextParams p = *cp;
    p.n_threads = nt;
    auto ctx = Context::create(model, p);
    if (!ctx.ok()) return report_error("bench", ctx.status());
    const SeqTraffic tr = seq_traffic((*ctx)->memory().config());
    auto roof_r = streaming_read_gbps(nt);
    if (!roof_r.ok()) return report_error("bench", roof_r.status());
    const double roof = *roof_r;
    roofs[std::to_string(nt)] = roof;
    Runner run(**ctx, reps);
    // This host's streaming read drifts by up to 1.6x between minutes, so a probe taken once per
    // thread count made decode shares swing with it. Each decode test is also compared with a
    // probe taken right after it, against the higher of the two (the conservative share).
    auto decode_bw = [&](TestResult& t, int n_seq, double mean_keys) -> Status {
      CHIMERA_ASSIGN_OR_RETURN(const double after, streaming_read_gbps(nt));
      t.streaming_read_gbps = std::max(roof, after);
      t.bytes_per_step = weights + n_seq * (tr.state_bytes + mean_keys * tr.kv_bytes_per_key);
      t.gbps = t.tps.mean / n_seq * t.bytes_per_step / 1e9;
      t.pct_of_streaming_read =
          t.streaming_read_gbps > 0 ? 100 * t.gbps / t.streaming_read_gbps : 0;
      return Status::Ok();
    };
    for (int d : *ds) {
      for (int pn : *ps) {
        if (pn == 0) continue;
        TestResult t = make_test("pp" + std::to_string(pn), "pp", nt, d, pn, 0, 1);
        auto s = run.pp(d, pn);
        if (!s.ok()) return report_error("bench", s.status());
        t.tps = *s;
        results.push_back(t);
      }
      for (int nn : *ns) {
        if (nn == 0) continue;
        TestResult t = make_test("tg" + std::to_string(nn), "tg", nt, d, 0, nn, 1);
        auto s = run.tg(d, nn);
        if (!s.ok()) return report_error("bench", s.status());
        t.tps = *s;
        // keys visible, averaged over the steps
        if (Status bw = decode_bw(t, 1, d + (nn + 1) / 2.0); !bw.ok())
          return report_error("bench", bw);
        results.push_back(t);
      }
    }
    for (int b : *bs) {
      TestResult t = make_test(
          "pp" + std::to_string(npp) + "+tg" + std::to_string(ntg) + " x" + std::to_string(b),
          "parallel", nt, 0, npp, ntg, b);
      auto s = run.parallel(b, npp, ntg);
      if (!s.ok()) return report_error("bench", s.status());
      t.pp_tps = s->first;
      t.tps = s->second;
      if (Status bw = decode_bw(t, b, npp + (ntg + 1) / 2.0); !bw.ok())
        return report_error("bench", bw);
      results.push_back(t);
    }
  }

  SpecBench sb;
  int spec_n = 0;
  for (int nn : *ns) spec_n = spec_n > 0 ? spec_n : nn;
  if (spec_opts.enabled() && spec_n > 0) {
    auto r = bench_speculative(*lm, mo, spec_opts, spec_bench, spec_n, reps);
    if (!r.ok()) return report_error("bench", r.status());
    sb = std::move(*r);
  }

  if (json) {
    nlohmann::json j;
    j["model"] = lm->path;
    j["description"] = model.describe();
    j["file_bytes"] = model.file->file_size();
    j["isa"] = isa_name(active_isa());
    j["load_seconds"] = load_s;
    j["repetitions"] = reps;
    j["weight_bytes_per_step"] = weights;
    j["streaming_read_gbps"] = roofs;  // by thread count
    j["tests"] = nlohmann::json::array();
    for (const TestResult& t : results) {
      nlohmann::json o = {{"test", t.name},
                          {"kind", t.kind},
                          {"threads", t.threads},
                          {"depth", t.depth},
                          {"n_prompt", t.n_prompt},
                          {"n_gen", t.n_gen},
                          {"parallel", t.parallel},
                          {"tokens_per_s", t.tps.mean},
                          {"tokens_per_s_sd", t.tps.sd}};
      if (t.kind == "parallel") {
        o["pp_tokens_per_s"] = t.pp_tps.mean;
        o["pp_tokens_per_s_sd"] = t.pp_tps.sd;
      }
      if (t.kind != "pp") {
        o["bytes_per_step"] = t.bytes_per_step;
        o["gbps"] = t.gbps;
        o["pct_of_streaming_read"] = t.pct_of_streaming_read;
        o["streaming_read_gbps"] = t.streaming_read_gbps;
      }
      j["tests"].push_back(o);
    }
    if (!sb.plain.empty()) {
      nlohmann::json sj;
      sj["drafter"] = sb.drafter;
      sj["draft_max"] = spec_opts.draft_max;
      sj["adaptive"] = !spec_opts.fixed;
      sj["prompt"] = spec_prompt;
      sj["temperature"] = spec_bench.temperature;
      sj["verify_states"] = spec_bench.verify_states;
      sj["plain_tokens_per_s"] = stat(sb.plain).mean;
      sj["plain_tokens_per_s_sd"] = stat(sb.plain).sd;
      sj["spec_tokens_per_s"] = stat(sb.spec).mean;
      sj["spec_tokens_per_s_sd"] = stat(sb.spec).sd;
      sj["speedup"] = quantile(sb.ratio, 0.5);  // median of the back-to-back pairs' ratios
      sj["speedup_q1"] = quantile(sb.ratio, 0.25);
      sj["speedup_q3"] = quantile(sb.ratio, 0.75);
      sj["speedup_ratio_of_means"] = stat(sb.spec).mean / stat(sb.plain).mean;
      sj["drafted"] = sb.stats.drafted;
      sj["accepted"] = sb.stats.accepted;
      sj["acceptance"] = sb.stats.acceptance();
      sj["verifications"] = sb.stats.steps;
      sj["drafted_by_position"] = sb.stats.drafted_at;
      sj["accepted_by_position"] = sb.stats.accepted_at;
      sj["output_identical"] = sb.identical;
      sj["lookup_calls"] = sb.lookup.calls;
      sj["lookup_batches"] = sb.lookup.batches;
      sj["lookup_proposed"] = sb.lookup.proposed;
      sj["lookup_confirmed"] = sb.lookup.confirmed;
      j["speculative"] = sj;
    }
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("model: %s (%s), loaded in %.0f ms\n", lm->path.c_str(), model.describe().c_str(),
              load_s * 1e3);
  std::printf("isa %s, %d repetitions; decode reads %s of weights per step\n\n",
              isa_name(active_isa()), reps, human_bytes(weights).c_str());
  std::printf("| %-18s | %3s | %6s | %18s | %16s | %7s | %6s |\n", "test", "t", "depth", "tokens/s",
              "pp tokens/s", "GB/s", "% stream");
  std::printf(
      "|--------------------|-----|--------|--------------------|------------------|"
      "---------|--------|\n");
  for (const TestResult& t : results) {
    char pp[32] = "", bw[16] = "", pct[16] = "";
    if (t.kind == "parallel")
      std::snprintf(pp, sizeof pp, "%8.2f ± %5.2f", t.pp_tps.mean, t.pp_tps.sd);
    if (t.kind != "pp") {
      std::snprintf(bw, sizeof bw, "%.1f", t.gbps);
      std::snprintf(pct, sizeof pct, "%.0f%%", t.pct_of_streaming_read);
    }
    std::printf("| %-18s | %3d | %6d | %9.2f ± %6.2f | %16s | %7s | %6s |\n", t.name.c_str(),
                t.threads, t.depth, t.tps.mean, t.tps.sd, pp, bw, pct);
  }
  if (!sb.plain.empty()) {
    const Stat p = stat(sb.plain), q = stat(sb.spec);
    const std::string how =
        spec_bench.temperature > 0
            ? "temperature " + std::to_string(spec_bench.temperature) + " seed 1"
            : std::string("greedy");
    std::printf("\nspeculative decoding (%s, draft-max %d%s%s), %s, prompt \"%s\":\n",
                sb.drafter.c_str(), spec_opts.draft_max, spec_opts.fixed ? ", fixed" : ", adaptive",
                spec_bench.verify_states ? ", per-token states" : "", how.c_str(),
                spec_prompt.c_str());
    std::printf("| %-8s | %16s |\n|----------|------------------|\n", "test", "tokens/s");
    std::printf("| plain    | %8.2f ± %5.2f |\n| spec     | %8.2f ± %5.2f |\n", p.mean, p.sd,
                q.mean, q.sd);
    std::printf(
        "speed-up %.3fx (median of %zu back-to-back pairs, quartiles %.3f-%.3f; ratio of means "
        "%.3f); acceptance %.1f%% (%lld of %lld drafted, %lld verifications)%s\n",
        quantile(sb.ratio, 0.5), sb.ratio.size(), quantile(sb.ratio, 0.25),
        quantile(sb.ratio, 0.75), q.mean / p.mean, 100 * sb.stats.acceptance(),
        static_cast<long long>(sb.stats.accepted), static_cast<long long>(sb.stats.drafted),
        static_cast<long long>(sb.stats.steps),
        sb.identical ? "; output identical" : "; OUTPUT DIFFERS (bug)");
    std::printf("acceptance by draft position:");
    for (size_t i = 0; i < sb.stats.drafted_at.size(); ++i)
      std::printf(" %.0f%%",
                  100.0 * sb.stats.accepted_at[i] / std::max<int64_t>(1, sb.stats.drafted_at[i]));
    if (sb.lookup.calls > 0)
      std::printf(
          "\nlookup staging: %lld of %lld drafter calls ran a lookup batch; %.1f%% of its %lld "
          "proposals confirmed",
          static_cast<long long>(sb.lookup.batches), static_cast<long long>(sb.lookup.calls),
          100.0 * sb.lookup.confirmed / std::max<int64_t>(1, sb.lookup.proposed),
          static_cast<long long>(sb.lookup.proposed));
    std::printf("\nverifications by draft length:");
    for (size_t i = 0; i < sb.stats.drafted_at.size(); ++i) {
      const int64_t longer = i + 1 < sb.stats.drafted_at.size() ? sb.stats.drafted_at[i + 1] : 0;
      if (sb.stats.drafted_at[i] > longer)
        std::printf(" %zu:%lld", i + 1, static_cast<long long>(sb.stats.drafted_at[i] - longer));
    }
    std::printf("\n");
    // The adaptive controller's own measurements (last repetition), in plain steps: where the
    // speculative step's time goes.
    const SpecCosts& c = sb.costs;
    if (!spec_opts.fixed && c.plain > 0) {
      std::printf(
          "controller (last run, in plain steps of %.3f ms): draft forward %.3f; verify(n):",
          1e3 * c.plain, c.draft_forward / c.plain);
      for (size_t n = 2; n < c.verify.size(); ++n)
        if (c.verify[n] > 0) std::printf(" %zu:%.2f", n, c.verify[n] / c.plain);
      std::printf(
          "; fill %.2f, acceptance %.2f; %lld speculative steps, %lld plain before a likely "
          "miss, %lld paused, %lld probes (%.1f beyond plain), catch-up %.1f\n",
          c.fill, c.acceptance, static_cast<long long>(c.spec_steps),
          static_cast<long long>(c.miss_steps), static_cast<long long>(c.paused_steps),
          static_cast<long long>(c.probes), c.probe_seconds / c.plain,
          c.catch_up_seconds / c.plain);
    }
    const SpecStepCosts& st = sb.step;
    for (int cpu = 0; cpu < 2 && st.verify_wall.size() > 1; ++cpu) {
      const std::vector<double>& v = cpu ? st.verify_cpu : st.verify_wall;
      if (v[1] <= 0) continue;
      std::printf(
          "step costs apart (%s, median; in plain steps of %.3f ms): draft forward %.3f; "
          "verify(n):",
          cpu ? "process CPU time" : "wall time", 1e3 * v[1],
          (cpu ? st.draft_cpu : st.draft_wall) / v[1]);
      for (size_t n = 2; n < v.size(); ++n) std::printf(" %zu:%.2f", n, v[n] / v[1]);
      std::printf(
          "; verify(%zu) keeping %zu: %.2f; a drafter call for %zu: %.3f (after a rejection: "
          "%.3f)\n",
          v.size() - 1, v.size() / 2, (cpu ? st.half_cpu : st.half_wall) / v[1], v.size() - 2,
          (cpu ? st.call_cpu : st.call_wall) / v[1], (cpu ? st.rcall_cpu : st.rcall_wall) / v[1]);
    }
  }
  std::printf("\nmeasured streaming read GB/s by threads (a reference point, not a ceiling):");
  for (auto& [k, v] : roofs.items()) std::printf(" %s: %.1f", k.c_str(), v.get<double>());
  std::printf("\n");
  return 0;
}

const BenchModeRegistrar kModel({"",
                                 "-m MODEL: prompt (pp), decode (tg), depth (-d) and batched "
                                 "(--parallel) tokens/s, like llama-bench",
                                 bench_model_main});

}  // namespace
}  // namespace chimera::cli
