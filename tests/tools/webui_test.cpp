// The page compiled into the binary is the page in tools/server/webui, byte for byte, and every
// response carries a CSP that keeps it on its own origin.
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>

#include "webui/webui.h"

namespace {

std::string read_source(const std::string& name) {
  std::ifstream in(std::string(CHIMERA_SOURCE_DIR) + "/tools/server/webui/" + name,
                   std::ios::binary);
  EXPECT_TRUE(in) << name;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(WebUi, EmbeddedFilesEqualTheSources) {
  const std::map<std::string, std::string> files = {
      {"/", "index.html"}, {"/webui/style.css", "style.css"}, {"/webui/app.js", "app.js"}};
  ASSERT_EQ(chimera::webui::assets().size(), files.size());
  for (const auto& [path, name] : files) {
    const chimera::webui::Asset* a = chimera::webui::find_asset(path);
    ASSERT_NE(a, nullptr) << path;
    const std::string source = read_source(name);
    ASSERT_GT(source.size(), 100u) << name;
    EXPECT_EQ(a->body, source) << name << " differs from the embedded copy: rebuild";
  }
  EXPECT_EQ(chimera::webui::find_asset("/nope"), nullptr);
  EXPECT_TRUE(chimera::webui::find_asset("/")->content_type.starts_with("text/html"));
  EXPECT_TRUE(
      chimera::webui::find_asset("/webui/app.js")->content_type.starts_with("text/javascript"));
}

TEST(WebUi, IndexReferencesOnlyEmbeddedFiles) {
  const std::string_view html = chimera::webui::find_asset("/")->body;
  EXPECT_NE(html.find("href=\"webui/style.css\""), std::string_view::npos);
  EXPECT_NE(html.find("src=\"webui/app.js\""), std::string_view::npos);
  EXPECT_EQ(html.find("http://"), std::string_view::npos);  // no network beyond its own origin
  EXPECT_EQ(html.find("https://"), std::string_view::npos);
}

// A minimal stand-in for httplib::Server/Response: mount() registers every asset with headers.
struct FakeResponse {
  std::map<std::string, std::string> headers;
  std::string body, content_type;
  void set_header(const std::string& k, const std::string& v) { headers[k] = v; }
  void set_content(const char* s, size_t n, const std::string& type) {
    body.assign(s, n);
    content_type = type;
  }
};
struct FakeServer {
  std::map<std::string, std::function<void(const int&, FakeResponse&)>> routes;
  FakeServer& Get(const std::string& pattern, std::function<void(const int&, FakeResponse&)> h) {
    routes[pattern] = std::move(h);
    return *this;
  }
};

TEST(WebUi, MountServesEveryAssetWithItsPolicy) {
  FakeServer server;
  chimera::webui::mount(server);
  ASSERT_EQ(server.routes.size(), 3u);
  FakeResponse res;
  server.routes.at("/")(0, res);
  EXPECT_EQ(res.body, read_source("index.html"));
  EXPECT_EQ(res.content_type, "text/html; charset=utf-8");
  const std::string csp = res.headers.at("Content-Security-Policy");
  EXPECT_NE(csp.find("connect-src 'self'"), std::string::npos);
  EXPECT_NE(csp.find("script-src 'self'"), std::string::npos);
  EXPECT_EQ(csp.find("unsafe-inline"), std::string::npos);
  EXPECT_EQ(res.headers.at("X-Content-Type-Options"), "nosniff");
}

}  // namespace
