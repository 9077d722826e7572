#include "common/node/node_services.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"

namespace snapledger {

NodeServices::NodeServices(NodeConfig config)
    : config_(std::move(config)), registry_(std::make_shared<prometheus::Registry>()) {}

NodeServices::~NodeServices() { Stop(); }

std::string NodeServices::LookupIndexDir() const {
  return config_.index_dir.empty() ? absl::StrCat(config_.ledger_root, "/index/lookup")
                                   : config_.index_dir;
}

absl::Status NodeServices::StartMetricsServer() {
  if (config_.metrics_listen.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(MetricsServerPtr server,
                   MetricsServer::Start(config_.metrics_listen, registry_));
  absl::MutexLock lock(&mu_);
  metrics_server_ = std::move(server);
  return absl::OkStatus();
}

absl::Status NodeServices::StartServing(RoleServing role) {
  absl::MutexLock lock(&mu_);
  if (serving_started_ || stopped_)
    return absl::FailedPreconditionError("the node's services were started or stopped already");
  serving_started_ = true;
  if (config_.vector_index.enabled) {
    VectorIndexConfig vector_index = config_.vector_index;
    ApplyVectorIndexDefaults(config_.ledger_root, &vector_index);
    ASSIGN_OR_RETURN(similarity_, MakeSimilarityIndex(vector_index, role.indexed_ledger_dir,
                                                      std::move(role.give_way), config_.clock));
  }
  vector_index_metrics_ = role.vector_index_metrics;
  query_service_ = std::make_unique<QueryService>(role.events);
  similarity_service_ = std::make_unique<SimilarityService>(role.events, similarity_.get());
  admin_service_ = std::make_unique<AdminService>(similarity_.get());
  std::vector<grpc::Service*> services = std::move(role.services);
  services.insert(services.end(),
                  {query_service_.get(), similarity_service_.get(), admin_service_.get()});
  ASSIGN_OR_RETURN(server_, GrpcServer::Start(config_.grpc_listen, services));
  return absl::OkStatus();
}

void NodeServices::StartIndexFollower() {
  absl::MutexLock lock(&mu_);
  if (!similarity_ || index_follower_ || !server_ || stopped_) return;
  index_follower_ = std::make_unique<IndexFollower>(
      *similarity_, vector_index_metrics_, config_.vector_index.follow_interval,
      config_.vector_index.follow_min_spacing, config_.clock);
}

void NodeServices::FollowLedgerDir(std::string ledger_dir) {
  absl::MutexLock lock(&mu_);
  if (similarity_) similarity_->SetLedgerDir(std::move(ledger_dir));
}

void NodeServices::NotifyNewBlock() {
  absl::MutexLock lock(&mu_);
  if (index_follower_) index_follower_->Notify();
}

void NodeServices::SetNotServing() {
  absl::MutexLock lock(&mu_);
  if (server_) server_->SetNotServing();
}

void NodeServices::Stop() {
  std::unique_ptr<IndexFollower> follower;
  SimilarityIndex* similarity;
  GrpcServerPtr server;
  {
    absl::MutexLock lock(&mu_);
    stopped_ = true;
    follower = std::move(index_follower_);
    similarity = similarity_.get();
    server = std::move(server_);
  }
  // Outside the lock: each may block (a step or a rebuild ending, calls draining).
  if (follower) follower->Stop();  // also ends a requested rebuild in progress
  if (similarity) similarity->Cancel();
  server.reset();  // drains calls in progress: acknowledged appends stay acknowledged
}

int NodeServices::grpc_port() const {
  absl::MutexLock lock(&mu_);
  return server_ ? server_->port() : 0;
}

int NodeServices::metrics_port() const {
  absl::MutexLock lock(&mu_);
  return metrics_server_ ? metrics_server_->port() : 0;
}

}  // namespace snapledger
