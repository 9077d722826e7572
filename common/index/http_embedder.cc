#include "common/index/http_embedder.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace snapledger {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Json = nlohmann::json;

constexpr std::string_view kDefaultPath = "/v1/embeddings";

// This Abseil build has its own string_view type; StrCat needs one.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

bool Retryable(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status);
}

// The error text a server put in a failed response: OpenAI's {"error":{"message":...}},
// TEI's / Ollama's {"error":"..."}, {"message":"..."}, else the body itself (shortened).
std::string ServerErrorMessage(const std::string& body) {
  Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_object()) {
    auto error = j.find("error");
    if (error != j.end() && error->is_object()) {
      auto message = error->find("message");
      if (message != error->end() && message->is_string()) return message->get<std::string>();
    }
    if (error != j.end() && error->is_string()) return error->get<std::string>();
    auto message = j.find("message");
    if (message != j.end() && message->is_string()) return message->get<std::string>();
  }
  std::string text(absl::StripAsciiWhitespace(body));
  if (text.size() > 300) text = text.substr(0, 300) + "...";
  return text.empty() ? "(empty body)" : text;
}

absl::StatusCode CodeForHttpStatus(unsigned status) {
  if (status == 429 || status >= 500) return absl::StatusCode::kUnavailable;
  switch (status) {
    case 401:
      return absl::StatusCode::kUnauthenticated;
    case 403:
      return absl::StatusCode::kPermissionDenied;
    case 404:
      return absl::StatusCode::kNotFound;
    default:
      return status >= 400 ? absl::StatusCode::kInvalidArgument : absl::StatusCode::kInternal;
  }
}

void Normalize(float* v, int dimension) {
  double sum = 0;
  for (int i = 0; i < dimension; ++i) sum += double{v[i]} * v[i];
  if (sum == 0) return;
  double norm = std::sqrt(sum);
  for (int i = 0; i < dimension; ++i) v[i] = static_cast<float>(v[i] / norm);
}

}  // namespace

// One keep-alive HTTP/1.1 connection. Beast's tcp_stream enforces its deadline only on
// asynchronous operations, so each call starts one and runs a private io_context until it
// completes: synchronous for the caller, with timeouts that work.
class HttpEmbedder::Connection {
 public:
  struct Response {
    unsigned status;
    std::string body;
  };

  Connection(const Target& target, std::string endpoint)
      : target_(target), endpoint_(std::move(endpoint)), resolver_(ioc_) {}

  // Sends `request` and reads the whole response before `timeout` elapses, connecting first
  // when there is no open connection. Errors: Unavailable (cannot connect, connection lost),
  // DeadlineExceeded (timeout), Internal (unparseable HTTP). The connection stays open only
  // after a successful keep-alive exchange.
  absl::StatusOr<Response> RoundTrip(http::request<http::string_body>& request,
                                     absl::Duration timeout, size_t body_limit) {
    timeout_ = timeout;
    if (stream_) stream_->expires_after(ToChrono(timeout));
    absl::StatusOr<Response> response = TryOnce(request, body_limit);
    // A server may close an idle keep-alive connection at any time; that is not a failed
    // attempt, so try once more on a fresh connection (with a fresh timeout).
    if (!response.ok() && stale_) response = TryOnce(request, body_limit);
    return response;
  }

  void Close() {
    buffer_.consume(buffer_.size());  // unread bytes belong to the old connection
    if (!stream_) return;
    beast::error_code ignored;
    stream_->socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.reset();
  }

 private:
  static std::chrono::steady_clock::duration ToChrono(absl::Duration d) {
    return absl::ToChronoNanoseconds(d);
  }

