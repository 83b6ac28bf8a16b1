// The serving engine: one thread owns the Context and runs continuous batching over requests;
// HTTP threads (tools/server) only submit requests and read their events. The contract between
// the two sides lives in this header (shared/design/SERVER.md sketches the structure).
//
//   auto engine = Engine::create(model, tokenizer, ctx_params, cfg);   // starts the engine thread
//   auto h = engine->submit(std::move(params));    // kUnavailable: queue full (HTTP 503)
//   while (auto ev = h->next(std::chrono::milliseconds(100))) { ... }  // deltas, then kDone/kError
//   h->cancel();                                   // client gone: freed within one engine step
//   engine->stop();                                // finishes the step, cancels all, saves cache
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "runtime/context.h"
#include "runtime/drafter.h"
#include "runtime/sampling.h"
#include "runtime/tokenizer.h"

namespace chimera::serving {

// A request as the HTTP edge validated it. The edge renders chat messages and tokenizes; the
// engine only sees tokens.
struct RequestParams {
  std::vector<TokenId> prompt;  // non-empty
  // Token counts at which a chat message ends (ascending, each <= prompt.size()): the places
  // where later requests tend to diverge, so the prefix cache keeps snapshots there.
  std::vector<uint32_t> boundaries;
  SamplingParams sampling;  // temperature <= 0: greedy; seed fixed per request
  int32_t max_tokens = -1;  // < 0: until end of generation or the context is full; 0: invalid
  std::vector<std::string> stop;
  int n = 1;              // 1..16 choices, forked from one processed prompt (seq_cp)
  int top_logprobs = -1;  // < 0: no logprobs; 0..20: logprob of the token plus the top N
  bool ignore_eos = false;
  double timeout_s = 600.0;  // wall-clock limit from admission; then finish_reason "timeout"
  // Speculative decoding (when the engine has a drafter): -1 the engine's draft_max, 0 off, else
  // at most this many drafted tokens per step. The output is the same either way.
  int32_t draft_max = -1;
  std::string id;  // for logs
};

struct TopLogprob {
  TokenId token = 0;
  float logprob = 0;
};

struct TokenLogprob {
  TokenId token = 0;
  std::string text;  // the token's bytes as decoded text piece
  float logprob = 0;
  std::vector<TopLogprob> top;
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;  // summed over choices
  int64_t cached_tokens = 0;      // prompt tokens not run through the model for this request
};

struct Timings {
  int64_t prompt_reused = 0;     // prompt tokens taken from the prefix cache or a live sequence
  int64_t prompt_processed = 0;  // new prompt tokens run through the model
  int64_t prompt_replayed = 0;   // tokens re-run to roll a recurrent state back to the match
  // The whole prompt was cached with its last token's logits (an exact repeat: regenerate,
  // retry, another seed): the choices sampled from those logits, with no forward pass.
  bool prompt_logits_reused = false;
  double prompt_ms = 0;  // admission to first sampled token
  int64_t predicted_n = 0;
  double predicted_ms = 0;
  int64_t draft_n = 0;  // speculative decoding (issue 12)
  int64_t draft_n_accepted = 0;
};

// What the prefix cache found for a request, and why it matched less than it could have.
struct CacheReport {
  int64_t matched = 0;  // prompt tokens found in the cache (before rollback)
  int64_t reused = 0;   // tokens kept without compute (matched minus replayed)
  // Why it matched or reused less than the whole prompt: "" (cold, or everything reused) or
  // parts joined by "; ": "entry evicted (it held N tokens of this prompt)", "diverged at token
  // N (message K)" (K: 1-based, from the request's boundaries), "replayed N tokens from token
  // M" (no snapshot nearer), "snapshot evicted: replayed N tokens from token M".
  std::string reason;
};

// Events of one request, in order: kDelta events (any choice, interleaved; each choice's last
// delta carries its finish_reason), then exactly one kDone (after every choice finished) or one
// kError (its batch failed to decode: no kDone follows; deltas already sent stay valid).
// finish_reason: "stop" (end-of-generation token, unless ignore_eos, or a stop string; neither is
// in the text), "length" (max_tokens, or the context is full), "timeout", "cancelled" (cancel()
// or stop()). Usage.completion_tokens counts every sampled token, the end-of-generation token and
// a stop string's tokens included.
struct Event {
  enum class Kind { kDelta, kDone, kError };
  Kind kind = Kind::kDelta;
  int choice = 0;    // kDelta: which choice
  std::string text;  // kDelta: text safe to show (stop strings held back); may be empty
  std::vector<TokenLogprob> logprobs;  // kDelta: one per token in this delta, when asked
  // kDelta: set on a choice's last delta: "stop", "length", "timeout", "cancelled".
  std::optional<std::string> finish_reason;
  Usage usage;  // kDone
  Timings timings;
  CacheReport cache;
  Status error;  // kError
};

// The seed choice i of a request samples with: choice 0 uses params.sampling.seed itself, choice
// i uses seed + i, so choice i of an n-choice request equals a 1-choice request with that seed.
uint64_t choice_seed(uint64_t seed, int choice);

class RequestHandle {
 public:
  virtual ~RequestHandle() = default;
  // The next event, waiting up to `timeout`; nullopt on timeout. After kDone or kError, nullopt.
  virtual std::optional<Event> next(std::chrono::milliseconds timeout) = 0;
  // Idempotent. The engine drops the request within one step; its prompt may stay cached.
  virtual void cancel() = 0;
};

struct EngineConfig {
  uint32_t n_parallel = 4;           // requests decoding at once (each choice is a sequence)
  uint32_t n_ctx = 4096;             // max tokens per sequence (prompt + generated)
  uint32_t queue_capacity = 64;      // waiting requests beyond which submit() says kUnavailable
  uint32_t step_token_budget = 512;  // tokens per engine step (decode tokens + prompt chunks)
  uint64_t cache_mem = 1ull << 30;   // bytes the prefix cache may keep after requests finish
  uint32_t snapshot_every = 1024;    // extra snapshots along long prompts (bounded replay)
  std::string cache_file;            // "" = no persistence
  // Speculative decoding: choices draft with this drafter (owned by the caller, outliving the
  // engine, used by the engine thread alone; a ModelDrafter needs max_seqs >= n_parallel * 16 +
  // 64) and verify the drafts in the same continuous batch. Null: off.
  Drafter* drafter = nullptr;
  SpecParams spec;
};

// Counters and gauges for /metrics (the HTTP edge renders Prometheus text from them).
struct Histogram {
  std::vector<double> bounds;     // upper bounds, ascending (seconds)
  std::vector<uint64_t> buckets;  // cumulative counts per bound
  uint64_t count = 0;
  double sum = 0;
};

struct MetricsSnapshot {
  uint64_t requests_total = 0, requests_failed = 0, requests_cancelled = 0;
  uint64_t prompt_tokens_processed = 0, prompt_tokens_cached = 0, prompt_tokens_replayed = 0;
  uint64_t generated_tokens = 0;
  uint64_t cache_hits = 0, cache_evictions = 0;
  uint64_t draft_tokens = 0, draft_tokens_accepted = 0;
  std::vector<uint64_t> draft_accepted_by_position;
  std::vector<uint64_t> draft_tokens_by_position;  // drafted at each draft position
  // A draft model's lookup staging (LookupStats): batches run, proposals in them past the first
  // token, and those confirmed as the draft model's own greedy tokens.
  uint64_t draft_lookup_batches = 0, draft_lookup_proposed = 0, draft_lookup_confirmed = 0;
  Histogram time_to_first_token, inter_token_latency;
  uint64_t requests_running = 0, requests_queued = 0;
  uint64_t cache_bytes = 0, cache_entries = 0, cache_tokens = 0;
  uint64_t memory_bytes = 0;
};

class Engine {
 public:
  virtual ~Engine() = default;
  // Loads cfg.cache_file if set (a corrupt or foreign file: warning, empty cache) and starts the
  // engine thread. `model` and `tokenizer` must outlive the engine. The engine sets
  // ctx_params.max_seqs (n_parallel * 16 running + 64 cached sequences) and turns the memory's
  // automatic snapshots off (the prefix cache places its own).
  static Result<std::unique_ptr<Engine>> create(const Model& model, const Tokenizer& tokenizer,
                                                const ContextParams& ctx_params,
                                                const EngineConfig& cfg);
  // kInvalidArgument: prompt + max_tokens over n_ctx (message names both numbers), empty prompt,
  // bad token id. kUnavailable: queue full. kCancelled: the engine is stopping.
  virtual Result<std::shared_ptr<RequestHandle>> submit(RequestParams params) = 0;
  // Finishes the current step, ends every request with finish_reason "cancelled", saves the
  // cache file (temporary file, then rename), joins the thread. Idempotent.
  virtual void stop() = 0;
  virtual MetricsSnapshot metrics() const = 0;
  // The prefix cache for its endpoint (refreshed every engine step):
  //   {"n_entries", "tokens", "bytes", "budget_bytes", "hits", "snapshots", "snapshot_bytes",
  //    "logits_bytes" (prompt-end logits, host memory counted in bytes and memory_bytes),
  //    "tree_nodes", "memory_bytes", "memory_baseline_bytes",
  //    "entries": [{"id", "tokens", "bytes", "hits", "last_use", "messages",
  //                 "snapshots": [token counts]}]}
  virtual nlohmann::json cache_info() const = 0;
  virtual const EngineConfig& config() const = 0;
};

}  // namespace chimera::serving
