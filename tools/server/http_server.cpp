#include "http_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <mutex>
#include <random>

#include "api_request.h"
#include "api_response.h"
#include "chat_prompt.h"
#include "client_connection.h"
#include "runtime/chat_template.h"
#include "webui/webui.h"

namespace chimera::server {

using nlohmann::json;
using ojson = nlohmann::ordered_json;
using namespace std::chrono_literals;

namespace {

constexpr auto kPollInterval = 100ms;
constexpr auto kKeepAliveEvery = 1s;  // an SSE comment while nothing else is sent

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  if (e.status == 503) res.set_header("Retry-After", "1");
  res.set_content(dump_json(error_body(e)), "application/json");
}

ApiError server_error(int status, std::string message, std::string type, std::string code = "") {
  ApiError e;
  e.status = status;
  e.message = std::move(message);
  e.type = std::move(type);
  e.code = std::move(code);
  return e;
}

// An engine error as the API reports it.
ApiError engine_error(const Status& st) {
  switch (st.code()) {
    case ErrorCode::kInvalidArgument:
      return server_error(400, st.message(), "invalid_request_error");
    case ErrorCode::kUnavailable:
      return server_error(503, st.message(), "unavailable_error", "queue_full");
    case ErrorCode::kCancelled:
      return server_error(503, st.message(), "unavailable_error", "shutting_down");
    case ErrorCode::kOutOfMemory:
      return server_error(503, st.message(), "unavailable_error", "out_of_memory");
    default:
      return server_error(500, st.ToString(), "server_error");
  }
}

// Nobody reads it; the status shows in the logs and in /metrics' responses by status.
void send_client_closed(httplib::Response& res) {
  send_error(res, server_error(499, "the client closed the connection", "invalid_request_error",
                               "client_closed"));
}

// Compares in time that depends on the lengths only, not on where the strings differ.
bool constant_time_equal(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() != b.size();
  for (size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  return diff == 0;
}

// A prompt and what to do with it, ready for the engine.
struct PreparedRequest {
  serving::RequestParams params;
  ResponseMeta meta;
  bool stream = false;
  bool include_usage = false;
};

}  // namespace

struct HttpServer::Impl {
  serving::Engine& engine;
  const Tokenizer& tok;
  ServerConfig cfg;
  httplib::Server http;
  std::mutex rng_mu;
  std::mt19937_64 rng{std::random_device{}()};
  std::mutex counters_mu;
  HttpCounters counters;
  const int64_t started = static_cast<int64_t>(std::time(nullptr));
  int listen_fd = -1;  // the listening socket, as httplib's socket-options hook saw it

  Impl(serving::Engine& e, const Tokenizer& t, ServerConfig c)
      : engine(e), tok(t), cfg(std::move(c)) {}

  uint64_t random_u64() {
    std::lock_guard<std::mutex> lock(rng_mu);
    return rng();
  }

  std::string new_id(const char* prefix) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%s%016llx%08llx", prefix,
                  static_cast<unsigned long long>(random_u64()),
                  static_cast<unsigned long long>(random_u64() & 0xffffffffu));
    return buf;
  }

  void setup_routes();
  bool authorized(const httplib::Request& req) const;

  // Shared by chat and text completions: validation against the model, submission, response.
  std::optional<ApiError> prepare(const GenerationRequest& g, std::vector<TokenId> prompt,
                                  std::vector<uint32_t> boundaries, bool chat,
                                  PreparedRequest& out);
  void respond(PreparedRequest p, const httplib::Request& req, httplib::Response& res);
  void respond_stream(std::shared_ptr<serving::RequestHandle> h, PreparedRequest p,
                      ClientConnection conn, httplib::Response& res);

  void chat_completions(const httplib::Request& req, httplib::Response& res);
  void completions(const httplib::Request& req, httplib::Response& res);
};

bool HttpServer::Impl::authorized(const httplib::Request& req) const {
  if (cfg.api_key.empty()) return true;
  const std::string auth = req.get_header_value("Authorization");
  const std::string expected = "Bearer " + cfg.api_key;
  return constant_time_equal(auth, expected);
}

