// The gRPC Ledger service (proto/snapledger/v1): appends through the primary's EventLog.
// Append is acknowledged once its event is durable (group commit); AppendStream keeps up to
// `window` appends in flight per stream, so one streaming client fills commit batches alone.
#pragma once

#include <cstddef>

#include "common/event_log.h"
#include "snapledger/v1/snapledger.grpc.pb.h"

namespace snapledger {

// Thread-safe. `log` is borrowed and must outlive the service.
class LedgerService final : public v1::Ledger::Service {
 public:
  explicit LedgerService(EventLog& log, size_t window = 256) : log_(log), window_(window) {}

  grpc::Status Append(grpc::ServerContext* context, const v1::AppendRequest* request,
                      v1::AppendResponse* response) override;
  // A body that is rejected ends the stream with INVALID_ARGUMENT naming its position in the
  // stream; the events before it stay appended (their count is in the message).
  grpc::Status AppendStream(grpc::ServerContext* context,
                            grpc::ServerReader<v1::AppendRequest>* reader,
                            v1::AppendBatchResponse* response) override;

 private:
  EventLog& log_;
  const size_t window_;
};

}  // namespace snapledger
