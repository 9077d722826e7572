#include "replica/receive_command.h"

#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/block.h"
#include "common/btrfs.h"
#include "common/byte_stream.h"
#include "common/clock.h"
#include "common/head_file.h"
#include "common/zstd_stream.h"
#include "replica/block_receiver.h"
#include "replica/receive_journal.h"

namespace snapledger {

void AddTransferOptions(CLI::App& app, TransferArgs& t) {
  app.add_option("--block", t.block, "the block being sent (block-<seq>-<hash12>)");
  app.add_option("--parent", t.parent, "the delta's parent block (omit for a full send)");
  app.add_option("--epoch", t.epoch, "the primary's epoch");
  app.add_option("--head-seq", t.head_seq, "the head the primary announces for the block");
  app.add_option("--head-hash", t.head_hash, "its full hash");
  app.add_option("--compress", t.compress, "how stdin is compressed: none (default) or zstd");
}

bool ParseOriginalCommand(const std::string& command, TransferArgs& t, std::string* error) {
  std::vector<std::string> words = absl::StrSplit(command, ' ', absl::SkipEmpty());
  auto is = [](const std::string& word, std::string_view name) {
    return word == name || absl::EndsWith(word, absl::StrCat("/", std::string(name)));
  };
  size_t skip = 0;
  if (!words.empty() && is(words[0], "snapledger-receive")) {
    skip = 1;
  } else if (words.size() >= 2 && is(words[0], "snapledger-replica") && words[1] == "receive") {
    skip = 2;
  } else if (!words.empty() && words[0] == "receive") {
    skip = 1;
  } else {
    *error = "this key may only run `snapledger-receive`";
    return false;
  }
  CLI::App app{"snapledger-receive", "snapledger-receive"};
  AddTransferOptions(app, t);
  // CLI11 takes the arguments reversed, without the program name.
  std::vector<std::string> reversed(words.rbegin(), words.rend() - static_cast<long>(skip));
  try {
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    *error = e.what();
    return false;
  }
  return true;
}

namespace {

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
                ReceiveOutcome& outcome) {
  auto refuse = [&](const std::string& why) {
    outcome.reason = "refused";
    outcome.error = why;
    std::cerr << "snapledger-receive: " << why << "\n";
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
  BlockReceiver receiver(*btrfs, root);
  FdSource stdin_source(UniqueFd(::dup(STDIN_FILENO)), "stdin");
  ByteSource* stream = &stdin_source;
  ZstdDecompressSourcePtr decompressed;
  if (*compression == StreamCompression::kZstd) {
    auto zstd = ZstdDecompressSource::Create(stdin_source);
    if (!zstd.ok()) {
      outcome.reason = "local";
      outcome.error = std::string(zstd.status().message());
      std::cerr << "snapledger-receive: " << zstd.status().message() << "\n";
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
    std::cerr << "snapledger-receive: receive " << t.block
              << " refused: " << result.status().message() << "\n";
    // A bad compressed stream is a transfer failure (DataLoss from the decompressor), not a
    // block that failed verification.
    if (decompressed && !decompressed->error().ok()) return 1;
    return absl::IsDataLoss(result.status()) ? 3 : 1;
  }
  outcome.already_held = result->already_held;
  outcome.events_verified = result->events_verified;
  outcome.log_bytes = result->log_bytes_added;
  std::cout << "{\"block\":\"" << result->block.name << "\",\"seq\":" << result->head.head.seq
            << ",\"hash\":\"" << result->head.head.hash
            << "\",\"events_verified\":" << result->events_verified
            << ",\"prefix_bytes_shared\":" << result->prefix_bytes_shared
            << ",\"prefix_bytes_compared\":" << result->prefix_bytes_compared
            << ",\"bytes_verified_in_stream\":" << result->bytes_verified_in_stream
            << ",\"already_held\":" << (result->already_held ? "true" : "false")
            << ",\"seconds\":{\"stream\":" << result->timings.stream
            << ",\"verify\":" << result->timings.verify
            << ",\"promote\":" << result->timings.promote << ",\"process\":"
            << static_cast<double>(Clock::Real()->MonotonicNanos() - process_start) / 1e9
            << "}}\n";
  return 0;
}

}  // namespace

int RunReceiveCommand(const std::string& root, TransferArgs t) {
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
    std::cerr << "snapledger-receive: cannot record the outcome: " << s.message() << "\n";
  return code;
}

}  // namespace snapledger
