#include "common/rpc/query_service.h"

#include "common/ledger/event_format.h"

namespace snapledger {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

void ToProtoHead(const HeadRecord& head, v1::Head* out) {
  out->set_seq(head.head.seq);
  out->set_hash(head.head.hash);
  out->set_epoch(head.epoch);
  out->set_ts_micros(head.head.ts);
  out->set_log_bytes(head.log_bytes);
}

HeadRecord FromProtoHead(const v1::Head& head) {
  HeadRecord out;
  out.head.seq = head.seq();
  out.head.hash = head.hash();
  out.head.ts = head.ts_micros();
  out.epoch = head.epoch();
  out.log_bytes = head.log_bytes();
  return out;
}

bool EventFromLine(const std::string& line, v1::Event* event) {
  auto ev = ParseEventLine(line);
  if (!ev.ok()) return false;
  event->set_seq(ev->seq);
  event->set_ts_micros(ev->ts);
  event->set_prev(std::string(ev->prev));
  event->set_hash(std::string(ev->hash));
  event->set_body_json(std::string(ev->body));
  event->set_line(line);
  return true;
}

namespace {
grpc::Status NoLedgerYet() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE, "no verified ledger to answer from yet");
}
}  // namespace

grpc::Status QueryService::Get(grpc::ServerContext*, const v1::GetRequest* request,
                               v1::Event* response) {
  std::shared_ptr<EventQuery> query = source_();
  if (!query) return NoLedgerYet();
  absl::StatusOr<std::string> line;
  switch (request->key_case()) {
    case v1::GetRequest::kSeq:
      if (request->seq() == 0)
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "seq starts at 1");
      line = query->Get(request->seq());
      break;
    case v1::GetRequest::kHash:
      line = query->GetByHash(request->hash());
      break;
    default:
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "give a seq or a hash");
  }
  if (!line.ok()) return ToGrpcStatus(line.status());
  if (!EventFromLine(*line, response))
    return grpc::Status(grpc::StatusCode::DATA_LOSS, "stored line does not parse");
  return grpc::Status::OK;
}

grpc::Status QueryService::Range(grpc::ServerContext*, const v1::RangeRequest* request,
                                 grpc::ServerWriter<v1::Event>* writer) {
  constexpr uint32_t kMaxLimit = 100000;
  uint32_t limit = request->limit() == 0 ? 1000 : request->limit();
  if (limit > kMaxLimit)
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "limit is at most 100000");
  std::shared_ptr<EventQuery> query = source_();
  if (!query) return NoLedgerYet();
  auto lines = query->Range(request->from_ts_micros(), request->to_ts_micros(), limit);
  if (!lines.ok()) return ToGrpcStatus(lines.status());
  v1::Event event;
  for (const std::string& line : *lines) {
    if (!EventFromLine(line, &event))
      return grpc::Status(grpc::StatusCode::DATA_LOSS, "stored line does not parse");
    if (!writer->Write(event)) break;  // the client went away
  }
  return grpc::Status::OK;
}

}  // namespace snapledger
