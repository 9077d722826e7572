// The Qdrant backend without a Qdrant: request bodies checked against Qdrant's published
// OpenAPI spec, error handling against an in-process HTTP server, and the store's flow
// (staged -> publish -> alias switch) against a small in-memory fake of the REST API whose
// every request and answer is itself checked against the spec. Tests against a real Qdrant
// are in qdrant_live_test.cc.
#include "common/index/qdrant/qdrant_client.h"

#include <algorithm>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "common/base/clock.h"
#include "common/index/qdrant/qdrant_vector_store.h"
#include "common/testing/manual_clock.h"
#include "common/testing/openapi_schema.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

#ifndef SNAPLEDGER_QDRANT_SPEC
#error "SNAPLEDGER_QDRANT_SPEC must name Qdrant's OpenAPI spec"
#endif

namespace snapledger {
namespace {

namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using nlohmann::json;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

// ---------------------------------------------------------------------------------------------
// The spec.

// The spec is part of the checked set-up: a missing file fails the tests that need it.
const absl::StatusOr<OpenApiDocument>& Spec() {
  static const auto* spec =
      new absl::StatusOr<OpenApiDocument>(OpenApiDocument::Load(SNAPLEDGER_QDRANT_SPEC));
  return *spec;
}

#define ASSERT_SPEC_LOADED()                                                              \
  ASSERT_TRUE(Spec().ok()) << "Qdrant's OpenAPI spec " << SNAPLEDGER_QDRANT_SPEC          \
                           << " could not be loaded (it must sit in ../shared/reference " \
                              "beside the clone): "                                       \
                           << Spec().status()

std::string Describe(const QdrantOperation& op) {
  return absl::StrCat(std::string(op.method), " ", std::string(op.path));
}

// OK if `body` matches the request body schema of `op` in the spec.
absl::Status CheckRequestBody(const QdrantOperation& op, const json& body) {
  if (!Spec().ok()) return Spec().status();
  absl::StatusOr<std::string> schema = Spec()->RequestBodySchema(op.path, op.method);
  if (!schema.ok()) return schema.status();
  return Spec()->Validate(body, *schema);
}

// OK if `answer` matches the 200 answer schema of `op` in the spec.
absl::Status CheckAnswer(const QdrantOperation& op, const json& answer) {
  if (!Spec().ok()) return Spec().status();
  absl::StatusOr<std::string> schema = Spec()->ResponseSchema(op.path, op.method, "200");
  if (!schema.ok()) return schema.status();
  return Spec()->Validate(answer, *schema);
}

#define EXPECT_BODY_CONFORMS(op, body)                                               \
  EXPECT_TRUE(CheckRequestBody(op, body).ok()) << CheckRequestBody(op, body) << "\n" \
                                               << (body).dump()

// ---------------------------------------------------------------------------------------------
// An in-process HTTP server on 127.0.0.1, port 0, serving on its own thread until destroyed.

using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

Response JsonResponse(const Request& req, int status, const json& body) {
  Response res{static_cast<http::status>(status), req.version()};
  res.set(http::field::content_type, "application/json");
  res.keep_alive(req.keep_alive());
  res.body() = body.dump();
  res.prepare_payload();
  return res;
}

json Ok(json result) { return {{"result", std::move(result)}, {"status", "ok"}, {"time", 0.001}}; }
json Error(std::string text) { return {{"status", {{"error", std::move(text)}}}, {"time", 0.001}}; }

class TestHttpServer {
 public:
  using Handler = std::function<Response(const Request&)>;

  // With `close_after_answer`, every connection is closed right after its first answer
  // although the answer says keep-alive: what a server closing idle connections looks like.
  explicit TestHttpServer(Handler handler, bool close_after_answer = false)
      : handler_(std::move(handler)),
        close_after_answer_(close_after_answer),
        acceptor_(ioc_, {net::ip::make_address("127.0.0.1"), 0}) {
    Accept();
    thread_ = std::thread([this] { ioc_.run(); });
  }
  ~TestHttpServer() {
    ioc_.stop();
    thread_.join();
  }
  TestHttpServer(const TestHttpServer&) = delete;
  TestHttpServer& operator=(const TestHttpServer&) = delete;

  std::string url() const {
    return absl::StrCat("http://127.0.0.1:", acceptor_.local_endpoint().port());
  }
  int requests() const { return requests_.load(); }
  int connections() const { return connections_.load(); }

 private:
  struct Session : std::enable_shared_from_this<Session> {
    Session(tcp::socket socket, TestHttpServer* server)
        : stream(std::move(socket)), server(server) {}
    void Read() {
      req = {};
      http::async_read(
          stream, buffer, req, [self = shared_from_this()](beast::error_code ec, size_t) {
            if (ec) return;
            self->server->requests_.fetch_add(1);
            self->res = self->server->handler_(self->req);
            http::async_write(self->stream, self->res, [self](beast::error_code ec, size_t) {
              if (ec) return;
              if (self->server->close_after_answer_ || !self->req.keep_alive()) {
                self->stream.socket().shutdown(tcp::socket::shutdown_both, ec);
                return;
              }
              self->Read();
            });
          });
    }
    beast::tcp_stream stream;
    beast::flat_buffer buffer;
    Request req;
    Response res;
    TestHttpServer* server;
  };

  void Accept() {
    acceptor_.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec) return;
      connections_.fetch_add(1);
      std::make_shared<Session>(std::move(socket), this)->Read();
      Accept();
    });
  }

  const Handler handler_;
  const bool close_after_answer_;
  std::atomic<int> requests_{0};
  std::atomic<int> connections_{0};
  net::io_context ioc_;
  tcp::acceptor acceptor_;
  std::thread thread_;
};

// ---------------------------------------------------------------------------------------------
// Request bodies against the spec.

const float kVector[] = {0.1f, -0.5f, 0.25f, 0.8f};

TEST(QdrantSpec, EveryOperationTheClientCallsIsInTheSpec) {
  ASSERT_SPEC_LOADED();
  for (const QdrantOperation& op : QdrantOperations()) {
    EXPECT_TRUE(Spec()->HasOperation(op.path, op.method)) << Describe(op);
  }
  // And every one that sends a body has a JSON request body schema there.
  for (const QdrantOperation& op :
       {qdrant_op::kCreateCollection, qdrant_op::kCreateFieldIndex, qdrant_op::kUpsertPoints,
        qdrant_op::kRetrievePoints, qdrant_op::kQueryPoints, qdrant_op::kCountPoints,
        qdrant_op::kDeletePoints, qdrant_op::kUpdateAliases}) {
    EXPECT_TRUE(Spec()->RequestBodySchema(op.path, op.method).ok()) << Describe(op);
  }
}

