#include "client_connection.h"

#include <dirent.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <string>

namespace chimera::server {

namespace {

// The numeric address and port of a socket end, formatted as httplib formats Request's.
bool address_of(const sockaddr_storage& addr, socklen_t len, std::string& host, int& port) {
  char buf[NI_MAXHOST];
  if (getnameinfo(reinterpret_cast<const sockaddr*>(&addr), len, buf, sizeof buf, nullptr, 0,
                  NI_NUMERICHOST) != 0)
    return false;
  host = buf;
  if (addr.ss_family == AF_INET)
    port = ntohs(reinterpret_cast<const sockaddr_in*>(&addr)->sin_port);
  else if (addr.ss_family == AF_INET6)
    port = ntohs(reinterpret_cast<const sockaddr_in6*>(&addr)->sin6_port);
  else
    return false;
  return true;
}

bool is_connection_of(int fd, const httplib::Request& req) {
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) return false;
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  std::string host;
  int port = -1;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0 ||
      !address_of(addr, len, host, port) || port != req.remote_port || host != req.remote_addr)
    return false;
  if (req.local_port < 0) return true;  // older httplib: the peer's address alone
  len = sizeof addr;
  return getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0 &&
         address_of(addr, len, host, port) && port == req.local_port;
}

}  // namespace

ClientConnection ClientConnection::of(const httplib::Request& req) {
  ClientConnection c;
  if (req.remote_port < 0 || req.remote_addr.empty()) return c;
  // A TCP connection is unique by its address pair, and this one stays open (its descriptor
  // cannot be reused) until the handler returns.
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return c;
  const int dir_fd = dirfd(dir);
  while (const dirent* e = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || fd == dir_fd) continue;
    if (is_connection_of(static_cast<int>(fd), req)) {
      c.fd_ = static_cast<int>(fd);
      break;
    }
  }
  closedir(dir);
  return c;
}

bool ClientConnection::closed() const {
  if (fd_ < 0) return false;
  char byte;
  const ssize_t n = recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) return false;  // data waiting (a pipelined request): still there
  if (n == 0) return true;  // the client closed its side
  return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;  // reset or broken
}

}  // namespace chimera::server
