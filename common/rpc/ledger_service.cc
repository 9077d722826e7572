#include "common/rpc/ledger_service.h"

#include <deque>
#include <future>

#include "absl/strings/str_cat.h"
#include "common/rpc/query_service.h"

namespace snapledger {

void LedgerService::Observe(bool ok, absl::Time received) const {
  if (!observer_) return;
  if (ok) {
    observer_->Appended(clock_->Now() - received);
  } else {
    observer_->Rejected();
  }
}

grpc::Status LedgerService::Append(grpc::ServerContext*, const v1::AppendRequest* request,
                                   v1::AppendResponse* response) {
  absl::Time received = clock_->Now();
  auto r = log_.Append(request->body_json());
  Observe(r.ok(), received);
  if (!r.ok()) return ToGrpcStatus(r.status());
  response->set_seq(r->seq);
  response->set_ts_micros(r->ts);
  response->set_hash(r->hash);
  return grpc::Status::OK;
}

grpc::Status LedgerService::AppendStream(grpc::ServerContext*,
                                         grpc::ServerReader<v1::AppendRequest>* reader,
                                         v1::AppendBatchResponse* response) {
  struct InFlight {
    std::shared_future<absl::StatusOr<AppendResult>> result;
    absl::Time received;
  };
  std::deque<InFlight> in_flight;
  uint64_t position = 0, acknowledged = 0;
  AppendResult first, last;
  // Waits for the oldest append; an error names the stream position of the event.
  auto settle_one = [&]() -> grpc::Status {
    absl::StatusOr<AppendResult> r = in_flight.front().result.get();  // a copy
    Observe(r.ok(), in_flight.front().received);
    in_flight.pop_front();
    uint64_t at = acknowledged + 1;
    if (!r.ok())
      return grpc::Status(ToGrpcStatus(r.status()).error_code(),
                          absl::StrCat("event ", at, " of the stream: ", r.status().message(), " (",
                                       acknowledged, " events before it were appended)"));
    if (acknowledged == 0) first = *r;
    last = *std::move(r);
    ++acknowledged;
    return grpc::Status::OK;
  };
  v1::AppendRequest request;
  grpc::Status status;
  while (status.ok() && reader->Read(&request)) {
    ++position;
    absl::Time received = clock_->Now();
    in_flight.push_back({log_.AppendAsync(request.body_json()).share(), received});
    // A rejected body fails at once (before anything is queued): stop reading so that no
    // event after it is appended.
    const auto& newest = in_flight.back().result;
    if (newest.wait_for(std::chrono::seconds(0)) == std::future_status::ready &&
        !newest.get().ok()) {
      absl::Status rejected = newest.get().status();
      in_flight.pop_back();
      Observe(false, received);
      while (!in_flight.empty() && status.ok()) status = settle_one();
      if (status.ok())
        status =
            grpc::Status(ToGrpcStatus(rejected).error_code(),
                         absl::StrCat("event ", position, " of the stream: ", rejected.message(),
                                      " (", acknowledged, " events before it were appended)"));
      break;
    }
    if (in_flight.size() >= window_) status = settle_one();
  }
  while (!in_flight.empty()) {
    grpc::Status st = settle_one();
    if (status.ok() && !st.ok()) status = st;
  }
  if (!status.ok()) return status;
  response->set_count(acknowledged);
  if (acknowledged > 0) {
    response->set_first_seq(first.seq);
    response->set_last_seq(last.seq);
    response->set_last_hash(last.hash);
  }
  return grpc::Status::OK;
}

}  // namespace snapledger
