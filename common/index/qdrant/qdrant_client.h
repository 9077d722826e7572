// QdrantClient: the small synchronous REST client the Qdrant vector store
// (qdrant_vector_store.h) uses. It speaks HTTP/1.1 over one kept-alive TCP connection
// (Boost.Beast), plain http only: TLS belongs to a proxy in front of Qdrant.
//
// Request bodies are built by the pure functions of QdrantRequests, so tests check them
// against Qdrant's published OpenAPI spec without a server; the operations called are listed
// in QdrantOperations() in the spec's spelling for the same reason.
//
// Errors. Qdrant answers errors with {"status": {"error": "<text>"}, "time": ...}. Every error
// message names the method, the path and Qdrant's text, e.g.
//   qdrant PUT /collections/events-2/points: 400 Bad Request: Wrong input: Vector dimension
//   error: expected dim: 128, got 64
// and the code is
//   400, 422 -> InvalidArgument     401 -> Unauthenticated     403 -> PermissionDenied
//   404 -> NotFound                 409 -> AlreadyExists       429, 5xx -> Unavailable
//   other statuses -> Unknown
//   connection refused / reset, name not resolved -> Unavailable
//   no complete answer within Options::timeout -> DeadlineExceeded
//   a 2xx answer that is not the JSON the operation returns -> Internal
//   a write with ?wait=true that Qdrant reports as not completed ("wait_timeout") ->
//   DeadlineExceeded
//
// Retries. A request is tried up to Options::max_attempts times, with exponential backoff
// (Options::initial_backoff, doubled each time) when the failure is transient: the
// connection could not be made (the request was never sent: every operation), or the request
// was sent and timed out, the connection broke, or Qdrant answered 429 or 5xx (idempotent
// operations only: everything except creating a collection and changing aliases, whose
// repetition would fail on the first attempt's effect). A kept-alive connection the server
// closed while idle is detected (nothing at all was read back) and the request resent once on
// a new connection without counting as an attempt.
//
// Thread safety: all methods may be called from any thread; requests are serialised on the
// one connection.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/index/vector_index.h"
#include "nlohmann/json.hpp"

namespace snapledger {

struct QdrantClientOptions {
  // "http://host[:port][/prefix]"; port 80 when absent (Qdrant's own default is 6333).
  std::string url = "http://127.0.0.1:6333";
  // Bound on connecting, and on sending one request and reading its answer. Name resolution
  // (getaddrinfo) is not covered: use an address or a name in /etc/hosts where that matters.
  absl::Duration timeout = absl::Seconds(10);
  int max_attempts = 3;
  absl::Duration initial_backoff = absl::Milliseconds(200);
  // Sent as header "api-key" when not empty.
  std::string api_key;
  // How to wait between attempts; absl::SleepFor when empty. Tests inject a recorder.
  std::function<void(absl::Duration)> sleep;
};

// One REST operation as the spec spells it: method "PUT", path template
// "/collections/{collection_name}/points".
struct QdrantOperation {
  std::string_view method;
  std::string_view path;
};

// The operations QdrantClient calls; their paths are built from these templates.
namespace qdrant_op {
inline constexpr QdrantOperation kCreateCollection{"PUT", "/collections/{collection_name}"};
inline constexpr QdrantOperation kGetCollection{"GET", "/collections/{collection_name}"};
inline constexpr QdrantOperation kDeleteCollection{"DELETE", "/collections/{collection_name}"};
inline constexpr QdrantOperation kListCollections{"GET", "/collections"};
inline constexpr QdrantOperation kCreateFieldIndex{"PUT", "/collections/{collection_name}/index"};
inline constexpr QdrantOperation kUpsertPoints{"PUT", "/collections/{collection_name}/points"};
inline constexpr QdrantOperation kRetrievePoints{"POST", "/collections/{collection_name}/points"};
inline constexpr QdrantOperation kQueryPoints{"POST",
                                              "/collections/{collection_name}/points/query"};
inline constexpr QdrantOperation kCountPoints{"POST",
                                              "/collections/{collection_name}/points/count"};
inline constexpr QdrantOperation kDeletePoints{"POST",
                                               "/collections/{collection_name}/points/delete"};
inline constexpr QdrantOperation kListAliases{"GET", "/aliases"};
inline constexpr QdrantOperation kUpdateAliases{"POST", "/collections/aliases"};
}  // namespace qdrant_op

// Every operation above, for tests that check them against the spec.
absl::Span<const QdrantOperation> QdrantOperations();

// A point to upsert. `vector` must stay valid for the call.
struct QdrantPoint {
  uint64_t id = 0;
  absl::Span<const float> vector;
  nlohmann::json payload;  // an object, or null for none
};

// A query hit: the point's id and its score (for "Dot" distance, the inner product).
struct QdrantScoredPoint {
  uint64_t id = 0;
  float score = 0;
};

// A retrieved point.
struct QdrantRecord {
  uint64_t id = 0;
  nlohmann::json payload;  // an object (empty if the point has none)
};

struct QdrantAlias {
  std::string alias_name;
  std::string collection_name;
};

// The JSON request bodies, as pure functions (no I/O); each matches the request body schema
// of its operation in the spec (qdrant_client_test checks that against
// qdrant-openapi-v1.19.0.json).
class QdrantRequests {
 public:
  // PUT /collections/{name}: one unnamed dense vector of `dimension` floats compared with
  // "Dot" (see qdrant_vector_store.h for why), and `metadata` (an object, or null for none)
  // stored with the collection and returned by GET /collections/{name} as config.metadata.
  static nlohmann::json CreateCollection(int dimension, const nlohmann::json& metadata);
  // PUT /collections/{name}/index: a payload index on `field` of `schema_type` ("integer",
  // "keyword", ...).
  static nlohmann::json CreateFieldIndex(std::string_view field, std::string_view schema_type);
  // PUT /collections/{name}/points: {"points": [{"id", "vector", "payload"}...]}.
  static nlohmann::json UpsertPoints(absl::Span<const QdrantPoint> points);
  // POST /collections/{name}/points/query: nearest `limit` points to `vector` passing
  // `filter` (null for none), ids and scores only (no payload, no vectors).
  static nlohmann::json QueryPoints(absl::Span<const float> vector, size_t limit,
                                    const nlohmann::json& filter);
  // POST /collections/{name}/points/count: the exact number of points passing `filter`
  // (null for all).
  static nlohmann::json CountPoints(const nlohmann::json& filter);
  // POST /collections/{name}/points: points by id, with payload when `with_payload`.
  static nlohmann::json RetrievePoints(absl::Span<const uint64_t> ids, bool with_payload);
  // POST /collections/{name}/points/delete: points by id.
  static nlohmann::json DeletePoints(absl::Span<const uint64_t> ids);
  // POST /collections/aliases: points `alias` at `collection` in one atomic request, first
  // deleting the alias when `replace_existing` (Qdrant refuses to create an alias that
  // exists, and to delete one that does not). With an empty `collection`, only deletes.
  static nlohmann::json UpdateAliases(std::string_view alias, std::string_view collection,
                                      bool replace_existing);
  // A filter on payload for a search: {"must": [{"key": "seq", "range": {"gte", "lte"}},
  // {"key": "body.<field>", "match": {"value": v}}...]}; bounds at the ends of the seq
  // range are left out, and an unfiltered search gives null (no filter at all).
  // InvalidArgument if a FieldMatch value is not a string, integer or boolean (the only
  // values Qdrant matches exactly) or its field is empty. `accept_fields` is not used.
  static absl::StatusOr<nlohmann::json> Filter(const SearchFilter& filter);
};

class QdrantClient;
using QdrantClientPtr = std::unique_ptr<QdrantClient>;

class QdrantClient {
 public:
  // Checks the options (InvalidArgument: a URL that is not http://host[:port][/prefix], an
  // https URL, max_attempts < 1, a timeout that is not positive); does not connect.
  static absl::StatusOr<QdrantClientPtr> Create(QdrantClientOptions options);
  ~QdrantClient();
  QdrantClient(const QdrantClient&) = delete;
  QdrantClient& operator=(const QdrantClient&) = delete;

