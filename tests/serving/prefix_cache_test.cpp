// The prefix cache: the radix tree against brute force; exact reuse (cold vs cache hit, bitwise
// tokens and logprobs) with cached_tokens computed from the token lists; save/load restarts;
// corrupt files; eviction under a small budget.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <random>

#include "serving/engine_testing.h"
#include "serving/prefix_cache.h"
#include "serving_test_util.h"

namespace chimera::serving {
namespace {

using testutil::Fixture;
using testutil::Outcome;

size_t lcp(const std::vector<TokenId>& a, const std::vector<TokenId>& b) {
  size_t k = 0;
  while (k < a.size() && k < b.size() && a[k] == b[k]) ++k;
  return k;
}

TEST(RadixTree, MatchesBruteForce) {
  std::mt19937 rng(7);
  RadixTree tree;
  std::map<uint64_t, std::vector<TokenId>> lists;
  uint64_t next = 1;
  for (int round = 0; round < 400; ++round) {
    const int op = static_cast<int>(rng() % 3);
    if (op < 2 || lists.empty()) {  // insert a list sharing a random prefix with another
      std::vector<TokenId> t;
      if (!lists.empty() && rng() % 4 != 0) {
        auto it = lists.begin();
        std::advance(it, rng() % lists.size());
        t.assign(it->second.begin(), it->second.begin() + rng() % (it->second.size() + 1));
      }
      const size_t extra = rng() % 6;
      for (size_t i = 0; i < extra; ++i) t.push_back(static_cast<TokenId>(rng() % 3));
      tree.insert(t, next);
      lists[next++] = t;
    } else {
      auto it = lists.begin();
      std::advance(it, rng() % lists.size());
      tree.erase(it->second, it->first);
      lists.erase(it);
    }
    std::vector<TokenId> q;
    const size_t len = rng() % 10;
    for (size_t i = 0; i < len; ++i) q.push_back(static_cast<TokenId>(rng() % 3));
    const auto got = tree.match(q);
    ASSERT_EQ(got.size(), lists.size()) << "round " << round;
    for (const auto& [id, t] : lists) {
      ASSERT_TRUE(got.count(id));
      EXPECT_EQ(got.at(id), lcp(t, q)) << "round " << round << " entry " << id;
    }
  }
}

// A chat rendered from token runs: message i ends at boundaries[i].
struct Chat {
  std::vector<TokenId> tokens;
  std::vector<uint32_t> boundaries;
  void add(const std::vector<TokenId>& msg) {
    tokens.insert(tokens.end(), msg.begin(), msg.end());
    boundaries.push_back(static_cast<uint32_t>(tokens.size()));
  }
};

class CacheTest : public ::testing::Test {
 protected:
  EngineConfig cfg(uint64_t cache_mem = 32ull << 20) {
    EngineConfig c = f.config();
    c.cache_mem = cache_mem;
    c.snapshot_every = 4096;  // snapshots at message boundaries only: exact expectations
    return c;
  }
  RequestParams req(const Chat& c, uint64_t seed = 5) {
    RequestParams p;
    p.prompt = c.tokens;
    p.prompt.insert(p.prompt.end(), gen_.begin(), gen_.end());  // the generation prompt
    p.boundaries = c.boundaries;
    p.max_tokens = 8;
    p.sampling = f.hot_sampling(seed);
    p.ignore_eos = true;
    p.top_logprobs = 2;
    return p;
  }
  // The same request on an engine that keeps nothing: the cold reference.
  void expect_cold_equal(const RequestParams& p, const Outcome& hit, const std::string& what) {
    Outcome cold = f.run(*cold_, p);
    EXPECT_EQ(cold.usage.cached_tokens, 0);
    testutil::expect_same(cold, hit, what);
  }
  std::vector<TokenId> msg(const std::string& s) { return f.encode(s); }

  void SetUp() override {
    cold_ = f.engine(cfg(0));
    gen_ = msg("<|assistant|>");
  }

