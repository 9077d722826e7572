// The gRPC Query service (proto/snapledger/v1): events by seq, by hash and by time range,
// answered from one ledger directory through EventQuery (lookup index, or a scan while the
// index is missing or being rebuilt). Runs on the primary and on replicas.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "common/ledger/head_file.h"
#include "common/lookup/event_query.h"
#include "snapledger/v1/snapledger.grpc.pb.h"

namespace snapledger {

// Thread-safe (gRPC calls it from its own threads; EventQuery is thread-safe).
class QueryService final : public v1::Query::Service {
 public:
  // `query` is borrowed and must outlive the service.
  explicit QueryService(EventQuery& query)
      : source_([q = std::shared_ptr<EventQuery>(&query, [](EventQuery*) {})] { return q; }) {}
  // Asks `source` for the EventQuery to answer each call from (a replica switches to each new
  // verified block); when it returns null, calls fail with UNAVAILABLE. `source` must be
  // thread-safe.
  explicit QueryService(std::function<std::shared_ptr<EventQuery>()> source)
      : source_(std::move(source)) {}

  grpc::Status Get(grpc::ServerContext* context, const v1::GetRequest* request,
                   v1::Event* response) override;
  grpc::Status Range(grpc::ServerContext* context, const v1::RangeRequest* request,
                     grpc::ServerWriter<v1::Event>* writer) override;

 private:
  std::function<std::shared_ptr<EventQuery>()> source_;
};

// Maps an absl::Status to a grpc::Status with the same code and message.
grpc::Status ToGrpcStatus(const absl::Status& status);

// Fills a v1::Head from a head record, and back (Head is the proto of a HeadRecord).
void ToProtoHead(const HeadRecord& head, v1::Head* out);
HeadRecord FromProtoHead(const v1::Head& head);

// Fills `event` from a stored line; false if the line does not parse (it came from the log, so
// that means the log changed under us).
bool EventFromLine(const std::string& line, v1::Event* event);

}  // namespace snapledger