std::optional<ApiError> HttpServer::Impl::prepare(const GenerationRequest& g,
                                                  std::vector<TokenId> prompt,
                                                  std::vector<uint32_t> boundaries, bool chat,
                                                  PreparedRequest& out) {
  const serving::EngineConfig& ec = engine.config();
  if (prompt.empty()) return invalid_field(chat ? "messages" : "prompt", "the prompt is empty");
  // The prompt plus the tokens asked for must fit one sequence; with no max_tokens, at least one
  // generated token must.
  const int64_t n_prompt = static_cast<int64_t>(prompt.size());
  const int64_t wanted = n_prompt + (g.max_tokens > 0 ? g.max_tokens : 1);
  if (wanted > static_cast<int64_t>(ec.n_ctx)) {
    ApiError e;
    e.status = 400;
    e.code = "context_length_exceeded";
    e.param = g.max_tokens > 0 ? "max_tokens" : (chat ? "messages" : "prompt");
    e.message = StrCat("the prompt has ", n_prompt, " tokens",
                       g.max_tokens > 0 ? StrCat(" and max_tokens is ", g.max_tokens) : "",
                       ": together more than the context of ", ec.n_ctx, " tokens");
    e.extra = {{"n_prompt_tokens", n_prompt}, {"n_ctx", ec.n_ctx}};
    return e;
  }
  serving::RequestParams& rp = out.params;
  rp.prompt = std::move(prompt);
  rp.boundaries = std::move(boundaries);
  rp.sampling = g.sampling;
  if (!g.seed_given) rp.sampling.seed = random_u64();
  rp.max_tokens = g.max_tokens;
  rp.stop = g.stop;
  rp.n = g.n;
  rp.top_logprobs = g.top_logprobs;
  rp.ignore_eos = g.ignore_eos;
  rp.draft_max = g.draft_max;
  rp.timeout_s = cfg.request_timeout_s;
  out.meta.id = new_id(chat ? "chatcmpl-" : "cmpl-");
  out.meta.created = static_cast<int64_t>(std::time(nullptr));
  out.meta.model = cfg.model_id;
  out.meta.chat = chat;
  out.stream = g.stream;
  out.include_usage = g.include_usage;
  rp.id = out.meta.id;
  return std::nullopt;
}

void HttpServer::Impl::respond(PreparedRequest p, const httplib::Request& req,
                               httplib::Response& res) {
  const int n = p.params.n, top_logprobs = p.params.top_logprobs;
  const ClientConnection conn = ClientConnection::of(req);
  // A client that sent its request and left (it waited for a worker thread) costs no compute.
  if (conn.closed()) return send_client_closed(res);
  auto submitted = engine.submit(std::move(p.params));
  if (!submitted.ok()) return send_error(res, engine_error(submitted.status()));
  std::shared_ptr<serving::RequestHandle> h = std::move(submitted).value();
  if (p.stream) return respond_stream(std::move(h), std::move(p), conn, res);

  std::vector<ChoiceResult> choices(n);
  for (;;) {
    auto ev = h->next(kPollInterval);
    // The engine ends every request (timeout, stop) with kDone or kError; a client that left
    // ends it sooner, freeing its sequence (nothing is written back). One peek per event.
    if (conn.closed()) {
      h->cancel();
      return send_client_closed(res);
    }
    if (!ev) continue;
    if (ev->kind == serving::Event::Kind::kError) return send_error(res, engine_error(ev->error));
    if (ev->kind == serving::Event::Kind::kDone) {
      res.set_content(dump_json(completion_response(p.meta, choices, *ev, top_logprobs, tok)),
                      "application/json");
      return;
    }
    if (ev->choice < 0 || ev->choice >= n) continue;
    ChoiceResult& c = choices[ev->choice];
    c.text += ev->text;
    c.logprobs.insert(c.logprobs.end(), ev->logprobs.begin(), ev->logprobs.end());
    if (ev->finish_reason) c.finish_reason = *ev->finish_reason;
  }
}