  Fixture f;
  std::unique_ptr<Engine> cold_;
  std::vector<TokenId> gen_;
};

TEST_F(CacheTest, ScriptedTurnsReuseExactlyWhatTheTokenListsPredict) {
  auto engine = f.engine(cfg());
  const std::vector<TokenId> sys = msg("You are a helpful assistant. Answer from the Bible.");
  const std::vector<TokenId> u1 = msg(" In the beginning God created the heaven and the earth");
  std::vector<TokenId> u3 = msg(" In the beginning God created the heaven and the water");
  std::vector<TokenId> u4 = msg(" In the end God created the heaven and the earth");
  const size_t S = sys.size();
  auto turn = [&](const std::vector<TokenId>& u) {
    Chat c;
    c.add(sys);
    c.add(u);
    return req(c);
  };
  // 1: cold. 2: repeats 1: the whole prompt, from the snapshot at its end, and samples from
  // the logits kept there (nothing runs). 3: last word changed; 4: an early word changed: both
  // roll back to the end of the system message.
  const RequestParams r1 = turn(u1), r2 = turn(u1), r3 = turn(u3), r4 = turn(u4);
  const int64_t want[] = {0, static_cast<int64_t>(r1.prompt.size()), static_cast<int64_t>(S),
                          static_cast<int64_t>(S)};
  const RequestParams* rs[] = {&r1, &r2, &r3, &r4};
  ASSERT_GT(lcp(u1, u3), 2u);
  for (int i = 0; i < 4; ++i) {
    Outcome o = f.run(*engine, *rs[i]);
    EXPECT_EQ(o.usage.cached_tokens, want[i]) << "request " << i + 1 << ": " << o.cache.reason;
    EXPECT_EQ(o.timings.prompt_reused, want[i]);
    const int64_t matched = i == 0   ? 0
                            : i == 1 ? static_cast<int64_t>(r1.prompt.size())
                                     : static_cast<int64_t>(lcp(r1.prompt, rs[i]->prompt));
    EXPECT_EQ(o.cache.matched, matched) << "request " << i + 1;
    EXPECT_EQ(o.timings.prompt_processed, static_cast<int64_t>(rs[i]->prompt.size()) -
                                              std::min<int64_t>(matched, rs[i]->prompt.size()));
    EXPECT_EQ(o.timings.prompt_logits_reused, i == 1) << "request " << i + 1;
    if (i == 1) {
      EXPECT_EQ(o.timings.prompt_replayed, 0);
      EXPECT_EQ(o.cache.reason, "");
    }
    if (i >= 2) {
      EXPECT_NE(o.cache.reason.find("diverged at token " + std::to_string(matched)),
                std::string::npos)
          << o.cache.reason;
      EXPECT_NE(o.cache.reason.find("(message 2)"), std::string::npos) << o.cache.reason;
    }
    expect_cold_equal(*rs[i], o, "request " + std::to_string(i + 1));
  }
}

TEST_F(CacheTest, AppendRegenerateEditAndSwitchAreExact) {
  auto engine = f.engine(cfg());
  Chat a;
  a.add(msg("System: be brief."));
  a.add(msg(" Who made the light?"));
  Chat b;
  b.add(msg("System: answer in verse."));
  b.add(msg(" What is on the waters?"));
  Outcome a1 = f.run(*engine, req(a));
  Outcome b1 = f.run(*engine, req(b));
  expect_cold_equal(req(a), a1, "a1");
  // Append: the answer (as generated) and a new user message follow.
  Chat a2 = a;
  std::vector<TokenId> answer = gen_;
  answer.insert(answer.end(), a1.choices[0].tokens.begin(), a1.choices[0].tokens.end());
  a2.add(answer);
  a2.add(msg(" And then?"));
  const RequestParams ra2 = req(a2);
  Outcome o = f.run(*engine, ra2);
  // The cached entry holds a's prompt and the answer but its last token (never decoded).
  const int64_t entry_a = static_cast<int64_t>(req(a).prompt.size() + 8 - 1);
  EXPECT_EQ(o.usage.cached_tokens, entry_a) << o.cache.reason;
  expect_cold_equal(ra2, o, "append");
  // Switch to b and back to a: both still cached.
  Chat b2 = b;
  std::vector<TokenId> banswer = gen_;
  banswer.insert(banswer.end(), b1.choices[0].tokens.begin(), b1.choices[0].tokens.end());
  b2.add(banswer);
  b2.add(msg(" More."));
  o = f.run(*engine, req(b2));
  EXPECT_EQ(o.usage.cached_tokens, static_cast<int64_t>(req(b).prompt.size() + 7));
  expect_cold_equal(req(b2), o, "switch to b");
  // Regenerate a2's answer with another seed: the whole prompt, with the logits kept at its end.
  RequestParams regen = req(a2, 99);
  o = f.run(*engine, regen);
  EXPECT_EQ(o.usage.cached_tokens, static_cast<int64_t>(regen.prompt.size())) << o.cache.reason;
  EXPECT_EQ(o.timings.prompt_processed + o.timings.prompt_replayed, 0);
  EXPECT_TRUE(o.timings.prompt_logits_reused);
  expect_cold_equal(regen, o, "regenerate");
  // Edit the first user message of a2: back to the end of the system message.
  Chat edit;
  edit.add(msg("System: be brief."));
  edit.add(msg(" Who made the darkness?"));
  o = f.run(*engine, req(edit));
  EXPECT_EQ(o.usage.cached_tokens, static_cast<int64_t>(edit.boundaries[0])) << o.cache.reason;
  expect_cold_equal(req(edit), o, "edit");
  const nlohmann::json info = engine->cache_info();
  EXPECT_GE(info["n_entries"].get<int>(), 2);
  EXPECT_GT(info["hits"].get<int>(), 0);
  EXPECT_GE(engine->metrics().cache_hits, 4u);
}

// Regenerating the last answer (the same prompt again): greedy, seeded, n = 2 and a one-token
// answer all sample from the logits kept with the snapshot at the prompt's end, run nothing
// through the model, and give the bytes a cold engine gives.
TEST_F(CacheTest, RegenerateRunsNothingAndMatchesAColdRun) {
  auto engine = f.engine(cfg());
  Chat a;
  a.add(msg("System: be brief."));
  a.add(msg(" Who made the light?"));
  a.add(msg("<|assistant|> God made it."));
  a.add(msg(" And the darkness?"));
  RequestParams greedy = req(a);
  greedy.sampling = SamplingParams();
  greedy.sampling.temperature = 0;
  const Outcome first = f.run(*engine, greedy);
  EXPECT_FALSE(first.timings.prompt_logits_reused);
  RequestParams seeded = req(a, 1234);
  RequestParams two = req(a, 55);
  two.n = 2;
  RequestParams one_token = req(a, 8);
  one_token.max_tokens = 1;
  const RequestParams* regens[] = {&greedy, &seeded, &two, &one_token, &greedy};
  const char* names[] = {"greedy", "seeded", "n=2", "one token", "greedy again"};
  for (int k = 0; k < 5; ++k) {
    const RequestParams& p = *regens[k];
    const uint64_t processed = engine->metrics().prompt_tokens_processed;
    const uint64_t replayed = engine->metrics().prompt_tokens_replayed;
    Outcome o = f.run(*engine, p);
    SCOPED_TRACE(names[k]);
    EXPECT_EQ(o.usage.cached_tokens, static_cast<int64_t>(p.prompt.size())) << o.cache.reason;
    EXPECT_EQ(o.cache.matched, static_cast<int64_t>(p.prompt.size()));
    EXPECT_EQ(o.timings.prompt_processed, 0);
    EXPECT_EQ(o.timings.prompt_replayed, 0);
    EXPECT_TRUE(o.timings.prompt_logits_reused);
    EXPECT_EQ(engine->metrics().prompt_tokens_processed, processed);
    EXPECT_EQ(engine->metrics().prompt_tokens_replayed, replayed);
    ASSERT_EQ(o.choices.size(), static_cast<size_t>(p.n));
    expect_cold_equal(p, o, names[k]);
    if (&p == &greedy) testutil::expect_same(first, o, "greedy regeneration equals the first");
  }
  // An edit of the last user message still resumes at the end of the message before it.
  Chat edit = a;
  edit.tokens.resize(edit.boundaries[2]);
  edit.boundaries.pop_back();
  edit.add(msg(" And the light?"));
  Outcome o = f.run(*engine, req(edit));
  EXPECT_EQ(o.usage.cached_tokens, static_cast<int64_t>(edit.boundaries[2])) << o.cache.reason;
  expect_cold_equal(req(edit), o, "edit of the last message");
}

TEST_F(CacheTest, SaveAndLoadKeepTheWarmCacheExactly) {
  const std::string path = ::testing::TempDir() + "/chimera_prefix_cache_test.bin";
  std::remove(path.c_str());
  EngineConfig c = cfg();
  c.cache_file = path;
  Chat a;
  a.add(msg("System: be brief."));
  a.add(msg(" Who made the light?"));
  Outcome first;
  {
    auto engine = f.engine(c);
    first = f.run(*engine, req(a));
    engine->stop();
  }
  Chat a2 = a;
  std::vector<TokenId> answer = gen_;
  answer.insert(answer.end(), first.choices[0].tokens.begin(), first.choices[0].tokens.end());
  a2.add(answer);
  a2.add(msg(" And then?"));
  Outcome before_restart;
  {
    auto engine = f.engine(c);
    EXPECT_EQ(engine->cache_info()["n_entries"].get<int>(), 1);
    before_restart = f.run(*engine, req(a2));
    EXPECT_EQ(before_restart.usage.cached_tokens, static_cast<int64_t>(req(a).prompt.size() + 7));
    // The boundary snapshots came back too: an edit of the user message rolls back to them.
    Chat edit;
    edit.add(msg("System: be brief."));
    edit.add(msg(" Who made the sea?"));
    Outcome e = f.run(*engine, req(edit));
    EXPECT_EQ(e.usage.cached_tokens, static_cast<int64_t>(edit.boundaries[0])) << e.cache.reason;
    expect_cold_equal(req(edit), e, "edit after restart");
    // So did the logits at the prompt's end: a regeneration of the first turn runs nothing.
    RequestParams regen = req(a, 77);
    Outcome r = f.run(*engine, regen);
    EXPECT_EQ(r.usage.cached_tokens, static_cast<int64_t>(regen.prompt.size())) << r.cache.reason;
    EXPECT_TRUE(r.timings.prompt_logits_reused);
    expect_cold_equal(regen, r, "regenerate after restart");
  }
  expect_cold_equal(req(a2), before_restart, "append after restart");
  // A third start reads the file the second one wrote.
  auto engine = f.engine(c);
  EXPECT_GE(engine->cache_info()["n_entries"].get<int>(), 1);
  Outcome again = f.run(*engine, req(a2));
  EXPECT_GT(again.usage.cached_tokens, 0);
  testutil::expect_same(before_restart, again, "same request after two restarts");
  std::remove(path.c_str());
}

TEST_F(CacheTest, CorruptOrForeignFileGivesAnEmptyCache) {
  const std::string path = ::testing::TempDir() + "/chimera_prefix_cache_corrupt.bin";
  EngineConfig c = cfg();
  c.cache_file = path;
  Chat a;
  a.add(msg("System: be brief."));
  a.add(msg(" Who made the light?"));
  {
    auto engine = f.engine(c);
    f.run(*engine, req(a));
  }  // the destructor stops and saves
  std::vector<char> bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  ASSERT_GT(bytes.size(), 100u);
  auto write = [&](const std::vector<char>& b) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(b.data(), static_cast<std::streamsize>(b.size()));
  };
  std::vector<std::vector<char>> broken;
  broken.push_back(bytes);
  broken.back()[bytes.size() / 2] ^= 0x40;  // a flipped bit
  broken.push_back(std::vector<char>(bytes.begin(), bytes.begin() + bytes.size() / 3));
  broken.push_back(std::vector<char>{'n', 'o', 't', ' ', 'a', ' ', 'c', 'a', 'c', 'h', 'e'});
  broken.push_back(bytes);
  broken.back()[8] = 7;  // another version
  for (size_t i = 0; i < broken.size(); ++i) {
    write(broken[i]);
    auto engine = f.engine(c);
    ASSERT_NE(engine, nullptr);
    EXPECT_EQ(engine->cache_info()["n_entries"].get<int>(), 0) << "case " << i;
    Outcome o = f.run(*engine, req(a));
    EXPECT_EQ(o.usage.cached_tokens, 0);
    expect_cold_equal(req(a), o, "after a broken file");
    engine->stop();
  }
  // A file for another model (the MoE fixture) is refused the same way.
  Fixture moe("granitehybrid-moe");
  write(bytes);
  auto other = Engine::create(*moe.model, *moe.tok, moe.ctx_params(), c);
  ASSERT_TRUE(other.ok());
  EXPECT_EQ((*other)->cache_info()["n_entries"].get<int>(), 0);
  (*other)->stop();
  std::remove(path.c_str());
}

TEST_F(CacheTest, EvictionKeepsTheBudget) {
  // Room for a few conversations, not all ten.
  auto probe = f.engine(cfg());
  Chat first;
  first.add(msg("System: conversation 0."));
  first.add(msg(" Tell me about the flood and the ark."));
  f.run(*probe, req(first));
  const uint64_t one = probe->metrics().cache_bytes;
  ASSERT_GT(one, 0u);
  probe->stop();
  const uint64_t budget = one * 3;
  auto engine = f.engine(cfg(budget));
  const uint64_t baseline = engine->metrics().memory_bytes;
  std::vector<RequestParams> reqs;
  for (int i = 0; i < 10; ++i) {
    Chat c;
    c.add(msg("System: conversation " + std::to_string(i) + "."));
    c.add(msg(" Tell me about the flood and the ark."));
    reqs.push_back(req(c));
    Outcome o = f.run(*engine, reqs.back());
    const MetricsSnapshot m = engine->metrics();
    EXPECT_LE(m.cache_bytes, budget) << "after conversation " << i;
    EXPECT_EQ(m.memory_bytes, baseline + m.cache_bytes) << "idle: only cache entries are left";
    expect_cold_equal(reqs.back(), o, "conversation " + std::to_string(i));
  }
  EXPECT_GT(engine->metrics().cache_evictions, 0u);
  EXPECT_LT(engine->cache_info()["n_entries"].get<int>(), 10);
  // The newest conversation is still cached, the oldest is gone and says so.
  Outcome last = f.run(*engine, reqs.back());
  EXPECT_GT(last.usage.cached_tokens, 0);
  Outcome oldest = f.run(*engine, reqs.front());
  EXPECT_NE(oldest.cache.reason.find("evicted"), std::string::npos) << oldest.cache.reason;
  expect_cold_equal(reqs.front(), oldest, "evicted conversation");
}

TEST_F(CacheTest, CancelledRequestLeavesOnlyCacheEntries) {
  auto engine = f.engine(cfg());
  const uint64_t baseline = engine->metrics().memory_bytes;
  Chat a;
  a.add(msg("System: be brief."));
  a.add(msg(" Who made the light?"));
  RequestParams p = req(a);
  p.max_tokens = -1;
  test_hooks::set_step_delay(*engine, std::chrono::milliseconds(2));
  auto h = engine->submit(p);
  ASSERT_TRUE(h.ok());
  for (int deltas = 0; deltas < 3;) {
    auto ev = (*h)->next(std::chrono::milliseconds(5000));
    ASSERT_TRUE(ev.has_value());
    deltas += ev->kind == Event::Kind::kDelta;
  }
  (*h)->cancel();
  Outcome out = testutil::collect(**h);
  EXPECT_EQ(out.choices[0].finish, "cancelled");
  for (int i = 0; i < 200 && engine->metrics().requests_running > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const MetricsSnapshot m = engine->metrics();
  EXPECT_EQ(m.requests_running, 0u);
  EXPECT_EQ(m.memory_bytes, baseline + m.cache_bytes);
  EXPECT_LE(m.cache_bytes, cfg().cache_mem);
  // Its prompt stayed cached.
  Outcome again = f.run(*engine, req(a));
  EXPECT_GT(again.usage.cached_tokens, 0);
  expect_cold_equal(req(a), again, "after a cancelled run");
}

}  // namespace
}  // namespace chimera::serving

