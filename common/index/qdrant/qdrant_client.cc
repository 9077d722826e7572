#include "common/index/qdrant/qdrant_client.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <utility>
#include <variant>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/base/status_macros.h"
#include "common/index/http/http_client.h"

namespace snapledger {

using nlohmann::json;

namespace {

// Large enough for a query or retrieve answer with payloads; Beast's default is 8 MiB.
constexpr uint64_t kMaxAnswerBytes = uint64_t{256} << 20;
constexpr size_t kMaxErrorTextBytes = 300;

constexpr QdrantOperation kAllOperations[] = {
    qdrant_op::kCreateCollection, qdrant_op::kGetCollection,    qdrant_op::kDeleteCollection,
    qdrant_op::kListCollections,  qdrant_op::kCreateFieldIndex, qdrant_op::kUpsertPoints,
    qdrant_op::kRetrievePoints,   qdrant_op::kQueryPoints,      qdrant_op::kCountPoints,
    qdrant_op::kDeletePoints,     qdrant_op::kListAliases,      qdrant_op::kUpdateAliases};

bool SameOperation(const QdrantOperation& a, const QdrantOperation& b) {
  return a.method == b.method && a.path == b.path;
}

// Creating a collection or changing aliases cannot simply be repeated: if the first attempt
// took effect, the second fails ("already exists"). Everything else we call can.
bool Idempotent(const QdrantOperation& op) {
  return !SameOperation(op, qdrant_op::kCreateCollection) &&
         !SameOperation(op, qdrant_op::kUpdateAliases);
}

// A float as the double with the fewest decimal digits that still reads back as the same
// float: 0.1f is sent as 0.1, not 0.10000000149011612. Qdrant parses f32, so nothing is
// lost, and the request is about half the size.
double ShortestDouble(float f) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, f);
  double d = f;
  if (ec == std::errc()) std::from_chars(buf, end, d);
  return d;
}

json VectorJson(absl::Span<const float> vector) {
  json out = json::array();
  out.get_ref<json::array_t&>().reserve(vector.size());
  for (float f : vector) out.push_back(ShortestDouble(f));
  return out;
}

json IdsJson(absl::Span<const uint64_t> ids) {
  json out = json::array();
  for (uint64_t id : ids) out.push_back(id);
  return out;
}

// Percent-encodes one path segment (collection names are normally plain already).
std::string EncodeSegment(std::string_view s) {
  std::string out;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (absl::ascii_isalnum(u) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(c);
    } else {
      absl::StrAppend(&out, "%",
                      absl::AsciiStrToUpper(absl::StrCat(absl::Hex(u, absl::kZeroPad2))));
    }
  }
  return out;
}

std::string Excerpt(std::string_view text) {
  if (text.size() <= kMaxErrorTextBytes) return std::string(text);
  return absl::StrCat(std::string(text.substr(0, kMaxErrorTextBytes)), "...");
}

std::string ExcerptJson(const json& j) {
  return Excerpt(j.dump(-1, ' ', false, json::error_handler_t::replace));
}

// Qdrant's error text from an error answer: status.error of its JSON envelope, or the start
// of whatever else came back (a proxy's HTML page, say).
std::string ErrorText(const std::string& body) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_object()) {
    auto status = j.find("status");
    if (status != j.end() && status->is_object()) {
      auto error = status->find("error");
      if (error != status->end() && error->is_string()) return error->get<std::string>();
    }
  }
  return Excerpt(body);
}

absl::StatusCode CodeForHttpStatus(int status) {
  switch (status) {
    case 400:
    case 422:
      return absl::StatusCode::kInvalidArgument;
    case 401:
      return absl::StatusCode::kUnauthenticated;
    case 403:
      return absl::StatusCode::kPermissionDenied;
    case 404:
      return absl::StatusCode::kNotFound;
    case 409:
      return absl::StatusCode::kAlreadyExists;
    case 429:
      return absl::StatusCode::kUnavailable;
    default:
      return status >= 500 && status <= 599 ? absl::StatusCode::kUnavailable
                                            : absl::StatusCode::kUnknown;
  }
}

bool IsUnsigned(const json& j) { return j.is_number_unsigned(); }

std::string PathOf(const QdrantOperation& op, std::string_view collection) {
  return absl::StrReplaceAll(std::string(op.path),
                             {{"{collection_name}", EncodeSegment(collection)}});
}

// "qdrant PUT /collections/events-2/points": how every message starts.
std::string What(const QdrantOperation& op, std::string_view collection) {
  return absl::StrCat("qdrant ", std::string(op.method), " ", PathOf(op, collection));
}

}  // namespace