  absl::StatusOr<Response> TryOnce(http::request<http::string_body>& request, size_t limit) {
    stale_ = false;
    if (!stream_) RETURN_IF_ERROR(Connect());
    bool fresh = !served_before_;
    served_before_ = true;
    beast::error_code ec =
        Run([&](auto handler) { http::async_write(*stream_, request, handler); });
    if (ec) return Fail(ec, "sending the request", fresh, /*got_bytes=*/false);
    http::response_parser<http::string_body> parser;
    parser.body_limit(limit);
    ec = Run([&](auto handler) { http::async_read(*stream_, buffer_, parser, handler); });
    if (ec) return Fail(ec, "reading the response", fresh, parser.got_some());
    http::response<http::string_body> res = parser.release();
    if (!res.keep_alive()) Close();
    return Response{res.result_int(), std::move(res.body())};
  }

  absl::Status Connect() {
    served_before_ = false;
    beast::error_code ec;
    tcp::resolver::results_type addresses = resolver_.resolve(target_.host, target_.port, ec);
    if (ec) {
      return absl::UnavailableError(
          absl::StrCat("embedding endpoint ", endpoint_, ": cannot resolve host: ", ec.message()));
    }
    stream_.emplace(ioc_);
    stream_->expires_after(ToChrono(timeout_));
    ec = Run([&](auto handler) {
      stream_->async_connect(
          addresses, [handler](beast::error_code e, const tcp::endpoint&) { handler(e, 0); });
    });
    if (ec) {
      stream_.reset();
      return Fail(ec, "connecting", /*fresh=*/true, /*got_bytes=*/false).status();
    }
    return absl::OkStatus();
  }

  // Starts one asynchronous operation and runs the io_context until it (and the stream's
  // timer) are done.
  template <typename Start>
  beast::error_code Run(Start start) {
    beast::error_code result = net::error::would_block;
    start([&result](beast::error_code ec, std::size_t) { result = ec; });
    ioc_.restart();
    ioc_.run();
    return result;
  }

  absl::StatusOr<Response> Fail(beast::error_code ec, std::string_view doing, bool fresh,
                                bool got_bytes) {
    Close();
    std::string prefix = absl::StrCat("embedding endpoint ", endpoint_, ": ");
    if (ec == beast::error::timeout) {
      return absl::DeadlineExceededError(absl::StrCat(
          prefix, "no response within ", absl::FormatDuration(timeout_), " (", Av(doing), ")"));
    }
    if (ec == net::error::connection_refused)
      return absl::UnavailableError(absl::StrCat(prefix, "connection refused"));
    // Nothing came back on a connection that had served requests before: it was closed
    // while idle.
    stale_ = !fresh && !got_bytes;
    if (ec.category() == http::make_error_code(http::error::end_of_stream).category() &&
        ec != http::error::end_of_stream && ec != http::error::partial_message) {
      return absl::InternalError(absl::StrCat(prefix, "malformed HTTP response: ", ec.message()));
    }
    return absl::UnavailableError(absl::StrCat(prefix, Av(doing), ": ", ec.message()));
  }

  const Target& target_;
  const std::string endpoint_;
  net::io_context ioc_;
  tcp::resolver resolver_;
  std::optional<beast::tcp_stream> stream_;
  beast::flat_buffer buffer_;
  absl::Duration timeout_;
  bool served_before_ = false;  // a request has been sent on the open connection before
  bool stale_ = false;          // the last failure looks like a closed idle connection
};

