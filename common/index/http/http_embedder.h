// HttpEmbedder: embeddings from a model server that speaks the OpenAI-compatible
// `POST /v1/embeddings` protocol (text-embeddings-inference, llama.cpp server, Ollama, vLLM).
//
//   request:  {"model":"<model>","input":["text 1","text 2",...]}
//   response: {"data":[{"index":0,"embedding":[...]},...],"model":...}   (order by "index")
//
// The text sent for an event is its canonical body JSON exactly as stored; query text is sent
// as given. Inputs go in requests of at most batch_size texts over one keep-alive HTTP/1.1
// connection, reused across batches and reopened after any failure. Vectors are
// L2-normalised here, whatever the server does (a zero vector stays zero), so inner product
// is cosine similarity as the Embedder contract requires.
//
// Plain http only: https:// URLs are rejected by Create (put a local TLS-terminating proxy
// in front of a remote endpoint if needed). Host names are resolved with the system resolver,
// which the timeout does not cover.
//
// Failures and retries, per batch: connection errors, timeouts, HTTP 429 and 5xx are retried
// up to max_attempts in all, sleeping initial_backoff, then twice that, and so on, between
// attempts; other statuses and malformed responses are not retried. Errors name the
// endpoint URL:
//   Unavailable        connection refused / reset, 429 or 5xx after max_attempts
//   DeadlineExceeded   no complete response within `timeout` on the last attempt
//   FailedPrecondition the server's vectors are not `dimension` long
//   InvalidArgument / NotFound / PermissionDenied / Unauthenticated
//                      a 4xx answer (400, 404, 403, 401), with the server's error message
//   Internal           a response that is not the protocol (bad JSON, missing or duplicate
//                      "index", wrong count, non-numeric values), naming what was wrong
//
// Thread safety: safe to share; calls are serialised on the one connection (a mutex), so
// concurrent callers wait for each other rather than open more connections.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/index/embedder.h"

namespace snapledger {

struct HttpEmbedderOptions {
  // "http://host[:port][/path]". Without a path (or with "/") the path is /v1/embeddings;
  // any other path is used as given, e.g. "http://10.0.0.5:8080/v1/embeddings".
  std::string url;
  std::string model;       // sent as "model"; part of Id()
  int dimension = 0;       // expected vector length; a different one is an error
  size_t batch_size = 64;  // texts per request, >= 1
  absl::Duration timeout = absl::Seconds(10);  // per attempt: connect + send + whole response
  int max_attempts = 3;                        // per batch, >= 1
  absl::Duration initial_backoff = absl::Milliseconds(200);  // doubles after each retry
  std::string api_key;  // optional; sent as "Authorization: Bearer <api_key>"
  // How to wait between attempts; absl::SleepFor when empty. Tests inject a recorder.
  std::function<void(absl::Duration)> sleep;
};

class HttpEmbedder final : public Embedder {
 public:
  // InvalidArgument for a URL that is not http://host[:port][/path] (https included), an
  // empty model, dimension < 1, batch_size < 1, max_attempts < 1 or a non-positive timeout.
  // Does not connect; the first embedding call does.
  static absl::StatusOr<std::unique_ptr<HttpEmbedder>> Create(HttpEmbedderOptions options);
  ~HttpEmbedder() override;
  HttpEmbedder(const HttpEmbedder&) = delete;
  HttpEmbedder& operator=(const HttpEmbedder&) = delete;

  // "http-v1/model=<model>/dim=<dimension>".
  std::string Id() const override;
  int Dimension() const override { return options_.dimension; }

  // Sends each body as one input text, in batches; see the header comment for errors. A
  // failing batch ends the call (earlier batches' vectors are in *out but unspecified).
  absl::Status EmbedEvents(absl::Span<const std::string_view> bodies,
                           std::vector<float>* out) override;
  absl::Status EmbedText(std::string_view text, std::vector<float>* out) override;

  // The request URL after defaults, e.g. "http://127.0.0.1:8080/v1/embeddings".
  const std::string& endpoint() const { return endpoint_; }

 private:
  class Connection;  // Boost.Beast, kept out of this header
  struct Target {
    std::string host, port, path;
  };
  HttpEmbedder(HttpEmbedderOptions options, Target target);
  // "host:port", an IPv6 literal in brackets: for the Host header and messages.
  static std::string Authority(const Target& target);

  // One request for `texts`, retried as documented; writes texts.size() vectors.
  absl::Status EmbedBatch(absl::Span<const std::string_view> texts, float* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const HttpEmbedderOptions options_;
  const Target target_;
  const std::string endpoint_;
  absl::Mutex mu_;
  std::unique_ptr<Connection> connection_ ABSL_GUARDED_BY(mu_);
};

}  // namespace snapledger
