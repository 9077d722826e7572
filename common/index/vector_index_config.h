// The `vector_index:` section of both daemons' configuration (docs/CONFIG.md), and the
// factory that turns it into a SimilarityIndex for one ledger.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/base/clock.h"
#include "common/index/similarity_index.h"
#include "common/ops/yaml_config.h"

namespace snapledger {

struct EmbedderConfig {
  std::string kind = "feature-hash";  // "feature-hash" or "http"
  int dimension = 128;
  // kind: http (an OpenAI-compatible POST /v1/embeddings endpoint)
  std::string url;
  std::string model;
  std::string api_key;
  uint64_t batch_size = 64;
  absl::Duration timeout = absl::Seconds(10);
  int max_attempts = 3;
};

struct VectorIndexConfig {
  bool enabled = true;
  std::string backend = "embedded";  // "embedded" or "qdrant"
  std::string dir;                   // embedded: default <ledger_root>/index/vectors
  // backend: qdrant
  std::string qdrant_url;  // e.g. http://127.0.0.1:6333
  std::string qdrant_alias = "snapledger-events";
  std::string qdrant_api_key;
  absl::Duration qdrant_timeout = absl::Seconds(10);
  bool auto_rebuild = true;  // rebuild a missing/damaged/foreign index by itself
  absl::Duration follow_interval = absl::Seconds(1);  // catch-up when no block signalled it
  // Steps start at least this far apart: blocks cut meanwhile are indexed together.
  absl::Duration follow_min_spacing = absl::Seconds(1);
  EmbedderConfig embedder;
};

// Reads the section (absent keys keep their defaults); InvalidArgument naming the key for a
// bad value or an unknown key.
absl::Status ReadVectorIndexConfig(YamlSection section, VectorIndexConfig* config);
// Cross-field rules: known backend and embedder kinds, a URL where one is needed, a dimension
// the embedder accepts.
absl::Status ValidateVectorIndexConfig(const VectorIndexConfig& config);
// Fills defaults that depend on the node (dir under <ledger_root>/index/vectors).
void ApplyVectorIndexDefaults(const std::string& ledger_root, VectorIndexConfig* config);

// Builds the embedder and the store the config names and a SimilarityIndex following
// `ledger_dir`, giving way to more urgent work as `give_way` says (SimilarityIndexOptions;
// null: never). InvalidArgument for a config ValidateVectorIndexConfig rejects.
absl::StatusOr<SimilarityIndexPtr> MakeSimilarityIndex(const VectorIndexConfig& config,
                                                       std::string ledger_dir,
                                                       std::function<bool()> give_way = nullptr,
                                                       Clock* clock = Clock::Real());

}  // namespace snapledger
