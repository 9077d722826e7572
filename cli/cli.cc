#include "cli/cli.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "cli/cli_index.h"
#include "cli/status_table.h"
#include "common/base/fmt_absl.h"
#include "common/ledger/block.h"
#include "common/ledger/block_maker.h"
#include "common/ledger/chain_verifier.h"
#include "common/ledger/event_log.h"
#include "common/ledger/head_file.h"
#include "common/lookup/event_query.h"
#include "snapledger/v1/snapledger.grpc.pb.h"

namespace snapledger {
namespace {

// Options shared by every command.
struct GlobalOptions {
  std::string root;
  std::string index_root;
  bool quiet = false;
};

// A command's outcome: an exit code and, when not OK, the message for stderr.
struct Outcome {
  int code = kExitOk;
  std::string message;
};

Outcome Failed(int code, std::string message) { return {code, std::move(message)}; }

Outcome FromStatus(const absl::Status& st, std::string_view doing) {
  return Failed(ExitCodeFor(st), absl::StrCat(std::string(doing), ": ", st.message()));
}

std::string IndexRoot(const GlobalOptions& g) {
  return g.index_root.empty() ? absl::StrCat(g.root, "/index") : g.index_root;
}

std::string LookupDir(const GlobalOptions& g) { return absl::StrCat(IndexRoot(g), "/lookup"); }

uint64_t FileSize(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

std::string HumanBytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? absl::StrCat(bytes, " B") : absl::StrFormat("%.1f %s", v, units[u]);
}

std::string FormatTs(int64_t micros) {
  if (micros == 0) return "-";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::FromUnixMicros(micros),
                          absl::UTCTimeZone());
}

// Microseconds since the epoch, or RFC 3339.
std::optional<int64_t> ParseTimestamp(const std::string& text) {
  int64_t micros;
  if (absl::SimpleAtoi(text, &micros)) return micros;
  absl::Time t;
  std::string err;
  if (absl::ParseTime(absl::RFC3339_full, text, &t, &err)) return absl::ToUnixMicros(t);
  return std::nullopt;
}

Outcome CheckRoot(const GlobalOptions& g) {
  if (g.root.empty())
    return Failed(kExitUsage, "no ledger root: pass --root <dir> or set SNAPLEDGER_ROOT");
  std::error_code ec;
  if (!std::filesystem::is_directory(g.root, ec))
    return Failed(kExitError, absl::StrCat("ledger root ", g.root, " is not a directory"));
  return {};
}

absl::StatusOr<EventLogPtr> OpenLog(const GlobalOptions& g, const CliEnv& env,
                                    size_t max_body_bytes = kDefaultMaxBodyBytes) {
  EventLogOptions options;
  options.clock = env.clock;
  options.max_body_bytes = max_body_bytes;
  auto log = EventLog::Open(LedgerLayout(g.root).live(), options);
  if (!log.ok()) return log.status();
  const RecoveryReport& r = (*log)->recovery();
  if (r.torn_tails_truncated > 0)
    *env.err << "snapledger: recovered: cut a torn last line of " << r.torn_tail_bytes
             << " bytes (an interrupted write, never acknowledged)\n";
  return log;
}

// ---- init ----

struct InitArgs {
  uint64_t epoch = 1;
};

Outcome Init(const GlobalOptions& g, const InitArgs& a, const CliEnv& env) {
  if (Outcome o = CheckRoot(g); o.code != kExitOk) return o;
  LedgerLayout layout(g.root);
  if (std::filesystem::exists(absl::StrCat(layout.live(), "/", kEventsFile)))
    return Failed(kExitError, absl::StrCat(g.root, " already holds a ledger (", layout.live(), "/",
                                           kEventsFile, " exists)"));
  if (absl::Status st = InitializeLedgerRoot(*env.btrfs, g.root); !st.ok())
    return FromStatus(st, "init");
  EventLogOptions options;
  options.clock = env.clock;
  auto log = EventLog::Create(layout.live(), a.epoch, options);
  if (!log.ok()) return FromStatus(log.status(), "init");
  *env.out << "initialised ledger at " << g.root << " (epoch " << a.epoch << "): " << layout.live()
           << " (subvolume), " << layout.blocks() << "/\n";
  return {};
}

// ---- append ----

struct AppendArgs {
  std::string json;
  std::string primary;  // host:port: append through the primary daemon's gRPC API
  uint64_t block_every = 0;
  int64_t block_interval_ms = 0;
  size_t keep = 16;
  size_t max_body_bytes = kDefaultMaxBodyBytes;
};

// Reads JSON lines from `in`; every line must be a valid body. Errors name the stdin line.
absl::StatusOr<std::vector<std::string>> ReadBodies(std::istream& in, size_t max_body_bytes) {
  std::vector<std::string> bodies;
  std::vector<std::string> errors;
  std::string line;
  uint64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    auto c = line.empty() ? absl::InvalidArgumentError("empty line")
                          : CanonicalizeBody(line, max_body_bytes).status();
    if (!c.ok()) {
      if (errors.size() < 10)
        errors.push_back(absl::StrCat("stdin line ", line_no, ": ", c.message()));
      continue;
    }
    bodies.push_back(std::move(line));
  }
  if (!errors.empty()) {
    std::string msg = absl::StrCat(errors.size() >= 10 ? "at least " : "", errors.size(),
                                   " invalid event(s); nothing was appended:");
    for (const auto& e : errors) absl::StrAppend(&msg, "\n  ", e);
    return absl::InvalidArgumentError(msg);
  }
  return bodies;
}