void HttpServer::Impl::respond_stream(std::shared_ptr<serving::RequestHandle> h, PreparedRequest p,
                                      ClientConnection conn, httplib::Response& res) {
  struct StreamState {
    std::shared_ptr<serving::RequestHandle> handle;
    PreparedRequest p;
    std::vector<bool> started;
    std::vector<size_t> text_bytes;
  };
  auto st = std::make_shared<StreamState>();
  st->handle = std::move(h);
  st->started.assign(p.params.n, false);
  st->text_bytes.assign(p.params.n, 0);
  st->p = std::move(p);
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, st, conn](size_t, httplib::DataSink& sink) -> bool {
        auto last_write = std::chrono::steady_clock::now();
        auto write = [&](const std::string& s) {
          last_write = std::chrono::steady_clock::now();
          return sink.write(s.data(), s.size());
        };
        const bool logprobs_on = st->p.params.top_logprobs >= 0;
        // A chunk carrying a finish_reason is held until the next event, so that the stream's
        // last one can also carry the request's timings.
        json held;  // null: none
        for (;;) {
          auto ev = st->handle->next(kPollInterval);
          if (conn.closed()) {  // sooner than a failed write, which needs the peer's reset
            st->handle->cancel();
            return false;
          }
          if (!ev) {
            // Nothing to send: a comment line also finds out whether the client is still there
            // (where its socket was not found).
            if (std::chrono::steady_clock::now() - last_write >= kKeepAliveEvery &&
                !write(": keep-alive\n\n")) {
              st->handle->cancel();
              return false;
            }
            continue;
          }
          if (ev->kind == serving::Event::Kind::kDelta) {
            if (ev->choice < 0 || ev->choice >= static_cast<int>(st->started.size())) continue;
            const bool first = !st->started[ev->choice];
            if (!first && ev->text.empty() && !ev->finish_reason &&
                (!logprobs_on || ev->logprobs.empty()))
              continue;
            st->started[ev->choice] = true;
            json chunk = delta_chunk(st->p.meta, *ev, first, logprobs_on, tok);
            if (logprobs_on && !st->p.meta.chat)
              chunk["choices"][0]["logprobs"] =
                  logprobs_json(ev->logprobs, false, tok, st->text_bytes[ev->choice]);
            st->text_bytes[ev->choice] += ev->text.size();
            if (!held.is_null() && !write(sse_event(held))) {
              st->handle->cancel();
              return false;
            }
            held = nullptr;
            if (ev->finish_reason) {
              held = std::move(chunk);
            } else if (!write(sse_event(chunk))) {
              st->handle->cancel();
              return false;
            }
            continue;
          }
          std::string tail;
          if (ev->kind == serving::Event::Kind::kError) {
            if (!held.is_null()) tail += sse_event(held);
            tail += sse_event(error_body(engine_error(ev->error)));
          } else {
            if (!held.is_null()) {
              held["timings"] = timings_json(ev->timings);
              held["cache"] = cache_report_json(ev->cache);
              tail += sse_event(held);
            }
            if (st->p.include_usage) tail += sse_event(usage_chunk(st->p.meta, *ev));
          }
          tail += "data: [DONE]\n\n";
          if (!write(tail)) return false;
          sink.done();
          return true;
        }
      },
      [st](bool) { st->handle->cancel(); });  // idempotent; frees the request if still running
}

void HttpServer::Impl::chat_completions(const httplib::Request& req, httplib::Response& res) {
  auto parsed = parse_chat_request(req.body);
  if (!parsed.ok()) return send_error(res, parsed.error());
  ChatRequest& r = parsed.value();
  auto prompt = render_chat_prompt(tok, cfg.chat_template, r.messages, r.template_vars);
  if (!prompt.ok()) {
    const bool client_fault = prompt.status().code() == ErrorCode::kInvalidArgument;
    ApiError e = client_fault
                     ? invalid_field("messages", StrCat("the chat template refused the "
                                                        "messages: ",
                                                        prompt.status().message()))
                     : server_error(500, StrCat("chat template: ", prompt.status().ToString()),
                                    "server_error");
    return send_error(res, e);
  }
  PreparedRequest p;
  if (auto e = prepare(r.gen, std::move(prompt->tokens), std::move(prompt->boundaries), true, p))
    return send_error(res, *e);
  respond(std::move(p), req, res);
}