absl::Span<const QdrantOperation> QdrantOperations() { return kAllOperations; }

// ---------------------------------------------------------------------------------------------
// Request bodies.

json QdrantRequests::CreateCollection(int dimension, const json& metadata) {
  json body = {{"vectors", {{"size", dimension}, {"distance", "Dot"}}}};
  if (!metadata.is_null()) body["metadata"] = metadata;
  return body;
}

json QdrantRequests::CreateFieldIndex(std::string_view field, std::string_view schema_type) {
  return {{"field_name", std::string(field)}, {"field_schema", std::string(schema_type)}};
}

json QdrantRequests::UpsertPoints(absl::Span<const QdrantPoint> points) {
  json list = json::array();
  for (const QdrantPoint& p : points) {
    json point = {{"id", p.id}, {"vector", VectorJson(p.vector)}};
    if (!p.payload.is_null()) point["payload"] = p.payload;
    list.push_back(std::move(point));
  }
  return {{"points", std::move(list)}};
}

json QdrantRequests::QueryPoints(absl::Span<const float> vector, size_t limit, const json& filter) {
  json body = {{"query", VectorJson(vector)},
               {"limit", limit},
               {"with_payload", false},
               {"with_vector", false}};
  if (!filter.is_null()) body["filter"] = filter;
  return body;
}

json QdrantRequests::CountPoints(const json& filter) {
  json body = {{"exact", true}};
  if (!filter.is_null()) body["filter"] = filter;
  return body;
}

json QdrantRequests::RetrievePoints(absl::Span<const uint64_t> ids, bool with_payload) {
  return {{"ids", IdsJson(ids)}, {"with_payload", with_payload}, {"with_vector", false}};
}

json QdrantRequests::DeletePoints(absl::Span<const uint64_t> ids) {
  return {{"points", IdsJson(ids)}};
}

json QdrantRequests::UpdateAliases(std::string_view alias, std::string_view collection,
                                   bool replace_existing) {
  json actions = json::array();
  if (replace_existing) {
    actions.push_back({{"delete_alias", {{"alias_name", std::string(alias)}}}});
  }
  if (!collection.empty()) {
    actions.push_back(
        {{"create_alias",
          {{"collection_name", std::string(collection)}, {"alias_name", std::string(alias)}}}});
  }
  return {{"actions", std::move(actions)}};
}

absl::StatusOr<json> QdrantRequests::Filter(const SearchFilter& filter) {
  json must = json::array();
  json range = json::object();
  if (filter.min_seq > 1) range["gte"] = filter.min_seq;
  if (filter.max_seq != std::numeric_limits<uint64_t>::max()) range["lte"] = filter.max_seq;
  if (!range.empty()) must.push_back({{"key", "seq"}, {"range", std::move(range)}});
  for (const FieldMatch& m : filter.fields) {
    if (m.field.empty()) return absl::InvalidArgumentError("field match with an empty field name");
    if (!m.value.is_string() && !m.value.is_number_integer() && !m.value.is_boolean()) {
      return absl::InvalidArgumentError(absl::StrCat("field match on \"", m.field, "\": value ",
                                                     ExcerptJson(m.value),
                                                     " is not a string, integer or boolean"));
    }
    must.push_back({{"key", absl::StrCat("body.", m.field)}, {"match", {{"value", m.value}}}});
  }
  if (must.empty()) return json(nullptr);
  return json{{"must", std::move(must)}};
}

// ---------------------------------------------------------------------------------------------
// The connection.

namespace {

// The error an attempt that did not succeed came to.
absl::Status AttemptError(const std::string& what, const std::string& authority,
                          const HttpOutcome& outcome) {
  if (const auto* res = std::get_if<HttpResponse>(&outcome)) {
    return absl::Status(
        CodeForHttpStatus(res->status),
        absl::StrCat(what, ": ", res->status, " ", res->reason, ": ", ErrorText(res->body)));
  }
  const auto& failure = std::get<HttpFailure>(outcome);
  const bool timed_out = failure.kind == HttpFailure::Kind::kTimeout;
  const absl::StatusCode code =
      timed_out ? absl::StatusCode::kDeadlineExceeded : absl::StatusCode::kUnavailable;
  if (!failure.request_sent()) {
    return absl::Status(code, absl::StrCat(what, ": connect to ", authority, ": ",
                                           timed_out ? "timed out" : failure.detail));
  }
  return absl::Status(
      code, absl::StrCat(what, ": ", timed_out ? "no answer within the timeout" : failure.detail));
}

// Whether another attempt may help, and may be made (see the header).
bool Retryable(const HttpOutcome& outcome, bool idempotent) {
  if (const auto* res = std::get_if<HttpResponse>(&outcome))
    return idempotent && (res->status == 429 || res->status >= 500);
  return !std::get<HttpFailure>(outcome).request_sent() || idempotent;
}

}  // namespace

