// A gRPC server for a daemon: its services, gRPC's standard health service
// (grpc.health.v1.Health, so probes and load balancers work) and a chosen address.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace snapledger {

class GrpcServer;
using GrpcServerPtr = std::unique_ptr<GrpcServer>;

// RAII: the destructor shuts the server down (waiting up to 2 s for calls in progress).
// Thread-safe.
class GrpcServer {
 public:
  // Listens on `address` ("host:port"; port 0 picks a free one) and serves `services`
  // (borrowed; they must outlive the server). Health reports SERVING for the server as a
  // whole (service name ""). Unavailable when the address cannot be bound.
  static absl::StatusOr<GrpcServerPtr> Start(const std::string& address,
                                             const std::vector<grpc::Service*>& services);
  ~GrpcServer();
  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  int port() const { return port_; }
  // Health turns NOT_SERVING (for example while shutting down).
  void SetNotServing();

 private:
  GrpcServer(std::unique_ptr<grpc::Server> server, int port)
      : server_(std::move(server)), port_(port) {}
  std::unique_ptr<grpc::Server> server_;
  int port_;
};

}  // namespace snapledger
