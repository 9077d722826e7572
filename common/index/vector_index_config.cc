#include "common/index/vector_index_config.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/index/faiss/faiss_vector_store.h"
#include "common/index/feature_hash_embedder.h"
#include "common/index/http/http_embedder.h"
#include "common/index/qdrant/qdrant_vector_store.h"

namespace snapledger {
namespace {

absl::Status ReadEmbedder(YamlSection section, EmbedderConfig* e) {
  RETURN_IF_ERROR(section.Get("kind", &e->kind));
  RETURN_IF_ERROR(section.Get("dimension", &e->dimension));
  RETURN_IF_ERROR(section.Get("url", &e->url));
  RETURN_IF_ERROR(section.Get("model", &e->model));
  RETURN_IF_ERROR(section.Get("api_key", &e->api_key));
  RETURN_IF_ERROR(section.Get("batch_size", &e->batch_size));
  RETURN_IF_ERROR(section.GetMillis("timeout_ms", &e->timeout));
  RETURN_IF_ERROR(section.Get("max_attempts", &e->max_attempts));
  return section.CheckNoUnknownKeys();
}

absl::Status Invalid(const std::string& key, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("vector_index.", key, ": ", what));
}

absl::StatusOr<EmbedderPtr> MakeEmbedder(const EmbedderConfig& e) {
  if (e.kind == "feature-hash") {
    ASSIGN_OR_RETURN(std::unique_ptr<FeatureHashEmbedder> embedder,
                     FeatureHashEmbedder::Create(FeatureHashOptions{e.dimension}));
    return EmbedderPtr(std::move(embedder));
  }
  HttpEmbedderOptions options;
  options.url = e.url;
  options.model = e.model;
  options.dimension = e.dimension;
  options.batch_size = e.batch_size;
  options.timeout = e.timeout;
  options.max_attempts = e.max_attempts;
  options.api_key = e.api_key;
  ASSIGN_OR_RETURN(std::unique_ptr<HttpEmbedder> embedder, HttpEmbedder::Create(options));
  return EmbedderPtr(std::move(embedder));
}

absl::StatusOr<VectorStorePtr> MakeStore(const VectorIndexConfig& c) {
  if (c.backend == "embedded") {
    ASSIGN_OR_RETURN(std::unique_ptr<FaissVectorStore> store, FaissVectorStore::Open(c.dir));
    return VectorStorePtr(std::move(store));
  }
  QdrantVectorStoreOptions options;
  options.client.url = c.qdrant_url;
  options.client.api_key = c.qdrant_api_key;
  options.client.timeout = c.qdrant_timeout;
  options.alias = c.qdrant_alias;
  ASSIGN_OR_RETURN(std::unique_ptr<QdrantVectorStore> store, QdrantVectorStore::Create(options));
  return VectorStorePtr(std::move(store));
}

}  // namespace

absl::Status ReadVectorIndexConfig(YamlSection section, VectorIndexConfig* c) {
  RETURN_IF_ERROR(section.Get("enabled", &c->enabled));
  RETURN_IF_ERROR(section.Get("backend", &c->backend));
  RETURN_IF_ERROR(section.Get("dir", &c->dir));
  RETURN_IF_ERROR(section.Get("auto_rebuild", &c->auto_rebuild));
  RETURN_IF_ERROR(section.GetMillis("follow_interval_ms", &c->follow_interval));
  RETURN_IF_ERROR(section.GetMillis("follow_min_spacing_ms", &c->follow_min_spacing));
  ASSIGN_OR_RETURN(YamlSection qdrant, section.Section("qdrant"));
  RETURN_IF_ERROR(qdrant.Get("url", &c->qdrant_url));
  RETURN_IF_ERROR(qdrant.Get("alias", &c->qdrant_alias));
  RETURN_IF_ERROR(qdrant.Get("api_key", &c->qdrant_api_key));
  RETURN_IF_ERROR(qdrant.GetMillis("timeout_ms", &c->qdrant_timeout));
  RETURN_IF_ERROR(qdrant.CheckNoUnknownKeys());
  ASSIGN_OR_RETURN(YamlSection embedder, section.Section("embedder"));
  RETURN_IF_ERROR(ReadEmbedder(embedder, &c->embedder));
  return section.CheckNoUnknownKeys();
}

absl::Status ValidateVectorIndexConfig(const VectorIndexConfig& c) {
  if (!c.enabled) return absl::OkStatus();
  if (c.backend != "embedded" && c.backend != "qdrant")
    return Invalid("backend", absl::StrCat("\"", c.backend, "\" is not embedded or qdrant"));
  if (c.backend == "qdrant" && c.qdrant_url.empty())
    return Invalid("qdrant.url", "required when backend is qdrant");
  if (c.backend == "embedded" && c.dir.empty()) return Invalid("dir", "required");
  if (c.follow_interval <= absl::ZeroDuration())
    return Invalid("follow_interval_ms", "must be positive");
  if (c.follow_min_spacing < absl::ZeroDuration())
    return Invalid("follow_min_spacing_ms", "must not be negative");
  const EmbedderConfig& e = c.embedder;
  if (e.kind == "feature-hash") {
    if (e.dimension < FeatureHashEmbedder::kMinDimension ||
        e.dimension > FeatureHashEmbedder::kMaxDimension || (e.dimension & (e.dimension - 1)))
      return Invalid("embedder.dimension", absl::StrCat(e.dimension, " is not a power of two in [",
                                                        FeatureHashEmbedder::kMinDimension, ", ",
                                                        FeatureHashEmbedder::kMaxDimension, "]"));
  } else if (e.kind == "http") {
    if (e.url.empty()) return Invalid("embedder.url", "required when kind is http");
    if (e.model.empty()) return Invalid("embedder.model", "required when kind is http");
    if (e.dimension <= 0) return Invalid("embedder.dimension", "must be positive");
    if (e.batch_size == 0) return Invalid("embedder.batch_size", "must be positive");
    if (e.max_attempts <= 0) return Invalid("embedder.max_attempts", "must be positive");
  } else {
    return Invalid("embedder.kind", absl::StrCat("\"", e.kind, "\" is not feature-hash or http"));
  }
  return absl::OkStatus();
}

void ApplyVectorIndexDefaults(const std::string& ledger_root, VectorIndexConfig* c) {
  if (c->dir.empty()) c->dir = absl::StrCat(ledger_root, "/index/vectors");
}

absl::StatusOr<SimilarityIndexPtr> MakeSimilarityIndex(const VectorIndexConfig& config,
                                                       std::string ledger_dir,
                                                       std::function<bool()> give_way,
                                                       Clock* clock) {
  RETURN_IF_ERROR(ValidateVectorIndexConfig(config));
  ASSIGN_OR_RETURN(EmbedderPtr embedder, MakeEmbedder(config.embedder));
  ASSIGN_OR_RETURN(VectorStorePtr store, MakeStore(config));
  SimilarityIndexOptions options;
  options.auto_rebuild = config.auto_rebuild;
  options.give_way = std::move(give_way);
  options.clock = clock;
  return std::make_unique<SimilarityIndex>(std::move(ledger_dir), std::move(embedder),
                                           std::move(store), options);
}

}  // namespace snapledger