TEST(QdrantSpec, CreateCollectionBodyConforms) {
  ASSERT_SPEC_LOADED();
  json body = QdrantRequests::CreateCollection(
      128, {{"snapledger", {{"embedder_id", "feature-hash-v1/dim=128"}, {"dimension", 128}}}});
  EXPECT_BODY_CONFORMS(qdrant_op::kCreateCollection, body);
  EXPECT_EQ(body["vectors"], json::parse(R"({"size": 128, "distance": "Dot"})"));
  EXPECT_EQ(body["metadata"]["snapledger"]["dimension"], 128);
  EXPECT_BODY_CONFORMS(qdrant_op::kCreateCollection, QdrantRequests::CreateCollection(4, json()));
}

TEST(QdrantSpec, PayloadIndexBodyConforms) {
  ASSERT_SPEC_LOADED();
  EXPECT_BODY_CONFORMS(qdrant_op::kCreateFieldIndex,
                       QdrantRequests::CreateFieldIndex("seq", "integer"));
  EXPECT_BODY_CONFORMS(qdrant_op::kCreateFieldIndex,
                       QdrantRequests::CreateFieldIndex("ts", "integer"));
}

TEST(QdrantSpec, UpsertBodyConforms) {
  ASSERT_SPEC_LOADED();
  const QdrantPoint points[] = {
      {1,
       kVector,
       {{"seq", 1},
        {"ts", 1700000000000000},
        {"hash", std::string(64, 'a')},
        {"body", {{"port", "eth0"}, {"up", true}, {"n", {1, 2}}}}}},
      {uint64_t{1} << 63, kVector, json()},
  };
  json body = QdrantRequests::UpsertPoints(points);
  EXPECT_BODY_CONFORMS(qdrant_op::kUpsertPoints, body);
  EXPECT_EQ(body["points"].size(), 2u);
  EXPECT_FALSE(body["points"][1].contains("payload"));
}

TEST(QdrantSpec, UpsertSendsEachFloatInItsShortestForm) {
  const QdrantPoint points[] = {{1, kVector, json()}};
  EXPECT_THAT(QdrantRequests::UpsertPoints(points).dump(),
              HasSubstr(R"("vector":[0.1,-0.5,0.25,0.8])"));
}

TEST(QdrantSpec, QueryBodyWithoutFilterConforms) {
  ASSERT_SPEC_LOADED();
  absl::StatusOr<json> filter = QdrantRequests::Filter(SearchFilter{});
  ASSERT_TRUE(filter.ok()) << filter.status();
  EXPECT_TRUE(filter->is_null());
  json body = QdrantRequests::QueryPoints(kVector, 10, *filter);
  EXPECT_BODY_CONFORMS(qdrant_op::kQueryPoints, body);
  EXPECT_FALSE(body.contains("filter"));
  EXPECT_EQ(body["with_payload"], false);
  EXPECT_EQ(body["limit"], 10);
}

TEST(QdrantSpec, QueryBodyWithSeqRangeAndFieldMatchesConforms) {
  ASSERT_SPEC_LOADED();
  SearchFilter f;
  f.min_seq = 10;
  f.max_seq = 20;
  f.fields = {{"port", "eth0"}, {"vlan", 7}, {"up", true}};
  absl::StatusOr<json> filter = QdrantRequests::Filter(f);
  ASSERT_TRUE(filter.ok()) << filter.status();
  EXPECT_EQ(*filter, json::parse(R"({"must": [
      {"key": "seq", "range": {"gte": 10, "lte": 20}},
      {"key": "body.port", "match": {"value": "eth0"}},
      {"key": "body.vlan", "match": {"value": 7}},
      {"key": "body.up", "match": {"value": true}}]})"));
  EXPECT_BODY_CONFORMS(qdrant_op::kQueryPoints, QdrantRequests::QueryPoints(kVector, 5, *filter));
}

TEST(QdrantSpec, SeqBoundsAtTheEndsOfTheRangeAreLeftOut) {
  SearchFilter from;
  from.min_seq = 5;
  EXPECT_EQ(*QdrantRequests::Filter(from),
            json::parse(R"({"must": [{"key": "seq", "range": {"gte": 5}}]})"));
  SearchFilter to;
  to.max_seq = 9;
  EXPECT_EQ(*QdrantRequests::Filter(to),
            json::parse(R"({"must": [{"key": "seq", "range": {"lte": 9}}]})"));
}