// Appends through a running primary (Ledger.AppendStream): the bodies were checked already,
// so a rejection here means the primary's limits differ; events before it stay appended.
Outcome AppendRemote(const AppendArgs& a, const std::vector<std::string>& bodies,
                     const CliEnv& env) {
  if (a.primary.find(':') == std::string::npos)
    return Failed(kExitUsage, absl::StrCat("append --primary '", a.primary,
                                           "': expected host:port of the primary's gRPC server"));
  auto stub =
      v1::Ledger::NewStub(grpc::CreateChannel(a.primary, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));
  v1::AppendBatchResponse response;
  auto writer = stub->AppendStream(&context, &response);
  v1::AppendRequest request;
  for (const std::string& body : bodies) {
    request.set_body_json(body);
    if (!writer->Write(request)) break;  // the stream failed: Finish says why
  }
  writer->WritesDone();
  grpc::Status status = writer->Finish();
  if (!status.ok()) {
    int code =
        status.error_code() == grpc::StatusCode::INVALID_ARGUMENT ? kExitRejected : kExitError;
    return Failed(
        code, absl::StrCat("append to the primary at ", a.primary, ": ", status.error_message()));
  }
  *env.out << "appended " << response.count() << " events (seq " << response.first_seq() << ".."
           << response.last_seq() << ") through the primary at " << a.primary << ", head "
           << response.last_hash() << "\n";
  return {};
}