namespace {

// "http://host[:port][/path]" -> host, port, path.
absl::Status ParseUrl(std::string_view url, std::string* host, std::string* port,
                      std::string* path) {
  auto invalid = [&](std::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("embedding endpoint URL \"", Av(url), "\": ", Av(why)));
  };
  if (absl::StartsWithIgnoreCase(Av(url), "https://"))
    return invalid("https is not supported; use http:// (e.g. through a local TLS proxy)");
  if (!absl::StartsWithIgnoreCase(Av(url), "http://"))
    return invalid("expected http://host[:port][/path]");
  std::string_view rest = url.substr(7);
  size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  *path = slash == std::string_view::npos ? "" : std::string(rest.substr(slash));
  if (path->empty() || *path == "/") *path = std::string(kDefaultPath);
  if (authority.find('@') != std::string_view::npos)
    return invalid("user information in the URL is not supported; use api_key");
  std::string_view port_text;
  if (!authority.empty() && authority[0] == '[') {  // [IPv6 literal]
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return invalid("unterminated IPv6 address");
    *host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty() && after[0] != ':') return invalid("expected ':' after the IPv6 address");
    if (!after.empty()) port_text = after.substr(1);
  } else {
    size_t colon = authority.find(':');
    *host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port_text = authority.substr(colon + 1);
  }
  if (host->empty()) return invalid("no host");
  if (port_text.empty()) {
    *port = "80";
    return absl::OkStatus();
  }
  int port_number;
  if (!absl::SimpleAtoi(Av(port_text), &port_number) || port_number < 1 || port_number > 65535)
    return invalid(absl::StrCat("invalid port \"", Av(port_text), "\""));
  *port = std::to_string(port_number);
  return absl::OkStatus();
}

}  // namespace

std::string HttpEmbedder::Authority(const Target& target) {
  bool ipv6 = target.host.find(':') != std::string::npos;
  return ipv6 ? absl::StrCat("[", target.host, "]:", target.port)
              : absl::StrCat(target.host, ":", target.port);
}

absl::StatusOr<std::unique_ptr<HttpEmbedder>> HttpEmbedder::Create(HttpEmbedderOptions options) {
  Target target;
  RETURN_IF_ERROR(ParseUrl(options.url, &target.host, &target.port, &target.path));
  auto invalid = [](std::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("http embedder: ", Av(why)));
  };
  if (options.model.empty()) return invalid("no model configured");
  if (options.dimension < 1)
    return invalid(absl::StrCat("dimension must be positive, not ", options.dimension));
  if (options.batch_size < 1) return invalid("batch_size must be at least 1");
  if (options.max_attempts < 1) return invalid("max_attempts must be at least 1");
  if (options.timeout <= absl::ZeroDuration()) return invalid("timeout must be positive");
  if (options.initial_backoff < absl::ZeroDuration())
    return invalid("initial_backoff must not be negative");
  if (!options.sleep) options.sleep = [](absl::Duration d) { absl::SleepFor(d); };
  return std::unique_ptr<HttpEmbedder>(new HttpEmbedder(std::move(options), std::move(target)));
}

HttpEmbedder::HttpEmbedder(HttpEmbedderOptions options, Target target)
    : options_(std::move(options)),
      target_(std::move(target)),
      endpoint_(absl::StrCat("http://", Authority(target_), target_.path)),
      connection_(std::make_unique<Connection>(target_, endpoint_)) {}

HttpEmbedder::~HttpEmbedder() = default;

std::string HttpEmbedder::Id() const {
  return absl::StrCat("http-v1/model=", options_.model, "/dim=", options_.dimension);
}

absl::Status HttpEmbedder::EmbedEvents(absl::Span<const std::string_view> bodies,
                                       std::vector<float>* out) {
  const size_t dim = options_.dimension;
  out->resize(bodies.size() * dim);
  absl::MutexLock lock(&mu_);
  for (size_t i = 0; i < bodies.size(); i += options_.batch_size) {
    absl::Span<const std::string_view> batch = bodies.subspan(i, options_.batch_size);
    RETURN_IF_ERROR(EmbedBatch(batch, out->data() + i * dim));
  }
  return absl::OkStatus();
}

absl::Status HttpEmbedder::EmbedText(std::string_view text, std::vector<float>* out) {
  out->resize(options_.dimension);
  absl::MutexLock lock(&mu_);
  std::string_view texts[] = {text};
  return EmbedBatch(texts, out->data());
}

