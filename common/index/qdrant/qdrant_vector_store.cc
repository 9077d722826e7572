#include "common/index/qdrant/qdrant_vector_store.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/base/fmt_absl.h"
#include "common/base/status_macros.h"
#include "spdlog/spdlog.h"

namespace snapledger {
namespace {

using nlohmann::json;

constexpr char kMetadataKey[] = "snapledger";
constexpr size_t kMaxAliasLength = 200;
constexpr uint64_t kMaxDimension = 1 << 20;  // a sanity bound on metadata, not a Qdrant limit

bool ValidAlias(const std::string& alias) {
  if (alias.empty() || alias.size() > kMaxAliasLength) return false;
  return std::all_of(alias.begin(), alias.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
  });
}

// "<alias>-<digits>": a collection CreateStaged made for this alias.
bool IsStagedName(const std::string& name, const std::string& alias) {
  if (name.size() <= alias.size() + 1 || !absl::StartsWith(name, alias) ||
      name[alias.size()] != '-') {
    return false;
  }
  return std::all_of(name.begin() + alias.size() + 1, name.end(),
                     [](char c) { return absl::ascii_isdigit(static_cast<unsigned char>(c)); });
}

absl::Status Annotate(const absl::Status& status, std::string_view context) {
  return absl::Status(status.code(),
                      absl::StrCat(std::string(context), ": ", std::string(status.message())));
}

// The member `key` of `j`, or null if `j` is not an object or has no such member.
const json* Member(const json& j, const char* key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  return it == j.end() ? nullptr : &*it;
}

json SeqRange(uint64_t first, uint64_t last) {
  return {{"must", json::array({{{"key", "seq"}, {"range", {{"gte", first}, {"lte", last}}}}})}};
}

class QdrantVectorIndex final : public VectorIndex {
 public:
  QdrantVectorIndex(std::shared_ptr<QdrantClient> client, std::string collection,
                    IndexIdentity identity, uint64_t last_seq, size_t batch_size)
      : client_(std::move(client)),
        collection_(std::move(collection)),
        identity_(std::move(identity)),
        batch_size_(batch_size),
        last_seq_(last_seq) {}

  IndexIdentity Identity() const override { return identity_; }
  uint64_t LastSeq() const override { return last_seq_.load(); }