Outcome Append(const GlobalOptions& g, const AppendArgs& a, const CliEnv& env) {
  if (a.primary.empty()) {
    if (Outcome o = CheckRoot(g); o.code != kExitOk) return o;
  }
  std::vector<std::string> bodies;
  if (!a.json.empty()) {
    if (auto c = CanonicalizeBody(a.json, a.max_body_bytes); !c.ok())
      return Failed(kExitRejected,
                    absl::StrCat("--json: ", c.status().message(), "; nothing was appended"));
    bodies.push_back(a.json);
  } else {
    auto read = ReadBodies(*env.in, a.max_body_bytes);
    if (!read.ok()) return Failed(kExitRejected, std::string(read.status().message()));
    bodies = *std::move(read);
  }
  if (!a.primary.empty()) return AppendRemote(a, bodies, env);
  auto log = OpenLog(g, env, a.max_body_bytes);
  if (!log.ok()) return FromStatus(log.status(), "append");
  BlockMakerOptions bm_options;
  bm_options.keep_newest = a.keep;
  bm_options.clock = env.clock;
  auto maker = BlockMaker::Create(*env.btrfs, g.root, **log, bm_options);
  if (!maker.ok()) return FromStatus(maker.status(), "append");
  BlockPolicy policy;
  bool cut_blocks = a.block_every > 0 || a.block_interval_ms > 0;
  policy.max_events = a.block_every > 0 ? a.block_every : UINT64_MAX;
  policy.max_age =
      a.block_interval_ms > 0 ? absl::Milliseconds(a.block_interval_ms) : absl::InfiniteDuration();
  size_t chunk = cut_blocks && a.block_every > 0 ? std::min<size_t>(a.block_every, 10000) : 10000;
  std::vector<AppendResult> last;
  int blocks_cut = 0;
  uint64_t first_seq = 0;
  for (size_t i = 0; i < bodies.size(); i += chunk) {
    std::vector<std::string> part(
        std::make_move_iterator(bodies.begin() + i),
        std::make_move_iterator(bodies.begin() + std::min(bodies.size(), i + chunk)));
    auto r = (*log)->AppendBatch(part);
    if (!r.ok()) {
      Outcome o = FromStatus(r.status(), absl::StrCat("append (", i,
                                                      " events before this "
                                                      "batch were appended)"));
      if (absl::IsInvalidArgument(r.status())) o.code = kExitRejected;
      return o;
    }
    if (first_seq == 0) first_seq = r->front().seq;
    last = *std::move(r);
    if (cut_blocks) {
      auto cut = (*maker)->CutIfDue(policy);
      if (!cut.ok()) return FromStatus(cut.status(), "cut block");
      if (cut->has_value()) {
        ++blocks_cut;
        *env.out << "cut block " << (*cut)->name << "\n";
      }
    }
  }
  if (bodies.empty()) {
    *env.out << "no events on stdin; nothing appended\n";
    return {};
  }
  if (!a.json.empty()) {
    *env.out << "{\"seq\":" << last[0].seq << ",\"ts\":" << last[0].ts << ",\"hash\":\""
             << last[0].hash << "\"}\n";
  } else {
    *env.out << "appended " << bodies.size() << " events (seq " << first_seq << ".."
             << last.back().seq << "), head " << last.back().hash;
    if (cut_blocks) *env.out << "; cut " << blocks_cut << " blocks";
    *env.out << "\n";
  }
  return {};
}

// ---- get / range ----

std::unique_ptr<EventQuery> MakeQuery(const GlobalOptions& g) {
  EventQueryOptions options;
  options.rebuild_in_background = false;  // a one-shot process rebuilds before it exits
  std::error_code ec;
  std::filesystem::create_directories(IndexRoot(g), ec);
  return std::make_unique<EventQuery>(LedgerLayout(g.root).live(), LookupDir(g), options);
}

Outcome Get(const GlobalOptions& g, const std::string& key, const CliEnv& env) {
  if (Outcome o = CheckRoot(g); o.code != kExitOk) return o;
  auto query = MakeQuery(g);
  absl::StatusOr<std::string> line;
  uint64_t seq;
  if (absl::SimpleAtoi(key, &seq) && seq > 0) {
    line = query->Get(seq);
  } else if (IsLowerHex64(absl::AsciiStrToLower(key))) {
    line = query->GetByHash(absl::AsciiStrToLower(key));
  } else {
    return Failed(kExitUsage,
                  absl::StrCat("get: '", key, "' is neither a seq (1, 2, ...) nor a 64-hex hash"));
  }
  query->WaitForRebuild();
  if (!line.ok()) return FromStatus(line.status(), "get");
  *env.out << *line << "\n";
  return {};
}

struct RangeArgs {
  std::string from, to;
  size_t limit = 1000;
};

