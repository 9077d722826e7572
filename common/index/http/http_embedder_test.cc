#include "common/index/http/http_embedder.h"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cmath>
#include <deque>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/testing/ovs_event_generator.h"

namespace snapledger {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Json = nlohmann::json;

// An in-process server for the OpenAI-compatible /v1/embeddings protocol on 127.0.0.1, port
// 0, one thread, stopped by the destructor. It answers with deterministic vectors derived
// from each input text (VectorFor), listed in reverse "index" order, unless told by Script()
// to misbehave for the next requests. It records every request and connection.
class FakeEmbeddingServer {
 public:
  enum class Reply {
    kVectors,           // the protocol, done right
    kWrongDimension,    // vectors three times as long as configured
    kStatus500,         // 500 {"error":{"message":"model is loading"}}
    kStatus429,         // 429 {"error":{"message":"too many requests"}}
    kStatus400,         // 400 {"error":{"message":"input is too long for this model"}}
    kNeverAnswer,       // reads the request, then keeps the connection open and says nothing
    kMalformedJson,     // 200 with a truncated JSON body
    kMissingIndex,      // 200, the first item has no "index"
    kDuplicateIndex,    // 200, every item has index 0
    kCloseAfterAnswer,  // vectors with "Connection: close", then closes
    kDropAfterAnswer,   // vectors, keep-alive, then closes anyway (an idle-timeout close)
  };

  explicit FakeEmbeddingServer(int dimension)
      : dimension_(dimension),
        acceptor_(ioc_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)) {
    Accept();
    thread_ = std::thread([this] { ioc_.run(); });
  }
  ~FakeEmbeddingServer() {
    ioc_.stop();
    thread_.join();
  }

  std::string Url() const {
    return absl::StrCat("http://127.0.0.1:", acceptor_.local_endpoint().port());
  }

  // Replies for the next requests, in order; after them, kVectors.
  void Script(std::vector<Reply> replies) {
    absl::MutexLock lock(&mu_);
    script_.assign(replies.begin(), replies.end());
  }

  struct Request {
    std::string target;
    std::string authorization;
    Json body;
  };
  std::vector<Request> Requests() {
    absl::MutexLock lock(&mu_);
    return requests_;
  }
  std::vector<size_t> BatchSizes() {
    std::vector<size_t> sizes;
    for (const Request& r : Requests()) sizes.push_back(r.body["input"].size());
    return sizes;
  }
  int Connections() {
    absl::MutexLock lock(&mu_);
    return connections_;
  }

  // The (unnormalised) vector the server returns for `text`.
  static std::vector<float> VectorFor(std::string_view text, int dimension) {
    uint64_t h = 1469598103934665603ULL;
    for (unsigned char c : text) h = (h ^ c) * 1099511628211ULL;
    std::vector<float> v(dimension);
    for (float& x : v) {
      h = h * 6364136223846793005ULL + 1442695040888963407ULL;
      x = static_cast<float>((h >> 40) / double{1 << 24} * 2 - 1);
    }
    return v;
  }

 private:
  class Session : public std::enable_shared_from_this<Session> {
   public:
    Session(tcp::socket socket, FakeEmbeddingServer* server)
        : stream_(std::move(socket)), server_(server) {}

    void Read() {
      request_ = {};
      http::async_read(stream_, buffer_, request_,
                       [self = shared_from_this()](beast::error_code ec, size_t) {
                         if (!ec) self->Handle();
                       });
    }

   private:
    void Handle() {
      Reply reply = server_->Take(request_);
      if (reply == Reply::kNeverAnswer) {
        server_->parked_.push_back(shared_from_this());
        return;
      }
      bool close = reply == Reply::kCloseAfterAnswer || reply == Reply::kDropAfterAnswer;
      auto response =
          std::make_shared<http::response<http::string_body>>(server_->Respond(request_, reply));
      response->version(11);
      response->keep_alive(reply != Reply::kCloseAfterAnswer);
      response->prepare_payload();
      http::async_write(stream_, *response,
                        [self = shared_from_this(), response, close](beast::error_code ec, size_t) {
                          if (ec) return;
                          if (close) {
                            beast::error_code ignored;
                            self->stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
                            return;
                          }
                          self->Read();
                        });
    }

    beast::tcp_stream stream_;
    FakeEmbeddingServer* server_;
    beast::flat_buffer buffer_;
    http::request<http::string_body> request_;
  };