namespace chimera::serving {
namespace {

using testutil::Fixture;
using testutil::Outcome;

TEST(CacheThinning, SnapshotsGiveWayFirstAndTheReportSaysSo) {
  Fixture f;
  EngineConfig c = f.config();
  c.snapshot_every = 4096;
  c.n_parallel = 1;
  auto words = [&](int i) { return f.encode(" verse " + std::to_string(i) + " of the psalm,"); };
  RequestParams p;
  std::vector<std::vector<TokenId>> msgs;
  for (int i = 0; i < 10; ++i) {
    msgs.push_back(words(i));
    p.prompt.insert(p.prompt.end(), msgs.back().begin(), msgs.back().end());
    p.boundaries.push_back(static_cast<uint32_t>(p.prompt.size()));
  }
  const std::vector<TokenId> gen = f.encode(" answer:");
  p.prompt.insert(p.prompt.end(), gen.begin(), gen.end());
  p.max_tokens = 4;
  p.sampling.temperature = 0;
  p.ignore_eos = true;
  p.top_logprobs = 1;
  // Measure: everything kept.
  uint64_t full = 0, slot = 0;
  {
    auto probe = f.engine(c);
    f.run(*probe, p);
    const nlohmann::json info = probe->cache_info();
    ASSERT_EQ(info["snapshots"].get<uint64_t>(), 11u);  // the boundaries and the prompt end
    full = info["bytes"].get<uint64_t>();
    slot = info["snapshot_bytes"].get<uint64_t>() / 11;
  }
  ASSERT_GT(slot, 0u);
  c.cache_mem = full - 3 * slot;
  auto engine = f.engine(c);
  f.run(*engine, p);
  const nlohmann::json info = engine->cache_info();
  EXPECT_LE(info["bytes"].get<uint64_t>(), c.cache_mem);
  ASSERT_EQ(info["n_entries"].get<int>(), 1);  // the entry saves more per byte: it stays
  std::vector<uint32_t> kept = info["entries"][0]["snapshots"].get<std::vector<uint32_t>>();
  EXPECT_LE(kept.size(), 8u);
  EXPECT_GT(engine->metrics().cache_evictions, 0u);
  // Edit the message right after a thinned boundary: the rollback lands on the nearest kept one.
  size_t m = 0;
  while (m < 10 && std::count(kept.begin(), kept.end(), p.boundaries[m])) ++m;
  ASSERT_LT(m, 10u);
  RequestParams edit = p;
  edit.prompt[p.boundaries[m]] = edit.prompt[p.boundaries[m]] == 5 ? 6 : 5;
  uint32_t expect = 0;
  for (uint32_t k : kept)
    if (k <= p.boundaries[m]) expect = std::max(expect, k);
  Outcome o = f.run(*engine, edit);
  EXPECT_EQ(o.usage.cached_tokens, expect);
  EXPECT_NE(o.cache.reason.find("snapshot evicted"), std::string::npos)
      << o.cache.reason << " kept " << testing::PrintToString(kept) << " edit at "
      << p.boundaries[m];
  EngineConfig none = f.config();
  none.cache_mem = 0;
  auto cold = f.engine(none);
  testutil::expect_same(f.run(*cold, edit), o, "edit after thinning");
}

// Many conversations used in turn (the worst case for plain LRU): under a budget that holds
// every conversation but few snapshots, the snapshots give way and every next turn forks its
// whole conversation.
TEST(CacheThinning, RoundRobinConversationsAllStayCached) {
  Fixture f;
  EngineConfig c = f.config();
  c.snapshot_every = 4096;
  const int kConvs = 6;
  std::vector<RequestParams> first(kConvs);
  for (int i = 0; i < kConvs; ++i) {
    RequestParams& p = first[i];
    for (int m = 0; m < 4; ++m) {
      const auto t =
          f.encode(" conversation " + std::to_string(i) + " message " + std::to_string(m) + ".");
      p.prompt.insert(p.prompt.end(), t.begin(), t.end());
      p.boundaries.push_back(static_cast<uint32_t>(p.prompt.size()));
    }
    p.max_tokens = 5;
    p.sampling = f.hot_sampling(i);
    p.ignore_eos = true;
    p.top_logprobs = 1;
  }
  uint64_t full = 0, slot = 0, snaps = 0;
  {
    auto probe = f.engine(c);
    for (const auto& p : first) f.run(*probe, p);
    const nlohmann::json info = probe->cache_info();
    ASSERT_EQ(info["n_entries"].get<int>(), kConvs);
    full = info["bytes"].get<uint64_t>();
    snaps = info["snapshots"].get<uint64_t>();
    slot = info["snapshot_bytes"].get<uint64_t>() / snaps;
  }
  ASSERT_GE(snaps, 12u);
  c.cache_mem = full - (snaps - 3) * slot;
  auto engine = f.engine(c);
  auto cold = f.engine([&] {
    EngineConfig n = f.config();
    n.cache_mem = 0;
    return n;
  }());
  std::vector<Outcome> out;
  for (const auto& p : first) out.push_back(f.run(*engine, p));
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < kConvs; ++i) {
      RequestParams next = first[i];
      next.prompt.insert(next.prompt.end(), out[i].choices[0].tokens.begin(),
                         out[i].choices[0].tokens.end());
      const auto t = f.encode(" and then " + std::to_string(round) + "?");
      next.prompt.insert(next.prompt.end(), t.begin(), t.end());
      next.boundaries.push_back(static_cast<uint32_t>(next.prompt.size()));
      const int64_t entry = static_cast<int64_t>(first[i].prompt.size() + 4);
      Outcome o = f.run(*engine, next);
      EXPECT_EQ(o.usage.cached_tokens, entry) << "conversation " << i << ": " << o.cache.reason;
      EXPECT_LE(engine->metrics().cache_bytes, c.cache_mem);
      testutil::expect_same(f.run(*cold, next), o, "conversation " + std::to_string(i));
      first[i] = next;
      out[i] = o;
    }
  }
  EXPECT_GT(engine->metrics().cache_evictions, 0u);
}

