#include "cli/cli_index.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <filesystem>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/index/similarity_query.h"
#include "common/index/vector_index_config.h"
#include "common/lookup/event_query.h"
#include "snapledger/v1/snapledger.grpc.pb.h"

namespace snapledger {

struct IndexCommands::Args {
  // shared
  std::string node;  // host:port of a running daemon's gRPC server
  double timeout_seconds = 30;
  int dimension = 128;
  std::string backend = "embedded";
  std::string qdrant_url;
  std::string qdrant_alias = "snapledger-events";
  std::string embedder_url;
  std::string embedder_model;
  // similar
  std::string text;
  std::string body_json;
  uint64_t seq = 0;
  size_t k = 10;
  std::string from, to;
  std::vector<std::string> fields;
};

namespace {

using Outcome = std::pair<int, std::string>;

Outcome Fail(int code, std::string message) { return {code, std::move(message)}; }

Outcome FromStatus(const absl::Status& st, std::string_view doing) {
  return Fail(ExitCodeFor(st), absl::StrCat(std::string(doing), ": ", st.message()));
}

Outcome FromGrpc(const grpc::Status& st, const std::string& node, std::string_view doing) {
  if (st.error_code() == grpc::StatusCode::UNAVAILABLE ||
      st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)
    return Fail(kExitError,
                absl::StrCat("cannot reach the node at ", node, ": ", st.error_message()));
  return FromStatus(
      absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message()), doing);
}

std::string WithThousands(uint64_t n) {
  std::string digits = absl::StrCat(n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

std::optional<int64_t> ParseTs(const std::string& text) {
  int64_t micros;
  if (absl::SimpleAtoi(text, &micros)) return micros;
  absl::Time t;
  std::string err;
  if (absl::ParseTime(absl::RFC3339_full, text, &t, &err)) return absl::ToUnixMicros(t);
  return std::nullopt;
}

void SetDeadline(grpc::ClientContext* context, double seconds) {
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::duration_cast<std::chrono::system_clock::duration>(
                            std::chrono::duration<double>(seconds)));
}

VectorIndexConfig ConfigFromArgs(const IndexCommands::Args& a, const std::string& index_root) {
  VectorIndexConfig c;
  c.backend = a.backend;
  c.dir = absl::StrCat(index_root, "/vectors");
  c.qdrant_url = a.qdrant_url;
  c.qdrant_alias = a.qdrant_alias;
  c.embedder.dimension = a.dimension;
  if (!a.embedder_url.empty()) {
    c.embedder.kind = "http";
    c.embedder.url = a.embedder_url;
    c.embedder.model = a.embedder_model;
  }
  return c;
}

absl::StatusOr<SimilarQuestion> QuestionFromArgs(const IndexCommands::Args& a) {
  SimilarQuestion q;
  const int likes = !a.text.empty() + !a.body_json.empty() + (a.seq != 0);
  if (likes != 1)
    return absl::InvalidArgumentError("give exactly one of --text, --like-json or --seq");
  if (!a.text.empty()) q.text = a.text;
  if (!a.body_json.empty()) {
    q.like = SimilarQuestion::Like::kBody;
    q.text = a.body_json;
  }
  if (a.seq != 0) {
    q.like = SimilarQuestion::Like::kSeq;
    q.seq = a.seq;
  }
  q.k = a.k;
  if (!a.from.empty() || !a.to.empty()) {
    q.from_ts = a.from.empty() ? std::optional<int64_t>(INT64_MIN) : ParseTs(a.from);
    q.to_ts = a.to.empty() ? std::optional<int64_t>(INT64_MAX) : ParseTs(a.to);
    if (!q.from_ts || !q.to_ts)
      return absl::InvalidArgumentError(
          "--from/--to take microseconds since the epoch or RFC 3339 (2026-11-24T10:00:00Z)");
  }
  for (const std::string& f : a.fields) {
    absl::StatusOr<FieldMatch> m = ParseFieldMatch(f);
    if (!m.ok()) return m.status();
    q.fields.push_back(*std::move(m));
  }
  return q;
}

void PrintHit(std::ostream& out, float score, const std::string& line) {
  out << absl::StrFormat("%.4f", score) << "\t" << line << "\n";
}

Outcome SimilarRemote(const IndexCommands::Args& a, const SimilarQuestion& q, const CliEnv& env) {
  v1::SimilarRequest request;
  switch (q.like) {
    case SimilarQuestion::Like::kText:
      request.set_text(q.text);
      break;
    case SimilarQuestion::Like::kBody:
      request.set_body_json(q.text);
      break;
    case SimilarQuestion::Like::kSeq:
      request.set_seq(q.seq);
      break;
  }
  request.set_k(static_cast<uint32_t>(q.k));
  if (q.from_ts) request.set_from_ts_micros(*q.from_ts);
  if (q.to_ts) request.set_to_ts_micros(*q.to_ts);
  for (const FieldMatch& m : q.fields) {
    v1::FieldFilter* f = request.add_fields();
    f->set_field(m.field);
    f->set_value_json(m.value.dump());
  }
  auto stub =
      v1::Similarity::NewStub(grpc::CreateChannel(a.node, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  SetDeadline(&context, a.timeout_seconds);
  v1::SimilarResponse response;
  grpc::Status st = stub->Similar(&context, request, &response);
  if (!st.ok()) return FromGrpc(st, a.node, "similar");
  for (const v1::SimilarHit& hit : response.hits())
    PrintHit(*env.out, hit.score(), hit.event().line());
  return {kExitOk, ""};
}

Outcome SimilarLocal(const IndexCommands::Args& a, const SimilarQuestion& q,
                     const std::string& ledger_dir, const std::string& index_root,
                     const CliEnv& env) {
  std::error_code ec;
  std::filesystem::create_directories(index_root, ec);
  EventQueryOptions query_options;
  query_options.rebuild_in_background = false;
  EventQuery events(ledger_dir, absl::StrCat(index_root, "/lookup"), query_options);
  absl::StatusOr<SimilarityIndexPtr> index =
      MakeSimilarityIndex(ConfigFromArgs(a, index_root), ledger_dir);
  if (!index.ok()) return FromStatus(index.status(), "similar");
  if (absl::Status st = (*index)->Follow(); !st.ok()) return FromStatus(st, "similar");
  absl::StatusOr<SimilarAnswer> answer = FindSimilar(events, **index, q);
  if (!answer.ok()) return FromStatus(answer.status(), "similar");
  for (const SimilarEvent& e : answer->events) PrintHit(*env.out, e.score, e.line);
  return {kExitOk, ""};
}

// Prints progress at most every 100 ms on a terminal (redrawn) or every 2 s as lines.
class ProgressPrinter {
 public:
  explicit ProgressPrinter(const CliEnv& env) : env_(env) {}
  void Update(const RebuildProgressInfo& info, bool done) {
    const absl::Time now = absl::Now();
    const absl::Duration every = env_.err_is_terminal ? absl::Milliseconds(100) : absl::Seconds(2);
    if (!done && now - last_ < every) return;
    last_ = now;
    if (env_.err_is_terminal) {
      *env_.err << "\r" << RenderRebuildProgress(info, true) << (done ? "\n" : "") << std::flush;
    } else {
      *env_.err << RenderRebuildProgress(info, false) << "\n";
    }
  }

 private:
  const CliEnv& env_;
  absl::Time last_ = absl::InfinitePast();
};

Outcome RebuildRemote(const IndexCommands::Args& a, const CliEnv& env) {
  auto stub = v1::Admin::NewStub(grpc::CreateChannel(a.node, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  ProgressPrinter printer(env);
  auto reader = stub->RebuildIndex(&context, v1::RebuildIndexRequest());
  v1::RebuildProgress p;
  RebuildProgressInfo info;
  bool done = false;
  while (reader->Read(&p)) {
    info.events_done = p.events_done();
    info.events_total = p.events_total();
    info.bytes_done = p.bytes_done();
    info.bytes_total = p.bytes_total();
    info.elapsed = absl::Seconds(p.elapsed_seconds());
    done = p.done();
    printer.Update(info, done);
  }
  grpc::Status st = reader->Finish();
  if (!st.ok()) return FromGrpc(st, a.node, "rebuild-index");
  if (!done) return Fail(kExitError, "rebuild-index: the node ended the stream before the end");
  *env.out << "rebuilt the vector index on " << a.node << " through seq " << info.events_done
           << "\n";
  return {kExitOk, ""};
}

Outcome RebuildLocal(const IndexCommands::Args& a, const std::string& ledger_dir,
                     const std::string& index_root, const CliEnv& env) {
  std::error_code ec;
  std::filesystem::create_directories(index_root, ec);
  VectorIndexConfig config = ConfigFromArgs(a, index_root);
  config.auto_rebuild = false;
  absl::StatusOr<SimilarityIndexPtr> index = MakeSimilarityIndex(config, ledger_dir);
  if (!index.ok()) return FromStatus(index.status(), "rebuild-index");
  ProgressPrinter printer(env);
  RebuildProgressInfo last;
  absl::Status st = (*index)->Rebuild([&](const RebuildProgressInfo& info) {
    last = info;
    printer.Update(info, false);
  });
  if (!st.ok()) return FromStatus(st, "rebuild-index");
  printer.Update(last, true);
  SimilarityIndexStatus status = (*index)->Status();
  *env.out << "rebuilt the vector index (" << status.embedder << ", " << status.backend
           << ") through seq " << status.indexed_through << "\n";
  return {kExitOk, ""};
}

}  // namespace

std::string RenderRebuildProgress(const RebuildProgressInfo& info, bool terminal) {
  const double seconds = absl::ToDoubleSeconds(info.elapsed);
  const double rate = seconds > 0 ? static_cast<double>(info.bytes_done) / seconds : 0;
  const double fraction =
      info.bytes_total > 0 ? std::min(1.0, static_cast<double>(info.bytes_done) / info.bytes_total)
                           : 1.0;
  const int percent = static_cast<int>(fraction * 100);
  std::string eta;
  if (rate > 0 && info.bytes_total >= info.bytes_done) {
    const int64_t left = static_cast<int64_t>((info.bytes_total - info.bytes_done) / rate + 0.5);
    eta = terminal ? absl::StrCat("  ETA ", left, "s") : absl::StrCat(", ETA ", left, " s");
  }
  const std::string mbps = absl::StrFormat("%.1f MB/s", rate / 1e6);
  if (!terminal)
    return absl::StrCat("rebuild-index: ", info.events_done, "/", info.events_total, " events (",
                        percent, "%), ", mbps, eta);
  constexpr int kWidth = 20;
  const int filled = static_cast<int>(fraction * kWidth);
  return absl::StrCat("[", std::string(filled, '#'), std::string(kWidth - filled, '-'), "] ",
                      absl::StrFormat("%3d%%", percent), "  ", WithThousands(info.events_done), "/",
                      WithThousands(info.events_total), " events  ", mbps, eta);
}

IndexCommands::IndexCommands(CLI::App& app) : args_(std::make_unique<Args>()) {
  Args& a = *args_;
  auto add_index_options = [&a](CLI::App* cmd) {
    cmd->add_option("--node", a.node,
                    "host:port of a running primary or replica: ask its gRPC server instead of "
                    "opening --root");
    cmd->add_option("--timeout", a.timeout_seconds, "seconds to wait for --node (default 30)")
        ->check(CLI::PositiveNumber);
    cmd->add_option("--dimension", a.dimension,
                    "embedding dimension (default 128; must match the index's)");
    cmd->add_option("--backend", a.backend, "embedded (default) or qdrant")
        ->check(CLI::IsMember({"embedded", "qdrant"}));
    cmd->add_option("--qdrant-url", a.qdrant_url, "Qdrant REST URL, e.g. http://127.0.0.1:6333");
    cmd->add_option("--qdrant-alias", a.qdrant_alias, "the alias queries use");
    cmd->add_option("--embedder-url", a.embedder_url,
                    "an OpenAI-compatible /v1/embeddings endpoint instead of feature hashing");
    cmd->add_option("--embedder-model", a.embedder_model, "the model name for --embedder-url");
  };
  similar_ = app.add_subcommand(
      "similar",
      "print the events most similar to --text, --like-json or --seq, best first "
      "(score TAB line); needs the vector index, built on first use");
  similar_->add_option("--text", a.text, "free text, e.g. \"port_vlan_changed compute-03\"");
  similar_->add_option("--like-json", a.body_json, "an event body (JSON object)");
  similar_->add_option("--seq", a.seq, "the event with this seq (not printed itself)")
      ->check(CLI::PositiveNumber);
  similar_->add_option("-k,--k", a.k, "how many events (default 10)")
      ->check(CLI::Range(1, static_cast<int>(kMaxSimilarK)));
  similar_->add_option("--from", a.from, "only events at or after this ts (micros or RFC 3339)");
  similar_->add_option("--to", a.to, "only events at or before this ts");
  similar_->add_option("--field", a.fields,
                       "field=value: only events whose body has this top-level field value "
                       "(repeatable)");
  add_index_options(similar_);
  rebuild_ =
      app.add_subcommand("rebuild-index",
                         "rebuild the vector index from the log beside the old one, then swap "
                         "it in (the old one answers until then)");
  add_index_options(rebuild_);
}

IndexCommands::~IndexCommands() = default;

std::optional<std::pair<int, std::string>> IndexCommands::Run(const std::string& ledger_dir,
                                                              const std::string& index_root,
                                                              const CliEnv& env) {
  const Args& a = *args_;
  if ((similar_->parsed() || rebuild_->parsed()) && a.node.empty() && ledger_dir.empty())
    return Fail(kExitUsage, absl::StrCat(similar_->parsed() ? "similar" : "rebuild-index",
                                         ": give --root (or set SNAPLEDGER_ROOT), or --node "
                                         "host:port of a running node"));
  if (similar_->parsed()) {
    absl::StatusOr<SimilarQuestion> q = QuestionFromArgs(a);
    if (!q.ok()) return FromStatus(q.status(), "similar");
    return a.node.empty() ? SimilarLocal(a, *q, ledger_dir, index_root, env)
                          : SimilarRemote(a, *q, env);
  }
  if (rebuild_->parsed())
    return a.node.empty() ? RebuildLocal(a, ledger_dir, index_root, env) : RebuildRemote(a, env);
  return std::nullopt;
}

}  // namespace snapledger
