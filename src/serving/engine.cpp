// The engine thread: admission, one batch per step (decode tokens + round-robin prompt chunks),
// sampling, streaming, finishing. See engine.h for the contract.
#include "serving/engine.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <thread>

#include "serving/engine_testing.h"
#include "serving/prefix_cache.h"

namespace chimera::serving {

uint64_t choice_seed(uint64_t seed, int choice) {
  return seed + static_cast<uint64_t>(choice);
}

namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

Histogram make_histogram(std::vector<double> bounds) {
  Histogram h;
  h.bounds = std::move(bounds);
  h.buckets.assign(h.bounds.size(), 0);
  return h;
}

void observe(Histogram& h, double v) {
  for (size_t i = 0; i < h.bounds.size(); ++i)
    if (v <= h.bounds[i]) ++h.buckets[i];
  ++h.count;
  h.sum += v;
}

// log-softmax of the raw logits: the logprob of `token` and the top n (ties: lower id first).
TokenLogprob compute_logprobs(const float* logits, int32_t n_vocab, TokenId token, int top_n,
                              const Tokenizer& tok) {
  float mx = logits[0];
  for (int32_t i = 1; i < n_vocab; ++i) mx = std::max(mx, logits[i]);
  double sum = 0;
  for (int32_t i = 0; i < n_vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
  const double lse = static_cast<double>(mx) + std::log(sum);
  auto lp = [&](int32_t i) { return static_cast<float>(static_cast<double>(logits[i]) - lse); };
  TokenLogprob out;
  out.token = token;
  out.text = tok.valid(token) ? tok.piece(token) : std::string();
  out.logprob = lp(token);
  if (top_n > 0) {
    std::vector<int32_t> ids(n_vocab);
    for (int32_t i = 0; i < n_vocab; ++i) ids[i] = i;
    const int n = std::min(top_n, n_vocab);
    std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), [&](int32_t a, int32_t b) {
      return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
    });
    for (int i = 0; i < n; ++i) out.top.push_back({ids[i], lp(ids[i])});
  }
  return out;
}

// ---------------------------------------------------------------- the handle (HTTP side)

class Handle : public RequestHandle {
 public:
  // cancel() needs no wake-up: a busy engine thread checks every step, an idle one every 50 ms
  // (and a handle may outlive its engine).
  Handle() = default;

  std::optional<Event> next(std::chrono::milliseconds timeout) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (delivered_end_) return std::nullopt;
    cv_.wait_for(lock, timeout, [&] { return !events_.empty(); });
    if (events_.empty()) return std::nullopt;
    Event ev = std::move(events_.front());
    events_.pop_front();
    if (ev.kind != Event::Kind::kDelta) delivered_end_ = true;
    return ev;
  }

  void cancel() override { cancelled_.store(true); }

  bool cancelled() const { return cancelled_.load(); }

  void push(Event ev) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      events_.push_back(std::move(ev));
    }
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Event> events_;
  bool delivered_end_ = false;
  std::atomic<bool> cancelled_{false};
};

// ---------------------------------------------------------------- engine-thread state

struct Choice {
  int32_t seq = -1;
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<StreamDecoder> stream;
  std::unique_ptr<StopStringMatcher> stops;
  int64_t n_generated = 0;
  TokenId next_token = -1;  // sampled, decoded in the next step
  bool done = false;
  Clock::time_point last_token;
  int64_t batch_entry = -1;
  // Speculative decoding: the sequence's token list (prompt + generated, the pending token
  // once it is in a batch), this step's drafted tokens, the draft length control.
  std::vector<TokenId> history;
  std::vector<TokenId> drafts;
  std::unique_ptr<SpecController> spec;
  Clock::time_point step_t0;
  bool drafter_asked = false;      // this step
  std::vector<uint8_t> tail_hits;  // the drafter's, when asked (SpecController::record)
  const std::vector<uint8_t>* asked_tail_hits() const {
    return drafter_asked ? &tail_hits : nullptr;
  }
};

struct Active {
  RequestParams p;
  std::shared_ptr<Handle> h;
  Clock::time_point t_submit, t_admit;
  bool got_first_token = false;
  std::vector<Choice> choices;
  size_t held = 0;   // prompt tokens held by choices[0].seq
  size_t held0 = 0;  // ... when it was admitted (what the prefix cache gave)
  bool prompting = true;
  std::vector<uint32_t> snap_points;  // ascending token counts at which to pin a snapshot
  std::vector<uint64_t> snaps;        // pinned here, handed to the prefix cache at the end
  std::vector<uint32_t> thinned;      // snapshot points dropped to stay in budget
  PrefixCache::PromptEnd prompt_end;  // the snapshot at the prompt's end, with its logits
  int64_t chunk_end = 0;              // this step's prompt chunk ends here (0: none)
  int64_t replay_end = 0;             // prompt tokens below this were found in the cache
  int64_t chunk_entry = -1;           // batch entry of the chunk's last token
  Timings timings;
  CacheReport cache;
  bool finished = false;
  std::optional<Event> done_event;
};

