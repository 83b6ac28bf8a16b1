// `chimera serve`'s HTTP edge: OpenAI-compatible routes over cpp-httplib, in front of a
// serving::Engine. HTTP threads parse, render chat templates, tokenize, submit and stream the
// engine's events back; they never touch the model's Context (shared/design/SERVER.md).
#pragma once

#include <memory>
#include <string>

#include "core/status.h"
#include "runtime/tokenizer.h"
#include "serving/engine.h"

namespace chimera::server {

struct ServerConfig {
  std::string host = "127.0.0.1";
  int port = 8080;      // 0: any free port (bind() says which)
  std::string api_key;  // "": no authentication
  size_t max_body_bytes = 8u << 20;
  double request_timeout_s = 600;
  int http_threads = 0;  // 0: enough for every running and queued request, plus some
  std::string model_id;  // the name /v1/models lists and responses carry
  std::string chat_template;
};

class HttpServer {
 public:
  // `engine` and `tokenizer` must outlive the server.
  HttpServer(serving::Engine& engine, const Tokenizer& tokenizer, ServerConfig cfg);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds the listening socket; returns the port.
  Result<int> bind();
  // Serves until stop() (from any thread); blocks.
  Status listen();
  void stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace chimera::server
