#include "common/rpc/similarity_service.h"

#include "common/index/similarity_query.h"
#include "common/rpc/query_service.h"

namespace snapledger {
namespace {

absl::StatusOr<SimilarQuestion> FromProto(const v1::SimilarRequest& request) {
  SimilarQuestion q;
  switch (request.like_case()) {
    case v1::SimilarRequest::kText:
      q.like = SimilarQuestion::Like::kText;
      q.text = request.text();
      break;
    case v1::SimilarRequest::kBodyJson:
      q.like = SimilarQuestion::Like::kBody;
      q.text = request.body_json();
      break;
    case v1::SimilarRequest::kSeq:
      q.like = SimilarQuestion::Like::kSeq;
      q.seq = request.seq();
      break;
    default:
      return absl::InvalidArgumentError("similar: give text, body_json or seq");
  }
  q.k = request.k() == 0 ? 10 : request.k();
  if (request.from_ts_micros() != 0 || request.to_ts_micros() != 0) {
    q.from_ts = request.from_ts_micros();
    q.to_ts = request.to_ts_micros();
  }
  for (const v1::FieldFilter& f : request.fields()) {
    nlohmann::json value = nlohmann::json::parse(f.value_json(), nullptr, false);
    if (value.is_discarded())
      return absl::InvalidArgumentError(absl::StrCat(
          "field filter \"", f.field(), "\": value_json is not JSON: ", f.value_json()));
    q.fields.push_back(FieldMatch{f.field(), std::move(value)});
  }
  return q;
}

grpc::Status Disabled() {
  return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                      "vector index not available: disabled in this node's configuration "
                      "(vector_index.enabled: false)");
}

}  // namespace

void ToProtoIndexStatus(const SimilarityIndexStatus& status, v1::VectorIndexStatus* out) {
  out->set_state(std::string(VectorIndexStateName(status.state)));
  out->set_indexed_through(status.indexed_through);
  out->set_log_events(status.log_events);
  out->set_lag_events(status.lag);
  out->set_embedder(status.embedder);
  out->set_backend(status.backend);
  out->set_detail(status.detail);
}

grpc::Status SimilarityService::Similar(grpc::ServerContext*, const v1::SimilarRequest* request,
                                        v1::SimilarResponse* response) {
  if (index_ == nullptr) return Disabled();
  absl::StatusOr<SimilarQuestion> q = FromProto(*request);
  if (!q.ok()) return ToGrpcStatus(q.status());
  std::shared_ptr<EventQuery> events = events_();
  if (!events)
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "no verified ledger to answer from yet");
  absl::StatusOr<SimilarAnswer> answer = FindSimilar(*events, *index_, *q);
  if (!answer.ok()) return ToGrpcStatus(answer.status());
  response->set_indexed_through(answer->indexed_through);
  for (const SimilarEvent& e : answer->events) {
    v1::SimilarHit* hit = response->add_hits();
    hit->set_score(e.score);
    if (!EventFromLine(e.line, hit->mutable_event()))
      return grpc::Status(grpc::StatusCode::DATA_LOSS, "stored line does not parse");
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::RebuildIndex(grpc::ServerContext*, const v1::RebuildIndexRequest*,
                                        grpc::ServerWriter<v1::RebuildProgress>* writer) {
  if (index_ == nullptr) return Disabled();
  absl::Time last_sent = absl::InfinitePast();
  auto send = [&](const RebuildProgressInfo& info, bool done) {
    v1::RebuildProgress p;
    p.set_events_done(info.events_done);
    p.set_events_total(info.events_total);
    p.set_bytes_done(info.bytes_done);
    p.set_bytes_total(info.bytes_total);
    p.set_elapsed_seconds(absl::ToDoubleSeconds(info.elapsed));
    p.set_done(done);
    writer->Write(p);  // a client that went away just stops getting progress
  };
  RebuildProgressInfo last;
  absl::Status st = index_->Rebuild([&](const RebuildProgressInfo& info) {
    last = info;
    if (absl::Now() - last_sent < absl::Milliseconds(200)) return;
    last_sent = absl::Now();
    send(info, false);
  });
  if (!st.ok()) return ToGrpcStatus(st);
  send(last, true);
  return grpc::Status::OK;
}

grpc::Status AdminService::IndexStatus(grpc::ServerContext*, const v1::IndexStatusRequest*,
                                       v1::VectorIndexStatus* response) {
  if (index_ == nullptr) return Disabled();
  ToProtoIndexStatus(index_->Status(), response);
  return grpc::Status::OK;
}

}  // namespace snapledger
