#include "primary/replication_service.h"

#include "common/rpc/query_service.h"

namespace snapledger {

v1::ReplicaState ToProtoState(ReplicaHealth health) {
  switch (health) {
    case ReplicaHealth::kInSync:
      return v1::REPLICA_STATE_IN_SYNC;
    case ReplicaHealth::kCatchingUp:
      return v1::REPLICA_STATE_CATCHING_UP;
    case ReplicaHealth::kStalled:
      return v1::REPLICA_STATE_STALLED;
    case ReplicaHealth::kFailing:
      return v1::REPLICA_STATE_FAILING;
    case ReplicaHealth::kUnknown:
      break;
  }
  return v1::REPLICA_STATE_UNKNOWN;
}

grpc::Status ReplicationService::ReportProgress(grpc::ServerContext*,
                                                const v1::ReplicaProgress* request,
                                                v1::ProgressAck* response) {
  ReplicaReport report;
  report.replica_id = request->replica_id();
  report.verified_blocks.assign(request->verified_blocks().begin(),
                                request->verified_blocks().end());
  report.head = FromProtoHead(request->head());
  report.last_error = request->last_error();
  if (absl::Status s = state_.ApplyReport(report, clock_->NowMicros()); !s.ok())
    return ToGrpcStatus(s);
  PrimaryPosition position = position_();
  ToProtoHead(position.head, response->mutable_primary_head());
  if (!position.blocks.empty()) response->set_newest_block(position.blocks.back().name);
  return grpc::Status::OK;
}

grpc::Status ReplicationService::ClusterStatus(grpc::ServerContext*,
                                               const v1::ClusterStatusRequest*,
                                               v1::ClusterStatusResponse* response) {
  PrimaryPosition position = position_();
  ToProtoHead(position.head, response->mutable_primary_head());
  if (!position.blocks.empty()) response->set_newest_block(position.blocks.back().name);
  for (const ReplicaLag& lag :
       state_.Evaluate(position.head, position.blocks, clock_->NowMicros())) {
    v1::ReplicaStatus* r = response->add_replicas();
    r->set_replica_id(lag.replica_id);
    r->set_state(ToProtoState(lag.health));
    if (lag.last_verified_block) r->set_last_verified_block(*lag.last_verified_block);
    ToProtoHead(lag.head, r->mutable_head());
    r->set_lag_events(lag.lag_events);
    r->set_lag_blocks(lag.lag_blocks);
    r->set_lag_bytes(lag.lag_bytes);
    r->set_lag_seconds(lag.lag_seconds);
    r->set_last_success_unix_micros(lag.last_success_micros);
    r->set_last_error(lag.last_error);
  }
  return grpc::Status::OK;
}

}  // namespace snapledger