// The shared keep-alive connection; the class exists so that the header need not name it.
class QdrantClient::Connection : public HttpConnection {
 public:
  using HttpConnection::HttpConnection;
};

// ---------------------------------------------------------------------------------------------
// The client.

absl::StatusOr<QdrantClientPtr> QdrantClient::Create(QdrantClientOptions options) {
  const std::string& url = options.url;
  auto bad = [&url](std::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("qdrant url \"", url, "\": ", std::string(why)));
  };
  if (absl::StartsWithIgnoreCase(url, "https://")) {
    return bad(
        "https is not supported (the client speaks plain http; terminate TLS in a "
        "proxy beside Qdrant)");
  }
  if (!absl::StartsWithIgnoreCase(url, "http://")) return bad("want http://host[:port]");
  std::string_view rest = std::string_view(url).substr(7);
  Endpoint endpoint;
  const size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  if (slash != std::string_view::npos) {
    endpoint.prefix = std::string(rest.substr(slash));
    while (!endpoint.prefix.empty() && endpoint.prefix.back() == '/') endpoint.prefix.pop_back();
  }
  if (absl::StrContains(url, "?") || absl::StrContains(url, "#") ||
      authority.find('@') != std::string_view::npos) {
    return bad("no user info, query or fragment allowed");
  }
  std::string_view port = "80";
  if (!authority.empty() && authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) return bad("unterminated [IPv6 address]");
    endpoint.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return bad("want [address]:port");
      port = after.substr(1);
    }
  } else {
    const size_t colon = authority.rfind(':');
    endpoint.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  uint32_t port_number = 0;
  if (endpoint.host.empty()) return bad("no host");
  if (!absl::SimpleAtoi(std::string(port), &port_number) || port_number == 0 ||
      port_number > 65535) {
    return bad("bad port");
  }
  endpoint.port = std::string(port);
  if (options.max_attempts < 1) return bad("max_attempts must be at least 1");
  if (options.timeout <= absl::ZeroDuration()) return bad("timeout must be positive");
  if (!options.sleep) options.sleep = [](absl::Duration d) { absl::SleepFor(d); };
  return QdrantClientPtr(new QdrantClient(std::move(options), std::move(endpoint)));
}

QdrantClient::QdrantClient(QdrantClientOptions options, Endpoint endpoint)
    : options_(std::move(options)),
      endpoint_(std::move(endpoint)),
      url_(options_.url),
      connection_(std::make_unique<Connection>(endpoint_.host, endpoint_.port)) {}

QdrantClient::~QdrantClient() = default;

absl::StatusOr<json> QdrantClient::Call(const QdrantOperation& op, std::string_view collection,
                                        std::string_view query, const json* body) {
  const std::string target =
      absl::StrCat(endpoint_.prefix, PathOf(op, collection), std::string(query));
  // Invalid UTF-8 (only possible in strings the caller made up) is replaced, not thrown on.
  HttpRequest request{std::string(op.method), target, {}, "", kMaxAnswerBytes};
  if (!options_.api_key.empty()) request.headers.emplace_back("api-key", options_.api_key);
  if (body != nullptr) {
    request.headers.emplace_back("Content-Type", "application/json");
    // Invalid UTF-8 (only possible in strings the caller made up) is replaced, not thrown on.
    request.body = body->dump(-1, ' ', false, json::error_handler_t::replace);
  }
  const std::string what = What(op, collection);

  absl::MutexLock lock(&mu_);
  absl::Status last;
  absl::Duration backoff = options_.initial_backoff;
  int attempt = 1;
  for (;; ++attempt) {
    // Timeouts are whole milliseconds, as they always were for this client.
    HttpOutcome outcome = connection_->RoundTrip(
        request, absl::FromChrono(absl::ToChronoMilliseconds(options_.timeout)));
    const auto* res = std::get_if<HttpResponse>(&outcome);
    if (res != nullptr && res->status >= 200 && res->status <= 299) {
      json answer = json::parse(res->body, nullptr, /*allow_exceptions=*/false);
      if (answer.is_discarded() || !answer.is_object() || !answer.contains("result")) {
        return absl::InternalError(
            absl::StrCat(what, ": ", res->status, " ", res->reason,
                         " but the answer is not Qdrant's JSON: ", Excerpt(res->body)));
      }
      return std::move(answer["result"]);
    }
    last = AttemptError(what, connection_->authority(), outcome);
    if (!Retryable(outcome, Idempotent(op)) || attempt >= options_.max_attempts) break;
    options_.sleep(backoff);
    backoff *= 2;
  }
  if (attempt == 1) return last;
  return absl::Status(last.code(),
                      absl::StrCat(std::string(last.message()), " (after ", attempt, " attempts)"));
}