  absl::Status Add(absl::Span<const IndexedEvent> events,
                   absl::Span<const float> vectors) override {
    if (events.empty() && vectors.empty()) return absl::OkStatus();
    ASSIGN_OR_RETURN(std::vector<json> payloads, CheckedPayloads(events, vectors));
    const size_t dim = static_cast<size_t>(identity_.dimension);
    std::vector<QdrantPoint> batch;
    for (size_t begin = 0; begin < events.size(); begin += batch_size_) {
      const size_t end = std::min(events.size(), begin + batch_size_);
      batch.clear();
      for (size_t i = begin; i < end; ++i) {
        batch.push_back({events[i].seq, vectors.subspan(i * dim, dim), std::move(payloads[i])});
      }
      if (absl::Status st = client_->UpsertPoints(collection_, batch); !st.ok()) {
        return Annotate(st,
                        absl::StrCat("adding events ", events[begin].seq, "..", events[end - 1].seq,
                                     " to qdrant collection ", collection_));
      }
      last_seq_.store(events[end - 1].seq);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<VectorHit>> Search(absl::Span<const float> query, size_t k,
                                                const SearchFilter& filter) const override {
    if (query.size() != static_cast<size_t>(identity_.dimension)) {
      return absl::InvalidArgumentError(absl::StrCat("search: query has ", query.size(),
                                                     " floats, the index ", identity_.dimension));
    }
    if (k == 0 || filter.min_seq > filter.max_seq) return std::vector<VectorHit>{};
    ASSIGN_OR_RETURN(json qdrant_filter, QdrantRequests::Filter(filter));
    ASSIGN_OR_RETURN(std::vector<QdrantScoredPoint> points,
                     client_->QueryPoints(collection_, query, k, qdrant_filter));
    std::vector<VectorHit> hits;
    hits.reserve(points.size());
    for (const QdrantScoredPoint& p : points) hits.push_back({p.id, p.score});
    // Qdrant orders by score only; the interface breaks ties by ascending seq.
    std::stable_sort(hits.begin(), hits.end(), [](const VectorHit& a, const VectorHit& b) {
      return a.score != b.score ? a.score > b.score : a.seq < b.seq;
    });
    return hits;
  }

  // Every write was made with wait=true: it is applied and in Qdrant's WAL already.
  absl::Status Persist() override { return absl::OkStatus(); }

  const std::string& collection() const { return collection_; }
  const QdrantClient* client() const { return client_.get(); }

 private:
  // Checks everything before sending anything, so a bad call adds nothing.
  absl::StatusOr<std::vector<json>> CheckedPayloads(absl::Span<const IndexedEvent> events,
                                                    absl::Span<const float> vectors) const {
    const size_t dim = static_cast<size_t>(identity_.dimension);
    if (vectors.size() != events.size() * dim) {
      return absl::InvalidArgumentError(absl::StrCat("Add: ", events.size(), " events need ",
                                                     events.size() * dim, " floats, got ",
                                                     vectors.size()));
    }
    if (!std::all_of(vectors.begin(), vectors.end(), [](float f) { return std::isfinite(f); })) {
      return absl::InvalidArgumentError("Add: a vector has a NaN or infinite component");
    }
    const uint64_t first = LastSeq() + 1;
    std::vector<json> payloads;
    payloads.reserve(events.size());
    for (size_t i = 0; i < events.size(); ++i) {
      const IndexedEvent& e = events[i];
      if (e.seq != first + i) {
        return absl::InvalidArgumentError(
            absl::StrCat("Add: event ", i, " has seq ", e.seq, ", want ", first + i,
                         " (seqs must be consecutive from LastSeq()+1)"));
      }
      json body = json::parse(e.body, nullptr, /*allow_exceptions=*/false);
      if (body.is_discarded() || !body.is_object()) {
        return absl::InvalidArgumentError(
            absl::StrCat("Add: the body of event ", e.seq, " is not a JSON object"));
      }
      payloads.push_back(
          {{"seq", e.seq}, {"ts", e.ts}, {"hash", std::string(e.hash)}, {"body", std::move(body)}});
    }
    return payloads;
  }

  const std::shared_ptr<QdrantClient> client_;
  const std::string collection_;
  const IndexIdentity identity_;
  const size_t batch_size_;
  std::atomic<uint64_t> last_seq_;
};

}  // namespace

QdrantVectorStore::QdrantVectorStore(std::shared_ptr<QdrantClient> client,
                                     QdrantVectorStoreOptions options, Clock* clock)
    : client_(std::move(client)), options_(std::move(options)), clock_(clock) {}

absl::StatusOr<std::unique_ptr<QdrantVectorStore>> QdrantVectorStore::Create(
    QdrantVectorStoreOptions options, Clock* clock) {
  if (!ValidAlias(options.alias)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "qdrant alias \"", options.alias, "\": want 1 to 200 letters, digits, '-' or '_'"));
  }
  if (options.batch_size == 0) return absl::InvalidArgumentError("qdrant batch_size is 0");
  ASSIGN_OR_RETURN(QdrantClientPtr client, QdrantClient::Create(options.client));
  return std::unique_ptr<QdrantVectorStore>(new QdrantVectorStore(
      std::shared_ptr<QdrantClient>(std::move(client)), std::move(options), clock));
}

absl::StatusOr<VectorIndexPtr> QdrantVectorStore::OpenPublished(const IndexIdentity& want) {
  ASSIGN_OR_RETURN(std::optional<std::string> collection, AliasedCollection());
  if (!collection) {
    return absl::NotFoundError(absl::StrCat("no published index: alias ", options_.alias,
                                            " does not exist on qdrant ", client_->url()));
  }
  ASSIGN_OR_RETURN(json info, client_->GetCollection(*collection));
  ASSIGN_OR_RETURN(IndexIdentity identity, ReadIdentity(*collection, info));
  if (!(identity == want)) {
    return absl::FailedPreconditionError(
        absl::StrCat("the published index (qdrant collection ", *collection, " behind alias ",
                     options_.alias, ") was built with ", DescribeIdentity(identity), ", but ",
                     DescribeIdentity(want), " is configured: the index must be rebuilt"));
  }
  RETURN_IF_ERROR(CheckVectorParams(*collection, info, identity));
  ASSIGN_OR_RETURN(uint64_t last_seq, VerifiedLastSeq(*collection));
  SetPublished(*collection);
  return std::make_unique<QdrantVectorIndex>(client_, *collection, identity, last_seq,
                                             options_.batch_size);
}