Outcome Range(const GlobalOptions& g, const RangeArgs& a, const CliEnv& env) {
  if (Outcome o = CheckRoot(g); o.code != kExitOk) return o;
  auto from = a.from.empty() ? std::optional<int64_t>(INT64_MIN) : ParseTimestamp(a.from);
  auto to = a.to.empty() ? std::optional<int64_t>(INT64_MAX) : ParseTimestamp(a.to);
  if (!from || !to)
    return Failed(kExitUsage,
                  "range: --from/--to take microseconds since the epoch or RFC 3339 "
                  "(e.g. 2026-11-24T10:00:00Z)");
  auto query = MakeQuery(g);
  auto lines = query->Range(*from, *to, a.limit + 1);
  query->WaitForRebuild();
  if (!lines.ok()) return FromStatus(lines.status(), "range");
  bool truncated = lines->size() > a.limit;
  if (truncated) lines->resize(a.limit);
  for (const auto& l : *lines) *env.out << l << "\n";
  if (truncated)
    *env.err << "snapledger: stopped at --limit " << a.limit
             << " events; narrow the range or raise --limit\n";
  return {};
}

// ---- verify ----

struct VerifyArgs {
  std::string block;
  std::string from_block;
  int threads = 2;
};

Outcome Verify(const GlobalOptions& g, const VerifyArgs& a, const CliEnv& env) {
  if (Outcome o = CheckRoot(g); o.code != kExitOk) return o;
  LedgerLayout layout(g.root);
  auto block_dir = [&](const std::string& name) -> absl::StatusOr<std::string> {
    auto b = ParseBlockName(name);
    if (!b.ok()) return b.status();
    std::string dir = layout.block(*b);
    if (!std::filesystem::exists(dir))
      return absl::NotFoundError(absl::StrCat("no block ", name, " in ", layout.blocks()));
    return dir;
  };
  std::string target = layout.live();
  VerifyOptions options{HeadCheck::kMayLag, a.threads};
  if (!a.block.empty()) {
    auto dir = block_dir(a.block);
    if (!dir.ok()) return FromStatus(dir.status(), "verify --block");
    target = *dir;
    options.head_check = HeadCheck::kExact;
  }
  int64_t start = env.clock->MonotonicNanos();
  absl::StatusOr<VerifyReport> report;
  std::string mode = "full";
  if (!a.from_block.empty()) {
    auto dir = block_dir(a.from_block);
    if (!dir.ok()) return FromStatus(dir.status(), "verify --from-block");
    auto trusted = ReadHeadFile(*dir);
    if (!trusted.ok())
      return Failed(absl::IsDataLoss(trusted.status()) ? kExitVerifyFailed : kExitError,
                    absl::StrCat("verify --from-block: ", trusted.status().message()));
    if (!trusted->has_value())
      return Failed(kExitVerifyFailed, absl::StrCat("block ", a.from_block, " has no ", kHeadFile));
    report = VerifyLedgerDirFrom(target, **trusted, options);
    mode = absl::StrCat("incremental from ", a.from_block);
  } else {
    report = VerifyLedgerDir(target, options);
  }
  if (!report.ok()) {
    Outcome o = FromStatus(report.status(), "verify");
    if (absl::IsDataLoss(report.status())) o.code = kExitVerifyFailed;
    return o;
  }
  double seconds = static_cast<double>(env.clock->MonotonicNanos() - start) / 1e9;
  if (!report->ok())
    return Failed(
        kExitVerifyFailed,
        absl::StrCat("verification FAILED for ", target, ": ", report->failure->ToString(),
                     "\n(events before it verified: ", report->events_verified, ")"));
  *env.out << "OK " << target << ": " << mode << ", " << report->events_verified
           << " events verified (" << HumanBytes(report->bytes_verified) << " in "
           << absl::StrFormat("%.3f", seconds) << " s), head seq " << report->head.seq << " hash "
           << report->head.hash << "\n";
  return {};
}

// ---- snapshot / blocks ----

Outcome Snapshot(const GlobalOptions& g, size_t keep, const CliEnv& env) {
  if (Outcome o = CheckRoot(g); o.code != kExitOk) return o;
  auto log = OpenLog(g, env);
  if (!log.ok()) return FromStatus(log.status(), "snapshot");
  BlockMakerOptions options;
  options.keep_newest = keep;
  options.clock = env.clock;
  auto maker = BlockMaker::Create(*env.btrfs, g.root, **log, options);
  if (!maker.ok()) return FromStatus(maker.status(), "snapshot");
  auto cut = (*maker)->Cut();
  if (!cut.ok()) return FromStatus(cut.status(), "snapshot");
  if (!cut->has_value()) {
    *env.out << "no new events since the newest block; nothing to cut\n";
    return {};
  }
  *env.out << "cut block " << (*cut)->name << "\n";
  return {};
}

