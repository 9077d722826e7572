// The gRPC Similarity and Admin services (proto/snapledger/v1): similar-event queries over a
// node's derived vector index, and its administration (rebuild with streamed progress,
// status). Both run on the primary and on replicas.
#pragma once

#include <functional>
#include <memory>

#include "common/index/similarity_index.h"
#include "common/lookup/event_query.h"
#include "snapledger/v1/snapledger.grpc.pb.h"

namespace snapledger {

// Thread-safe. `events` names the EventQuery to read events from for each call (null:
// UNAVAILABLE); `index` is borrowed and must outlive the service; null when the node runs
// without a vector index (calls fail with FAILED_PRECONDITION saying so).
class SimilarityService final : public v1::Similarity::Service {
 public:
  SimilarityService(std::function<std::shared_ptr<EventQuery>()> events, SimilarityIndex* index)
      : events_(std::move(events)), index_(index) {}

  grpc::Status Similar(grpc::ServerContext* context, const v1::SimilarRequest* request,
                       v1::SimilarResponse* response) override;

 private:
  std::function<std::shared_ptr<EventQuery>()> events_;
  SimilarityIndex* index_;
};

// Thread-safe; `index` is borrowed and must outlive the service (null: no vector index on
// this node, calls fail with FAILED_PRECONDITION). A rebuild runs on the calling
// gRPC thread; progress is streamed at most every 200 ms and once at the end.
class AdminService final : public v1::Admin::Service {
 public:
  explicit AdminService(SimilarityIndex* index) : index_(index) {}

  grpc::Status RebuildIndex(grpc::ServerContext* context, const v1::RebuildIndexRequest* request,
                            grpc::ServerWriter<v1::RebuildProgress>* writer) override;
  grpc::Status IndexStatus(grpc::ServerContext* context, const v1::IndexStatusRequest* request,
                           v1::VectorIndexStatus* response) override;

 private:
  SimilarityIndex* index_;
};

// Fills the proto form of a vector index status.
void ToProtoIndexStatus(const SimilarityIndexStatus& status, v1::VectorIndexStatus* out);

}  // namespace snapledger
