// snapledger-replica: the replica's commands. `serve` runs the replica daemon
// (replica/replica_daemon.h, configured by YAML: docs/CONFIG.md). `receive` is the command the
// primary's key is restricted to in the replica's authorized_keys:
//
//   command="/usr/bin/snapledger-replica receive --root /srv/ledger",restrict ssh-ed25519 AAAA...
//
// sshd then passes the primary's requested command in SSH_ORIGINAL_COMMAND; only its transfer
// arguments (--block, --parent, --epoch, --head-seq, --head-hash, --compress) are taken from
// it, parsed without a shell and validated; the root always comes from the forced command.
// With `--compress zstd` stdin is a zstd stream, decompressed before `btrfs receive`.
// Exit codes: 0 promoted (or already held), 1 error (including a corrupt or truncated
// compressed stream), 2 bad arguments, 3 the block did not verify. Every attempt is appended
// to the receive journal (replica/receive_journal.h), from which the daemon counts metrics.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/btrfs.h"
#include "common/byte_stream.h"
#include "common/block_maker.h"
#include "common/clock.h"
#include "common/head_file.h"
#include "common/signals.h"
#include "common/zstd_stream.h"
#include "replica/block_receiver.h"
#include "replica/receive_journal.h"
#include "replica/replica_serve.h"

namespace snapledger {
namespace {

struct TransferArgs {
  std::string block, parent;
  uint64_t epoch = 0;
  uint64_t head_seq = 0;
  std::string head_hash;
  std::string compress = "none";
};

void AddTransferOptions(CLI::App& app, TransferArgs& t) {
  app.add_option("--block", t.block, "the block being sent (block-<seq>-<hash12>)");
  app.add_option("--parent", t.parent, "the delta's parent block (omit for a full send)");
  app.add_option("--epoch", t.epoch, "the primary's epoch");
  app.add_option("--head-seq", t.head_seq, "the head the primary announces for the block");
  app.add_option("--head-hash", t.head_hash, "its full hash");
  app.add_option("--compress", t.compress, "how stdin is compressed: none (default) or zstd");
}

// Parses SSH_ORIGINAL_COMMAND: "[snapledger-replica] receive <transfer options>" and nothing
// else.
bool ParseOriginalCommand(const std::string& command, TransferArgs& t, std::string* error) {
  std::vector<std::string> words = absl::StrSplit(command, ' ', absl::SkipEmpty());
  if (!words.empty() &&
      (words[0] == "snapledger-replica" || absl::EndsWith(words[0], "/snapledger-replica")))
    words.erase(words.begin());
  if (words.empty() || words[0] != "receive") {
    *error = "this key may only run `snapledger-replica receive`";
    return false;
  }
  words[0] = "receive";
  CLI::App app{"receive", "receive"};
  AddTransferOptions(app, t);
  std::vector<std::string> reversed(words.rbegin(), words.rend() - 1);
  try {
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    *error = e.what();
    return false;
  }
  return true;
}

// The log bytes of the newest block held (0 when none): what a new block's growth is counted
// from.
uint64_t NewestLogBytes(Btrfs& btrfs, const std::string& root) {
  LedgerLayout layout(root);
  absl::StatusOr<std::vector<BlockInfo>> blocks = ListBlocks(btrfs, layout);
  if (!blocks.ok() || blocks->empty()) return 0;
  absl::StatusOr<std::optional<HeadRecord>> head = ReadHeadFile(layout.block(blocks->back()));
  return head.ok() && *head ? (*head)->log_bytes : 0;
}

// Why a receive failed, as the journal (and the replica's metrics) name it.
std::string FailureReason(const absl::Status& status, bool stream_failed) {
  if (stream_failed) return "stream";
  switch (status.code()) {
    case absl::StatusCode::kDataLoss:
      return "verification";
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAlreadyExists:
      return "refused";
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kAborted:
      return "stream";
    default:
      return "local";
  }
}

int ReceiveOnce(const std::string& root, TransferArgs& t, int64_t process_start,
                ReceiveOutcome& outcome);

int Receive(const std::string& root, TransferArgs t) {
  const int64_t start = Clock::Real()->MonotonicNanos();
  ReceiveOutcome outcome;
  outcome.ts_micros = Clock::Real()->NowMicros();
  int code = ReceiveOnce(root, t, start, outcome);
  outcome.block = t.block;
  if (!t.parent.empty()) outcome.parent = t.parent;
  outcome.ok = code == 0;
  if (!outcome.ok && outcome.reason.empty()) outcome.reason = code == 2 ? "refused" : "local";
  outcome.seconds = static_cast<double>(Clock::Real()->MonotonicNanos() - start) / 1e9;
  if (absl::Status s = AppendReceiveOutcome(root, outcome); !s.ok())
    std::cerr << "snapledger-replica: cannot record the outcome: " << s.message() << "\n";
  return code;
}

int ReceiveOnce(const std::string& root, TransferArgs& t, int64_t process_start,
                ReceiveOutcome& outcome) {
  auto refuse = [&](const std::string& why) {
    outcome.reason = "refused";
    outcome.error = why;
    std::cerr << "snapledger-replica: " << why << "\n";
    return 2;
  };
  if (const char* original = std::getenv("SSH_ORIGINAL_COMMAND")) {
    if (!t.block.empty())
      return refuse("transfer arguments come from the primary, not the forced command");
    std::string error;
    if (!ParseOriginalCommand(original, t, &error))
      return refuse(absl::StrCat("refused command: ", error));
  }
  absl::StatusOr<StreamCompression> compression = ParseStreamCompression(t.compress);
  if (!compression.ok())
    return refuse(absl::StrCat("--compress: ", compression.status().message()));
  ReceiveRequest request;
  request.block = t.block;
  if (!t.parent.empty()) request.parent = t.parent;
  request.epoch = t.epoch;
  if (!t.head_hash.empty()) request.announced = ChainHead{t.head_seq, t.head_hash, 0};
  if (absl::Status st = ValidateReceiveRequest(request); !st.ok())
    return refuse(std::string(st.message()));
  BtrfsPtr btrfs = Btrfs::Linux();
  const uint64_t log_bytes_before = NewestLogBytes(*btrfs, root);
  BlockReceiver receiver(*btrfs, root);
  FdSource stdin_source(UniqueFd(::dup(STDIN_FILENO)), "stdin");
  ByteSource* stream = &stdin_source;
  ZstdDecompressSourcePtr decompressed;
  if (*compression == StreamCompression::kZstd) {
    auto zstd = ZstdDecompressSource::Create(stdin_source);
    if (!zstd.ok()) {
      outcome.reason = "local";
      outcome.error = std::string(zstd.status().message());
      std::cerr << "snapledger-replica: " << zstd.status().message() << "\n";
      return 1;
    }
    decompressed = std::move(*zstd);
    stream = decompressed.get();
  }
  auto result = receiver.Receive(request, *stream);
  if (!result.ok()) {
    outcome.reason =
        FailureReason(result.status(), decompressed && !decompressed->error().ok());
    outcome.error = std::string(result.status().message());
    std::cerr << "snapledger-replica: receive " << t.block
              << " refused: " << result.status().message() << "\n";
    // A bad compressed stream is a transfer failure (DataLoss from the decompressor), not a
    // block that failed verification.
    if (decompressed && !decompressed->error().ok()) return 1;
    return absl::IsDataLoss(result.status()) ? 3 : 1;
  }
  outcome.already_held = result->already_held;
  outcome.events_verified = result->events_verified;
  if (result->head.log_bytes > log_bytes_before)
    outcome.log_bytes = result->head.log_bytes - log_bytes_before;
  std::cout << "{\"block\":\"" << result->block.name << "\",\"seq\":" << result->head.head.seq
            << ",\"hash\":\"" << result->head.head.hash
            << "\",\"events_verified\":" << result->events_verified
            << ",\"prefix_bytes_shared\":" << result->prefix_bytes_shared
            << ",\"prefix_bytes_compared\":" << result->prefix_bytes_compared
            << ",\"already_held\":" << (result->already_held ? "true" : "false")
            << ",\"seconds\":{\"stream\":" << result->timings.stream
            << ",\"verify\":" << result->timings.verify
            << ",\"promote\":" << result->timings.promote << ",\"process\":"
            << static_cast<double>(Clock::Real()->MonotonicNanos() - process_start) / 1e9
            << "}}\n";
  return 0;
}

}  // namespace
}  // namespace snapledger

