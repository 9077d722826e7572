// The gRPC Ledger service (proto/snapledger/v1): appends through the primary's EventLog.
// Append is acknowledged once its event is durable (group commit); AppendStream keeps up to
// `window` appends in flight per stream, so one streaming client fills commit batches alone.
#pragma once

#include <cstddef>

#include "absl/time/time.h"
#include "common/base/clock.h"
#include "common/ledger/event_log.h"
#include "snapledger/v1/snapledger.grpc.pb.h"

namespace snapledger {

// Told about every append the service handles (for metrics). Must be thread-safe.
class AppendObserver {
 public:
  virtual ~AppendObserver() = default;
  // An event became durable `latency` after the service received it.
  virtual void Appended(absl::Duration latency) = 0;
  // An event was rejected (invalid body, or the log failed).
  virtual void Rejected() = 0;
};

// Thread-safe. `log`, `observer` (optional) and `clock` are borrowed and must outlive the
// service; the latencies the observer is told are measured on `clock`.
class LedgerService final : public v1::Ledger::Service {
 public:
  explicit LedgerService(EventLog& log, size_t window = 256, AppendObserver* observer = nullptr,
                         Clock* clock = Clock::Real())
      : log_(log), window_(window), observer_(observer), clock_(clock) {}

  grpc::Status Append(grpc::ServerContext* context, const v1::AppendRequest* request,
                      v1::AppendResponse* response) override;
  // A body that is rejected ends the stream with INVALID_ARGUMENT naming its position in the
  // stream; the events before it stay appended (their count is in the message).
  grpc::Status AppendStream(grpc::ServerContext* context,
                            grpc::ServerReader<v1::AppendRequest>* reader,
                            v1::AppendBatchResponse* response) override;

 private:
  void Observe(bool ok, absl::Time received) const;

  EventLog& log_;
  const size_t window_;
  AppendObserver* const observer_;
  Clock* const clock_;
};

}  // namespace snapledger
