// The gRPC Replication service of the primary: replicas report what they verified
// (ReportProgress), operators and `snapledger status` read the cluster's state
// (ClusterStatus).
#pragma once

#include <functional>
#include <vector>

#include "common/base/clock.h"
#include "common/ledger/block.h"
#include "common/ledger/head_file.h"
#include "primary/replication_state.h"
#include "snapledger/v1/snapledger.grpc.pb.h"

namespace snapledger {

// The primary's side of a status answer: its head and its blocks (sorted by seq).
struct PrimaryPosition {
  HeadRecord head;
  std::vector<BlockInfo> blocks;
};

// Thread-safe. `state` and `clock` are borrowed and must outlive the service; `position` is
// called from gRPC threads and must be thread-safe.
class ReplicationService final : public v1::Replication::Service {
 public:
  ReplicationService(ReplicationState& state, std::function<PrimaryPosition()> position,
                     Clock* clock = Clock::Real())
      : state_(state), position_(std::move(position)), clock_(clock) {}

  // NOT_FOUND for a replica id this primary is not configured for; INVALID_ARGUMENT for a
  // malformed block name.
  grpc::Status ReportProgress(grpc::ServerContext* context, const v1::ReplicaProgress* request,
                              v1::ProgressAck* response) override;
  grpc::Status ClusterStatus(grpc::ServerContext* context, const v1::ClusterStatusRequest* request,
                             v1::ClusterStatusResponse* response) override;

 private:
  ReplicationState& state_;
  std::function<PrimaryPosition()> position_;
  Clock* clock_;
};

// The proto state of a tracker health.
v1::ReplicaState ToProtoState(ReplicaHealth health);

}  // namespace snapledger