  void Accept() {
    acceptor_.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec) return;
      {
        absl::MutexLock lock(&mu_);
        ++connections_;
      }
      std::make_shared<Session>(std::move(socket), this)->Read();
      Accept();
    });
  }

  Reply Take(const http::request<http::string_body>& request) {
    absl::MutexLock lock(&mu_);
    requests_.push_back({std::string(request.target()),
                         std::string(request[http::field::authorization]),
                         Json::parse(request.body(), nullptr, false)});
    if (script_.empty()) return Reply::kVectors;
    Reply r = script_.front();
    script_.pop_front();
    return r;
  }

  http::response<http::string_body> Respond(const http::request<http::string_body>& request,
                                            Reply reply) {
    http::response<http::string_body> res;
    res.set(http::field::content_type, "application/json");
    auto error = [&](http::status status, std::string_view message) {
      res.result(status);
      res.body() = Json{{"error", {{"message", message}, {"type", "test"}}}}.dump();
      return res;
    };
    switch (reply) {
      case Reply::kStatus500:
        return error(http::status::internal_server_error, "model is loading");
      case Reply::kStatus429:
        return error(http::status::too_many_requests, "too many requests");
      case Reply::kStatus400:
        return error(http::status::bad_request, "input is too long for this model");
      case Reply::kMalformedJson:
        res.result(http::status::ok);
        res.body() = R"({"data":[{"index":0,"embedding":[0.5,)";
        return res;
      default:
        break;
    }
    Json body = Json::parse(request.body(), nullptr, false);
    const Json& input = body["input"];
    int dimension = reply == Reply::kWrongDimension ? 3 * dimension_ : dimension_;
    Json data = Json::array();
    for (size_t i = input.size(); i-- > 0;) {
      Json item = {{"object", "embedding"},
                   {"index", reply == Reply::kDuplicateIndex ? 0 : i},
                   {"embedding", VectorFor(input[i].get<std::string>(), dimension)}};
      if (reply == Reply::kMissingIndex && i == input.size() - 1) item.erase("index");
      data.push_back(std::move(item));
    }
    res.result(http::status::ok);
    res.body() = Json{{"object", "list"}, {"data", data}, {"model", body["model"]}}.dump();
    return res;
  }

  const int dimension_;
  net::io_context ioc_;
  tcp::acceptor acceptor_;
  absl::Mutex mu_;
  std::deque<Reply> script_ ABSL_GUARDED_BY(mu_);
  std::vector<Request> requests_ ABSL_GUARDED_BY(mu_);
  int connections_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::shared_ptr<Session>> parked_;  // kNeverAnswer sessions; server thread only
  std::thread thread_;
};

using Reply = FakeEmbeddingServer::Reply;

std::vector<float> Normalized(std::vector<float> v) {
  double sum = 0;
  for (float x : v) sum += double{x} * x;
  for (float& x : v) x = static_cast<float>(x / std::sqrt(sum));
  return v;
}

void ExpectVectorsFor(absl::Span<const std::string_view> texts, const std::vector<float>& out,
                      int dimension) {
  ASSERT_EQ(out.size(), texts.size() * dimension);
  for (size_t i = 0; i < texts.size(); ++i) {
    std::vector<float> want = Normalized(FakeEmbeddingServer::VectorFor(texts[i], dimension));
    for (int k = 0; k < dimension; ++k)
      ASSERT_NEAR(out[i * dimension + k], want[k], 1e-6) << "text " << i << " coordinate " << k;
  }
}

// Options for `server` whose backoff sleeps are recorded in *sleeps instead of slept.
HttpEmbedderOptions OptionsFor(const std::string& url, std::vector<absl::Duration>* sleeps) {
  HttpEmbedderOptions o;
  o.url = url;
  o.model = "test-model";
  o.dimension = 16;
  o.timeout = absl::Seconds(5);
  o.sleep = [sleeps](absl::Duration d) { sleeps->push_back(d); };
  return o;
}

std::unique_ptr<HttpEmbedder> MustCreate(HttpEmbedderOptions options) {
  auto e = HttpEmbedder::Create(std::move(options));
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? std::move(*e) : nullptr;
}

std::vector<std::string_view> Views(const std::vector<std::string>& v) {
  return {v.begin(), v.end()};
}

TEST(HttpEmbedder, IdNamesModelAndDimension) {
  std::vector<absl::Duration> sleeps;
  HttpEmbedderOptions o = OptionsFor("http://127.0.0.1:8080", &sleeps);
  o.model = "bge-small-en-v1.5";
  o.dimension = 384;
  auto e = MustCreate(o);
  EXPECT_EQ(e->Id(), "http-v1/model=bge-small-en-v1.5/dim=384");
  EXPECT_EQ(e->Dimension(), 384);
}

