// `chimera serve`: the OpenAI-compatible HTTP server (tools/server) in front of the serving
// engine (src/serving): continuous batching and an exact prefix cache shared by all requests.
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <thread>

#include "command.h"
#include "http_server.h"
#include "model_options.h"
#include "runtime/generate.h"
#include "serving/engine.h"

namespace chimera::cli {
namespace {

int run_serve(int argc, char** argv) {
  CLI::App app{
      "Serve the model over HTTP with an OpenAI-compatible API (/v1/chat/completions, "
      "/v1/completions, /v1/models, /health, /metrics, /tokenize, /detokenize, /apply-template, "
      "/v1/cache) and a chat page at /. Requests are batched continuously; a prefix cache shared "
      "by all requests keeps finished conversations, so a new request processes only the tokens "
      "no earlier request had. Ctrl-C (SIGINT) or SIGTERM stops cleanly.",
      "chimera serve"};
  ModelOptions mo;
  mo.add_to(app);
  std::string host = "127.0.0.1", api_key, cache_file, cache_mem = "1G", max_body = "8M";
  int port = 8080, http_threads = 0;
  uint32_t n_parallel = 4, queue = 64, step_budget = 512;
  double timeout = 600;
  app.add_option("--host", host, "address to listen on (default 127.0.0.1: this machine only)");
  app.add_option("--port", port, "TCP port (default 8080; 0: any free port)")
      ->check(CLI::Range(0, 65535));
  app.add_option("--parallel", n_parallel, "requests decoding at once (default 4); also -np")
      ->check(CLI::Range(1u, 256u));
  app.add_option("--cache-mem", cache_mem,
                 "bytes the prefix cache may keep after requests finish, within --mem (default "
                 "1G)");
  app.add_option("--cache-file", cache_file,
                 "load the prefix cache from this file at start and save it at shutdown");
  app.add_option("--api-key", api_key,
                 "require 'Authorization: Bearer KEY' ($CHIMERA_API_KEY when not given)");
  app.add_option("--timeout", timeout, "seconds a request may run before it is ended (600)")
      ->check(CLI::Range(0.001, 1e7));
  app.add_option("--queue", queue, "requests waiting beyond which the server answers 503 (64)")
      ->check(CLI::Range(1u, 1u << 20));
  app.add_option("--max-body", max_body, "largest request body accepted (default 8M; else 413)");
  app.add_option("--step-tokens", step_budget,
                 "tokens per engine step: decode tokens plus prompt chunks (default 512)")
      ->check(CLI::Range(1u, 1u << 20));
  app.add_option("--http-threads", http_threads, "HTTP worker threads (default: -np + --queue + 8)")
      ->check(CLI::Range(0, 4096));
  SpecOptions spec;
  spec.add_to(app);
  mo.snapshot_every = 1024;  // the prefix cache's extra snapshots along long prompts
  // llama.cpp spells it -np, a multi-letter short flag CLI11 does not allow: rename it first.
  std::vector<std::string> args(argv + 1, argv + argc);
  for (auto& a : args)
    if (a == "-np") a = "--parallel";
  std::reverse(args.begin(), args.end());  // CLI11 takes the arguments reversed
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (api_key.empty())
    if (const char* env = std::getenv("CHIMERA_API_KEY")) api_key = env;

  auto mem = parse_bytes(mo.mem);
  if (!mem.ok()) return report_error("serve", mem.status());
  auto cache_bytes = parse_bytes(cache_mem);
  if (!cache_bytes.ok()) return report_error("serve", cache_bytes.status());
  if (*cache_bytes >= *mem)
    return report_error(
        "serve", Error(ErrorCode::kInvalidArgument, "--cache-mem ", cache_mem,
                       " must be less than --mem ", mo.mem, " (running requests need memory too)"));
  auto body_bytes = parse_bytes(max_body);
  if (!body_bytes.ok()) return report_error("serve", body_bytes.status());

  // Every thread started from here on inherits a mask blocking SIGINT/SIGTERM; one thread waits
  // for them, so shutdown runs in ordinary code, not in a signal handler.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client gone mid-write is an error return, not a signal

  auto lm = load_for_inference(mo, /*need_tokenizer=*/true, /*create_context=*/false);
  if (!lm.ok()) return report_error("serve", lm.status());
  auto cp = mo.context_params();
  if (!cp.ok()) return report_error("serve", cp.status());

  // A draft model's sequences mirror the engine's (n_parallel * 16 running + 64 parked). It
  // shares the engine context's pool (the engine thread alone decodes with either).
  cp->threads = std::make_shared<ThreadContext>(cp->n_threads);
  auto dr = load_drafter(spec, mo, *lm, n_parallel * 16 + 64, cp->threads);
  if (!dr.ok()) return report_error("serve", dr.status());
  serving::EngineConfig ec;
  ec.drafter = dr->drafter.get();
  ec.spec = spec.params();
  ec.n_parallel = n_parallel;
  ec.n_ctx = mo.n_ctx;
  ec.queue_capacity = queue;
  ec.step_token_budget = step_budget;
  ec.cache_mem = *cache_bytes;
  ec.snapshot_every = mo.snapshot_every;
  ec.cache_file = cache_file;
  auto engine = serving::Engine::create(*lm->model, *lm->tokenizer, *cp, ec);
  if (!engine.ok()) return report_error("serve", engine.status());

  server::ServerConfig sc;
  sc.host = host;
  sc.port = port;
  sc.api_key = api_key;
  sc.max_body_bytes = *body_bytes;
  sc.request_timeout_s = timeout;
  sc.http_threads = http_threads;
  sc.model_id = std::filesystem::path(lm->path).filename().string();
  sc.chat_template = chat_template_of(*lm->model->file);
  server::HttpServer http(**engine, *lm->tokenizer, sc);
  auto bound = http.bind();
  if (!bound.ok()) {
    (*engine)->stop();
    return report_error("serve", bound.status());
  }

  std::atomic<bool> finished{false};
  std::thread signal_waiter([&] {
    const timespec poll = {0, 200 * 1000 * 1000};
    while (!finished.load()) {
      const int sig = sigtimedwait(&stop_signals, nullptr, &poll);
      if (sig != SIGINT && sig != SIGTERM) continue;
      std::fprintf(stderr, "chimera serve: %s: stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
      // The engine first: it ends every request ("cancelled"), so open streams finish and the
      // HTTP workers can be joined; then it saves the cache file.
      (*engine)->stop();
      http.stop();
      return;
    }
  });

  std::printf("chimera serve: listening on http://%s:%d (model %s, -np %u, -c %u%s)\n",
              host.c_str(), *bound, sc.model_id.c_str(), n_parallel, mo.n_ctx,
              api_key.empty() ? "" : ", API key required");
  std::fflush(stdout);
  Status st = http.listen();
  finished.store(true);
  signal_waiter.join();
  (*engine)->stop();  // idempotent; saves the cache file if the signal path did not
  if (!st.ok()) return report_error("serve", st);
  std::fprintf(stderr, "chimera serve: stopped\n");
  return 0;
}

const Registrar kServe({"serve", "OpenAI-compatible HTTP server with a shared prefix cache",
                        run_serve});

}  // namespace
}  // namespace chimera::cli