class EngineImpl : public Engine {
 public:
  EngineImpl(const Model& model, const Tokenizer& tok, const EngineConfig& cfg)
      : model_(model), tok_(tok), cfg_(cfg) {
    metrics_.time_to_first_token =
        make_histogram({0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60});
    metrics_.inter_token_latency =
        make_histogram({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5});
  }
  ~EngineImpl() override { stop(); }

  Status init(const ContextParams& ctx_params) {
    if (cfg_.n_parallel < 1) return Error(ErrorCode::kInvalidArgument, "n_parallel must be >= 1");
    if (cfg_.n_ctx < 2) return Error(ErrorCode::kInvalidArgument, "n_ctx must be >= 2");
    if (cfg_.step_token_budget < 1)
      return Error(ErrorCode::kInvalidArgument, "step_token_budget must be >= 1");
    ContextParams p = ctx_params;
    // Running choices plus parked (cached) sequences.
    p.max_seqs = cfg_.n_parallel * kMaxChoices + kMaxParked;
    // Snapshots are placed by the prefix cache alone (explicit, pinned); automatic ones would
    // take bytes the cache cannot weigh.
    p.snapshot_interval = 0;
    p.snapshot_budget = 0;
    CHIMERA_ASSIGN_OR_RETURN(ctx_, Context::create(model_, p));
    baseline_bytes_ = ctx_->memory().usage().total_bytes();
    for (const MemoryLayer& l : ctx_->memory().config().layers)
      slot_bytes_ += (l.conv_floats + l.ssm_floats) * sizeof(float);
    for (int32_t s = static_cast<int32_t>(p.max_seqs) - 1; s >= 0; --s) free_seqs_.push_back(s);
    cache_ = std::make_unique<PrefixCache>(ctx_->memory(), cfg_, ctx_->n_vocab());
    if (!cfg_.cache_file.empty()) {
      Status st = cache_->load_file(cfg_.cache_file, free_seqs_);
      if (!st.ok())
        std::fprintf(stderr, "warning: prefix cache file %s not used (%s); starting empty\n",
                     cfg_.cache_file.c_str(), st.ToString().c_str());
    }
    refresh_gauges();
    thread_ = std::thread([this] { run(); });
    return Status::Ok();
  }