Outcome Blocks(const GlobalOptions& g, const CliEnv& env) {
  if (Outcome o = CheckRoot(g); o.code != kExitOk) return o;
  LedgerLayout layout(g.root);
  std::vector<std::string> unrecognized;
  auto blocks = ListBlocks(*env.btrfs, layout, &unrecognized);
  if (!blocks.ok()) return FromStatus(blocks.status(), "blocks");
  *env.out << absl::StrFormat("%-32s %12s %10s %12s  %s\n", "BLOCK", "HEAD SEQ", "EVENTS",
                              "LOG SIZE", "HEAD TIME");
  uint64_t prev_seq = 0;
  for (const BlockInfo& b : *blocks) {
    std::string dir = layout.block(b);
    auto head = ReadHeadFile(dir);
    std::string when = "?";
    if (head.ok() && head->has_value()) when = FormatTs((*head)->head.ts);
    *env.out << absl::StrFormat("%-32s %12d %10d %12s  %s\n", b.name, b.seq, b.seq - prev_seq,
                                HumanBytes(FileSize(absl::StrCat(dir, "/", kEventsFile))), when);
    prev_seq = b.seq;
  }
  *env.out << blocks->size() << " blocks\n";
  for (const auto& name : unrecognized) {
    if (std::optional<BlockInfo> incoming = IncomingBlock(name)) {
      *env.out << "receiving " << incoming->name << " into " << layout.blocks() << "/" << name
               << " (unverified; if no receive is running, an interrupted one left it and the "
                  "next receive removes it)\n";
      continue;
    }
    *env.err << "snapledger: " << layout.blocks() << "/" << name
             << " is not a block name; left alone\n";
  }
  return {};
}

// ---- status ----

Outcome Status(const GlobalOptions& g, const CliEnv& env) {
  if (Outcome o = CheckRoot(g); o.code != kExitOk) return o;
  LedgerLayout layout(g.root);
  auto head = ReadHeadFile(layout.live());
  if (!head.ok()) return FromStatus(head.status(), "status");
  if (!head->has_value())
    return Failed(kExitError, absl::StrCat("no ledger at ", g.root, " (", layout.live(), "/",
                                           kHeadFile, " is missing); run `snapledger init`"));
  const HeadRecord& h = **head;
  uint64_t log_bytes = FileSize(absl::StrCat(layout.live(), "/", kEventsFile));
  auto blocks = ListBlocks(*env.btrfs, layout);
  if (!blocks.ok()) return FromStatus(blocks.status(), "status");
  auto& out = *env.out;
  out << "ledger      " << g.root << "\n";
  out << "epoch       " << h.epoch << "\n";
  out << "head        seq " << h.head.seq << "  hash " << h.head.hash << "\n";
  out << "head time   " << FormatTs(h.head.ts) << "\n";
  out << "log         " << HumanBytes(log_bytes);
  if (log_bytes != h.log_bytes)
    out << " (head file written at " << HumanBytes(h.log_bytes)
        << "; a writer is running or the ledger was not closed)";
  out << "\n";
  if (blocks->empty()) {
    out << "blocks      none\n";
  } else {
    const BlockInfo& newest = blocks->back();
    out << "blocks      " << blocks->size() << " (oldest " << blocks->front().name << ", newest "
        << newest.name << ", " << h.head.seq - std::min(h.head.seq, newest.seq)
        << " events since)\n";
  }
  EventQueryOptions options;
  options.rebuild_in_background = false;
  EventQuery query(layout.live(), LookupDir(g), options);
  auto index = query.CheckIndex();
  if (!index.ok()) {
    out << "lookup idx  error: " << index.status().message() << "\n";
  } else {
    out << "lookup idx  " << IndexStateName(index->state) << ", through seq "
        << index->indexed_through << " (lag " << index->lag << " events)";
    if (!index->detail.empty()) out << ": " << index->detail;
    out << "\n";
  }
  return {};
}