absl::Status QdrantClient::CheckCompleted(const QdrantOperation& op, std::string_view collection,
                                          const json& result) {
  const std::string what = What(op, collection);
  const json* status =
      result.is_object() && result.contains("status") ? &result["status"] : nullptr;
  if (status == nullptr || !status->is_string()) {
    return absl::InternalError(
        absl::StrCat(what, ": answer has no update status: ", ExcerptJson(result)));
  }
  const std::string s = status->get<std::string>();
  if (s == "completed") return absl::OkStatus();
  if (s == "wait_timeout") {
    return absl::DeadlineExceededError(
        absl::StrCat(what,
                     ": Qdrant accepted the update but did not apply it in time "
                     "(status wait_timeout)"));
  }
  return absl::InternalError(
      absl::StrCat(what, ": update status \"", s, "\" although wait=true was asked"));
}

namespace {

absl::Status Malformed(const QdrantOperation& op, std::string_view collection,
                       std::string_view what, const json& result) {
  return absl::InternalError(absl::StrCat(What(op, collection), ": unexpected answer (",
                                          std::string(what), "): ", ExcerptJson(result)));
}

// A boolean `result` (collection and alias operations). false means nothing was done.
absl::Status ExpectTrue(const QdrantOperation& op, std::string_view collection, const json& result,
                        absl::StatusCode if_false) {
  if (!result.is_boolean()) return Malformed(op, collection, "want true or false", result);
  if (result.get<bool>()) return absl::OkStatus();
  return absl::Status(if_false, absl::StrCat(What(op, collection), ": Qdrant answered false"));
}

}  // namespace

absl::Status QdrantClient::CreateCollection(std::string_view name, int dimension,
                                            const json& metadata) {
  const json body = QdrantRequests::CreateCollection(dimension, metadata);
  ASSIGN_OR_RETURN(json result, Call(qdrant_op::kCreateCollection, name, "", &body));
  return ExpectTrue(qdrant_op::kCreateCollection, name, result, absl::StatusCode::kUnknown);
}

absl::StatusOr<json> QdrantClient::GetCollection(std::string_view name) {
  ASSIGN_OR_RETURN(json result, Call(qdrant_op::kGetCollection, name, "", nullptr));
  if (!result.is_object()) {
    return Malformed(qdrant_op::kGetCollection, name, "want an object", result);
  }
  return result;
}

absl::Status QdrantClient::DeleteCollection(std::string_view name) {
  ASSIGN_OR_RETURN(json result, Call(qdrant_op::kDeleteCollection, name, "", nullptr));
  // Qdrant answers false for a collection that does not exist.
  return ExpectTrue(qdrant_op::kDeleteCollection, name, result, absl::StatusCode::kNotFound);
}

absl::StatusOr<std::vector<std::string>> QdrantClient::ListCollections() {
  const QdrantOperation& op = qdrant_op::kListCollections;
  ASSIGN_OR_RETURN(json result, Call(op, "", "", nullptr));
  if (!result.is_object() || !result.contains("collections") || !result["collections"].is_array()) {
    return Malformed(op, "", "want {collections: [...]}", result);
  }
  std::vector<std::string> names;
  for (const json& c : result["collections"]) {
    if (!c.is_object() || !c.contains("name") || !c["name"].is_string()) {
      return Malformed(op, "", "a collection without a name", result);
    }
    names.push_back(c["name"].get<std::string>());
  }
  return names;
}

absl::Status QdrantClient::CreateFieldIndex(std::string_view collection, std::string_view field,
                                            std::string_view schema_type) {
  const QdrantOperation& op = qdrant_op::kCreateFieldIndex;
  const json body = QdrantRequests::CreateFieldIndex(field, schema_type);
  ASSIGN_OR_RETURN(json result, Call(op, collection, "?wait=true", &body));
  return CheckCompleted(op, collection, result);
}

absl::Status QdrantClient::UpsertPoints(std::string_view collection,
                                        absl::Span<const QdrantPoint> points) {
  const QdrantOperation& op = qdrant_op::kUpsertPoints;
  const json body = QdrantRequests::UpsertPoints(points);
  ASSIGN_OR_RETURN(json result, Call(op, collection, "?wait=true", &body));
  return CheckCompleted(op, collection, result);
}