// bench_serve.py's switch scenario at small scale: conversations used in turn, each next turn
// sending the last answer back re-tokenized (it diverges inside the answer, as a random model's
// text does), so it needs the snapshot at the end of its last prompt (after the generation
// header); every turn leaves an old branch (the answer as generated) behind. Under a budget that
// holds every conversation and that one snapshot each, but not the old branches and the earlier
// snapshots, each next turn resumes at its last prompt's end and processes only what follows.
TEST(CacheThinning, RoundRobinTurnsKeepEachConversationsLastSnapshot) {
  Fixture f;
  EngineConfig c = f.config();
  c.snapshot_every = 4096;
  c.n_parallel = 2;
  const int kConvs = 6;
  const std::vector<TokenId> gen = f.encode("<|assistant|>");
  auto append = [](RequestParams& p, const std::vector<TokenId>& t) {
    p.prompt.insert(p.prompt.end(), t.begin(), t.end());
    p.boundaries.push_back(static_cast<uint32_t>(p.prompt.size()));
  };
  std::vector<RequestParams> turn(kConvs);
  for (int i = 0; i < kConvs; ++i) {
    RequestParams& p = turn[i];
    for (int m = 0; m < 4; ++m)
      append(p, f.encode(" conversation " + std::to_string(i) + " message " + std::to_string(m) +
                         " of the book of psalms."));
    p.prompt.insert(p.prompt.end(), gen.begin(), gen.end());
    p.max_tokens = 6;
    p.sampling = f.hot_sampling(i);
    p.ignore_eos = true;
    p.top_logprobs = 1;
  }
  // Everything the first round leaves, kept: 6 conversations, 5 snapshots each (4 message
  // boundaries and the prompt end).
  uint64_t full = 0, slot = 0;
  {
    auto probe = f.engine(c);
    for (const auto& p : turn) f.run(*probe, p);
    const nlohmann::json info = probe->cache_info();
    ASSERT_EQ(info["n_entries"].get<int>(), kConvs);
    ASSERT_EQ(info["snapshots"].get<uint64_t>(), 5u * kConvs);
    full = info["bytes"].get<uint64_t>();
    slot = info["snapshot_bytes"].get<uint64_t>() / info["snapshots"].get<uint64_t>();
  }
  ASSERT_GT(slot, 0u);
  // Less than that: room for every conversation, its last snapshot and the turns' new tokens
  // (three rounds of ~46 tokens each), not for every snapshot and old branch (one recurrent
  // state each, like a snapshot).
  c.cache_mem = full - kConvs * slot;
  auto engine = f.engine(c);
  EngineConfig none = f.config();
  none.cache_mem = 0;
  auto cold = f.engine(none);
  std::vector<Outcome> out;
  for (const auto& p : turn) out.push_back(f.run(*engine, p));
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < kConvs; ++i) {
      const RequestParams& prev = turn[i];
      const uint32_t prompt_end = static_cast<uint32_t>(prev.prompt.size());
      // The answer as sent back: its first two tokens as generated, then other text.
      RequestParams next = prev;
      std::vector<TokenId> answer(out[i].choices[0].tokens.begin(),
                                  out[i].choices[0].tokens.begin() + 2);
      const auto rest = f.encode(" as retold in round " + std::to_string(round));
      answer.insert(answer.end(), rest.begin(), rest.end());
      append(next, answer);
      append(next, f.encode(" and then, in round " + std::to_string(round) + "?"));
      next.prompt.insert(next.prompt.end(), gen.begin(), gen.end());
      std::vector<TokenId> seen = prev.prompt;
      seen.insert(seen.end(), out[i].choices[0].tokens.begin(), out[i].choices[0].tokens.end());
      const size_t diverge = lcp(seen, next.prompt);
      ASSERT_LT(diverge, prev.prompt.size() + 5) << "the answer must diverge inside the entry";
      ASSERT_GE(diverge, prev.prompt.size());
      Outcome o = f.run(*engine, next);
      EXPECT_EQ(o.usage.cached_tokens, static_cast<int64_t>(prompt_end))
          << "round " << round << ", conversation " << i << ": " << o.cache.reason;
      EXPECT_EQ(o.timings.prompt_processed + o.timings.prompt_replayed,
                static_cast<int64_t>(next.prompt.size() - prompt_end));
      EXPECT_LE(engine->metrics().cache_bytes, c.cache_mem);
      testutil::expect_same(
          f.run(*cold, next), o,
          "round " + std::to_string(round) + ", conversation " + std::to_string(i));
      turn[i] = std::move(next);
      out[i] = std::move(o);
    }
  }
  EXPECT_GT(engine->metrics().cache_evictions, 0u);
  EXPECT_GE(engine->cache_info()["n_entries"].get<int>(), kConvs);
}

