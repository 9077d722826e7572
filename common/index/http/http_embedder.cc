#include "common/index/http/http_embedder.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <variant>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/index/http/http_client.h"

namespace snapledger {
namespace {

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

// The shared keep-alive connection; the class exists so that the header need not name it.
class HttpEmbedder::Connection : public HttpConnection {
 public:
  using HttpConnection::HttpConnection;
};

namespace {

// The status for a round trip that got no response.
absl::Status FailureStatus(const HttpFailure& failure, const std::string& endpoint,
                           absl::Duration timeout) {
  std::string prefix = absl::StrCat("embedding endpoint ", endpoint, ": ");
  if (failure.stage == HttpFailure::Stage::kResolve)
    return absl::UnavailableError(absl::StrCat(prefix, "cannot resolve host: ", failure.detail));
  std::string_view doing = failure.stage == HttpFailure::Stage::kConnect ? "connecting"
                           : failure.stage == HttpFailure::Stage::kSend  ? "sending the request"
                                                                         : "reading the response";
  switch (failure.kind) {
    case HttpFailure::Kind::kTimeout:
      return absl::DeadlineExceededError(absl::StrCat(
          prefix, "no response within ", absl::FormatDuration(timeout), " (", Av(doing), ")"));
    case HttpFailure::Kind::kRefused:
      return absl::UnavailableError(absl::StrCat(prefix, "connection refused"));
    case HttpFailure::Kind::kMalformed:
      return absl::InternalError(absl::StrCat(prefix, "malformed HTTP response: ", failure.detail));
    case HttpFailure::Kind::kOther:
      break;
  }
  return absl::UnavailableError(absl::StrCat(prefix, Av(doing), ": ", failure.detail));
}

}  // namespace

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
      connection_(std::make_unique<Connection>(target_.host, target_.port)) {}

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
  HttpRequest request{"POST", target_.path, {}, "", 0};
  request.headers = {{"Content-Type", "application/json"}, {"Accept", "application/json"}};
  if (!options_.api_key.empty())
    request.headers.emplace_back("Authorization", "Bearer " + options_.api_key);
  // Invalid UTF-8 in query text is sent as U+FFFD rather than failing the query.
  request.body = request_json.dump(-1, ' ', false, Json::error_handler_t::replace);
  // Room for `dimension` numbers of up to ~32 characters each per input, and some slack.
  request.body_limit = texts.size() * options_.dimension * 32 + (1 << 20);

  absl::Duration backoff = options_.initial_backoff;
  absl::Status last;
  for (int attempt = 1; attempt <= options_.max_attempts; ++attempt) {
    if (attempt > 1) {
      options_.sleep(backoff);
      backoff *= 2;
    }
    HttpOutcome outcome = connection_->RoundTrip(request, options_.timeout);
    if (const auto* failure = std::get_if<HttpFailure>(&outcome)) {
      last = FailureStatus(*failure, endpoint_, options_.timeout);
    } else {
      const auto& response = std::get<HttpResponse>(outcome);
      if (response.status == 200)
        return ParseEmbeddings(response.body, texts.size(), options_.dimension, endpoint_, out);
      last = absl::Status(CodeForHttpStatus(response.status),
                          absl::StrCat("embedding endpoint ", endpoint_, ": HTTP ", response.status,
                                       ": ", ServerErrorMessage(response.body)));
    }
    if (!Retryable(last)) return last;
  }
  return absl::Status(last.code(),
                      absl::StrCat(last.message(), " (after ", options_.max_attempts,
                                   options_.max_attempts == 1 ? " attempt)" : " attempts)"));
}

}  // namespace snapledger