TEST(QdrantSpec, FieldMatchOnAValueQdrantCannotMatchIsInvalidArgument) {
  SearchFilter f;
  f.fields = {{"load", 0.5}};
  EXPECT_EQ(QdrantRequests::Filter(f).status().code(), absl::StatusCode::kInvalidArgument);
  f.fields = {{"", "x"}};
  EXPECT_EQ(QdrantRequests::Filter(f).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(QdrantSpec, CountRetrieveAndDeleteBodiesConform) {
  ASSERT_SPEC_LOADED();
  SearchFilter f;
  f.min_seq = 1;
  f.max_seq = 1000;
  EXPECT_BODY_CONFORMS(qdrant_op::kCountPoints, QdrantRequests::CountPoints(json()));
  EXPECT_BODY_CONFORMS(qdrant_op::kCountPoints,
                       QdrantRequests::CountPoints(*QdrantRequests::Filter(f)));
  EXPECT_EQ(QdrantRequests::CountPoints(json())["exact"], true);
  const uint64_t ids[] = {1000, 1001};
  EXPECT_BODY_CONFORMS(qdrant_op::kRetrievePoints, QdrantRequests::RetrievePoints(ids, true));
  EXPECT_BODY_CONFORMS(qdrant_op::kRetrievePoints, QdrantRequests::RetrievePoints(ids, false));
  EXPECT_BODY_CONFORMS(qdrant_op::kDeletePoints, QdrantRequests::DeletePoints(ids));
}

TEST(QdrantSpec, AliasSwitchIsOneRequestThatConforms) {
  ASSERT_SPEC_LOADED();
  json body = QdrantRequests::UpdateAliases("events", "events-2", /*replace_existing=*/true);
  EXPECT_BODY_CONFORMS(qdrant_op::kUpdateAliases, body);
  EXPECT_EQ(body, json::parse(R"({"actions": [
      {"delete_alias": {"alias_name": "events"}},
      {"create_alias": {"collection_name": "events-2", "alias_name": "events"}}]})"));
  EXPECT_BODY_CONFORMS(qdrant_op::kUpdateAliases,
                       QdrantRequests::UpdateAliases("events", "events-1", false));
  json drop = QdrantRequests::UpdateAliases("events", "", true);
  EXPECT_BODY_CONFORMS(qdrant_op::kUpdateAliases, drop);
  EXPECT_EQ(drop["actions"].size(), 1u);
}

// The check is not vacuous: bodies the spec does not allow are caught.
TEST(QdrantSpec, BodiesTheSpecRejectsAreCaught) {
  ASSERT_SPEC_LOADED();
  json bad_distance = QdrantRequests::CreateCollection(4, json());
  bad_distance["vectors"]["distance"] = "dot";
  EXPECT_THAT(std::string(CheckRequestBody(qdrant_op::kCreateCollection, bad_distance).message()),
              HasSubstr("/vectors"));
  json zero_limit = QdrantRequests::QueryPoints(kVector, 0, json());
  EXPECT_THAT(std::string(CheckRequestBody(qdrant_op::kQueryPoints, zero_limit).message()),
              HasSubstr("/limit"));
  json bad_filter = QdrantRequests::QueryPoints(kVector, 3, json::parse(R"({"must_all": []})"));
  EXPECT_THAT(std::string(CheckRequestBody(qdrant_op::kQueryPoints, bad_filter).message()),
              HasSubstr("must_all"));
  json negative_id = QdrantRequests::DeletePoints({});
  negative_id["points"].push_back(-1);
  EXPECT_FALSE(CheckRequestBody(qdrant_op::kDeletePoints, negative_id).ok());
}

// ---------------------------------------------------------------------------------------------
// Errors, against scripted servers.

struct ClientUnderTest {
  std::vector<absl::Duration> sleeps;
  QdrantClientPtr client;
};

std::unique_ptr<ClientUnderTest> NewClient(const std::string& url, int max_attempts = 3,
                                           absl::Duration timeout = absl::Seconds(10),
                                           std::string api_key = "") {
  auto out = std::make_unique<ClientUnderTest>();
  QdrantClientOptions options;
  options.url = url;
  options.max_attempts = max_attempts;
  options.timeout = timeout;
  options.api_key = std::move(api_key);
  options.sleep = [sleeps = &out->sleeps](absl::Duration d) { sleeps->push_back(d); };
  absl::StatusOr<QdrantClientPtr> client = QdrantClient::Create(std::move(options));
  EXPECT_TRUE(client.ok()) << client.status();
  if (client.ok()) out->client = std::move(*client);
  return out;
}

TEST(QdrantClient, BadRequestIsInvalidArgumentWithQdrantsText) {
  TestHttpServer server([](const Request& req) {
    return JsonResponse(req, 400,
                        Error("Wrong input: Vector dimension error: expected dim: 128, got 64"));
  });
  auto c = NewClient(server.url());
  const QdrantPoint points[] = {{1, kVector, json()}};
  absl::Status st = c->client->UpsertPoints("events-2", points);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(),
            "qdrant PUT /collections/events-2/points: 400 Bad Request: Wrong input: Vector "
            "dimension error: expected dim: 128, got 64");
  EXPECT_EQ(server.requests(), 1);  // a client error is not retried
}

TEST(QdrantClient, NotFoundAndConflictKeepTheirMeaning) {
  TestHttpServer server([](const Request& req) {
    if (req.method() == http::verb::get) {
      return JsonResponse(req, 404, Error("Not found: Collection `gone` doesn't exist!"));
    }
    return JsonResponse(req, 409, Error("Wrong input: Collection `x` already exists!"));
  });
  auto c = NewClient(server.url());
  absl::StatusOr<json> info = c->client->GetCollection("gone");
  EXPECT_EQ(info.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(info.status().message()),
              HasSubstr("qdrant GET /collections/gone: 404 Not Found: Not found: Collection"));
  EXPECT_EQ(c->client->CreateCollection("x", 4, json()).code(), absl::StatusCode::kAlreadyExists);
}

TEST(QdrantClient, ServerErrorsAreRetriedWithBackoff) {
  std::atomic<int> calls{0};
  TestHttpServer server([&calls](const Request& req) {
    if (calls.fetch_add(1) < 2) return JsonResponse(req, 500, Error("Service internal error"));
    return JsonResponse(req, 200, Ok({{"count", 5}}));
  });
  auto c = NewClient(server.url());
  absl::StatusOr<uint64_t> count = c->client->CountPoints("events-1", json());
  ASSERT_TRUE(count.ok()) << count.status();
  EXPECT_EQ(*count, 5u);
  EXPECT_EQ(server.requests(), 3);
  EXPECT_THAT(c->sleeps, ElementsAre(absl::Milliseconds(200), absl::Milliseconds(400)));
}

TEST(QdrantClient, PersistentUnavailabilityIsUnavailableAfterMaxAttempts) {
  TestHttpServer server(
      [](const Request& req) { return JsonResponse(req, 503, Error("Service unavailable")); });
  auto c = NewClient(server.url(), /*max_attempts=*/3);
  absl::StatusOr<std::vector<QdrantAlias>> aliases = c->client->ListAliases();
  EXPECT_EQ(aliases.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(aliases.status().message()),
              AllOf(HasSubstr("qdrant GET /aliases: 503 Service Unavailable: Service unavailable"),
                    HasSubstr("after 3 attempts")));
  EXPECT_EQ(server.requests(), 3);
}

TEST(QdrantClient, TooManyRequestsIsRetried) {
  std::atomic<int> calls{0};
  TestHttpServer server([&calls](const Request& req) {
    if (calls.fetch_add(1) == 0) return JsonResponse(req, 429, Error("Too many requests"));
    return JsonResponse(req, 200, Ok({{"collections", json::array()}}));
  });
  auto c = NewClient(server.url());
  EXPECT_TRUE(c->client->ListCollections().ok());
  EXPECT_EQ(server.requests(), 2);
}