TEST(HttpEmbedder, UrlWithoutPathUsesV1Embeddings) {
  std::vector<absl::Duration> sleeps;
  auto endpoint = [&](const std::string& url) {
    auto e = MustCreate(OptionsFor(url, &sleeps));
    return e ? e->endpoint() : "";
  };
  EXPECT_EQ(endpoint("http://127.0.0.1:8080"), "http://127.0.0.1:8080/v1/embeddings");
  EXPECT_EQ(endpoint("http://127.0.0.1:8080/"), "http://127.0.0.1:8080/v1/embeddings");
  EXPECT_EQ(endpoint("http://embed.local"), "http://embed.local:80/v1/embeddings");
  EXPECT_EQ(endpoint("HTTP://h:11434/api/v1/embeddings"), "http://h:11434/api/v1/embeddings");
  EXPECT_EQ(endpoint("http://[::1]:9000"), "http://[::1]:9000/v1/embeddings");
}

TEST(HttpEmbedder, CreateRejectsBadConfiguration) {
  std::vector<absl::Duration> sleeps;
  auto rejected = [&](const std::function<void(HttpEmbedderOptions&)>& change) {
    HttpEmbedderOptions o = OptionsFor("http://127.0.0.1:8080", &sleeps);
    change(o);
    auto e = HttpEmbedder::Create(o);
    EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument) << o.url;
    return e.ok() ? "" : std::string(e.status().message());
  };
  EXPECT_NE(
      rejected([](auto& o) { o.url = "https://api.example.com"; }).find("https is not supported"),
      std::string::npos);
  for (std::string url : {"ftp://x", "127.0.0.1:8080", "http://", "http://:80", "http://h:0",
                          "http://h:99999", "http://h:port", "http://u@h", "http://[::1"}) {
    rejected([&](auto& o) { o.url = url; });
  }
  EXPECT_NE(rejected([](auto& o) { o.model = ""; }).find("model"), std::string::npos);
  rejected([](auto& o) { o.dimension = 0; });
  rejected([](auto& o) { o.batch_size = 0; });
  rejected([](auto& o) { o.max_attempts = 0; });
  rejected([](auto& o) { o.timeout = absl::ZeroDuration(); });
}

TEST(HttpEmbedder, SendsBodiesAsGivenAndReturnsNormalisedVectorsInInputOrder) {
  FakeEmbeddingServer server(16);
  std::vector<absl::Duration> sleeps;
  HttpEmbedderOptions o = OptionsFor(server.Url(), &sleeps);
  o.api_key = "sk-test";
  auto e = MustCreate(o);
  std::vector<std::string> bodies = OvsEventGenerator(1).Generate(5);
  std::vector<float> out;
  ASSERT_TRUE(e->EmbedEvents(Views(bodies), &out).ok());
  ExpectVectorsFor(Views(bodies), out, 16);
  std::vector<FakeEmbeddingServer::Request> requests = server.Requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0].target, "/v1/embeddings");
  EXPECT_EQ(requests[0].authorization, "Bearer sk-test");
  EXPECT_EQ(requests[0].body, (Json{{"model", "test-model"}, {"input", bodies}}));
}

TEST(HttpEmbedder, EmbedTextSendsTheText) {
  FakeEmbeddingServer server(16);
  std::vector<absl::Duration> sleeps;
  auto e = MustCreate(OptionsFor(server.Url() + "/v1/embeddings", &sleeps));
  std::vector<float> out;
  ASSERT_TRUE(e->EmbedText("port_vlan_changed compute-003", &out).ok());
  std::string_view texts[] = {"port_vlan_changed compute-003"};
  ExpectVectorsFor(texts, out, 16);
  ASSERT_EQ(server.Requests().size(), 1u);
  EXPECT_EQ(server.Requests()[0].body["input"], Json::array({"port_vlan_changed compute-003"}));
  EXPECT_EQ(server.Requests()[0].authorization, "");
}