int main(int argc, char** argv) {
  snapledger::BlockTerminationSignals();
  CLI::App app{"snapledger-replica: the replica side of snapledger", "snapledger-replica"};
  app.require_subcommand(1);
  std::string root;
  snapledger::TransferArgs transfer;
  auto* receive = app.add_subcommand(
      "receive", "receive one block on stdin (btrfs send stream), verify it, promote it");
  receive->add_option("--root", root, "the replica's ledger root on btrfs")->required();
  snapledger::AddTransferOptions(*receive, transfer);
  snapledger::ServeFlags serve_flags;
  auto* serve = app.add_subcommand(
      "serve", "run the replica daemon: queries, progress reports, pruning, metrics");
  serve->add_option("--config", serve_flags.config_path, "YAML configuration (docs/CONFIG.md)")
      ->required();
  serve->add_option("--ledger-root", serve_flags.ledger_root, "overrides ledger_root");
  serve->add_option("--grpc-listen", serve_flags.grpc_listen, "overrides grpc_listen");
  serve->add_option("--metrics-listen", serve_flags.metrics_listen, "overrides metrics_listen");
  serve->add_option("--primary-grpc", serve_flags.primary_grpc, "overrides primary_grpc");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (receive->parsed()) return snapledger::Receive(root, transfer);
  if (serve->parsed()) return snapledger::RunReplicaServe(serve_flags);
  return 2;
}