namespace {

// Checks a 200 response against the protocol and writes its vectors, in "index" order and
// normalised, to out[index * dimension].
absl::Status ParseEmbeddings(const std::string& body, size_t count, int dimension,
                             const std::string& endpoint, float* out) {
  auto malformed = [&](std::string_view what) {
    return absl::InternalError(
        absl::StrCat("embedding endpoint ", endpoint, ": malformed response: ", Av(what)));
  };
  Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return malformed("not JSON");
  if (!j.is_object() || !j.contains("data") || !j["data"].is_array())
    return malformed("no \"data\" array");
  const Json& data = j["data"];
  if (data.size() != count)
    return malformed(absl::StrCat(data.size(), " embeddings for ", count, " inputs"));
  std::vector<bool> seen(count);
  for (size_t i = 0; i < count; ++i) {
    const Json& item = data[i];
    std::string where = absl::StrCat("data[", i, "]");
    if (!item.is_object() || !item.contains("index") || !item["index"].is_number_integer())
      return malformed(absl::StrCat(where, " has no integer \"index\""));
    int64_t index = item["index"].get<int64_t>();
    if (index < 0 || static_cast<size_t>(index) >= count)
      return malformed(absl::StrCat(where, ".index ", index, " is not in [0, ", count, ")"));
    if (seen[index]) return malformed(absl::StrCat("index ", index, " appears twice"));
    seen[index] = true;
    if (!item.contains("embedding") || !item["embedding"].is_array())
      return malformed(absl::StrCat(where, " has no \"embedding\" array"));
    const Json& embedding = item["embedding"];
    if (embedding.size() != static_cast<size_t>(dimension)) {
      return absl::FailedPreconditionError(
          absl::StrCat("embedding endpoint ", endpoint, " returned ", embedding.size(),
                       "-dimensional vectors, configured dimension is ", dimension));
    }
    float* v = out + index * dimension;
    for (int k = 0; k < dimension; ++k) {
      if (!embedding[k].is_number())
        return malformed(absl::StrCat(where, ".embedding[", k, "] is not a number"));
      v[k] = embedding[k].get<float>();
    }
    Normalize(v, dimension);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status HttpEmbedder::EmbedBatch(absl::Span<const std::string_view> texts, float* out) {
  Json input = Json::array();
  for (std::string_view t : texts) input.push_back(std::string(t));
  Json request_json = {{"model", options_.model}, {"input", std::move(input)}};
  http::request<http::string_body> request{http::verb::post, target_.path, 11};
  request.set(http::field::host, Authority(target_));
  request.set(http::field::user_agent, "snapledger");
  request.set(http::field::content_type, "application/json");
  request.set(http::field::accept, "application/json");
  if (!options_.api_key.empty())
    request.set(http::field::authorization, "Bearer " + options_.api_key);
  request.keep_alive(true);
  // Invalid UTF-8 in query text is sent as U+FFFD rather than failing the query.
  request.body() = request_json.dump(-1, ' ', false, Json::error_handler_t::replace);
  request.prepare_payload();
  // Room for `dimension` numbers of up to ~32 characters each per input, and some slack.
  size_t body_limit = texts.size() * options_.dimension * 32 + (1 << 20);

  absl::Duration backoff = options_.initial_backoff;
  absl::Status last;
  for (int attempt = 1; attempt <= options_.max_attempts; ++attempt) {
    if (attempt > 1) {
      options_.sleep(backoff);
      backoff *= 2;
    }
    absl::StatusOr<Connection::Response> response =
        connection_->RoundTrip(request, options_.timeout, body_limit);
    if (response.ok() && response->status == 200)
      return ParseEmbeddings(response->body, texts.size(), options_.dimension, endpoint_, out);
    if (response.ok()) {
      last = absl::Status(CodeForHttpStatus(response->status),
                          absl::StrCat("embedding endpoint ", endpoint_, ": HTTP ",
                                       response->status, ": ", ServerErrorMessage(response->body)));
    } else {
      last = response.status();
    }
    if (!Retryable(last)) return last;
  }
  return absl::Status(last.code(),
                      absl::StrCat(last.message(), " (after ", options_.max_attempts,
                                   options_.max_attempts == 1 ? " attempt)" : " attempts)"));
}

}  // namespace snapledger