TEST(CacheThinning, ACompletionAgainSamplesWithNoForwardPass) {
  Fixture f;
  EngineConfig c = f.config();
  auto engine = f.engine(c);
  RequestParams p = f.request("In the beginning God created the heaven and the earth", 6);
  p.sampling = f.hot_sampling(1);
  f.run(*engine, p);
  p.sampling.seed = 2;
  const uint64_t processed = engine->metrics().prompt_tokens_processed;
  Outcome again = f.run(*engine, p);
  EXPECT_EQ(again.usage.cached_tokens, static_cast<int64_t>(p.prompt.size())) << again.cache.reason;
  EXPECT_TRUE(again.timings.prompt_logits_reused);
  EXPECT_EQ(again.timings.prompt_processed + again.timings.prompt_replayed, 0);
  EXPECT_EQ(engine->metrics().prompt_tokens_processed, processed);
  EngineConfig none = f.config();
  none.cache_mem = 0;
  auto cold = f.engine(none);
  testutil::expect_same(f.run(*cold, p), again, "same prompt, another seed");
}

// A conversation that moved on: its first prompt's end lies inside its second turn's entry,
// before that turn's snapshot at the answer's end and its own prompt end. When another
// conversation then needs room (one snapshot short), that stale prompt end is what goes; the
// second turn's regeneration still runs nothing, and an edit of its user message still resumes
// at the answer's end.
TEST(CacheThinning, APromptEndTheConversationMovedOnFromGoesFirst) {
  Fixture f;
  EngineConfig c = f.config();
  c.snapshot_every = 4096;
  c.n_parallel = 1;  // a request's share of the budget holds all its snapshots: the cache picks
  // A long generation header and a short answer: by replay spared alone, the answer's end
  // (2 tokens past the first prompt's end) would go before the first prompt's end (a header
  // past the message end); the tier says otherwise.
  const std::vector<TokenId> gen =
      f.encode("<|assistant|> And the scribe wrote these words in his book:");
  auto add = [](RequestParams& p, const std::vector<TokenId>& t) {
    p.prompt.insert(p.prompt.end(), t.begin(), t.end());
    p.boundaries.push_back(static_cast<uint32_t>(p.prompt.size()));
  };
  auto first_turn = [&](const std::string& who) {
    RequestParams t1;
    add(t1, f.encode("System: you are a scribe of the book of " + who + "."));
    add(t1, f.encode(" Sing of the morning and of the evening."));
    t1.prompt.insert(t1.prompt.end(), gen.begin(), gen.end());
    t1.max_tokens = 2;
    t1.sampling = f.hot_sampling(3);
    t1.ignore_eos = true;
    t1.top_logprobs = 1;
    return t1;
  };
  const RequestParams a1 = first_turn("psalms"), b1 = first_turn("kings");
  auto second_turn = [&](const Outcome& o1) {
    RequestParams t2 = a1;
    t2.prompt.resize(a1.boundaries.back());  // without the generation header
    std::vector<TokenId> answer = gen;
    answer.insert(answer.end(), o1.choices[0].tokens.begin(), o1.choices[0].tokens.end());
    add(t2, answer);
    add(t2, f.encode(" Sing again."));
    t2.prompt.insert(t2.prompt.end(), gen.begin(), gen.end());
    return t2;
  };
  const uint32_t p1 = static_cast<uint32_t>(a1.prompt.size());
  // Everything kept: a's entry (its second turn) and b's.
  auto snapshots_of = [](const nlohmann::json& info, size_t tokens_at_least) {
    for (const auto& e : info["entries"])
      if (e["tokens"].get<size_t>() >= tokens_at_least)
        return e["snapshots"].get<std::vector<uint32_t>>();
    return std::vector<uint32_t>{};
  };
  uint64_t full = 0, slot = 0;
  std::vector<uint32_t> all_a;
  RequestParams a2;
  {
    auto probe = f.engine(c);
    a2 = second_turn(f.run(*probe, a1));
    f.run(*probe, a2);
    f.run(*probe, b1);
    const nlohmann::json info = probe->cache_info();
    ASSERT_EQ(info["n_entries"].get<int>(), 2);  // a's second turn holds its first
    all_a = snapshots_of(info, a2.prompt.size());
    // The message ends and the prompt ends of both turns.
    const std::vector<uint32_t> want = {
        a2.boundaries[0], a2.boundaries[1], p1,
        a2.boundaries[2], a2.boundaries[3], static_cast<uint32_t>(a2.prompt.size())};
    ASSERT_EQ(all_a, want);
    full = info["bytes"].get<uint64_t>();
    slot = info["snapshot_bytes"].get<uint64_t>() / info["snapshots"].get<uint64_t>();
  }
  c.cache_mem = full - slot / 2;
  auto engine = f.engine(c);
  ASSERT_EQ(second_turn(f.run(*engine, a1)).prompt, a2.prompt);
  f.run(*engine, a2);
  f.run(*engine, b1);
  const nlohmann::json info = engine->cache_info();
  EXPECT_LE(info["bytes"].get<uint64_t>(), c.cache_mem);
  ASSERT_EQ(info["n_entries"].get<int>(), 2);
  std::vector<uint32_t> want = all_a;
  want.erase(std::find(want.begin(), want.end(), p1));
  EXPECT_EQ(snapshots_of(info, a2.prompt.size()), want);
  EngineConfig none = f.config();
  none.cache_mem = 0;
  auto cold = f.engine(none);
  RequestParams regen = a2;
  regen.sampling.seed = 41;
  Outcome o = f.run(*engine, regen);
  EXPECT_EQ(o.usage.cached_tokens, static_cast<int64_t>(regen.prompt.size())) << o.cache.reason;
  EXPECT_TRUE(o.timings.prompt_logits_reused);
  testutil::expect_same(f.run(*cold, regen), o, "regeneration of the second turn");
  RequestParams edit = a2;
  edit.prompt[a2.boundaries[2]] = edit.prompt[a2.boundaries[2]] == 5 ? 6 : 5;
  o = f.run(*engine, edit);
  EXPECT_EQ(o.usage.cached_tokens, static_cast<int64_t>(a2.boundaries[2])) << o.cache.reason;
  testutil::expect_same(f.run(*cold, edit), o, "edit of the second user message");
}