TEST(QdrantClient, CallsThatCannotBeRepeatedAreNotRetriedOnceSent) {
  TestHttpServer server(
      [](const Request& req) { return JsonResponse(req, 500, Error("Service internal error")); });
  auto c = NewClient(server.url());
  EXPECT_EQ(c->client->CreateCollection("x", 4, json()).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(c->client->UpdateAliases("a", "x", false).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(server.requests(), 2);
}

TEST(QdrantClient, ServerThatNeverAnswersIsDeadlineExceeded) {
  // Connections complete in the kernel's backlog, but nobody accepts or reads them.
  net::io_context ioc;
  tcp::acceptor silent(ioc, {net::ip::make_address("127.0.0.1"), 0});
  auto c = NewClient(absl::StrCat("http://127.0.0.1:", silent.local_endpoint().port()),
                     /*max_attempts=*/2, absl::Milliseconds(300));
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<uint64_t> count = c->client->CountPoints("events-1", json());
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(count.status().code(), absl::StatusCode::kDeadlineExceeded) << count.status();
  EXPECT_THAT(std::string(count.status().message()),
              HasSubstr("qdrant POST /collections/events-1/points/count: no answer within"));
  EXPECT_EQ(c->sleeps.size(), 1u);
  EXPECT_LT(elapsed, std::chrono::seconds(5));  // two 300 ms attempts, not 10 s or forever
}

TEST(QdrantClient, AnswerThatIsNotJsonIsInternal) {
  TestHttpServer server([](const Request& req) {
    Response res = JsonResponse(req, 200, json());
    res.body() = "{\"result\": {\"count\": ";
    res.prepare_payload();
    return res;
  });
  auto c = NewClient(server.url());
  absl::StatusOr<uint64_t> count = c->client->CountPoints("events-1", json());
  EXPECT_EQ(count.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(count.status().message()),
              HasSubstr("qdrant POST /collections/events-1/points/count: 200 OK but the answer "
                        "is not Qdrant's JSON"));
}

TEST(QdrantClient, AnswerOfTheWrongShapeIsInternal) {
  TestHttpServer server([](const Request& req) {
    return JsonResponse(req, 200, Ok({{"count", "many"}}));
  });
  auto c = NewClient(server.url());
  EXPECT_EQ(c->client->CountPoints("events-1", json()).status().code(),
            absl::StatusCode::kInternal);
}

TEST(QdrantClient, ConnectionRefusedIsUnavailableAfterRetries) {
  // A bound socket that does not listen: connecting to its port is refused, and no one else
  // can take the port meanwhile.
  net::io_context ioc;
  tcp::socket bound(ioc);
  bound.open(tcp::v4());
  bound.bind({net::ip::make_address("127.0.0.1"), 0});
  auto c = NewClient(absl::StrCat("http://127.0.0.1:", bound.local_endpoint().port()));
  // Not even creating a collection is sent, so it too is retried.
  absl::Status st = c->client->CreateCollection("x", 4, json());
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(st.message()),
              AllOf(HasSubstr("qdrant PUT /collections/x: connect to 127.0.0.1:"),
                    HasSubstr("refused"), HasSubstr("after 3 attempts")));
  EXPECT_EQ(c->sleeps.size(), 2u);
}

TEST(QdrantClient, WriteNotAppliedInTimeIsDeadlineExceeded) {
  TestHttpServer server([](const Request& req) {
    return JsonResponse(req, 200, Ok({{"operation_id", 7}, {"status", "wait_timeout"}}));
  });
  auto c = NewClient(server.url());
  const uint64_t ids[] = {1};
  EXPECT_EQ(c->client->DeletePoints("events-1", ids).code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(QdrantClient, SendsApiKeyAndReusesOneConnection) {
  TestHttpServer server([](const Request& req) {
    if (req["api-key"] != "secret") return JsonResponse(req, 401, Error("Invalid api-key"));
    return JsonResponse(req, 200, Ok({{"aliases", json::array()}}));
  });
  auto c = NewClient(server.url(), 3, absl::Seconds(10), "secret");
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(c->client->ListAliases().ok());
  EXPECT_EQ(server.requests(), 3);
  EXPECT_EQ(server.connections(), 1);
  auto anonymous = NewClient(server.url());
  EXPECT_EQ(anonymous->client->ListAliases().status().code(), absl::StatusCode::kUnauthenticated);
}

TEST(QdrantClient, ConnectionClosedWhileIdleIsReplacedWithoutAnError) {
  TestHttpServer server(
      [](const Request& req) {
        return JsonResponse(req, 200, Ok({{"aliases", json::array()}}));
      },
      /*close_after_answer=*/true);
  auto c = NewClient(server.url(), /*max_attempts=*/1);
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<std::vector<QdrantAlias>> aliases = c->client->ListAliases();
    EXPECT_TRUE(aliases.ok()) << aliases.status();
  }
  EXPECT_EQ(server.requests(), 3);
  EXPECT_EQ(server.connections(), 3);
  EXPECT_TRUE(c->sleeps.empty());
}

TEST(QdrantClient, UrlMustBePlainHttp) {
  for (const char* url : {"https://127.0.0.1:6333", "ftp://h", "127.0.0.1:6333", "http://",
                          "http://h:0", "http://h:99999", "http://u@h:1", "http://[::1"}) {
    QdrantClientOptions options;
    options.url = url;
    EXPECT_EQ(QdrantClient::Create(options).status().code(), absl::StatusCode::kInvalidArgument)
        << url;
  }
  QdrantClientOptions https;
  https.url = "https://qdrant:6333";
  EXPECT_THAT(std::string(QdrantClient::Create(https).status().message()),
              HasSubstr("https is not supported"));
  for (const char* url :
       {"http://127.0.0.1:6333", "http://qdrant", "http://[::1]:6333/", "http://h:6333/qdrant/"}) {
    QdrantClientOptions options;
    options.url = url;
    EXPECT_TRUE(QdrantClient::Create(options).ok()) << url;
  }
}

TEST(QdrantClient, UrlPathPrefixIsKept) {
  TestHttpServer server([](const Request& req) {
    if (req.target() != "/qdrant/aliases") return JsonResponse(req, 404, Error("no route"));
    return JsonResponse(req, 200, Ok({{"aliases", json::array()}}));
  });
  auto c = NewClient(server.url() + "/qdrant/");
  EXPECT_TRUE(c->client->ListAliases().ok());
}

// ---------------------------------------------------------------------------------------------
// A fake Qdrant: collections, points and aliases in memory, brute-force dot-product search,
// enough of the REST API for QdrantVectorStore. It tests our flow, not Qdrant. Every request
// body and every 200 answer is checked against the spec; a mismatch is recorded and fails the
// test (and the request is answered 400).

class FakeQdrant {
 public:
  Response Handle(const Request& req) {
    absl::MutexLock lock(&mu_);
    const std::string_view target(req.target().data(), req.target().size());
    std::string_view path = target.substr(0, target.find('?'));
    for (const QdrantOperation& op : QdrantOperations()) {
      std::string collection;
      if (op.method != std::string_view(req.method_string().data(), req.method_string().size()) ||
          !MatchPath(op.path, path, &collection)) {
        continue;
      }
      json body = req.body().empty() ? json() : json::parse(req.body(), nullptr, false);
      if (!req.body().empty()) {
        if (absl::Status st = CheckRequestBody(op, body); !st.ok()) {
          violations_.push_back(absl::StrCat(Describe(op), " request: ", st.ToString()));
          return JsonResponse(req, 400, Error(absl::StrCat("fake: ", st.ToString())));
        }
      }
      if (op.method == "POST" || op.method == "PUT") requests_by_op_[Describe(op)].push_back(body);
      auto [status, answer] = Dispatch(op, collection, body);
      if (status == 200) {
        if (absl::Status st = CheckAnswer(op, answer); !st.ok()) {
          violations_.push_back(absl::StrCat(Describe(op), " answer: ", st.ToString()));
        }
      }
      return JsonResponse(req, status, answer);
    }
    violations_.push_back(absl::StrCat("no such operation: ", std::string(req.method_string()), " ",
                                       std::string(target)));
    return JsonResponse(req, 404, Error("fake: no such operation"));
  }

  // Inspection and tampering, from the test's thread.
  std::vector<std::string> Violations() {
    absl::MutexLock lock(&mu_);
    return violations_;
  }
  std::vector<std::string> Collections() {
    absl::MutexLock lock(&mu_);
    std::vector<std::string> names;
    for (const auto& [name, unused] : collections_) names.push_back(name);
    return names;
  }
  std::map<std::string, std::string> Aliases() {
    absl::MutexLock lock(&mu_);
    return aliases_;
  }
  std::vector<json> Requests(const QdrantOperation& op) {
    absl::MutexLock lock(&mu_);
    return requests_by_op_[Describe(op)];
  }
  json Payload(const std::string& collection, uint64_t id) {
    absl::MutexLock lock(&mu_);
    return collections_.at(collection).points.at(id).payload;
  }
  std::set<std::string> Indexes(const std::string& collection) {
    absl::MutexLock lock(&mu_);
    return collections_.at(collection).indexes;
  }
  json Metadata(const std::string& collection) {
    absl::MutexLock lock(&mu_);
    return collections_.at(collection).metadata;
  }
  void SetMetadata(const std::string& collection, json metadata) {
    absl::MutexLock lock(&mu_);
    collections_.at(collection).metadata = std::move(metadata);
  }
  void ErasePoint(const std::string& collection, uint64_t id) {
    absl::MutexLock lock(&mu_);
    collections_.at(collection).points.erase(id);
  }
  void AddCollection(const std::string& name, int dim) {
    absl::MutexLock lock(&mu_);
    collections_[name].dim = dim;
  }

 private:
  struct Point {
    std::vector<float> vector;
    json payload;
  };
  struct Collection {
    int dim = 0;
    std::string distance = "Dot";
    json metadata;
    std::map<uint64_t, Point> points;
    std::set<std::string> indexes;
  };
  using Answer = std::pair<int, json>;

  static bool MatchPath(std::string_view pattern, std::string_view path, std::string* name) {
    const std::vector<std::string> p = absl::StrSplit(std::string(pattern), '/');
    const std::vector<std::string> s = absl::StrSplit(std::string(path), '/');
    if (p.size() != s.size()) return false;
    for (size_t i = 0; i < p.size(); ++i) {
      if (p[i] == "{collection_name}") {
        *name = s[i];
      } else if (p[i] != s[i]) {
        return false;
      }
    }
    return true;
  }

  static json Completed() { return Ok({{"operation_id", 1}, {"status", "completed"}}); }

  Collection* Find(const std::string& name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto alias = aliases_.find(name);
    auto it = collections_.find(alias != aliases_.end() ? alias->second : name);
    return it == collections_.end() ? nullptr : &it->second;
  }

  static bool Matches(const json& payload, const json& filter) {
    if (filter.is_null()) return true;
    for (const json& c : filter.at("must")) {
      const json* v = &payload;
      const std::vector<std::string> keys = absl::StrSplit(c.at("key").get<std::string>(), '.');
      for (const std::string& key : keys) {
        if (!v->is_object() || !v->contains(key)) return false;
        v = &(*v)[key];
      }
      if (c.contains("match") && *v != c["match"]["value"]) return false;
      if (c.contains("range")) {
        const json& r = c["range"];
        if (!v->is_number()) return false;
        const double x = v->get<double>();
        if (r.contains("gte") && x < r["gte"].get<double>()) return false;
        if (r.contains("lte") && x > r["lte"].get<double>()) return false;
      }
    }
    return true;
  }

  Answer Dispatch(const QdrantOperation& op, const std::string& name, const json& body)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto is = [&op](const QdrantOperation& other) {
      return op.method == other.method && op.path == other.path;
    };
    if (is(qdrant_op::kListAliases)) {
      json aliases = json::array();
      for (const auto& [a, c] : aliases_) {
        aliases.push_back({{"alias_name", a}, {"collection_name", c}});
      }
      return {200, Ok({{"aliases", aliases}})};
    }
    if (is(qdrant_op::kListCollections)) {
      json list = json::array();
      for (const auto& [n, unused] : collections_) list.push_back({{"name", n}});
      return {200, Ok({{"collections", list}})};
    }
    if (is(qdrant_op::kUpdateAliases)) return UpdateAliases(body);
    if (is(qdrant_op::kCreateCollection)) {
      if (collections_.count(name)) {
        return {409, Error(absl::StrCat("Wrong input: Collection `", name, "` already exists!"))};
      }
      Collection& c = collections_[name];
      c.dim = body["vectors"]["size"].get<int>();
      c.distance = body["vectors"]["distance"].get<std::string>();
      c.metadata = body.value("metadata", json());
      return {200, Ok(true)};
    }
    if (is(qdrant_op::kDeleteCollection)) {
      if (!collections_.erase(name)) return {200, Ok(false)};
      std::erase_if(aliases_, [&name](const auto& a) { return a.second == name; });
      return {200, Ok(true)};
    }
    Collection* c = Find(name);
    if (c == nullptr) {
      return {404, Error(absl::StrCat("Not found: Collection `", name, "` doesn't exist!"))};
    }
    if (is(qdrant_op::kGetCollection)) return {200, Ok(Info(*c))};
    if (is(qdrant_op::kCreateFieldIndex)) {
      c->indexes.insert(body["field_name"].get<std::string>());
      return {200, Completed()};
    }
    if (is(qdrant_op::kUpsertPoints)) return Upsert(*c, body);
    if (is(qdrant_op::kDeletePoints)) {
      for (const json& id : body["points"]) c->points.erase(id.get<uint64_t>());
      return {200, Completed()};
    }
    if (is(qdrant_op::kCountPoints)) {
      size_t n = 0;
      for (const auto& [id, p] : c->points) n += Matches(p.payload, body.value("filter", json()));
      return {200, Ok({{"count", n}})};
    }
    if (is(qdrant_op::kRetrievePoints)) {
      json records = json::array();
      for (const json& id : body["ids"]) {
        auto it = c->points.find(id.get<uint64_t>());
        if (it == c->points.end()) continue;
        json r = {{"id", it->first}};
        if (body.value("with_payload", true)) r["payload"] = it->second.payload;
        records.push_back(std::move(r));
      }
      return {200, Ok(records)};
    }
    return Query(*c, body);  // the only operation left
  }

  static json Info(const Collection& c) {
    json config = {
        {"params", {{"vectors", {{"size", c.dim}, {"distance", c.distance}}}}},
        {"hnsw_config", {{"m", 16}, {"ef_construct", 100}, {"full_scan_threshold", 10000}}},
        {"optimizer_config", {{"default_segment_number", 0}, {"flush_interval_sec", 5}}}};
    if (!c.metadata.is_null()) config["metadata"] = c.metadata;
    return {{"status", "green"},
            {"optimizer_status", "ok"},
            {"segments_count", 1},
            {"points_count", c.points.size()},
            {"payload_schema", json::object()},
            {"config", config}};
  }

  static Answer Upsert(Collection& c, const json& body) {
    for (const json& p : body["points"]) {
      if (static_cast<int>(p["vector"].size()) != c.dim) {
        return {400, Error(absl::StrCat("Wrong input: Vector dimension error: expected dim: ",
                                        c.dim, ", got ", p["vector"].size()))};
      }
    }
    for (const json& p : body["points"]) {
      c.points[p["id"].get<uint64_t>()] = {p["vector"].get<std::vector<float>>(),
                                           p.value("payload", json::object())};
    }
    return {200, Completed()};
  }

  // Ties come back in descending id order, so the store's own tie-break is exercised.
  static Answer Query(const Collection& c, const json& body) {
    const auto q = body["query"].get<std::vector<float>>();
    std::vector<std::pair<float, uint64_t>> scored;
    for (const auto& [id, p] : c.points) {
      if (!Matches(p.payload, body.value("filter", json()))) continue;
      float dot = 0;
      for (size_t i = 0; i < q.size(); ++i) dot += q[i] * p.vector[i];
      scored.push_back({dot, id});
    }
    std::sort(scored.begin(), scored.end(), [](const auto& a, const auto& b) {
      return a.first != b.first ? a.first > b.first : a.second > b.second;
    });
    json points = json::array();
    const size_t limit = body.value("limit", size_t{10});
    for (size_t i = 0; i < scored.size() && i < limit; ++i) {
      points.push_back({{"id", scored[i].second}, {"version", 0}, {"score", scored[i].first}});
    }
    return {200, Ok({{"points", points}})};
  }

  Answer UpdateAliases(const json& body) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::map<std::string, std::string> next = aliases_;  // all actions or none
    for (const json& action : body["actions"]) {
      if (action.contains("delete_alias")) {
        const std::string alias = action["delete_alias"]["alias_name"];
        if (!next.erase(alias)) {
          return {404, Error(absl::StrCat("Not found: Alias ", alias, " does not exists!"))};
        }
      } else {
        const std::string alias = action["create_alias"]["alias_name"];
        const std::string target = action["create_alias"]["collection_name"];
        if (!collections_.count(target)) {
          return {404, Error(absl::StrCat("Not found: Collection `", target, "` doesn't exist!"))};
        }
        if (next.count(alias)) {
          return {409, Error(absl::StrCat("Wrong input: Alias ", alias, " already exists!"))};
        }
        next[alias] = target;
      }
    }
    aliases_ = std::move(next);
    return {200, Ok(true)};
  }

  absl::Mutex mu_;
  std::map<std::string, Collection> collections_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> aliases_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::vector<json>> requests_by_op_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> violations_ ABSL_GUARDED_BY(mu_);
};