  Result<std::shared_ptr<RequestHandle>> submit(RequestParams params) override {
    const size_t P = params.prompt.size();
    if (P == 0) return Error(ErrorCode::kInvalidArgument, "prompt: empty");
    for (size_t i = 0; i < P; ++i)
      if (params.prompt[i] < 0 || params.prompt[i] >= ctx_->n_vocab())
        return Error(ErrorCode::kInvalidArgument, "prompt: token ", i, " has id ", params.prompt[i],
                     ", outside the vocabulary [0, ", ctx_->n_vocab(), ")");
    const int64_t need = static_cast<int64_t>(P) + std::max<int32_t>(params.max_tokens, 1);
    if (need > cfg_.n_ctx) {
      if (params.max_tokens > 0)
        return Error(ErrorCode::kInvalidArgument, "the prompt (", P, " tokens) plus max_tokens (",
                     params.max_tokens, ") is ", need, " tokens, over the context of ", cfg_.n_ctx,
                     " tokens");
      return Error(ErrorCode::kInvalidArgument, "the prompt (", P,
                   " tokens) leaves no room to generate in the context of ", cfg_.n_ctx, " tokens");
    }
    if (params.max_tokens == 0)
      return Error(ErrorCode::kInvalidArgument,
                   "max_tokens: must be at least 1 (or < 0: no limit)");
    if (params.n < 1 || params.n > static_cast<int>(kMaxChoices))
      return Error(ErrorCode::kInvalidArgument, "n: ", params.n, " is outside 1..", kMaxChoices);
    if (params.top_logprobs > 20)
      return Error(ErrorCode::kInvalidArgument, "top_logprobs: ", params.top_logprobs,
                   " is over 20");
    for (size_t i = 0; i < params.boundaries.size(); ++i)
      if (params.boundaries[i] > P || (i > 0 && params.boundaries[i] <= params.boundaries[i - 1]))
        return Error(ErrorCode::kInvalidArgument, "boundaries: entry ", i, " (",
                     params.boundaries[i], ") must be ascending and at most the prompt length ", P);
    auto h = std::make_shared<Handle>();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return Error(ErrorCode::kCancelled, "the engine is stopping");
      if (queue_.size() >= cfg_.queue_capacity)
        return Error(ErrorCode::kUnavailable, "the request queue is full (", cfg_.queue_capacity,
                     " waiting)");
      auto a = std::make_unique<Active>();
      a->p = std::move(params);
      a->h = h;
      a->t_submit = Clock::now();
      queue_.push_back(std::move(a));
    }
    {
      std::lock_guard<std::mutex> lock(metrics_mu_);
      ++metrics_.requests_total;
      ++metrics_.requests_queued;
    }
    cv_.notify_all();
    return std::shared_ptr<RequestHandle>(h);
  }

  void stop() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopped_) return;
      stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    std::lock_guard<std::mutex> lock(mu_);
    stopped_ = true;
  }

  MetricsSnapshot metrics() const override {
    std::lock_guard<std::mutex> lock(metrics_mu_);
    return metrics_;
  }

  nlohmann::json cache_info() const override {
    std::lock_guard<std::mutex> lock(metrics_mu_);
    return cache_info_;
  }

  const EngineConfig& config() const override { return cfg_; }

  std::atomic<int64_t> inject_failure_{-1};  // tests: see engine_testing.h
  std::atomic<int64_t> step_delay_us_{0};

 private:
  static constexpr uint32_t kMaxChoices = 16;
  static constexpr uint32_t kMaxParked = 64;

  // ------------------------------------------------------------ the loop

  void run() {
    for (;;) {
      bool stopping;
      {
        std::unique_lock<std::mutex> lock(mu_);
        if (running_.empty() && !stopping_) {
          cv_.wait_for(lock, std::chrono::milliseconds(50),
                       [&] { return stopping_ || !queue_.empty(); });
        }
        stopping = stopping_;
      }
      if (stopping) break;
      step();
    }
    // Stop: every request ends "cancelled"; the cache keeps what they processed.
    std::deque<std::unique_ptr<Active>> waiting;
    {
      std::lock_guard<std::mutex> lock(mu_);
      waiting.swap(queue_);
    }
    {
      std::lock_guard<std::mutex> lock(metrics_mu_);
      metrics_.requests_queued -= waiting.size();
    }
    for (auto& a : waiting) finish_unadmitted(*a, "cancelled");
    for (auto& a : running_) finish_all(*a, "cancelled");
    reap();
    refresh_gauges();
    send_done();
    if (!cfg_.cache_file.empty()) {
      Status st = cache_->save_file(cfg_.cache_file);
      if (!st.ok())
        std::fprintf(stderr, "warning: prefix cache not saved to %s: %s\n", cfg_.cache_file.c_str(),
                     st.ToString().c_str());
    }
    refresh_gauges();
  }

  void step() {
    if (const int64_t us = step_delay_us_.load(); us > 0)
      std::this_thread::sleep_for(std::chrono::microseconds(us));
    admit();
    const Clock::time_point now = Clock::now();
    for (auto& a : running_) {
      if (a->h->cancelled())
        finish_all(*a, "cancelled");
      else if (seconds_between(a->t_admit, now) > a->p.timeout_s)
        finish_all(*a, "timeout");
    }
    reap();
    if (running_.empty()) {
      enforce_cache_budget();
      refresh_gauges();
      send_done();
      return;
    }
    Batch batch;
    build_batch(batch);
    if (batch.size() == 0) {
      refresh_gauges();
      send_done();
      return;
    }
    if (const int64_t n = inject_failure_.exchange(-1); n >= 0) ctx_->inject_compute_failure(n);
    const std::vector<int32_t> spec_seqs = verifying();
    auto decode = [&] {
      return spec_seqs.empty() ? ctx_->decode(batch) : ctx_->decode_open(batch, spec_seqs);
    };
    Status st = decode();
    if (st.code() == ErrorCode::kOutOfMemory) {
      // Cached entries give way to running requests.
      while (!st.ok() && cache_->evict_one(free_seqs_, /*need_seq=*/false)) {
        count_eviction();
        st = decode();
      }
    }
    if (st.ok() && !spec_seqs.empty()) st = verify();
    if (!st.ok()) {
      fail_batch(batch, st);
    } else {
      after_decode();
    }
    reap();
    enforce_cache_budget();
    refresh_gauges();
    send_done();
  }

  // kDone goes out after the request's sequences are parked and the gauges updated, so a client
  // that reads /metrics after its response sees the request gone.
  void send_done() {
    for (auto& [h, ev] : done_) h->push(std::move(ev));
    done_.clear();
  }

  // ------------------------------------------------------------ admission

  bool take_seqs(std::vector<int32_t>& out, size_t n) {
    while (free_seqs_.size() < n)
      if (!cache_->evict_one(free_seqs_, /*need_seq=*/true))
        return false;
      else
        count_eviction();
    for (size_t i = 0; i < n; ++i) {
      out.push_back(free_seqs_.back());
      free_seqs_.pop_back();
    }
    return true;
  }

  void admit() {
    for (;;) {
      std::unique_ptr<Active> a;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (queue_.empty()) return;
        if (queue_.front()->h->cancelled()) {
          a = std::move(queue_.front());
          queue_.pop_front();
        } else if (running_.size() < cfg_.n_parallel) {
          a = std::move(queue_.front());
          queue_.pop_front();
        } else {
          return;
        }
      }
      // The queued gauge drops where the running one rises (start()), so /metrics never shows
      // an admitted request in neither.
      if (a->h->cancelled()) {
        {
          std::lock_guard<std::mutex> lock(metrics_mu_);
          --metrics_.requests_queued;
        }
        finish_unadmitted(*a, "cancelled");
        continue;
      }
      std::vector<int32_t> seqs;
      if (!take_seqs(seqs, static_cast<size_t>(a->p.n))) {
        // Every sequence is held by running requests: wait for one to finish.
        for (int32_t s : seqs) free_seqs_.push_back(s);
        std::lock_guard<std::mutex> lock(mu_);
        queue_.push_front(std::move(a));
        return;
      }
      start(*a, seqs);
      running_.push_back(std::move(a));
    }
  }

  void start(Active& a, const std::vector<int32_t>& seqs) {
    a.t_admit = Clock::now();
    const std::vector<TokenId>& prompt = a.p.prompt;
    const size_t P = prompt.size();
    a.choices.resize(a.p.n);
    for (int i = 0; i < a.p.n; ++i) {
      Choice& c = a.choices[i];
      c.seq = seqs[i];
      SamplingParams sp = a.p.sampling;
      sp.seed = choice_seed(a.p.sampling.seed, i);
      c.sampler = std::make_unique<Sampler>(sp);
      for (TokenId t : prompt) c.sampler->accept(t);
      c.stream = std::make_unique<StreamDecoder>(tok_, false);
      c.stops = std::make_unique<StopStringMatcher>(a.p.stop);
      if (cfg_.drafter && a.p.draft_max != 0) {
        SpecParams sp2 = cfg_.spec;
        if (a.p.draft_max > 0) sp2.draft_max = a.p.draft_max;
        c.spec = std::make_unique<SpecController>(sp2);
        c.history = prompt;
      }
    }
    // The prefix cache puts the longest cached prefix into the first choice's sequence.
    PrefixCache::Attach at = cache_->attach(prompt, a.p.boundaries, a.choices[0].seq);
    a.held = at.held;
    a.cache = at.report;
    const int64_t hit_end = std::min<int64_t>(at.report.matched, static_cast<int64_t>(P));
    a.replay_end = hit_end;
    a.timings.prompt_reused = static_cast<int64_t>(a.held);
    a.timings.prompt_replayed = std::max<int64_t>(0, hit_end - static_cast<int64_t>(a.held));
    a.timings.prompt_processed = static_cast<int64_t>(P) - std::max<int64_t>(hit_end, a.held);
    // Snapshot points past what is held: message boundaries, every snapshot_every tokens, and
    // the prompt's end. The prompt end's snapshot keeps the last token's logits: the same
    // prompt again (regenerate, retry, another seed) samples from them with no forward pass,
    // and a next turn that sends the answer back re-tokenized resumes right there. The last
    // message's boundary stays too: a next turn whose answer, sent back, tokenizes together
    // with the generation header's last characters diverges inside the header. Attention alone
    // rolls back to any token without a snapshot.
    a.held0 = a.held;
    const bool recurrent = ctx_->memory().has_recurrent();
    if (recurrent)
      for (uint32_t b : a.p.boundaries)
        if (b > a.held && b < P) a.snap_points.push_back(b);
    if (recurrent && P > a.held) a.snap_points.push_back(static_cast<uint32_t>(P));
    if (cfg_.snapshot_every > 0 && recurrent)
      for (size_t k = (a.held / cfg_.snapshot_every + 1) * cfg_.snapshot_every; k < P;
           k += cfg_.snapshot_every)
        a.snap_points.push_back(static_cast<uint32_t>(k));
    std::sort(a.snap_points.begin(), a.snap_points.end());
    a.snap_points.erase(std::unique(a.snap_points.begin(), a.snap_points.end()),
                        a.snap_points.end());
    {
      std::lock_guard<std::mutex> lock(metrics_mu_);
      --metrics_.requests_queued;
      ++metrics_.requests_running;
      metrics_.prompt_tokens_cached += a.held;
    }
    if (at.logits) {
      // The whole prompt came from the cache with its last token's logits: fork the choices
      // and sample now; nothing runs through the model.
      CHIMERA_CHECK(a.held == P && at.logits->size() == static_cast<size_t>(ctx_->n_vocab()),
                    "prefix cache logits for ", a.held, " of ", P, " tokens");
      a.timings.prompt_logits_reused = true;
      a.prompting = false;
      sample_prompt_end(a, at.logits->data());
    }
  }

  // The prompt is processed (or came whole from the cache): the n choices share it (O(1)
  // forks), then each samples its first token from the last prompt token's logits.
  void sample_prompt_end(Active& a, const float* logits) {
    HybridMemory& mem = ctx_->memory();
    for (size_t i = 1; i < a.choices.size(); ++i) {
      Status st = mem.seq_cp(a.choices[0].seq, a.choices[i].seq);
      CHIMERA_CHECK(st.ok(), "seq_cp of a processed prompt: ", st.ToString());
    }
    for (Choice& c : a.choices) on_logits(a, c, logits);
    bool all_done = true;
    for (const Choice& c : a.choices) all_done = all_done && c.done;
    if (all_done) finish_done(a);
  }

  // ------------------------------------------------------------ one batch

  void build_batch(Batch& b) {
    HybridMemory& mem = ctx_->memory();
    for (auto& a : running_) {
      a->chunk_end = 0;
      a->chunk_entry = -1;
      for (Choice& c : a->choices) {
        c.batch_entry = -1;
        c.drafts.clear();
        if (a->prompting || c.done || c.next_token < 0) continue;
        c.batch_entry = static_cast<int64_t>(b.size());
        const int32_t pos = static_cast<int32_t>(mem.next_pos(c.seq));
        b.add(c.next_token, pos, c.seq, true);
        if (c.spec) draft(*a, c);
        for (size_t i = 0; i < c.drafts.size(); ++i)
          b.add(c.drafts[i], pos + 1 + static_cast<int32_t>(i), c.seq, true);
      }
    }
    // Prompt chunks share what is left of the budget, round-robin from a rotating start.
    std::vector<Active*> prompting;
    for (size_t k = 0; k < running_.size(); ++k) {
      Active* a = running_[(rr_ + k) % running_.size()].get();
      if (a->prompting) prompting.push_back(a);
    }
    if (!running_.empty()) rr_ = (rr_ + 1) % running_.size();
    int64_t budget = static_cast<int64_t>(cfg_.step_token_budget) - static_cast<int64_t>(b.size());
    if (budget < 1) budget = 1;  // waiting prompts always move, however many sequences decode
    std::vector<int64_t> give(prompting.size(), 0);
    // Fair shares: repeat until the budget is spent or every prompt has what it can take.
    for (bool progress = true; budget > 0 && progress;) {
      progress = false;
      size_t wanting = 0;
      for (size_t i = 0; i < prompting.size(); ++i)
        wanting += chunk_room(*prompting[i], give[i]) > 0;
      if (wanting == 0) break;
      const int64_t share = std::max<int64_t>(1, budget / static_cast<int64_t>(wanting));
      for (size_t i = 0; i < prompting.size() && budget > 0; ++i) {
        const int64_t room = chunk_room(*prompting[i], give[i]);
        const int64_t g = std::min({room, share, budget});
        if (g <= 0) continue;
        give[i] += g;
        budget -= g;
        progress = true;
      }
    }
    for (size_t i = 0; i < prompting.size(); ++i) {
      if (give[i] == 0) continue;
      Active& a = *prompting[i];
      const int32_t seq = a.choices[0].seq;
      const int64_t pos0 = mem.next_pos(seq);
      const int64_t end = static_cast<int64_t>(a.held) + give[i];
      for (int64_t j = static_cast<int64_t>(a.held); j < end; ++j)
        b.add(a.p.prompt[j], static_cast<int32_t>(pos0 + (j - static_cast<int64_t>(a.held))), seq,
              j + 1 == static_cast<int64_t>(a.p.prompt.size()));
      a.chunk_end = end;
      a.chunk_entry = static_cast<int64_t>(b.size()) - 1;
    }
  }

  // Speculative decoding: drafts for the choice's pending token, as many as can still be
  // sampled (max_tokens, the context). A drafter error only means no drafts.
  void draft(const Active& a, Choice& c) {
    c.step_t0 = Clock::now();
    c.drafter_asked = false;
    c.history.push_back(c.next_token);
    int64_t k = c.spec->draft_len();
    if (a.p.max_tokens >= 0) k = std::min<int64_t>(k, a.p.max_tokens - c.n_generated);
    k = std::min<int64_t>(k, static_cast<int64_t>(cfg_.n_ctx) - 2 -
                                 static_cast<int64_t>(ctx_->memory().n_tokens(c.seq)));
    if (k <= 0) return;
    auto d = cfg_.drafter->draft(c.seq, c.history, static_cast<int32_t>(k));
    if (const auto* md = dynamic_cast<const ModelDrafter*>(cfg_.drafter)) {
      const LookupStats& l = md->lookup_stats();
      std::lock_guard<std::mutex> lock(metrics_mu_);
      metrics_.draft_lookup_batches = static_cast<uint64_t>(l.batches);
      metrics_.draft_lookup_proposed = static_cast<uint64_t>(l.proposed);
      metrics_.draft_lookup_confirmed = static_cast<uint64_t>(l.confirmed);
    }
    if (!d.ok()) return;
    c.drafter_asked = true;
    c.tail_hits = cfg_.drafter->last_tail_hits();
    c.drafts = std::move(*d);
    if (static_cast<int64_t>(c.drafts.size()) > k) c.drafts.resize(k);
    if (static_cast<int32_t>(c.drafts.size()) < std::max(1, cfg_.spec.draft_min)) c.drafts.clear();
  }

  // Sequences verifying drafts in this batch.
  std::vector<int32_t> verifying() const {
    std::vector<int32_t> out;
    for (const auto& a : running_)
      for (const Choice& c : a->choices)
        if (c.batch_entry >= 0 && !c.drafts.empty()) out.push_back(c.seq);
    return out;
  }

  // Samples the verified positions of each speculating choice in order, exactly as plain steps
  // would have, until a sample differs from the draft (it becomes the pending token) or the
  // choice finishes; the memory keeps the tokens before it. Runs before anything else touches
  // the memory (the batch is still open).
  Status verify() {
    std::vector<SeqKeep> keep;
    for (auto& ap : running_) {
      Active& a = *ap;
      for (Choice& c : a.choices) {
        if (c.batch_entry < 0 || c.drafts.empty()) continue;
        const uint32_t held = ctx_->memory().n_tokens(c.seq);
        uint32_t i = 1;
        for (;; ++i) {
          on_logits(a, c, ctx_->logits(static_cast<size_t>(c.batch_entry) + i - 1), held + i);
          if (c.done || i > c.drafts.size() || c.next_token != c.drafts[i - 1]) break;
          c.history.push_back(c.next_token);
        }
        keep.push_back({c.seq, i});
        const int32_t n_drafted = static_cast<int32_t>(c.drafts.size());
        const int32_t n_accepted = static_cast<int32_t>(i - 1);
        a.timings.draft_n += n_drafted;
        a.timings.draft_n_accepted += n_accepted;
        {
          std::lock_guard<std::mutex> lock(metrics_mu_);
          metrics_.draft_tokens += n_drafted;
          metrics_.draft_tokens_accepted += n_accepted;
          auto& by_pos = metrics_.draft_tokens_by_position;
          auto& ok_pos = metrics_.draft_accepted_by_position;
          if (by_pos.size() < c.drafts.size()) {
            by_pos.resize(c.drafts.size(), 0);
            ok_pos.resize(c.drafts.size(), 0);
          }
          for (int32_t j = 0; j < n_drafted; ++j) {
            ++by_pos[j];
            if (j < n_accepted) ++ok_pos[j];
          }
        }
        c.spec->record(n_drafted, n_accepted, seconds_between(c.step_t0, Clock::now()),
                       c.asked_tail_hits());
        c.batch_entry = -1;  // sampled here, not again in after_decode()
      }
    }
    Status st = ctx_->accept(keep);
    if (!st.ok()) ctx_->reject();
    return st;
  }

  // Prompt tokens a request can still take this step: a chunk never crosses a snapshot point,
  // so the state there exists after the step and can be pinned.
  int64_t chunk_room(const Active& a, int64_t given) const {
    const int64_t from = static_cast<int64_t>(a.held) + given;
    int64_t limit = static_cast<int64_t>(a.p.prompt.size());
    for (uint32_t s : a.snap_points)
      if (static_cast<int64_t>(s) > static_cast<int64_t>(a.held)) {
        limit = std::min<int64_t>(limit, s);
        break;
      }
    return limit - from;
  }

  void fail_batch(const Batch& batch, const Status& st) {
    std::vector<uint8_t> in_batch(ctx_->memory().config().max_seqs, 0);
    for (int32_t s : batch.seq) in_batch[s] = 1;
    for (auto& a : running_) {
      bool hit = false;
      for (const Choice& c : a->choices) hit = hit || in_batch[c.seq];
      if (!hit || a->finished) continue;
      Event ev;
      ev.kind = Event::Kind::kError;
      ev.error = Error(st.code(), "decoding failed: ", st.message());
      a->h->push(std::move(ev));
      a->finished = true;
      std::lock_guard<std::mutex> lock(metrics_mu_);
      ++metrics_.requests_failed;
    }
  }

  void after_decode() {
    HybridMemory& mem = ctx_->memory();
    for (auto& ap : running_) {
      Active& a = *ap;
      if (a.finished) continue;
      if (a.chunk_end > 0) {
        const int64_t n_chunk = a.chunk_end - static_cast<int64_t>(a.held);
        a.held = static_cast<size_t>(a.chunk_end);
        {
          // Tokens of the hit that are run again (rollback replay) are counted as replayed.
          const int64_t from = static_cast<int64_t>(a.held) - n_chunk;
          const int64_t replayed_now =
              std::max<int64_t>(0, std::min<int64_t>(a.chunk_end, a.replay_end) - from);
          std::lock_guard<std::mutex> lock(metrics_mu_);
          metrics_.prompt_tokens_replayed += replayed_now;
          metrics_.prompt_tokens_processed += n_chunk - replayed_now;
        }
        const bool prompt_done = a.held == a.p.prompt.size();
        const float* logits =
            prompt_done ? ctx_->logits(static_cast<size_t>(a.chunk_entry)) : nullptr;
        if (std::binary_search(a.snap_points.begin(), a.snap_points.end(),
                               static_cast<uint32_t>(a.held))) {
          auto id = mem.snapshot(a.choices[0].seq);
          if (id.ok()) {
            a.snaps.push_back(*id);
            if (prompt_done && logits) {
              a.prompt_end.snap = *id;
              a.prompt_end.logits =
                  std::make_shared<const std::vector<float>>(logits, logits + ctx_->n_vocab());
            }
            thin_request_snapshots(a);
          }
        }
        if (prompt_done) {
          a.prompting = false;
          sample_prompt_end(a, logits);
          continue;  // its choices were sampled; none was in this batch
        }
      }
      for (Choice& c : a.choices) {
        if (c.batch_entry < 0) continue;
        on_logits(a, c, ctx_->logits(static_cast<size_t>(c.batch_entry)));
        if (c.spec)
          c.spec->record(0, 0, seconds_between(c.step_t0, Clock::now()), c.asked_tail_hits());
      }
      bool all_done = true;
      for (const Choice& c : a.choices) all_done = all_done && c.done;
      if (all_done) finish_done(a);
    }
  }

  // Each pinned snapshot keeps one recurrent state alive (tens of MB on real models) while the
  // request runs: past its share of the cache budget, drop the one whose loss adds the least
  // replay (the smallest gap to the previous one), keeping the last two, where regenerations and
  // edits of the last message diverge.
  void thin_request_snapshots(Active& a) {
    const uint64_t share = std::max<uint64_t>(
        2 * slot_bytes_, cfg_.cache_mem / (2 * static_cast<uint64_t>(cfg_.n_parallel)));
    HybridMemory& mem = ctx_->memory();
    while (a.snaps.size() > 2 && a.snaps.size() * slot_bytes_ > share) {
      std::vector<uint32_t> at;
      for (uint64_t id : a.snaps) {
        uint32_t n = 0;
        for (auto [sid, k] : mem.snapshots_of(a.choices[0].seq))
          if (sid == id) n = k;
        at.push_back(n);
      }
      size_t victim = 0;
      uint32_t best_gap = UINT32_MAX;
      for (size_t i = 0; i + 2 < a.snaps.size(); ++i) {
        const uint32_t prev = i == 0 ? static_cast<uint32_t>(a.held0) : at[i - 1];
        if (at[i] - prev < best_gap) {
          best_gap = at[i] - prev;
          victim = i;
        }
      }
      (void)mem.release(a.snaps[victim]);
      a.snaps.erase(a.snaps.begin() + static_cast<std::ptrdiff_t>(victim));
      a.thinned.push_back(at[victim]);
      count_eviction();
    }
  }

  // Samples the choice's next token from `logits` and streams it.
  // `held`: tokens the sequence holds once this token's logits are (-1: the memory's count).
  void on_logits(Active& a, Choice& c, const float* logits, int64_t held = -1) {
    CHIMERA_CHECK(logits != nullptr, "no logits for a sampled sequence");
    const Clock::time_point now = Clock::now();
    const TokenId t = c.sampler->sample(logits, ctx_->n_vocab());
    c.sampler->accept(t);
    ++c.n_generated;
    {
      std::lock_guard<std::mutex> lock(metrics_mu_);
      ++metrics_.generated_tokens;
      if (!a.got_first_token)
        observe(metrics_.time_to_first_token, seconds_between(a.t_submit, now));
      else if (c.n_generated > 1)
        observe(metrics_.inter_token_latency, seconds_between(c.last_token, now));
    }
    if (!a.got_first_token) {
      a.got_first_token = true;
      a.timings.prompt_ms = seconds_between(a.t_admit, now) * 1e3;
    }
    c.last_token = now;
    Event ev;
    ev.choice = static_cast<int>(&c - a.choices.data());
    if (a.p.top_logprobs >= 0)
      ev.logprobs.push_back(compute_logprobs(logits, ctx_->n_vocab(), t, a.p.top_logprobs, tok_));
    std::optional<std::string> finish;
    if (!a.p.ignore_eos && tok_.is_eog(t)) {
      finish = "stop";
    } else {
      auto piece = tok_.valid(t) ? c.stream->push(t) : Result<std::string>(std::string());
      ev.text = c.stops->feed(piece.ok() ? *piece : std::string());
      if (c.stops->stopped())
        finish = "stop";
      else if (a.p.max_tokens >= 0 && c.n_generated >= a.p.max_tokens)
        finish = "length";
      else if ((held >= 0 ? held : ctx_->memory().n_tokens(c.seq)) + 1 >= cfg_.n_ctx)
        finish = "length";  // the sampled token would fill the context
    }
    if (finish) {
      if (!c.stops->stopped()) {
        ev.text += c.stops->feed(c.stream->flush());
        ev.text += c.stops->flush();
      }
      ev.finish_reason = *finish;
      c.done = true;
      c.next_token = -1;
    } else {
      c.next_token = t;
    }
    a.h->push(std::move(ev));
  }

  // ------------------------------------------------------------ finishing

  void finish_unadmitted(Active& a, const char* reason) {
    for (int i = 0; i < a.p.n; ++i) {
      Event ev;
      ev.choice = i;
      ev.finish_reason = reason;
      a.h->push(std::move(ev));
    }
    Event done;
    done.kind = Event::Kind::kDone;
    done.usage.prompt_tokens = static_cast<int64_t>(a.p.prompt.size());
    a.h->push(std::move(done));
    std::lock_guard<std::mutex> lock(metrics_mu_);
    if (std::string(reason) == "cancelled") ++metrics_.requests_cancelled;
  }

  void finish_all(Active& a, const char* reason) {
    if (a.finished) return;
    for (Choice& c : a.choices) {
      if (c.done) continue;
      Event ev;
      ev.choice = static_cast<int>(&c - a.choices.data());
      if (!a.prompting) {
        ev.text = c.stops->feed(c.stream->flush());
        ev.text += c.stops->flush();
      }
      ev.finish_reason = reason;
      c.done = true;
      a.h->push(std::move(ev));
    }
    if (std::string(reason) == "cancelled") {
      std::lock_guard<std::mutex> lock(metrics_mu_);
      ++metrics_.requests_cancelled;
    }
    finish_done(a);
  }

  void finish_done(Active& a) {
    if (a.finished) return;
    Event ev;
    ev.kind = Event::Kind::kDone;
    ev.usage.prompt_tokens = static_cast<int64_t>(a.p.prompt.size());
    for (const Choice& c : a.choices) ev.usage.completion_tokens += c.n_generated;
    ev.usage.cached_tokens = a.timings.prompt_reused;
    a.timings.predicted_n = ev.usage.completion_tokens;
    a.timings.predicted_ms =
        a.got_first_token ? seconds_between(a.t_admit, Clock::now()) * 1e3 - a.timings.prompt_ms
                          : 0;
    ev.timings = a.timings;
    ev.cache = a.cache;
    a.done_event = std::move(ev);  // sent once its sequences are parked and the gauges updated
    a.finished = true;
  }

  // Hands finished requests' sequences to the prefix cache and drops them.
  void reap() {
    for (auto it = running_.begin(); it != running_.end();) {
      Active& a = **it;
      if (!a.finished) {
        ++it;
        continue;
      }
      std::vector<int32_t> seqs;
      for (const Choice& c : a.choices) seqs.push_back(c.seq);
      cache_->park(seqs, std::move(a.snaps), a.thinned, a.p.boundaries, a.prompt_end, free_seqs_);
      if (a.done_event) done_.emplace_back(a.h, std::move(*a.done_event));
      it = running_.erase(it);
      std::lock_guard<std::mutex> lock(metrics_mu_);
      --metrics_.requests_running;
    }
  }

  void enforce_cache_budget() {
    // What running requests hold is theirs; the cache gives way down to its budget.
    while (cache_->bytes(running_seqs()) > cfg_.cache_mem &&
           cache_->evict_one(free_seqs_, /*need_seq=*/false))
      count_eviction();
  }

  std::vector<int32_t> running_seqs() const {
    std::vector<int32_t> out;
    for (const auto& a : running_)
      for (const Choice& c : a->choices) out.push_back(c.seq);
    return out;
  }

  void count_eviction() {
    std::lock_guard<std::mutex> lock(metrics_mu_);
    ++metrics_.cache_evictions;
  }

  void refresh_gauges() {
    // The memory plus the logits the cache keeps beside it (host bytes the cache counts).
    const uint64_t memory_bytes = ctx_->memory().usage().total_bytes() + cache_->logits_bytes();
    const std::vector<int32_t> running = running_seqs();
    nlohmann::json info = cache_->info(running);
    std::lock_guard<std::mutex> lock(metrics_mu_);
    metrics_.memory_bytes = memory_bytes;
    metrics_.cache_bytes = info["bytes"].get<uint64_t>();
    metrics_.cache_hits = cache_->hits();
    metrics_.cache_entries = cache_->entries();
    metrics_.cache_tokens = cache_->tokens();
    info["memory_bytes"] = memory_bytes;
    info["memory_baseline_bytes"] = baseline_bytes_;
    cache_info_ = std::move(info);
  }

  const Model& model_;
  const Tokenizer& tok_;
  EngineConfig cfg_;
  std::unique_ptr<Context> ctx_;
  std::unique_ptr<PrefixCache> cache_;
  uint64_t baseline_bytes_ = 0;
  uint64_t slot_bytes_ = 0;  // one recurrent state (what a snapshot keeps alive)
  std::vector<int32_t> free_seqs_;
  std::vector<std::unique_ptr<Active>> running_;
  std::vector<std::pair<std::shared_ptr<Handle>, Event>> done_;
  size_t rr_ = 0;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Active>> queue_;
  bool stopping_ = false, stopped_ = false;
  std::thread thread_;

  mutable std::mutex metrics_mu_;
  MetricsSnapshot metrics_;
  nlohmann::json cache_info_ = nlohmann::json::object();
};

}  // namespace

void test_hooks::inject_decode_failure(Engine& engine, int64_t n) {
  dynamic_cast<EngineImpl&>(engine).inject_failure_.store(n);
}

void test_hooks::set_step_delay(Engine& engine, std::chrono::microseconds delay) {
  dynamic_cast<EngineImpl&>(engine).step_delay_us_.store(delay.count());
}

Result<std::unique_ptr<Engine>> Engine::create(const Model& model, const Tokenizer& tokenizer,
                                               const ContextParams& ctx_params,
                                               const EngineConfig& cfg) {
  auto e = std::make_unique<EngineImpl>(model, tokenizer, cfg);
  CHIMERA_RETURN_IF_ERROR(e->init(ctx_params));
  return std::unique_ptr<Engine>(std::move(e));
}

}  // namespace chimera::serving