TEST(HttpEmbedder, BatchesReuseOneKeepAliveConnection) {
  FakeEmbeddingServer server(16);
  std::vector<absl::Duration> sleeps;
  auto e = MustCreate(OptionsFor(server.Url(), &sleeps));
  std::vector<std::string> bodies = OvsEventGenerator(2).Generate(150);
  std::vector<float> out;
  ASSERT_TRUE(e->EmbedEvents(Views(bodies), &out).ok());
  ExpectVectorsFor(Views(bodies), out, 16);
  EXPECT_EQ(server.BatchSizes(), (std::vector<size_t>{64, 64, 22}));
  EXPECT_EQ(server.Connections(), 1);
  ASSERT_TRUE(e->EmbedEvents({}, &out).ok());
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(server.Requests().size(), 3u);
}

TEST(HttpEmbedder, ReconnectsWhenTheServerClosesTheConnection) {
  FakeEmbeddingServer server(16);
  std::vector<absl::Duration> sleeps;
  HttpEmbedderOptions o = OptionsFor(server.Url(), &sleeps);
  o.batch_size = 2;
  auto e = MustCreate(o);
  server.Script({Reply::kCloseAfterAnswer, Reply::kDropAfterAnswer});
  std::vector<std::string> bodies = OvsEventGenerator(3).Generate(6);
  std::vector<float> out;
  absl::Status st = e->EmbedEvents(Views(bodies), &out);
  ASSERT_TRUE(st.ok()) << st;
  ExpectVectorsFor(Views(bodies), out, 16);
  EXPECT_EQ(server.Connections(), 3);
  EXPECT_TRUE(sleeps.empty());  // an idle close is not a failed attempt
}

TEST(HttpEmbedder, ServerErrorIsRetriedWithBackoff) {
  FakeEmbeddingServer server(16);
  std::vector<absl::Duration> sleeps;
  auto e = MustCreate(OptionsFor(server.Url(), &sleeps));
  server.Script({Reply::kStatus500, Reply::kStatus429});
  std::vector<std::string> bodies = OvsEventGenerator(4).Generate(3);
  std::vector<float> out;
  absl::Status st = e->EmbedEvents(Views(bodies), &out);
  ASSERT_TRUE(st.ok()) << st;
  ExpectVectorsFor(Views(bodies), out, 16);
  EXPECT_EQ(server.Requests().size(), 3u);
  EXPECT_EQ(sleeps,
            (std::vector<absl::Duration>{absl::Milliseconds(200), absl::Milliseconds(400)}));
}

TEST(HttpEmbedder, PersistentServerErrorIsUnavailableAfterAllAttempts) {
  FakeEmbeddingServer server(16);
  std::vector<absl::Duration> sleeps;
  auto e = MustCreate(OptionsFor(server.Url(), &sleeps));
  server.Script({Reply::kStatus500, Reply::kStatus500, Reply::kStatus500});
  std::vector<float> out;
  absl::Status st = e->EmbedText("x", &out);
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(st.message(),
            absl::StrCat("embedding endpoint ", server.Url(),
                         "/v1/embeddings: HTTP 500: model is loading (after 3 attempts)"));
  EXPECT_EQ(server.Requests().size(), 3u);
}

TEST(HttpEmbedder, ClientErrorIsNotRetriedAndCarriesTheServerMessage) {
  FakeEmbeddingServer server(16);
  std::vector<absl::Duration> sleeps;
  auto e = MustCreate(OptionsFor(server.Url(), &sleeps));
  server.Script({Reply::kStatus400});
  std::vector<float> out;
  absl::Status st = e->EmbedText("x", &out);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(),
            absl::StrCat("embedding endpoint ", server.Url(),
                         "/v1/embeddings: HTTP 400: input is too long for this model"));
  EXPECT_EQ(server.Requests().size(), 1u);
  EXPECT_TRUE(sleeps.empty());
  // The connection is still good for the next call.
  EXPECT_TRUE(e->EmbedText("x", &out).ok());
  EXPECT_EQ(server.Connections(), 1);
}

TEST(HttpEmbedder, WrongDimensionIsFailedPrecondition) {
  FakeEmbeddingServer server(128);
  std::vector<absl::Duration> sleeps;
  HttpEmbedderOptions o = OptionsFor(server.Url(), &sleeps);
  o.dimension = 128;
  auto e = MustCreate(o);
  server.Script({Reply::kWrongDimension});
  std::vector<float> out;
  absl::Status st = e->EmbedText("x", &out);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(st.message(), absl::StrCat("embedding endpoint ", server.Url(),
                                       "/v1/embeddings returned 384-dimensional vectors, "
                                       "configured dimension is 128"));
  EXPECT_EQ(server.Requests().size(), 1u);
}