absl::StatusOr<VectorIndexPtr> QdrantVectorStore::CreateStaged(const IndexIdentity& identity) {
  if (identity.dimension <= 0 || identity.embedder_id.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("CreateStaged: bad identity (", DescribeIdentity(identity), ")"));
  }
  const std::string name = NextCollectionName();
  const json metadata = {
      {kMetadataKey, {{"embedder_id", identity.embedder_id}, {"dimension", identity.dimension}}}};
  RETURN_IF_ERROR(client_->CreateCollection(name, identity.dimension, metadata));
  for (const char* field : {"seq", "ts"}) {
    if (absl::Status st = client_->CreateFieldIndex(name, field, "integer"); !st.ok()) {
      DeleteQuietly(name);
      return st;
    }
  }
  return std::make_unique<QdrantVectorIndex>(client_, name, identity, 0, options_.batch_size);
}

absl::Status QdrantVectorStore::Publish(VectorIndex& staged) {
  auto* index = dynamic_cast<QdrantVectorIndex*>(&staged);
  if (index == nullptr || index->client() != client_.get()) {
    return absl::InvalidArgumentError("Publish: the index was not made by this store");
  }
  RETURN_IF_ERROR(index->Persist());
  ASSIGN_OR_RETURN(std::optional<std::string> previous, AliasedCollection());
  if (previous != index->collection()) {
    RETURN_IF_ERROR(
        client_->UpdateAliases(options_.alias, index->collection(), previous.has_value()));
  }
  // The switch is done; what follows only frees space, so a failure is logged and left to
  // the next Publish or Drop, which remove every stray "<alias>-<digits>" collection.
  SetPublished(index->collection());
  RemoveCollectionsExcept(index->collection(), previous);
  return absl::OkStatus();
}

absl::Status QdrantVectorStore::Drop() {
  SetPublished("");
  ASSIGN_OR_RETURN(std::optional<std::string> published, AliasedCollection());
  if (published) RETURN_IF_ERROR(client_->UpdateAliases(options_.alias, "", true));
  ASSIGN_OR_RETURN(std::vector<std::string> names, client_->ListCollections());
  for (const std::string& name : names) {
    if (name != published && !IsStagedName(name, options_.alias)) continue;
    if (absl::Status st = client_->DeleteCollection(name); !st.ok() && !absl::IsNotFound(st)) {
      return st;
    }
  }
  return absl::OkStatus();
}

absl::Status QdrantVectorStore::CheckPublished() {
  std::string known;
  {
    absl::MutexLock lock(&mu_);
    known = published_;
  }
  if (known.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::optional<std::string> current, AliasedCollection());
  if (!current) {
    return absl::NotFoundError(absl::StrCat("the alias ", options_.alias,
                                            " was removed from qdrant ", client_->url(),
                                            " (it named collection ", known, ")"));
  }
  if (*current != known) {
    return absl::FailedPreconditionError(absl::StrCat("another index (qdrant collection ", *current,
                                                      ") was published behind alias ",
                                                      options_.alias, " instead of ", known));
  }
  return absl::OkStatus();
}

void QdrantVectorStore::SetPublished(std::string collection) {
  absl::MutexLock lock(&mu_);
  published_ = std::move(collection);
}

std::string QdrantVectorStore::Describe() const {
  return absl::StrCat("qdrant ", client_->url(), " alias ", options_.alias);
}

absl::StatusOr<std::optional<std::string>> QdrantVectorStore::AliasedCollection() {
  ASSIGN_OR_RETURN(std::vector<QdrantAlias> aliases, client_->ListAliases());
  for (const QdrantAlias& a : aliases) {
    if (a.alias_name == options_.alias) return a.collection_name;
  }
  return std::nullopt;
}

absl::Status QdrantVectorStore::Damaged(const std::string& collection,
                                        std::string_view what) const {
  return absl::DataLossError(absl::StrCat("qdrant collection ", collection, " (alias ",
                                          options_.alias, ") ", std::string(what),
                                          ": drop the index and rebuild it"));
}

