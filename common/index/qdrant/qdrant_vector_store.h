// The Qdrant backend of the derived similarity index (VectorStore, vector_index.h): the index
// lives in a Qdrant collection behind an alias. docs/QDRANT.md describes the mapping; in
// short:
//   - The published index is the collection the alias (Options::alias, default
//     "snapledger-events") points at. CreateStaged makes a new collection
//     "<alias>-<unix micros>"; Publish moves the alias to it in one aliases request (atomic in
//     Qdrant), then deletes the collection the alias pointed at before and any other
//     "<alias>-<digits>" collection (left behind by a rebuild that never finished). Only one
//     process should build or publish per alias at a time: a second builder's staged
//     collection would be removed as a stray.
//   - One point per event: id = seq, vector = the embedding, payload
//     {"seq", "ts", "hash", "body": {the event body's fields}}; payload indexes on "seq" and
//     "ts" (integer). Search filters are evaluated by Qdrant: the seq range on "seq", each
//     FieldMatch on "body.<field>", so SearchFilter::accept_fields is never called.
//   - Distance "Dot": embeddings are unit length, so the inner product is the cosine, the
//     same score the embedded (faiss inner product) index gives. "Cosine" would renormalise
//     every stored and query vector to the same result, and a zero vector (an event with
//     nothing to embed) would stay a zero vector either way.
//   - The identity (IndexIdentity) is stored in the collection's metadata as
//     {"snapledger": {"embedder_id": ..., "dimension": ...}} and checked on OpenPublished.
//   - Every write uses ?wait=true: once Add returns, the points are applied and in Qdrant's
//     WAL, so Persist() has nothing left to do and returns OK.
//   - LastSeq() is the collection's point count: points are added in seq order and Add
//     raises LastSeq only after Qdrant confirmed a batch. OpenPublished checks that claim
//     with one more exact count: the number of points whose payload seq lies in 1..count
//     must be count itself, which (ids being unique and equal to seq) proves the ids are
//     exactly 1..count without reading them; and point `count` must carry seq `count`.
//     Otherwise DataLoss. (Checking only that id count exists and count+1 does not would
//     miss a gap below count paired with a stray id above count+1.)
//
// An index handle names its concrete collection, not the alias: it keeps answering from the
// collection it was opened on (or created as). If another process publishes a rebuild
// meanwhile, that collection is deleted and calls fail with NotFound; reopen then.
//
// Errors are the client's (qdrant_client.h): Unavailable / DeadlineExceeded when Qdrant is
// down or slow (after retries), InvalidArgument for what Qdrant rejects, and so on.
//
// Thread safety: the store's methods and an index's const methods may be called from any
// thread; an index's Add must not run concurrently with other calls on the same index. An
// index may outlive its store (they share the client).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/base/clock.h"
#include "common/index/qdrant/qdrant_client.h"
#include "common/index/vector_index.h"

namespace snapledger {

struct QdrantVectorStoreOptions {
  QdrantClientOptions client;
  // Letters, digits, '-' and '_'; at most 200 characters.
  std::string alias = "snapledger-events";
  // Points per upsert request.
  size_t batch_size = 256;
};

class QdrantVectorStore final : public VectorStore {
 public:
  // Checks the options (InvalidArgument: bad URL, https, bad alias, batch_size 0); does not
  // contact Qdrant, every method does. `clock` (not owned, must outlive the store) names
  // staged collections.
  static absl::StatusOr<std::unique_ptr<QdrantVectorStore>> Create(QdrantVectorStoreOptions options,
                                                                   Clock* clock = Clock::Real());

  absl::StatusOr<VectorIndexPtr> OpenPublished(const IndexIdentity& want) override;
  absl::StatusOr<VectorIndexPtr> CreateStaged(const IndexIdentity& identity) override;
  absl::Status Publish(VectorIndex& staged) override;
  absl::Status Drop() override;
  // One request (GET /aliases). OK if the alias still names the collection this store last
  // opened or published (or nothing was opened yet); NotFound if the alias is gone;
  // FailedPrecondition if it names another collection. Unavailable / DeadlineExceeded when
  // Qdrant cannot be asked: that says nothing about the index, so callers should retry
  // rather than rebuild.
  absl::Status CheckPublished() override;
  std::string Describe() const override;

 private:
  QdrantVectorStore(std::shared_ptr<QdrantClient> client, QdrantVectorStoreOptions options,
                    Clock* clock);

  // The collection the alias points at, if the alias exists.
  absl::StatusOr<std::optional<std::string>> AliasedCollection();
  absl::Status Damaged(const std::string& collection, std::string_view what) const;
  absl::StatusOr<IndexIdentity> ReadIdentity(const std::string& collection,
                                             const nlohmann::json& info) const;
  absl::Status CheckVectorParams(const std::string& collection, const nlohmann::json& info,
                                 const IndexIdentity& identity) const;
  absl::StatusOr<uint64_t> VerifiedLastSeq(const std::string& collection);
  std::string NextCollectionName();
  void DeleteQuietly(const std::string& name);
  void RemoveCollectionsExcept(const std::string& keep, const std::optional<std::string>& previous);
  void SetPublished(std::string collection);

  // Shared with every index the store hands out: an index may outlive the store.
  const std::shared_ptr<QdrantClient> client_;
  const QdrantVectorStoreOptions options_;
  Clock* const clock_;
  absl::Mutex mu_;
  int64_t last_micros_ ABSL_GUARDED_BY(mu_) = 0;
  // The collection last opened or published; empty before that and after Drop.
  std::string published_ ABSL_GUARDED_BY(mu_);
};

}  // namespace snapledger