void HttpServer::Impl::completions(const httplib::Request& req, httplib::Response& res) {
  auto parsed = parse_completion_request(req.body);
  if (!parsed.ok()) return send_error(res, parsed.error());
  CompletionRequest& r = parsed.value();
  std::vector<TokenId> prompt;
  if (r.prompt_text) {
    auto ids = tok.encode(*r.prompt_text, {.add_special = true, .parse_special = true});
    if (!ids.ok())
      return send_error(res, invalid_field("prompt", StrCat("cannot tokenize the prompt: ",
                                                            ids.status().message())));
    prompt = std::move(ids).value();
  } else {
    for (size_t i = 0; i < r.prompt_tokens.size(); ++i)
      if (!tok.valid(r.prompt_tokens[i]))
        return send_error(
            res, invalid_field(StrCat("prompt[", i, "]"),
                               StrCat("token id ", r.prompt_tokens[i],
                                      " is outside the vocabulary (", tok.n_tokens(), " tokens)")));
    prompt = std::move(r.prompt_tokens);
  }
  PreparedRequest p;
  if (auto e = prepare(r.gen, std::move(prompt), {}, false, p)) return send_error(res, *e);
  respond(std::move(p), req, res);
}

void HttpServer::Impl::setup_routes() {
  auto json_reply = [](httplib::Response& res, const json& j) {
    res.set_content(dump_json(j), "application/json");
  };

  http.Post("/v1/chat/completions",
            [this](const httplib::Request& q, httplib::Response& r) { chat_completions(q, r); });
  http.Post("/chat/completions",
            [this](const httplib::Request& q, httplib::Response& r) { chat_completions(q, r); });
  http.Post("/v1/completions",
            [this](const httplib::Request& q, httplib::Response& r) { completions(q, r); });
  http.Post("/completions",
            [this](const httplib::Request& q, httplib::Response& r) { completions(q, r); });

  auto models = [this, json_reply](const httplib::Request&, httplib::Response& res) {
    const auto& ec = engine.config();
    json_reply(res, {{"object", "list"},
                     {"data", json::array({{{"id", cfg.model_id},
                                            {"object", "model"},
                                            {"created", started},
                                            {"owned_by", "chimera"},
                                            {"meta",
                                             {{"n_ctx", ec.n_ctx},
                                              {"n_parallel", ec.n_parallel},
                                              {"n_vocab", tok.n_tokens()}}}}})}});
  };
  http.Get("/v1/models", models);
  http.Get("/models", models);

  webui::mount(http);  // GET /: the chat page (tools/server/webui)
  http.Get("/health", [json_reply](const httplib::Request&, httplib::Response& res) {
    json_reply(res, {{"status", "ok"}});
  });

  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    HttpCounters c;
    {
      std::lock_guard<std::mutex> lock(counters_mu);
      c = counters;
    }
    res.set_content(prometheus_text(engine.metrics(), c), "text/plain; version=0.0.4");
  });

  http.Get("/v1/cache", [this, json_reply](const httplib::Request&, httplib::Response& res) {
    json_reply(res, engine.cache_info());
  });

  http.Post("/tokenize", [this, json_reply](const httplib::Request& req, httplib::Response& res) {
    auto parsed = parse_tokenize_request(req.body);
    if (!parsed.ok()) return send_error(res, parsed.error());
    const TokenizeRequest& r = parsed.value();
    auto ids =
        tok.encode(r.content, {.add_special = r.add_special, .parse_special = r.parse_special});
    if (!ids.ok()) return send_error(res, invalid_field("content", ids.status().message()));
    json tokens = json::array();
    for (TokenId id : *ids) {
      if (r.with_pieces)
        tokens.push_back({{"id", id}, {"piece", tok.piece(id, true)}});
      else
        tokens.push_back(id);
    }
    json_reply(res, {{"tokens", tokens}});
  });

  http.Post("/detokenize", [this, json_reply](const httplib::Request& req, httplib::Response& res) {
    auto parsed = parse_detokenize_request(req.body);
    if (!parsed.ok()) return send_error(res, parsed.error());
    auto text = tok.decode(parsed.value().tokens, {.special = true});
    if (!text.ok()) return send_error(res, invalid_field("tokens", text.status().message()));
    json_reply(res, {{"content", *text}});
  });

  // The prompt a chat request would run, its tokens and message boundaries (llama-server has
  // /apply-template; the tokens and boundaries are chimera's addition).
  http.Post("/apply-template", [this, json_reply](const httplib::Request& req,
                                                  httplib::Response& res) {
    auto parsed = parse_apply_template_request(req.body);
    if (!parsed.ok()) return send_error(res, parsed.error());
    auto p = render_chat_prompt(tok, cfg.chat_template, parsed.value().messages,
                                parsed.value().template_vars);
    if (!p.ok()) return send_error(res, invalid_field("messages", p.status().message()));
    json_reply(res, {{"prompt", p->text}, {"tokens", p->tokens}, {"boundaries", p->boundaries}});
  });

  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    // The health check and the chat page (it asks for the key itself) stay open.
    if (req.path == "/health" || webui::find_asset(req.path) || authorized(req))
      return httplib::Server::HandlerResponse::Unhandled;
    ApiError e = server_error(401,
                              req.has_header("Authorization")
                                  ? "invalid API key"
                                  : "missing API key: send 'Authorization: Bearer KEY'",
                              "invalid_request_error", "invalid_api_key");
    send_error(res, e);
    return httplib::Server::HandlerResponse::Handled;
  });

  // Statuses httplib produces itself (unknown route, body too large, bad request line) get the
  // OpenAI error shape too.
  http.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    switch (res.status) {
      case 404:
        send_error(res, server_error(404, StrCat("unknown route: ", req.method, " ", req.path),
                                     "invalid_request_error", "not_found"));
        break;
      case 413:
        send_error(res, server_error(
                            413, StrCat("request body larger than ", cfg.max_body_bytes, " bytes"),
                            "invalid_request_error", "request_too_large"));
        break;
      default:
        send_error(res, server_error(res.status, StrCat("HTTP ", res.status),
                                     res.status >= 500 ? "server_error" : "invalid_request_error"));
    }
  });

  http.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown exception";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        send_error(res, server_error(500, StrCat("internal error: ", what), "server_error"));
      });

  http.set_logger([this](const httplib::Request&, const httplib::Response& res) {
    std::lock_guard<std::mutex> lock(counters_mu);
    ++counters.responses_by_status[res.status];
  });
}

