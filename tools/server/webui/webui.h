// The browser chat page of `chimera serve` (tools/server/webui/index.html, style.css, app.js),
// compiled into the binary. The server mounts it with one call:
//
//   chimera::webui::mount(server);   // GET /, /webui/style.css, /webui/app.js
//
// The page talks only to its own origin: every response carries a Content-Security-Policy that
// allows scripts, styles and fetches from 'self' alone.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <utility>

namespace chimera::webui {

struct Asset {
  std::string_view url_path;      // "/", "/webui/style.css", ...
  std::string_view content_type;  // with charset
  std::string_view body;
};

// Every file of the page, index first.
std::span<const Asset> assets();
// The asset served at `url_path`, or nullptr.
const Asset* find_asset(std::string_view url_path);
// Headers sent with every asset: the CSP, nosniff, no-referrer, no-cache (a rebuilt binary
// serves its new page at once).
std::span<const std::pair<std::string_view, std::string_view>> response_headers();

// Registers GET for every asset on an httplib::Server. A template, so that this library does not
// depend on how httplib was built (it only needs Get, set_header and set_content).
template <class Server>
void mount(Server& server) {
  for (const Asset& asset : assets()) {
    server.Get(std::string(asset.url_path), [&asset](const auto& /*req*/, auto& res) {
      for (const auto& [name, value] : response_headers())
        res.set_header(std::string(name), std::string(value));
      res.set_content(asset.body.data(), asset.body.size(), std::string(asset.content_type));
    });
  }
}

}  // namespace chimera::webui
