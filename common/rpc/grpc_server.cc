#include "common/rpc/grpc_server.h"

#include <grpcpp/health_check_service_interface.h>

#include <chrono>

#include "absl/strings/str_cat.h"

namespace snapledger {

absl::StatusOr<GrpcServerPtr> GrpcServer::Start(const std::string& address,
                                                const std::vector<grpc::Service*>& services) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &port);
  for (grpc::Service* service : services) builder.RegisterService(service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0)
    return absl::UnavailableError(
        absl::StrCat("cannot serve gRPC on ", address, " (address in use or not local?)"));
  if (auto* health = server->GetHealthCheckService()) health->SetServingStatus(true);
  return GrpcServerPtr(new GrpcServer(std::move(server), port));
}

void GrpcServer::SetNotServing() {
  if (auto* health = server_->GetHealthCheckService()) health->SetServingStatus(false);
}

GrpcServer::~GrpcServer() {
  SetNotServing();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

}  // namespace snapledger