TEST(HttpEmbedder, MalformedResponsesAreInternalErrorsNamingTheProblem) {
  FakeEmbeddingServer server(16);
  std::vector<absl::Duration> sleeps;
  auto e = MustCreate(OptionsFor(server.Url(), &sleeps));
  std::vector<std::string> bodies = {"{\"a\":1}", "{\"a\":2}"};
  struct Case {
    Reply reply;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {Reply::kMalformedJson, "malformed response: not JSON"},
           {Reply::kMissingIndex, "malformed response: data[0] has no integer \"index\""},
           {Reply::kDuplicateIndex, "malformed response: index 0 appears twice"},
       }) {
    server.Script({c.reply});
    std::vector<float> out;
    absl::Status st = e->EmbedEvents(Views(bodies), &out);
    EXPECT_EQ(st.code(), absl::StatusCode::kInternal) << st;
    EXPECT_EQ(st.message(),
              absl::StrCat("embedding endpoint ", server.Url(), "/v1/embeddings: ", c.message));
  }
  EXPECT_EQ(server.Requests().size(), 3u);  // none retried
  EXPECT_TRUE(sleeps.empty());
}

TEST(HttpEmbedder, SilentServerIsDeadlineExceededWithinTheTimeout) {
  FakeEmbeddingServer server(16);
  std::vector<absl::Duration> sleeps;
  HttpEmbedderOptions o = OptionsFor(server.Url(), &sleeps);
  o.timeout = absl::Milliseconds(300);
  o.max_attempts = 2;
  auto e = MustCreate(o);
  server.Script({Reply::kNeverAnswer, Reply::kNeverAnswer});
  std::vector<float> out;
  auto start = std::chrono::steady_clock::now();
  absl::Status st = e->EmbedText("x", &out);
  auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(st.code(), absl::StatusCode::kDeadlineExceeded) << st;
  EXPECT_EQ(st.message(), absl::StrCat("embedding endpoint ", server.Url(),
                                       "/v1/embeddings: no response within 300ms (reading the "
                                       "response) (after 2 attempts)"));
  EXPECT_EQ(server.Requests().size(), 2u);
  EXPECT_EQ(sleeps, (std::vector<absl::Duration>{absl::Milliseconds(200)}));
  // Two attempts of 300 ms each; generous bound for a loaded machine.
  EXPECT_LT(elapsed, std::chrono::seconds(5));
  // The server recovers; the embedder reconnects.
  EXPECT_TRUE(e->EmbedText("x", &out).ok());
}

TEST(HttpEmbedder, RefusedConnectionIsUnavailableAfterAllAttempts) {
  std::string url;
  {
    net::io_context ioc;
    tcp::acceptor acceptor(ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    url = absl::StrCat("http://127.0.0.1:", acceptor.local_endpoint().port());
  }  // closed: nothing listens on the port now
  std::vector<absl::Duration> sleeps;
  auto e = MustCreate(OptionsFor(url, &sleeps));
  std::vector<std::string> bodies = {"{}"};
  std::vector<float> out;
  absl::Status st = e->EmbedEvents(Views(bodies), &out);
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(st.message(), absl::StrCat("embedding endpoint ", url,
                                       "/v1/embeddings: connection refused (after 3 attempts)"));
  EXPECT_EQ(sleeps,
            (std::vector<absl::Duration>{absl::Milliseconds(200), absl::Milliseconds(400)}));
}

TEST(HttpEmbedder, ConcurrentCallersShareTheEmbedder) {
  FakeEmbeddingServer server(16);
  std::vector<absl::Duration> sleeps;
  HttpEmbedderOptions o = OptionsFor(server.Url(), &sleeps);
  o.batch_size = 8;
  auto e = MustCreate(o);
  std::vector<std::string> a = OvsEventGenerator(5).Generate(40);
  std::vector<std::string> b = OvsEventGenerator(6).Generate(40);
  std::vector<float> out_a, out_b;
  absl::Status st_a, st_b;
  std::thread t([&] { st_a = e->EmbedEvents(Views(a), &out_a); });
  st_b = e->EmbedEvents(Views(b), &out_b);
  t.join();
  ASSERT_TRUE(st_a.ok()) << st_a;
  ASSERT_TRUE(st_b.ok()) << st_b;
  ExpectVectorsFor(Views(a), out_a, 16);
  ExpectVectorsFor(Views(b), out_b, 16);
  EXPECT_EQ(server.Connections(), 1);
}

}  // namespace
}  // namespace snapledger