// ---- status --primary ----

struct ClusterStatusArgs {
  std::string primary;  // host:port of the primary's gRPC server; empty: local status
  double timeout_seconds = 5;
  bool json = false;
};

// Asks the primary for the cluster's replication status and prints it as a table or JSON.
Outcome ClusterStatus(const ClusterStatusArgs& a, const CliEnv& env) {
  if (a.primary.find(':') == std::string::npos)
    return Failed(kExitUsage, absl::StrCat("status --primary '", a.primary,
                                           "': expected host:port of the primary's gRPC server"));
  auto channel = grpc::CreateChannel(a.primary, grpc::InsecureChannelCredentials());
  auto stub = v1::Replication::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::duration_cast<std::chrono::system_clock::duration>(
                           std::chrono::duration<double>(a.timeout_seconds)));
  v1::ClusterStatusResponse response;
  grpc::Status st = stub->ClusterStatus(&context, v1::ClusterStatusRequest(), &response);
  if (!st.ok()) {
    if (st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)
      return Failed(kExitError,
                    absl::StrCat("cannot reach the primary at ", a.primary, ": no answer within ",
                                 a.timeout_seconds, " s (--timeout)"));
    if (st.error_code() == grpc::StatusCode::UNAVAILABLE)
      return Failed(kExitError, absl::StrCat("cannot reach the primary at ", a.primary, ": ",
                                             st.error_message()));
    std::string code = absl::StatusCodeToString(static_cast<absl::StatusCode>(st.error_code()));
    return Failed(kExitError,
                  absl::StrCat("the primary at ", a.primary, " answered ClusterStatus with ", code,
                               ": ", st.error_message()));
  }
  int64_t now = env.clock->NowMicros();
  *env.out << (a.json ? ClusterStatusToJson(response, now) : RenderClusterStatus(response, now));
  return {};
}

void SetUpLogging(const CliEnv& env, bool quiet) {
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(*env.err);
  sink->set_pattern("snapledger: %l: %v");
  auto logger = std::make_shared<spdlog::logger>("snapledger", sink);
  logger->set_level(quiet ? spdlog::level::err : spdlog::level::info);
  spdlog::set_default_logger(logger);
}

}  // namespace

int ExitCodeFor(const absl::Status& status) {
  if (absl::IsNotFound(status)) return kExitNotFound;
  if (absl::IsInvalidArgument(status)) return kExitUsage;
  return kExitError;
}