// ---------------------------------------------------------------------------------------------
// The store's flow against the fake.

constexpr char kAlias[] = "events";
const IndexIdentity kIdentity{"test-embedder/dim=4", 4};

// Event i (1-based) of a test ledger: body {"kind": "a" for odd i, "b" for even, "n": i}.
struct TestEvents {
  std::vector<std::string> bodies;
  std::vector<std::string> hashes;
  std::vector<IndexedEvent> events;
  std::vector<float> vectors;

  TestEvents(uint64_t first, uint64_t last,
             const std::function<std::vector<float>(uint64_t)>& vec) {
    for (uint64_t seq = first; seq <= last; ++seq) {
      bodies.push_back(json{{"kind", seq % 2 ? "a" : "b"}, {"n", seq}}.dump());
      hashes.push_back(std::string(64, static_cast<char>('a' + seq % 6)));
      for (float f : vec(seq)) vectors.push_back(f);
    }
    for (size_t i = 0; i < bodies.size(); ++i) {
      events.push_back(
          {first + i, static_cast<int64_t>(1'000'000 * (first + i)), hashes[i], bodies[i]});
    }
  }
};

// Unit vectors that differ per seq: seq s points along axis s % 4, tilted by s.
std::vector<float> AxisVector(uint64_t seq) {
  std::vector<float> v(4, 0.0f);
  v[seq % 4] = 1.0f;
  v[(seq + 1) % 4] = 0.01f * static_cast<float>(seq);
  float norm = 0;
  for (float f : v) norm += f * f;
  for (float& f : v) f /= std::sqrt(norm);
  return v;
}

class QdrantStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_SPEC_LOADED();
    store_ = NewStore();
    ASSERT_NE(store_, nullptr);
  }
  void TearDown() override { EXPECT_THAT(fake_.Violations(), ::testing::IsEmpty()); }

  VectorStorePtr NewStore(size_t batch_size = 256) {
    QdrantVectorStoreOptions options;
    options.client.url = server_.url();
    options.alias = kAlias;
    options.batch_size = batch_size;
    absl::StatusOr<std::unique_ptr<QdrantVectorStore>> store =
        QdrantVectorStore::Create(options, &clock_);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? std::move(*store) : nullptr;
  }

  // A staged index holding events first..last (AxisVector), not published.
  VectorIndexPtr Staged(uint64_t last, VectorStore* store = nullptr) {
    clock_.Advance(1000);
    absl::StatusOr<VectorIndexPtr> index = (store ? store : store_.get())->CreateStaged(kIdentity);
    EXPECT_TRUE(index.ok()) << index.status();
    if (!index.ok()) return nullptr;
    if (last > 0) {
      TestEvents e(1, last, AxisVector);
      absl::Status st = (*index)->Add(e.events, e.vectors);
      EXPECT_TRUE(st.ok()) << st;
    }
    return std::move(*index);
  }

  std::string Published() { return fake_.Aliases()[kAlias]; }

  FakeQdrant fake_;
  TestHttpServer server_{[this](const Request& req) { return fake_.Handle(req); }};
  ManualClock clock_{1'700'000'000'000'000};
  VectorStorePtr store_;
};