HttpServer::HttpServer(serving::Engine& engine, const Tokenizer& tokenizer, ServerConfig cfg)
    : impl_(std::make_unique<Impl>(engine, tokenizer, std::move(cfg))) {
  Impl& s = *impl_;
  const auto& ec = engine.config();
  const size_t threads = s.cfg.http_threads > 0
                             ? static_cast<size_t>(s.cfg.http_threads)
                             : static_cast<size_t>(ec.n_parallel) + ec.queue_capacity + 8;
  s.http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  s.http.set_payload_max_length(s.cfg.max_body_bytes);
  s.http.set_keep_alive_max_count(1000);
  s.http.set_tcp_nodelay(true);
  // SO_REUSEADDR only: httplib's default also sets SO_REUSEPORT, which would let a second server
  // start on a port already in use and silently share its connections.
  s.http.set_socket_options([&s](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, reinterpret_cast<const void*>(&yes), sizeof yes);
    s.listen_fd = sock;
  });
  s.setup_routes();
}

HttpServer::~HttpServer() {
  stop();
}

Result<int> HttpServer::bind() {
  const int port =
      impl_->cfg.port == 0
          ? impl_->http.bind_to_any_port(impl_->cfg.host)
          : (impl_->http.bind_to_port(impl_->cfg.host, impl_->cfg.port) ? impl_->cfg.port : -1);
  if (port < 0)
    return Error(ErrorCode::kIo, "cannot listen on ", impl_->cfg.host, ":", impl_->cfg.port,
                 " (address in use, or not an address of this machine?)");
  // httplib 0.11 listens with a backlog of 5: under a burst of clients (and a busy CPU delaying
  // its accept thread) the kernel's accept queue overflows, and clients see stalls and resets.
  // listen() again on the bound socket only raises the backlog.
  if (impl_->listen_fd >= 0) (void)::listen(impl_->listen_fd, SOMAXCONN);
  return port;
}

Status HttpServer::listen() {
  if (!impl_->http.listen_after_bind())
    return Error(ErrorCode::kIo, "the HTTP server stopped with an error");
  return Status::Ok();
}

void HttpServer::stop() {
  if (impl_) impl_->http.stop();
}

}  // namespace chimera::server
