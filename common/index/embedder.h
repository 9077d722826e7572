// Embedder: turns events (and query text) into fixed-dimension vectors for the derived
// similarity index. Implementations: FeatureHashEmbedder (the default, deterministic, no
// network; feature_hash_embedder.h) and HttpEmbedder (an OpenAI-compatible /v1/embeddings
// endpoint; http_embedder.h).
//
// Contract shared by every implementation:
//   - Id() names the embedder, its rule version and every parameter that changes its output
//     (e.g. "feature-hash-v1/dim=128"). Two embedders with the same Id produce the same
//     vectors for the same input, on every node and build; an index records the Id that built
//     it and is rebuilt when opened with another.
//   - Every vector has Dimension() floats and is L2-normalised (unit length), so inner product
//     is cosine similarity. A zero vector (nothing to hash) is returned as all zeros.
//   - EmbedEvents takes event bodies (each one canonical JSON object, as stored in the log's
//     "body" member) and writes bodies.size() * Dimension() floats to *out, body i at
//     out[i * Dimension()]. EmbedText embeds free query text into Dimension() floats.
//   - Errors: InvalidArgument for a body that is not a JSON object; Unavailable /
//     DeadlineExceeded when a remote endpoint is down or slow (after retries);
//     FailedPrecondition when the endpoint answers with the wrong dimension. On error *out
//     is unspecified.
// Thread safety: implementations say; FeatureHashEmbedder is safe to share.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace snapledger {

class Embedder {
 public:
  virtual ~Embedder() = default;
  virtual std::string Id() const = 0;
  virtual int Dimension() const = 0;
  virtual absl::Status EmbedEvents(absl::Span<const std::string_view> bodies,
                                   std::vector<float>* out) = 0;
  virtual absl::Status EmbedText(std::string_view text, std::vector<float>* out) = 0;
  // How many threads may call EmbedEvents on this embedder at once (1: not thread-safe).
  virtual int MaxConcurrency() const { return 1; }
};
using EmbedderPtr = std::unique_ptr<Embedder>;

// EmbedEvents split over `threads` threads (at most embedder.MaxConcurrency() make sense; the
// caller decides), each embedding a contiguous share; *out is as EmbedEvents leaves it. With
// threads <= 1 it is EmbedEvents itself. The first failing share's error is returned.
absl::Status EmbedInParallel(Embedder& embedder, absl::Span<const std::string_view> bodies,
                             int threads, std::vector<float>* out);

}  // namespace snapledger
