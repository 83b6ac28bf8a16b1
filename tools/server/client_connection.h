// Whether the client of a request is still connected, while its handler waits on the engine.
// cpp-httplib 0.11 (Debian's) gives a handler no socket and no is_connection_closed(); a
// non-streaming handler writes nothing until the end, so a failed write cannot tell either.
// The request does carry both ends' addresses, and the connection's socket stays open until the
// handler returns, so the socket is found once by its address pair and then peeked at.
#pragma once

#include <httplib.h>

namespace chimera::server {

class ClientConnection {
 public:
  // The socket `req` came on; an unknown one (not found) is never reported closed.
  static ClientConnection of(const httplib::Request& req);

  bool known() const { return fd_ >= 0; }
  // True once the client closed its side or the connection broke (a non-blocking peek: no data
  // is consumed, a pipelined next request stays for httplib).
  bool closed() const;

 private:
  int fd_ = -1;
};

}  // namespace chimera::server