absl::StatusOr<IndexIdentity> QdrantVectorStore::ReadIdentity(const std::string& collection,
                                                              const json& info) const {
  const json* config = Member(info, "config");
  const json* metadata = config != nullptr ? Member(*config, "metadata") : nullptr;
  const json* id = metadata != nullptr ? Member(*metadata, kMetadataKey) : nullptr;
  if (id == nullptr) {
    return Damaged(collection,
                   "has no snapledger identity in its metadata (config.metadata.snapledger)");
  }
  const json* embedder_id = Member(*id, "embedder_id");
  const json* dimension = Member(*id, "dimension");
  if (embedder_id == nullptr || !embedder_id->is_string() || dimension == nullptr ||
      !dimension->is_number_unsigned() || dimension->get<uint64_t>() == 0 ||
      dimension->get<uint64_t>() > kMaxDimension) {
    return Damaged(collection, absl::StrCat("has malformed identity metadata ", id->dump()));
  }
  return IndexIdentity{embedder_id->get<std::string>(), dimension->get<int>()};
}

// The collection's vectors must be what CreateStaged asked for.
absl::Status QdrantVectorStore::CheckVectorParams(const std::string& collection, const json& info,
                                                  const IndexIdentity& identity) const {
  const json* vectors_in = Member(info, "config");
  if (vectors_in != nullptr) vectors_in = Member(*vectors_in, "params");
  if (vectors_in != nullptr) vectors_in = Member(*vectors_in, "vectors");
  const json vectors = vectors_in != nullptr ? *vectors_in : json();
  const bool ok = vectors.is_object() && vectors.value("size", json()) == identity.dimension &&
                  vectors.value("distance", json()) == "Dot";
  if (ok) return absl::OkStatus();
  return Damaged(collection, absl::StrCat("has vectors ", vectors.dump(), ", want size ",
                                          identity.dimension, " and distance Dot"));
}

// The point count, after checking that the points are exactly seqs 1..count (see the header)
// and that point `count` carries its own seq in the payload.
absl::StatusOr<uint64_t> QdrantVectorStore::VerifiedLastSeq(const std::string& collection) {
  ASSIGN_OR_RETURN(uint64_t count, client_->CountPoints(collection, json()));
  if (count == 0) return 0;
  ASSIGN_OR_RETURN(uint64_t in_range, client_->CountPoints(collection, SeqRange(1, count)));
  if (in_range != count) {
    return Damaged(collection,
                   absl::StrCat("holds ", count, " points but only ", in_range, " with seq 1..",
                                count, ": points are missing or foreign"));
  }
  const uint64_t last[] = {count};
  ASSIGN_OR_RETURN(std::vector<QdrantRecord> records,
                   client_->RetrievePoints(collection, last, /*with_payload=*/true));
  if (records.size() != 1 || records[0].id != count ||
      Member(records[0].payload, "seq") == nullptr ||
      *Member(records[0].payload, "seq") != json(count)) {
    return Damaged(collection, absl::StrCat("holds ", count, " points but point ", count,
                                            " is missing or has another seq"));
  }
  return count;
}

std::string QdrantVectorStore::NextCollectionName() {
  absl::MutexLock lock(&mu_);
  last_micros_ = std::max(clock_->NowMicros(), last_micros_ + 1);
  return absl::StrCat(options_.alias, "-", last_micros_);
}

void QdrantVectorStore::DeleteQuietly(const std::string& name) {
  if (absl::Status st = client_->DeleteCollection(name); !st.ok() && !absl::IsNotFound(st)) {
    spdlog::warn("could not delete qdrant collection {} (the next Publish or Drop retries): {}",
                 name, st);
  }
}

void QdrantVectorStore::RemoveCollectionsExcept(const std::string& keep,
                                                const std::optional<std::string>& previous) {
  if (previous && *previous != keep) DeleteQuietly(*previous);
  absl::StatusOr<std::vector<std::string>> names = client_->ListCollections();
  if (!names.ok()) {
    spdlog::warn("could not list qdrant collections to remove stray ones: {}", names.status());
    return;
  }
  for (const std::string& name : *names) {
    if (name != keep && name != previous && IsStagedName(name, options_.alias)) {
      DeleteQuietly(name);
    }
  }
}

}  // namespace snapledger
