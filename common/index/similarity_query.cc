#include "common/index/similarity_query.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/ledger/canonical_json.h"
#include "common/ledger/event_format.h"

namespace snapledger {
namespace {

bool IsScalar(const nlohmann::json& v) {
  return v.is_string() || v.is_number_integer() || v.is_number_unsigned() || v.is_boolean();
}

absl::StatusOr<EventView> ParseStored(const std::string& line, uint64_t seq) {
  absl::StatusOr<EventView> ev = ParseEventLine(line);
  if (!ev.ok())
    return absl::DataLossError(
        absl::StrCat("events.jsonl line ", seq, " (seq ", seq, "): ", ev.status().message()));
  return ev;
}

// The seqs whose ts lies in [from, to]: found as the first event at or after `from` and the
// first event after `to` (ts is non-decreasing in seq). Empty range -> min_seq > max_seq.
absl::Status ResolveTimeRange(EventQuery& events, const SimilarQuestion& q, SearchFilter* f) {
  if (!q.from_ts.has_value() && !q.to_ts.has_value()) return absl::OkStatus();
  const int64_t from = q.from_ts.value_or(std::numeric_limits<int64_t>::min());
  const int64_t to = q.to_ts.value_or(std::numeric_limits<int64_t>::max());
  if (from > to)
    return absl::InvalidArgumentError(
        absl::StrCat("time range [", from, ", ", to, "] ends before it starts"));
  ASSIGN_OR_RETURN(std::vector<std::string> first, events.Range(from, to, 1));
  if (first.empty()) {
    f->min_seq = 1;
    f->max_seq = 0;
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(EventView first_ev, ParseStored(first[0], 0));
  f->min_seq = first_ev.seq;
  if (to == std::numeric_limits<int64_t>::max()) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::vector<std::string> after,
                   events.Range(to + 1, std::numeric_limits<int64_t>::max(), 1));
  if (!after.empty()) {
    ASSIGN_OR_RETURN(EventView after_ev, ParseStored(after[0], 0));
    f->max_seq = after_ev.seq - 1;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> EmbedQuestion(EventQuery& events, Embedder& embedder,
                                                 const SimilarQuestion& q) {
  std::vector<float> vec;
  switch (q.like) {
    case SimilarQuestion::Like::kText:
      if (q.text.empty()) return absl::InvalidArgumentError("similar: the query text is empty");
      RETURN_IF_ERROR(embedder.EmbedText(q.text, &vec));
      return vec;
    case SimilarQuestion::Like::kBody: {
      ASSIGN_OR_RETURN(std::string body, CanonicalizeBody(q.text));
      std::string_view view = body;
      RETURN_IF_ERROR(embedder.EmbedEvents(absl::MakeConstSpan(&view, 1), &vec));
      return vec;
    }
    case SimilarQuestion::Like::kSeq: {
      if (q.seq == 0) return absl::InvalidArgumentError("seq numbers start at 1");
      ASSIGN_OR_RETURN(std::string line, events.Get(q.seq));
      ASSIGN_OR_RETURN(EventView ev, ParseStored(line, q.seq));
      RETURN_IF_ERROR(embedder.EmbedEvents(absl::MakeConstSpan(&ev.body, 1), &vec));
      return vec;
    }
  }
  return absl::InternalError("unknown kind of similarity question");
}

}  // namespace

absl::StatusOr<FieldMatch> ParseFieldMatch(std::string_view spec) {
  const size_t eq = spec.find('=');
  if (eq == std::string_view::npos || eq == 0)
    return absl::InvalidArgumentError(
        absl::StrCat("a field filter is field=value, not \"", std::string(spec), "\""));
  FieldMatch m{std::string(spec.substr(0, eq)), nullptr};
  std::string_view value = spec.substr(eq + 1);
  nlohmann::json parsed = nlohmann::json::parse(value, nullptr, /*allow_exceptions=*/false);
  m.value = (!parsed.is_discarded() && IsScalar(parsed)) ? parsed : nlohmann::json(value);
  return m;
}

absl::StatusOr<SimilarAnswer> FindSimilar(EventQuery& events, SimilarityIndex& index,
                                          const SimilarQuestion& q) {
  if (q.k == 0 || q.k > kMaxSimilarK)
    return absl::InvalidArgumentError(
        absl::StrCat("similar: k must be between 1 and ", kMaxSimilarK, ", not ", q.k));
  SearchFilter filter;
  RETURN_IF_ERROR(ResolveTimeRange(events, q, &filter));
  for (const FieldMatch& m : q.fields) {
    if (m.field.empty() || !IsScalar(m.value))
      return absl::InvalidArgumentError(absl::StrCat(
          "a field filter needs a field name and a string, integer or boolean value (field \"",
          m.field, "\")"));
  }
  filter.fields = q.fields;
  if (!filter.fields.empty()) {
    filter.accept_fields = [&events, &q](uint64_t seq) -> absl::StatusOr<bool> {
      ASSIGN_OR_RETURN(std::string line, events.Get(seq));
      ASSIGN_OR_RETURN(EventView ev, ParseStored(line, seq));
      nlohmann::json body = nlohmann::json::parse(ev.body, nullptr, false);
      if (!body.is_object())
        return absl::DataLossError(
            absl::StrCat("events.jsonl line ", seq, " (seq ", seq, "): body is not an object"));
      for (const FieldMatch& m : q.fields) {
        auto it = body.find(m.field);
        if (it == body.end() || *it != m.value) return false;
      }
      return true;
    };
  }
  ASSIGN_OR_RETURN(std::vector<float> vec, EmbedQuestion(events, index.embedder(), q));
  const bool skip_self = q.like == SimilarQuestion::Like::kSeq;
  SimilarAnswer answer;
  answer.indexed_through = index.Status().indexed_through;
  if (filter.min_seq > filter.max_seq) return answer;
  ASSIGN_OR_RETURN(std::vector<VectorHit> hits,
                   index.Search(vec, q.k + (skip_self ? 1 : 0), filter));
  for (const VectorHit& hit : hits) {
    if (skip_self && hit.seq == q.seq) continue;
    if (answer.events.size() == q.k) break;
    ASSIGN_OR_RETURN(std::string line, events.Get(hit.seq));
    answer.events.push_back(SimilarEvent{hit.score, std::move(line)});
  }
  return answer;
}

}  // namespace snapledger
