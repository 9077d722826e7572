#include "common/index/http/http_client.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace snapledger {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

HttpFailure::Kind KindOf(beast::error_code ec) {
  if (ec == beast::error::timeout) return HttpFailure::Kind::kTimeout;
  if (ec == net::error::connection_refused) return HttpFailure::Kind::kRefused;
  // Beast's parser errors, except a connection that ended early.
  if (ec.category() == http::make_error_code(http::error::end_of_stream).category() &&
      ec != http::error::end_of_stream && ec != http::error::partial_message) {
    return HttpFailure::Kind::kMalformed;
  }
  return HttpFailure::Kind::kOther;
}

HttpFailure FailureOf(HttpFailure::Stage stage, beast::error_code ec) {
  return HttpFailure{stage, KindOf(ec), ec.message()};
}

}  // namespace

// Beast's tcp_stream enforces its deadline only on asynchronous operations, so each step
// starts one and runs the private io_context until it completes: synchronous for the
// caller, with timeouts that work.
class HttpConnection::Impl {
 public:
  Impl(std::string host, std::string port, const std::string& authority)
      : host_(std::move(host)), port_(std::move(port)), authority_(authority) {}

  HttpOutcome RoundTrip(const HttpRequest& request, absl::Duration timeout) {
    timeout_ = absl::ToChronoNanoseconds(timeout);
    http::request<http::string_body> req = Build(request);
    bool stale = false;
    HttpOutcome outcome = TryOnce(req, request.body_limit, &stale);
    if (stale) outcome = TryOnce(req, request.body_limit, &stale);
    return outcome;
  }

 private:
  http::request<http::string_body> Build(const HttpRequest& request) const {
    http::request<http::string_body> req{http::string_to_verb(request.method), request.target, 11};
    req.set(http::field::host, authority_);
    req.set(http::field::user_agent, "snapledger");
    for (const auto& [name, value] : request.headers) req.set(name, value);
    req.body() = request.body;
    req.keep_alive(true);
    req.prepare_payload();
    return req;
  }

  // `*stale` is set when the failure looks like a kept-alive connection closed while idle.
  HttpOutcome TryOnce(http::request<http::string_body>& req, uint64_t body_limit, bool* stale) {
    *stale = false;
    const bool reused = connected_;
    if (!connected_) {
      if (std::optional<HttpFailure> failure = Connect()) return *std::move(failure);
    }
    stream_.expires_after(timeout_);  // one deadline for writing and reading
    beast::error_code ec = Run([&](auto handler) { http::async_write(stream_, req, handler); });
    if (ec) return Fail(HttpFailure::Stage::kSend, ec, reused, /*got_bytes=*/false, stale);
    http::response_parser<http::string_body> parser;
    parser.body_limit(body_limit);
    ec = Run([&](auto handler) { http::async_read(stream_, buffer_, parser, handler); });
    if (ec) return Fail(HttpFailure::Stage::kReceive, ec, reused, parser.got_some(), stale);
    http::response<http::string_body> res = parser.release();
    if (!res.keep_alive()) Close();
    HttpResponse response{static_cast<int>(res.result_int()), std::string(res.reason()),
                          std::move(res.body())};
    if (response.reason.empty()) response.reason = std::string(http::obsolete_reason(res.result()));
    return response;
  }

  HttpFailure Fail(HttpFailure::Stage stage, beast::error_code ec, bool reused, bool got_bytes,
                   bool* stale) {
    Close();
    HttpFailure failure = FailureOf(stage, ec);
    // Nothing came back on a connection that had served requests before: it was closed
    // while idle.
    *stale = reused && !got_bytes && failure.kind != HttpFailure::Kind::kTimeout;
    return failure;
  }

  std::optional<HttpFailure> Connect() {
    beast::error_code ec;
    tcp::resolver resolver(ioc_);
    tcp::resolver::results_type addresses = resolver.resolve(host_, port_, ec);
    if (ec) return FailureOf(HttpFailure::Stage::kResolve, ec);
    stream_.expires_after(timeout_);
    ec = Run([&](auto handler) {
      stream_.async_connect(addresses,
                            [handler](beast::error_code e, const tcp::endpoint&) { handler(e); });
    });
    if (ec) {
      Close();
      return FailureOf(HttpFailure::Stage::kConnect, ec);
    }
    connected_ = true;
    beast::error_code ignored;
    stream_.socket().set_option(tcp::no_delay(true), ignored);
    return std::nullopt;
  }

  // Starts one asynchronous operation and runs the io_context until it (and the stream's
  // timer) are done.
  template <typename Start>
  beast::error_code Run(Start start) {
    beast::error_code result = net::error::would_block;
    start([&result](beast::error_code ec, auto&&...) { result = ec; });
    ioc_.restart();
    ioc_.run();
    return result;
  }

  void Close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
    buffer_.clear();  // unread bytes belong to the old connection
    connected_ = false;
  }

  const std::string host_;
  const std::string port_;
  const std::string& authority_;
  std::chrono::steady_clock::duration timeout_{};
  net::io_context ioc_;
  beast::tcp_stream stream_{ioc_};
  beast::flat_buffer buffer_;
  bool connected_ = false;  // a request has been or may be sent on the open stream
};

HttpConnection::HttpConnection(std::string host, std::string port)
    : authority_(absl::StrContains(host, ':') ? absl::StrCat("[", host, "]:", port)
                                              : absl::StrCat(host, ":", port)),
      impl_(std::make_unique<Impl>(std::move(host), std::move(port), authority_)) {}

HttpConnection::~HttpConnection() = default;

HttpOutcome HttpConnection::RoundTrip(const HttpRequest& request, absl::Duration timeout) {
  return impl_->RoundTrip(request, timeout);
}

}  // namespace snapledger
