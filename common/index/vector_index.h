// VectorIndex and VectorStore: where the derived similarity index lives. Backends:
// the embedded index (faiss_vector_store.h, files under the node's index directory) and
// Qdrant (qdrant_vector_store.h, a collection behind an alias on a Qdrant server).
//
// The index is derived from the log and can always be rebuilt: a point is an event's seq
// and its embedding. Points are added in seq order, each seq once, so LastSeq() says how far
// the index has followed the log.
//
// A VectorStore holds at most one *published* index (the one queries use) and can build a
// *staged* one beside it: CreateStaged() starts an empty index that OpenPublished() does not
// see, and Publish() makes it the published one atomically (embedded: rename over the old
// file; Qdrant: one alias switch) and drops the old one. A rebuild therefore never shows a
// half-built index to queries, and the old index keeps serving until the swap.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "nlohmann/json.hpp"

namespace snapledger {

// What an index was built with. An index opened with another identity is not used.
struct IndexIdentity {
  std::string embedder_id;  // Embedder::Id()
  int dimension = 0;
  bool operator==(const IndexIdentity&) const = default;
};
// "<embedder_id>, <dimension> dimensions", for messages.
std::string DescribeIdentity(const IndexIdentity& identity);

// A top-level field of the event's body that must equal `value` (a JSON string, integer or
// boolean). Qdrant evaluates it on the payload key "body.<field>".
struct FieldMatch {
  std::string field;
  nlohmann::json value;
};

// Which events a search may return. Time ranges are resolved to seq ranges by the caller
// (ts is non-decreasing in seq), so backends only see seqs.
struct SearchFilter {
  uint64_t min_seq = 1;                                     // inclusive
  uint64_t max_seq = std::numeric_limits<uint64_t>::max();  // inclusive
  std::vector<FieldMatch> fields;                           // all must hold
  // For backends that cannot evaluate `fields` on their own data (the embedded index):
  // whether the event at `seq` satisfies `fields`. Set by the caller whenever `fields` is
  // non-empty; an error from it ends the search with that error.
  std::function<absl::StatusOr<bool>(uint64_t seq)> accept_fields;
  bool Unfiltered() const {
    return min_seq <= 1 && max_seq == std::numeric_limits<uint64_t>::max() && fields.empty();
  }
};

// One event as the index receives it. The embedded index keeps only seq; Qdrant stores ts,
// hash and body as the point's payload. The views must stay valid for the call.
struct IndexedEvent {
  uint64_t seq = 0;
  int64_t ts = 0;
  std::string_view hash;  // 64 hex
  std::string_view body;  // canonical JSON object
};

struct VectorHit {
  uint64_t seq = 0;
  float score = 0;  // inner product of unit vectors: cosine similarity, higher is closer
};

class VectorIndex {
 public:
  virtual ~VectorIndex() = default;
  virtual IndexIdentity Identity() const = 0;
  // The highest seq added (0 when empty); seqs 1..LastSeq() are all present.
  virtual uint64_t LastSeq() const = 0;
  // Adds points events[i] with vectors[i*dim .. (i+1)*dim). Their seqs must be consecutive,
  // starting at LastSeq()+1; otherwise InvalidArgument and nothing is added.
  virtual absl::Status Add(absl::Span<const IndexedEvent> events,
                           absl::Span<const float> vectors) = 0;
  // Up to k hits passing `filter`, best first (ties by ascending seq). `query` has dim floats.
  virtual absl::StatusOr<std::vector<VectorHit>> Search(absl::Span<const float> query, size_t k,
                                                        const SearchFilter& filter) const = 0;
  // Makes everything added so far durable: after it returns, reopening the store gives an
  // index with this LastSeq (embedded: written to a temporary file, synced, renamed).
  virtual absl::Status Persist() = 0;
};
using VectorIndexPtr = std::unique_ptr<VectorIndex>;

class VectorStore {
 public:
  virtual ~VectorStore() = default;
  // The published index. NotFound when there is none; DataLoss when it is damaged (named,
  // with what is wrong); FailedPrecondition when it was built with another identity (the
  // message names both and says a rebuild is needed). Never returns a damaged index.
  virtual absl::StatusOr<VectorIndexPtr> OpenPublished(const IndexIdentity& want) = 0;
  // A new, empty index beside the published one; invisible to OpenPublished until Publish.
  virtual absl::StatusOr<VectorIndexPtr> CreateStaged(const IndexIdentity& identity) = 0;
  // Persists `staged` (from this store's CreateStaged) and makes it the published index in
  // one atomic step, then removes the previous one. `staged` stays usable as the published
  // index afterwards.
  virtual absl::Status Publish(VectorIndex& staged) = 0;
  // Removes the published index and anything staged (e.g. to force a rebuild).
  virtual absl::Status Drop() = 0;
  // Whether the index this store last opened or published is still the published one: OK if
  // so, NotFound if it was removed behind the node's back (its files deleted, its alias
  // dropped), FailedPrecondition if something else was published meanwhile. Cheap (a stat or
  // one request); the updater calls it before each step.
  virtual absl::Status CheckPublished() { return absl::OkStatus(); }
  // Human-readable location ("/var/lib/snapledger/index/vectors", "qdrant http://h:6333 alias
  // events").
  virtual std::string Describe() const = 0;
};
using VectorStorePtr = std::unique_ptr<VectorStore>;

}  // namespace snapledger