  // "http://host:port" as configured, for messages.
  const std::string& url() const { return url_; }

  absl::Status CreateCollection(std::string_view name, int dimension,
                                const nlohmann::json& metadata);
  // The collection's info (the spec's CollectionInfo: "config", "points_count", ...);
  // `name` may be an alias. NotFound if there is no such collection.
  absl::StatusOr<nlohmann::json> GetCollection(std::string_view name);
  absl::Status DeleteCollection(std::string_view name);
  absl::StatusOr<std::vector<std::string>> ListCollections();
  // Waits until the index is built.
  absl::Status CreateFieldIndex(std::string_view collection, std::string_view field,
                                std::string_view schema_type);
  // Inserts or replaces the points; returns once they are applied (wait=true).
  absl::Status UpsertPoints(std::string_view collection, absl::Span<const QdrantPoint> points);
  // Ordered as Qdrant returns them (best first).
  absl::StatusOr<std::vector<QdrantScoredPoint>> QueryPoints(std::string_view collection,
                                                             absl::Span<const float> vector,
                                                             size_t limit,
                                                             const nlohmann::json& filter);
  absl::StatusOr<uint64_t> CountPoints(std::string_view collection, const nlohmann::json& filter);
  // The points that exist among `ids` (missing ids are simply absent from the result).
  absl::StatusOr<std::vector<QdrantRecord>> RetrievePoints(std::string_view collection,
                                                           absl::Span<const uint64_t> ids,
                                                           bool with_payload);
  absl::Status DeletePoints(std::string_view collection, absl::Span<const uint64_t> ids);
  absl::StatusOr<std::vector<QdrantAlias>> ListAliases();
  // See QdrantRequests::UpdateAliases.
  absl::Status UpdateAliases(std::string_view alias, std::string_view collection,
                             bool replace_existing);

 private:
  class Connection;
  struct Endpoint {
    std::string host;
    std::string port;
    std::string prefix;  // path prefix without trailing '/', often empty
  };
  QdrantClient(QdrantClientOptions options, Endpoint endpoint);

  // Sends one request (with retries as described above) and returns the "result" member of
  // Qdrant's answer. `query` is appended to the path ("?wait=true" or empty).
  absl::StatusOr<nlohmann::json> Call(const QdrantOperation& op, std::string_view collection,
                                      std::string_view query, const nlohmann::json* body);
  // Checks that a write made with wait=true reports status "completed".
  absl::Status CheckCompleted(const QdrantOperation& op, std::string_view collection,
                              const nlohmann::json& result);

  const QdrantClientOptions options_;
  const Endpoint endpoint_;
  const std::string url_;
  absl::Mutex mu_;
  std::unique_ptr<Connection> connection_ ABSL_GUARDED_BY(mu_);
};

}  // namespace snapledger