// A system prompt that live conversations share outlasts the tip snapshots of other
// conversations: it serves every new user, a tip serves one conversation's next turn. With the
// tips ranked above it, a full cache dropped it and each new user ran the system prompt again.
TEST(CacheThinning, ASharedSystemPromptOutlastsOtherConversationsTips) {
  Fixture f;
  EngineConfig c = f.config();
  c.snapshot_every = 4096;
  c.n_parallel = 1;
  const std::vector<TokenId> system =
      f.encode("System: you answer questions about the weather, the sea and the stars.");
  const std::vector<TokenId> gen = f.encode("<|assistant|>");
  auto request = [&](const std::vector<TokenId>& first, const std::string& user) {
    RequestParams p;
    p.prompt = first;
    p.boundaries.push_back(static_cast<uint32_t>(p.prompt.size()));
    const auto t = f.encode(user);
    p.prompt.insert(p.prompt.end(), t.begin(), t.end());
    p.boundaries.push_back(static_cast<uint32_t>(p.prompt.size()));
    p.prompt.insert(p.prompt.end(), gen.begin(), gen.end());  // the generation header
    p.max_tokens = 2;
    p.sampling = f.hot_sampling(7);
    p.ignore_eos = true;
    p.top_logprobs = 1;
    return p;
  };
  const std::vector<RequestParams> shared = {request(system, " Apples?"),
                                             request(system, " Birds?")};
  std::vector<RequestParams> others;
  for (int i = 0; i < 4; ++i) {  // one message each: their snapshots are their tips
    RequestParams p = shared[0];
    p.prompt = f.encode("Conversation " + std::to_string(i) + ": a question?");
    p.boundaries = {static_cast<uint32_t>(p.prompt.size())};
    p.prompt.insert(p.prompt.end(), gen.begin(), gen.end());
    others.push_back(p);
  }
  auto run_all = [&](Engine& e) {
    for (const auto& p : shared) f.run(e, p);
    for (const auto& p : others) f.run(e, p);
  };
  uint64_t full = 0, slot = 0;
  {
    auto probe = f.engine(c);
    run_all(*probe);
    const nlohmann::json info = probe->cache_info();
    ASSERT_EQ(info["n_entries"].get<int>(), 6);
    full = info["bytes"].get<uint64_t>();
    slot = info["snapshot_bytes"].get<uint64_t>() / info["snapshots"].get<uint64_t>();
  }
  // Half a snapshot short: one snapshot goes, and every one left is a tip or the shared one.
  c.cache_mem = full - slot / 2;
  auto engine = f.engine(c);
  run_all(*engine);
  EXPECT_LE(engine->cache_info()["bytes"].get<uint64_t>(), c.cache_mem);
  EXPECT_GT(engine->metrics().cache_evictions, 0u);
  const RequestParams third = request(system, " Clouds?");
  const Outcome o = f.run(*engine, third);
  // It resumes at the system prompt's snapshot and replays only up to where it diverges.
  const size_t common =
      std::max(lcp(third.prompt, shared[0].prompt), lcp(third.prompt, shared[1].prompt));
  ASSERT_GE(common, system.size());
  EXPECT_EQ(o.usage.cached_tokens, static_cast<int64_t>(system.size())) << o.cache.reason;
  EXPECT_EQ(o.timings.prompt_replayed, static_cast<int64_t>(common - system.size()))
      << o.cache.reason;
  EngineConfig none = f.config();
  none.cache_mem = 0;
  auto cold = f.engine(none);
  testutil::expect_same(f.run(*cold, third), o, "a third user of the shared system prompt");
}

TEST(Engine, TimeoutEndsTheRequest) {
  Fixture f;
  auto engine = f.engine();
  test_hooks::set_step_delay(*engine, std::chrono::milliseconds(2));
  RequestParams p = f.request("And God said", -1);
  p.timeout_s = 0.05;
  Outcome o = f.run(*engine, p);
  ASSERT_EQ(o.choices.size(), 1u);
  EXPECT_EQ(o.choices[0].finish, "timeout");
  EXPECT_GT(o.usage.completion_tokens, 0);
  EXPECT_LT(o.usage.completion_tokens, 200);
}

}  // namespace
}  // namespace chimera::serving
