// HTTP/1.1 plumbing shared by the index's REST clients (HttpEmbedder, QdrantClient): one
// kept-alive plain-http connection with per-attempt timeouts. What a status code or an
// error body means, and whether to retry, stays with each client.
#ifndef SNAPLEDGER_COMMON_INDEX_HTTP_CLIENT_H_
#define SNAPLEDGER_COMMON_INDEX_HTTP_CLIENT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/time/time.h"

namespace snapledger {

struct HttpRequest {
  std::string method;  // "GET", "PUT", "POST" or "DELETE"
  std::string target;  // path and query, e.g. "/collections/x?wait=true"
  // Sent after Host and User-Agent, in this order.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;                         // empty: none
  uint64_t body_limit = uint64_t{8} << 20;  // largest response body accepted
};

struct HttpResponse {
  int status = 0;
  std::string reason;  // the server's reason phrase, or the standard one if it sent none
  std::string body;
};

// Why a round trip got no response.
struct HttpFailure {
  enum class Stage { kResolve, kConnect, kSend, kReceive };
  enum class Kind {
    kTimeout,    // the deadline passed
    kRefused,    // the server refused the connection
    kMalformed,  // the bytes that came back are not HTTP
    kOther,      // anything else (connection reset, unknown host, ...)
  };
  Stage stage;
  Kind kind;
  std::string detail;  // the system's or Beast's description of the error
  // Whether the request may have reached the server.
  bool request_sent() const { return stage == Stage::kSend || stage == Stage::kReceive; }
};

using HttpOutcome = std::variant<HttpResponse, HttpFailure>;

// One keep-alive HTTP/1.1 connection to host:port, opened on first use and replaced after
// any failure or a response without keep-alive. Not thread-safe: callers serialise use.
class HttpConnection {
 public:
  // `host` is a name or an IP address (IPv6 without brackets); `port` a decimal number.
  HttpConnection(std::string host, std::string port);
  ~HttpConnection();
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  // "host:port", or "[host]:port" for an IPv6 address; also the Host header.
  const std::string& authority() const { return authority_; }

  // Sends `request` and reads the whole response, connecting first when no connection is
  // open. `timeout` bounds the connect, and separately the send and receive together. When
  // a connection that served earlier requests turns out to have been closed while idle
  // (nothing came back), the request is sent once more on a fresh connection: that is not
  // a failed attempt. Any response is returned, whatever its status.
  HttpOutcome RoundTrip(const HttpRequest& request, absl::Duration timeout);

 private:
  class Impl;  // Boost.Beast, kept out of this header
  const std::string authority_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace snapledger

#endif  // SNAPLEDGER_COMMON_INDEX_HTTP_CLIENT_H_