TEST_F(QdrantStoreTest, NothingIsPublishedAtFirst) {
  absl::StatusOr<VectorIndexPtr> index = store_->OpenPublished(kIdentity);
  EXPECT_EQ(index.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(index.status().message()), HasSubstr("alias events does not exist"));
  EXPECT_EQ(store_->Describe(), absl::StrCat("qdrant ", server_.url(), " alias events"));
}

TEST_F(QdrantStoreTest, StagedCollectionCarriesIdentityAndIndexesAndStaysInvisible) {
  VectorIndexPtr staged = Staged(0);
  ASSERT_NE(staged, nullptr);
  ASSERT_THAT(fake_.Collections(), ElementsAre("events-1700000000001000"));
  EXPECT_EQ(
      fake_.Metadata("events-1700000000001000"),
      json::parse(R"({"snapledger": {"embedder_id": "test-embedder/dim=4", "dimension": 4}})"));
  EXPECT_THAT(fake_.Indexes("events-1700000000001000"), UnorderedElementsAre("seq", "ts"));
  EXPECT_EQ(staged->LastSeq(), 0u);
  EXPECT_EQ(staged->Identity(), kIdentity);
  EXPECT_EQ(store_->OpenPublished(kIdentity).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(QdrantStoreTest, AddStoresSeqTsHashAndBodyInBatches) {
  VectorStorePtr store = NewStore(/*batch_size=*/2);
  VectorIndexPtr staged = Staged(5, store.get());
  ASSERT_NE(staged, nullptr);
  EXPECT_EQ(staged->LastSeq(), 5u);
  EXPECT_EQ(fake_.Requests(qdrant_op::kUpsertPoints).size(), 3u);  // 2 + 2 + 1
  const std::string collection = fake_.Collections().at(0);
  EXPECT_EQ(fake_.Payload(collection, 3),
            json::parse(absl::StrCat(R"({"seq": 3, "ts": 3000000, "hash": ")", std::string(64, 'd'),
                                     R"(", "body": {"kind": "a", "n": 3}})")));
  ASSERT_TRUE(store->Publish(*staged).ok());
  absl::StatusOr<VectorIndexPtr> reopened = store->OpenPublished(kIdentity);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ((*reopened)->LastSeq(), 5u);
  // Adding continues where the index ends, on the reopened handle too.
  TestEvents more(6, 7, AxisVector);
  EXPECT_TRUE((*reopened)->Add(more.events, more.vectors).ok());
  EXPECT_EQ((*reopened)->LastSeq(), 7u);
}

TEST_F(QdrantStoreTest, AddChecksEverythingBeforeSendingAnything) {
  VectorIndexPtr staged = Staged(2);
  ASSERT_NE(staged, nullptr);
  TestEvents gap(4, 5, AxisVector);
  absl::Status st = staged->Add(gap.events, gap.vectors);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("has seq 4, want 3"));
  TestEvents next(3, 4, AxisVector);
  EXPECT_EQ(staged->Add(next.events, absl::MakeSpan(next.vectors).subspan(1)).code(),
            absl::StatusCode::kInvalidArgument);
  next.events[1].body = "[1, 2]";
  EXPECT_EQ(staged->Add(next.events, next.vectors).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(fake_.Requests(qdrant_op::kUpsertPoints).size(), 1u);  // only Staged(2)'s
  EXPECT_EQ(staged->LastSeq(), 2u);
}

TEST_F(QdrantStoreTest, PublishSwitchesTheAliasInOneRequestAndDropsTheOldCollection) {
  VectorIndexPtr first = Staged(3);
  ASSERT_NE(first, nullptr);
  ASSERT_TRUE(store_->Publish(*first).ok());
  const std::string first_name = Published();
  EXPECT_EQ(first_name, "events-1700000000001000");

  VectorIndexPtr second = Staged(6);
  ASSERT_NE(second, nullptr);
  // The old index keeps serving until the switch.
  absl::StatusOr<VectorIndexPtr> before = store_->OpenPublished(kIdentity);
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_EQ((*before)->LastSeq(), 3u);

  ASSERT_TRUE(store_->Publish(*second).ok());
  EXPECT_EQ(Published(), "events-1700000000002000");
  EXPECT_THAT(fake_.Collections(), ElementsAre("events-1700000000002000"));
  std::vector<json> alias_requests = fake_.Requests(qdrant_op::kUpdateAliases);
  ASSERT_EQ(alias_requests.size(), 2u);
  EXPECT_EQ(alias_requests[1], QdrantRequests::UpdateAliases("events", "events-1700000000002000",
                                                             /*replace_existing=*/true));
  absl::StatusOr<VectorIndexPtr> after = store_->OpenPublished(kIdentity);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ((*after)->LastSeq(), 6u);
  // The published handle stays usable; the handle on the dropped collection reports it.
  EXPECT_TRUE(second->Search(AxisVector(1), 1, SearchFilter{}).ok());
  EXPECT_EQ((*before)->Search(AxisVector(1), 1, SearchFilter{}).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(QdrantStoreTest, PublishRemovesCollectionsLeftByAnInterruptedRebuild) {
  VectorIndexPtr abandoned = Staged(1);
  fake_.AddCollection("events-old", 4);   // not "<alias>-<digits>": not ours
  fake_.AddCollection("events-2-17", 4);  // another alias's ("events-2") collection
  fake_.AddCollection("unrelated", 4);
  VectorIndexPtr rebuilt = Staged(2);
  ASSERT_NE(rebuilt, nullptr);
  ASSERT_TRUE(store_->Publish(*rebuilt).ok());
  EXPECT_THAT(fake_.Collections(), UnorderedElementsAre("events-1700000000002000", "events-old",
                                                        "events-2-17", "unrelated"));
  // Publishing the published index again is a no-op.
  EXPECT_TRUE(store_->Publish(*rebuilt).ok());
  EXPECT_EQ(fake_.Requests(qdrant_op::kUpdateAliases).size(), 1u);
}

TEST_F(QdrantStoreTest, AnotherIdentityIsFailedPreconditionNamingBoth) {
  VectorIndexPtr staged = Staged(2);
  ASSERT_TRUE(store_->Publish(*staged).ok());
  absl::StatusOr<VectorIndexPtr> other = store_->OpenPublished({"other-embedder", 8});
  EXPECT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(other.status().message()),
              AllOf(HasSubstr("test-embedder/dim=4, 4 dimensions"),
                    HasSubstr("other-embedder, 8 dimensions"), HasSubstr("rebuilt")));
}

TEST_F(QdrantStoreTest, CollectionWithoutIdentityMetadataIsDataLoss) {
  VectorIndexPtr staged = Staged(2);
  ASSERT_TRUE(store_->Publish(*staged).ok());
  fake_.SetMetadata(Published(), json());
  absl::StatusOr<VectorIndexPtr> index = store_->OpenPublished(kIdentity);
  EXPECT_EQ(index.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(index.status().message()), HasSubstr("no snapledger identity"));
  fake_.SetMetadata(Published(), json::parse(R"({"snapledger": {"embedder_id": 7}})"));
  EXPECT_EQ(store_->OpenPublished(kIdentity).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(QdrantStoreTest, MissingPointsAreDataLoss) {
  VectorIndexPtr staged = Staged(5);
  ASSERT_TRUE(store_->Publish(*staged).ok());
  fake_.ErasePoint(Published(), 3);
  absl::StatusOr<VectorIndexPtr> index = store_->OpenPublished(kIdentity);
  EXPECT_EQ(index.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(index.status().message()),
              HasSubstr("holds 4 points but only 3 with seq 1..4"));
}

TEST_F(QdrantStoreTest, SearchFindsTheNearestAndQdrantEvaluatesTheFilter) {
  VectorIndexPtr index = Staged(12);
  ASSERT_NE(index, nullptr);
  absl::StatusOr<std::vector<VectorHit>> hits = index->Search(AxisVector(6), 3, SearchFilter{});
  ASSERT_TRUE(hits.ok()) << hits.status();
  ASSERT_EQ(hits->size(), 3u);
  EXPECT_EQ((*hits)[0].seq, 6u);
  EXPECT_NEAR((*hits)[0].score, 1.0f, 1e-5);

  SearchFilter range;
  range.min_seq = 7;
  range.max_seq = 9;
  hits = index->Search(AxisVector(6), 10, range);
  ASSERT_TRUE(hits.ok()) << hits.status();
  std::vector<uint64_t> seqs;
  for (const VectorHit& h : *hits) seqs.push_back(h.seq);
  EXPECT_THAT(seqs, UnorderedElementsAre(7, 8, 9));

  SearchFilter kind;
  kind.fields = {{"kind", "b"}};
  kind.accept_fields = [](uint64_t) -> absl::StatusOr<bool> {
    ADD_FAILURE() << "accept_fields is for backends that cannot filter";
    return true;
  };
  hits = index->Search(AxisVector(6), 4, kind);
  ASSERT_TRUE(hits.ok()) << hits.status();
  ASSERT_EQ(hits->size(), 4u);
  EXPECT_EQ((*hits)[0].seq, 6u);
  for (const VectorHit& h : *hits) EXPECT_EQ(h.seq % 2, 0u) << h.seq;

  SearchFilter empty;
  empty.min_seq = 9;
  empty.max_seq = 8;
  EXPECT_TRUE(index->Search(AxisVector(6), 4, empty)->empty());
  EXPECT_EQ(index->Search(absl::MakeSpan(kVector).subspan(1), 4, SearchFilter{}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(QdrantStoreTest, EqualScoresComeBackInSeqOrder) {
  absl::StatusOr<VectorIndexPtr> index = store_->CreateStaged(kIdentity);
  ASSERT_TRUE(index.ok()) << index.status();
  TestEvents same(1, 4, [](uint64_t) { return std::vector<float>{1, 0, 0, 0}; });
  ASSERT_TRUE((*index)->Add(same.events, same.vectors).ok());
  absl::StatusOr<std::vector<VectorHit>> hits =
      (*index)->Search(std::vector<float>{1, 0, 0, 0}, 4, SearchFilter{});
  ASSERT_TRUE(hits.ok()) << hits.status();
  std::vector<uint64_t> seqs;
  for (const VectorHit& h : *hits) seqs.push_back(h.seq);
  EXPECT_THAT(seqs, ElementsAre(1, 2, 3, 4));
}

TEST_F(QdrantStoreTest, DropRemovesThePublishedAndStagedCollections) {
  VectorIndexPtr published = Staged(2);
  ASSERT_TRUE(store_->Publish(*published).ok());
  VectorIndexPtr staged = Staged(1);
  fake_.AddCollection("unrelated", 4);
  ASSERT_TRUE(store_->Drop().ok());
  EXPECT_TRUE(fake_.Aliases().empty());
  EXPECT_THAT(fake_.Collections(), ElementsAre("unrelated"));
  EXPECT_EQ(store_->OpenPublished(kIdentity).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store_->Drop().ok());  // nothing left to drop
}

TEST_F(QdrantStoreTest, CheckPublishedNoticesAnotherPublishAndARemovedAlias) {
  EXPECT_TRUE(store_->CheckPublished().ok());  // nothing opened or published yet
  VectorIndexPtr first = Staged(2);
  ASSERT_TRUE(store_->Publish(*first).ok());
  EXPECT_TRUE(store_->CheckPublished().ok());
  // Another process rebuilds and publishes behind our back.
  VectorStorePtr other = NewStore();
  VectorIndexPtr rebuilt = Staged(1, other.get());
  ASSERT_TRUE(other->Publish(*rebuilt).ok());
  absl::Status st = store_->CheckPublished();
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(st.message()), HasSubstr("events-1700000000002000"));
  ASSERT_TRUE(store_->OpenPublished(kIdentity).ok());
  EXPECT_TRUE(store_->CheckPublished().ok());
  ASSERT_TRUE(other->Drop().ok());
  EXPECT_EQ(store_->CheckPublished().code(), absl::StatusCode::kNotFound);
}

TEST_F(QdrantStoreTest, PublishRefusesAnIndexFromAnotherStore) {
  VectorStorePtr other = NewStore();
  VectorIndexPtr foreign = Staged(1, other.get());
  ASSERT_NE(foreign, nullptr);
  EXPECT_EQ(store_->Publish(*foreign).code(), absl::StatusCode::kInvalidArgument);
}

TEST(QdrantStore, OptionsAreChecked) {
  QdrantVectorStoreOptions options;
  options.alias = "events/1";
  EXPECT_EQ(QdrantVectorStore::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.alias = "events";
  options.batch_size = 0;
  EXPECT_EQ(QdrantVectorStore::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.batch_size = 1;
  options.client.url = "https://qdrant:6333";
  EXPECT_EQ(QdrantVectorStore::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(QdrantStore, QdrantDownIsUnavailable) {
  net::io_context ioc;
  tcp::socket bound(ioc);
  bound.open(tcp::v4());
  bound.bind({net::ip::make_address("127.0.0.1"), 0});
  QdrantVectorStoreOptions options;
  options.client.url = absl::StrCat("http://127.0.0.1:", bound.local_endpoint().port());
  options.client.sleep = [](absl::Duration) {};
  absl::StatusOr<std::unique_ptr<QdrantVectorStore>> store = QdrantVectorStore::Create(options);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->OpenPublished(kIdentity).status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace snapledger