absl::StatusOr<std::vector<QdrantScoredPoint>> QdrantClient::QueryPoints(
    std::string_view collection, absl::Span<const float> vector, size_t limit, const json& filter) {
  const QdrantOperation& op = qdrant_op::kQueryPoints;
  const json body = QdrantRequests::QueryPoints(vector, limit, filter);
  ASSIGN_OR_RETURN(json result, Call(op, collection, "", &body));
  if (!result.is_object() || !result.contains("points") || !result["points"].is_array()) {
    return Malformed(op, collection, "want {points: [...]}", result);
  }
  std::vector<QdrantScoredPoint> hits;
  for (const json& p : result["points"]) {
    if (!p.is_object() || !p.contains("id") || !IsUnsigned(p["id"]) || !p.contains("score") ||
        !p["score"].is_number()) {
      return Malformed(op, collection, "a point without an integer id and a score", result);
    }
    hits.push_back({p["id"].get<uint64_t>(), p["score"].get<float>()});
  }
  return hits;
}

absl::StatusOr<uint64_t> QdrantClient::CountPoints(std::string_view collection,
                                                   const json& filter) {
  const QdrantOperation& op = qdrant_op::kCountPoints;
  const json body = QdrantRequests::CountPoints(filter);
  ASSIGN_OR_RETURN(json result, Call(op, collection, "", &body));
  if (!result.is_object() || !result.contains("count") || !IsUnsigned(result["count"])) {
    return Malformed(op, collection, "want {count: N}", result);
  }
  return result["count"].get<uint64_t>();
}

absl::StatusOr<std::vector<QdrantRecord>> QdrantClient::RetrievePoints(
    std::string_view collection, absl::Span<const uint64_t> ids, bool with_payload) {
  const QdrantOperation& op = qdrant_op::kRetrievePoints;
  const json body = QdrantRequests::RetrievePoints(ids, with_payload);
  ASSIGN_OR_RETURN(json result, Call(op, collection, "", &body));
  if (!result.is_array()) return Malformed(op, collection, "want an array of points", result);
  std::vector<QdrantRecord> records;
  for (const json& p : result) {
    if (!p.is_object() || !p.contains("id") || !IsUnsigned(p["id"])) {
      return Malformed(op, collection, "a point without an integer id", result);
    }
    QdrantRecord r{p["id"].get<uint64_t>(), json::object()};
    if (auto payload = p.find("payload"); payload != p.end() && !payload->is_null()) {
      if (!payload->is_object()) return Malformed(op, collection, "a payload", result);
      r.payload = *payload;
    }
    records.push_back(std::move(r));
  }
  return records;
}

absl::Status QdrantClient::DeletePoints(std::string_view collection,
                                        absl::Span<const uint64_t> ids) {
  const QdrantOperation& op = qdrant_op::kDeletePoints;
  const json body = QdrantRequests::DeletePoints(ids);
  ASSIGN_OR_RETURN(json result, Call(op, collection, "?wait=true", &body));
  return CheckCompleted(op, collection, result);
}

absl::StatusOr<std::vector<QdrantAlias>> QdrantClient::ListAliases() {
  const QdrantOperation& op = qdrant_op::kListAliases;
  ASSIGN_OR_RETURN(json result, Call(op, "", "", nullptr));
  if (!result.is_object() || !result.contains("aliases") || !result["aliases"].is_array()) {
    return Malformed(op, "", "want {aliases: [...]}", result);
  }
  std::vector<QdrantAlias> aliases;
  for (const json& a : result["aliases"]) {
    if (!a.is_object() || !a.contains("alias_name") || !a["alias_name"].is_string() ||
        !a.contains("collection_name") || !a["collection_name"].is_string()) {
      return Malformed(op, "", "an alias without alias_name and collection_name", result);
    }
    aliases.push_back(
        {a["alias_name"].get<std::string>(), a["collection_name"].get<std::string>()});
  }
  return aliases;
}

absl::Status QdrantClient::UpdateAliases(std::string_view alias, std::string_view collection,
                                         bool replace_existing) {
  const QdrantOperation& op = qdrant_op::kUpdateAliases;
  const json body = QdrantRequests::UpdateAliases(alias, collection, replace_existing);
  ASSIGN_OR_RETURN(json result, Call(op, "", "", &body));
  return ExpectTrue(op, "", result, absl::StatusCode::kUnknown);
}

}  // namespace snapledger