int RunCli(int argc, const char* const* argv, const CliEnv& env) {
  CLI::App app{
      "snapledger: an append-only, hash-chained event ledger on btrfs.\n"
      "Exit codes: 0 ok, 1 error, 2 usage, 3 verification failed, 4 input rejected, "
      "5 not found.",
      "snapledger"};
  app.require_subcommand(1);
  GlobalOptions g;
  if (const char* root = std::getenv("SNAPLEDGER_ROOT")) g.root = root;
  app.add_option("--root", g.root, "ledger root on btrfs (default: $SNAPLEDGER_ROOT)");
  app.add_option("--index-root", g.index_root,
                 "directory for derived indexes (default: <root>/index; never snapshotted)");
  app.add_flag("-q,--quiet", g.quiet, "log errors only");

  InitArgs init_args;
  auto* init = app.add_subcommand("init",
                                  "create live/ (a btrfs subvolume), blocks/ and an "
                                  "empty log");
  init->add_option("--epoch", init_args.epoch, "epoch recorded in the head file")
      ->check(CLI::PositiveNumber);

  AppendArgs append_args;
  auto* append = app.add_subcommand(
      "append",
      "append events: one --json body, or JSON objects one per line on stdin (all "
      "are checked first; if any is invalid nothing is appended)");
  append->add_option("--json", append_args.json, "one event body (a JSON object)");
  append->add_option("--primary", append_args.primary,
                     "host:port of a running primary: append through its gRPC API instead of "
                     "opening --root (blocks are then the primary's business)");
  append->add_option("--block-every", append_args.block_every,
                     "cut a block after every N events appended");
  append->add_option("--block-interval-ms", append_args.block_interval_ms,
                     "cut a block when T ms passed since the last one");
  append->add_option("--keep", append_args.keep, "blocks to keep (retention)")
      ->check(CLI::PositiveNumber);
  append->add_option("--max-body-bytes", append_args.max_body_bytes,
                     "largest accepted body (default 1 MiB)");

  std::string get_key;
  auto* get = app.add_subcommand("get", "print one event by seq or by hash");
  get->add_option("key", get_key, "seq (1, 2, ...) or 64-hex hash")->required();

  RangeArgs range_args;
  auto* range = app.add_subcommand("range", "print the events with from <= ts <= to");
  range->add_option("--from", range_args.from, "start (microseconds since the epoch or RFC 3339)");
  range->add_option("--to", range_args.to, "end, inclusive");
  range->add_option("--limit", range_args.limit, "at most this many events (default 1000)");

  VerifyArgs verify_args;
  auto* verify = app.add_subcommand(
      "verify",
      "verify the hash chain of live/ (or of --block) fully, or incrementally from "
      "the head of --from-block");
  verify->add_option("--block", verify_args.block, "verify this block instead of live/");
  verify->add_option("--from-block", verify_args.from_block,
                     "trust this block's head and verify only what came after it");
  verify->add_option("--threads", verify_args.threads, "hashing threads")->check(CLI::Range(1, 64));

  size_t snapshot_keep = 16;
  auto* snapshot = app.add_subcommand("snapshot", "cut a block (read-only snapshot) now");
  snapshot->add_option("--keep", snapshot_keep, "blocks to keep (retention)")
      ->check(CLI::PositiveNumber);

  auto* blocks = app.add_subcommand("blocks", "list blocks, oldest first");
  ClusterStatusArgs cluster_args;
  auto* status = app.add_subcommand(
      "status",
      "show the local ledger's head, blocks and lookup index; with --primary, the "
      "replication status of the cluster as the primary sees it");
  auto* status_primary =
      status->add_option("--primary", cluster_args.primary,
                         "host:port of the primary's gRPC server: ask it for every replica's state "
                         "and lag instead of reading --root");
  status
      ->add_option("--timeout", cluster_args.timeout_seconds,
                   "seconds to wait for the primary (default 5)")
      ->check(CLI::PositiveNumber)
      ->needs(status_primary);
  auto* status_json = status->add_flag("--json", cluster_args.json,
                                       "print JSON instead of a table (with --primary)");
  status_json->needs(status_primary);

  IndexCommands index_commands(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    *env.out << app.help();
    return kExitOk;
  } catch (const CLI::CallForAllHelp& e) {
    *env.out << app.help("", CLI::AppFormatMode::All);
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) {
      *env.out << e.what() << "\n";
      return kExitOk;
    }
    *env.err << "snapledger: " << e.what() << "\nRun `snapledger --help` for usage.\n";
    return kExitUsage;
  }
  SetUpLogging(env, g.quiet);

  Outcome outcome;
  if (init->parsed()) outcome = Init(g, init_args, env);
  if (append->parsed()) outcome = Append(g, append_args, env);
  if (get->parsed()) outcome = Get(g, get_key, env);
  if (range->parsed()) outcome = Range(g, range_args, env);
  if (verify->parsed()) outcome = Verify(g, verify_args, env);
  if (snapshot->parsed()) outcome = Snapshot(g, snapshot_keep, env);
  if (blocks->parsed()) outcome = Blocks(g, env);
  if (status->parsed())
    outcome = status_primary->count() > 0 ? ClusterStatus(cluster_args, env) : Status(g, env);
  const std::string live = g.root.empty() ? "" : LedgerLayout(g.root).live();
  if (auto o = index_commands.Run(live, IndexRoot(g), env)) outcome = Failed(o->first, o->second);
  if (outcome.code != kExitOk) *env.err << "snapledger: " << outcome.message << "\n";
  spdlog::default_logger()->flush();
  return outcome.code;
}

}  // namespace snapledger
