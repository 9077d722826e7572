#include "replica/receive_command.h"

#include <malloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/ledger/block.h"
#include "common/ledger/head_file.h"
#include "common/transport/receive_protocol.h"
#include "common/transport/receive_session.h"
#include "common/transport/zstd_stream.h"
#include "replica/block_receiver.h"
#include "replica/receive_journal.h"

namespace snapledger {
namespace {

// Adds --block, --parent, --epoch, --head-seq, --head-hash, --compress and --session to `app`.
void AddTransferOptions(CLI::App& app, TransferArgs& t) {
  app.add_option("--block", t.block, "the block being sent (block-<seq>-<hash12>)");
  app.add_option("--parent", t.parent, "the delta's parent block (omit for a full send)");
  app.add_option("--epoch", t.epoch, "the primary's epoch");
  app.add_option("--head-seq", t.head_seq, "the head the primary announces for the block");
  app.add_option("--head-hash", t.head_hash, "its full hash");
  app.add_option("--compress", t.compress, "how stdin is compressed: none (default) or zstd");
  app.add_flag("--session", t.session,
               "receive block after block: each a request line and a framed stream on stdin "
               "(common/transport/receive_session.h)");
}

// Parses transfer options (`words`, without a program name) into `t`.
bool ParseTransferWords(const std::vector<std::string>& words, TransferArgs& t,
                        std::string* error) {
  CLI::App app{"snapledger-receive", "snapledger-receive"};
  AddTransferOptions(app, t);
  // CLI11 takes the arguments reversed, without the program name.
  std::vector<std::string> reversed(words.rbegin(), words.rend());
  try {
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    *error = e.what();
    return false;
  }
  return true;
}

bool HasTransferArgs(const TransferArgs& t) {
  return !t.block.empty() || !t.parent.empty() || t.epoch != 0 || t.head_seq != 0 ||
         !t.head_hash.empty() || t.compress != "none";
}

// False, saying why, for --session together with a block's transfer options.
bool SessionStandsAlone(const TransferArgs& t, std::string* error) {
  if (!t.session || !HasTransferArgs(t)) return true;
  *error = "--session takes each block's transfer options on stdin, not on the command line";
  return false;
}

// Parses SSH_ORIGINAL_COMMAND as ParseOriginalCommand does: nullopt when it is taken, else
// why not (`*error` says it for people).
std::optional<ReceiveRefusal> ParseOriginal(const std::string& command, TransferArgs& t,
                                            std::string* error) {
  std::vector<std::string> words = absl::StrSplit(command, ' ', absl::SkipEmpty());
  auto is = [](const std::string& word, std::string_view name) {
    return word == name || absl::EndsWith(word, absl::StrCat("/", std::string(name)));
  };
  if (words.empty() || !is(words[0], "snapledger-receive")) {
    *error = "this key may only run `snapledger-receive`";
    return ReceiveRefusal::kNotPermitted;
  }
  words.erase(words.begin());
  if (!ParseTransferWords(words, t, error) || !SessionStandsAlone(t, error))
    return ReceiveRefusal::kBadRequest;
  return std::nullopt;
}

}  // namespace

bool ParseOriginalCommand(const std::string& command, TransferArgs& t, std::string* error) {
  return !ParseOriginal(command, t, error).has_value();
}

bool ParseRequestLine(const std::string& line, TransferArgs& t, std::string* error) {
  std::vector<std::string> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
  if (!ParseTransferWords(words, t, error)) return false;
  if (t.session) {
    *error = "--session is an option of the command, not of a block's request";
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

double SecondsBetween(int64_t start_nanos, int64_t end_nanos) {
  return static_cast<double>(end_nanos - start_nanos) / 1e9;
}

// Whether the program this process runs has been replaced on disk since it started (an
// upgrade renames a new file over it), so that a receive session can end and let the next one
// run the new program.
class ExecutableWatch {
 public:
  ExecutableWatch() {
    char buf[4096];
    const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    struct stat st;
    if (n <= 0 || ::stat("/proc/self/exe", &st) != 0) return;
    path_.assign(buf, static_cast<size_t>(n));
    if (absl::EndsWith(path_, " (deleted)")) return;  // already replaced: nothing to compare
    dev_ = st.st_dev;
    ino_ = st.st_ino;
    known_ = true;
  }
  const std::string& path() const { return path_; }
  bool Replaced() const {
    if (!known_) return false;
    struct stat st;
    if (::stat(path_.c_str(), &st) != 0) return errno == ENOENT;
    return st.st_dev != dev_ || st.st_ino != ino_;
  }

 private:
  std::string path_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  bool known_ = false;
};

// One run of the receive command on the ledger at `root`, through `env`.
class ReceiveCommand {
 public:
  ReceiveCommand(const ReceiveEnv& env, std::string root) : env_(env), root_(std::move(root)) {}

  // Receives the block `t` describes from env.in.
  int ReceiveOne(const TransferArgs& t) {
    const int64_t start = env_.clock->MonotonicNanos();
    ReceiveOutcome outcome;
    outcome.ts_micros = env_.clock->NowMicros();
    ReceiveVerdict verdict = ReceiveBlock(t, *env_.in, nullptr, start, outcome);
    return Answer(t, start, verdict, outcome);
  }

  // Block after block from env.in (common/transport/receive_session.h) until end of input or
  // a failure.
  int ReceiveSession();

  // Answers `failure`, found before a block could be received, and records it with the
  // journal's `reason`; says its error on stderr.
  int FailBeforeReceiving(const ReceiveVerdict& failure, std::string reason) {
    ReceiveOutcome outcome;
    outcome.ts_micros = env_.clock->NowMicros();
    outcome.reason = std::move(reason);
    outcome.error = failure.error;
    *env_.err << "snapledger-receive: " << failure.error << "\n";
    return Answer(TransferArgs{}, env_.clock->MonotonicNanos(), failure, outcome);
  }

 private:
  // Receives the block `t` describes from `input`. `input_error`, when given, is the input's
  // own failure (a session's framing), which makes a failed receive a transfer failure rather
  // than a refusal or a bad block. Says a failure on stderr.
  ReceiveVerdict ReceiveBlock(const TransferArgs& t, ByteSource& input,
                              const absl::Status* input_error, int64_t start,
                              ReceiveOutcome& outcome);

  // Records the attempt in the journal, writes its verdict line; returns its exit code.
  int Answer(const TransferArgs& t, int64_t start, const ReceiveVerdict& verdict,
             ReceiveOutcome& outcome) {
    outcome.block = t.block;
    if (!t.parent.empty()) outcome.parent = t.parent;
    outcome.ok = verdict.received();
    if (!outcome.ok && outcome.reason.empty())
      outcome.reason = verdict.verdict == ReceiveExit::kRefused ? "refused" : "local";
    if (!outcome.ok && outcome.error.empty()) outcome.error = verdict.error;
    outcome.seconds = SecondsBetween(start, env_.clock->MonotonicNanos());
    if (absl::Status s = AppendReceiveOutcome(root_, outcome); !s.ok())
      *env_.err << "snapledger-receive: cannot record the outcome: " << s.message() << "\n";
    *env_.out << WriteReceiveVerdict(verdict) << "\n" << std::flush;
    return static_cast<int>(verdict.verdict);
  }

  const ReceiveEnv& env_;
  const std::string root_;
};

ReceiveVerdict ReceiveCommand::ReceiveBlock(const TransferArgs& t, ByteSource& input,
                                            const absl::Status* input_error, int64_t start,
                                            ReceiveOutcome& outcome) {
  auto fail = [&](ReceiveExit exit, std::string reason, std::string why,
                  std::optional<ReceiveRefusal> refusal = std::nullopt) {
    outcome.reason = std::move(reason);
    outcome.error = why;
    return FailedVerdict(exit, t.block, std::move(why), refusal);
  };
  auto refuse = [&](std::string why) {
    *env_.err << "snapledger-receive: " << why << "\n";
    return fail(ReceiveExit::kRefused, "refused", std::move(why), ReceiveRefusal::kBadRequest);
  };
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
  BlockReceiver receiver(*env_.btrfs, root_, env_.clock);
  ByteSource* stream = &input;
  ZstdDecompressSourcePtr decompressed;
  if (*compression == StreamCompression::kZstd) {
    auto zstd = ZstdDecompressSource::Create(input);
    if (!zstd.ok()) {
      *env_.err << "snapledger-receive: " << zstd.status().message() << "\n";
      return fail(ReceiveExit::kTransferFailed, "local", std::string(zstd.status().message()));
    }
    decompressed = std::move(*zstd);
    stream = decompressed.get();
  }
  auto result = receiver.Receive(request, *stream);
  if (!result.ok()) {
    const absl::Status& st = result.status();
    const bool input_failed = (input_error != nullptr && !input_error->ok()) ||
                              (decompressed && !decompressed->error().ok());
    *env_.err << "snapledger-receive: receive " << t.block << " refused: " << st.message() << "\n";
    std::string reason = FailureReason(st, input_failed);
    // A bad compressed stream (DataLoss from the decompressor) or a cut or garbled session
    // input is a transfer failure, not a block that failed verification.
    if (input_failed) return fail(ReceiveExit::kTransferFailed, reason, std::string(st.message()));
    if (std::optional<ReceiveRefusal> refusal = RefusalOf(st))
      return fail(ReceiveExit::kRefused, reason, std::string(st.message()), refusal);
    return fail(absl::IsDataLoss(st) ? ReceiveExit::kNotVerified : ReceiveExit::kTransferFailed,
                reason, std::string(st.message()));
  }
  outcome.already_held = result->already_held;
  outcome.events_verified = result->events_verified;
  outcome.log_bytes = result->log_bytes_added;
  ReceiveVerdict v;
  v.block = result->block.name;
  v.seq = result->head.head.seq;
  v.hash = result->head.head.hash;
  v.events_verified = result->events_verified;
  v.prefix_bytes_shared = result->prefix_bytes_shared;
  v.prefix_bytes_compared = result->prefix_bytes_compared;
  v.bytes_verified_in_stream = result->bytes_verified_in_stream;
  v.already_held = result->already_held;
  v.seconds = {result->timings.stream, result->timings.verify, result->timings.promote,
               SecondsBetween(start, env_.clock->MonotonicNanos())};
  return v;
}

int ReceiveCommand::ReceiveSession() {
  // Between blocks the command waits with its buffers (the stream forwarder's, the in-stream
  // verifier's: a few MiB) freed. Keeping them in the heap rather than returning them to the
  // kernel means the next block writes to pages already mapped (bench/README.md).
  ::mallopt(M_MMAP_THRESHOLD, 32 << 20);
  ::mallopt(M_TRIM_THRESHOLD, 256 << 20);
  SessionReader reader(*env_.in, "stdin");
  while (true) {
    absl::StatusOr<std::optional<std::string>> line = reader.ReadRequest();
    if (!line.ok()) {
      // An overlong line is a request this command does not take; a line cut off by the end of
      // input, a transfer that stopped (the primary went away).
      const std::string why = absl::StrCat("session: ", line.status().message());
      if (absl::IsInvalidArgument(line.status()))
        return FailBeforeReceiving(
            FailedVerdict(ReceiveExit::kRefused, "", why, ReceiveRefusal::kBadRequest), "refused");
      return FailBeforeReceiving(FailedVerdict(ReceiveExit::kTransferFailed, "", why), "stream");
    }
    if (!line->has_value()) return 0;  // the primary ended the session
    TransferArgs t;
    std::string error;
    if (!ParseRequestLine(**line, t, &error))
      return FailBeforeReceiving(
          FailedVerdict(ReceiveExit::kRefused, "", absl::StrCat("refused request: ", error),
                        ReceiveRefusal::kBadRequest),
          "refused");
    const int64_t start = env_.clock->MonotonicNanos();
    ReceiveOutcome outcome;
    outcome.ts_micros = env_.clock->NowMicros();
    ReceiveVerdict verdict =
        ReceiveBlock(t, reader.Stream(), &reader.StreamError(), start, outcome);
    if (verdict.received() && !reader.StreamEnded()) {
      // Promoted (or already held) before the stream's end marker was read: whatever is left
      // of the stream must go before the next request can be found. Bytes there that are not
      // frames end the session as a failed transfer; the block itself is fine (held here).
      char sink[64 << 10];
      while (true) {
        absl::StatusOr<size_t> n = reader.Stream().Read(sink, sizeof sink);
        if (!n.ok()) {
          outcome.reason = "stream";
          outcome.error = absl::StrCat("after ", t.block, ": ", n.status().message());
          *env_.err << "snapledger-receive: session: " << outcome.error << "\n";
          verdict = FailedVerdict(ReceiveExit::kTransferFailed, t.block, outcome.error);
          break;
        }
        if (*n == 0) break;
      }
    }
    if (const int code = Answer(t, start, verdict, outcome); code != 0) return code;
    if (env_.program_replaced) {
      if (std::optional<std::string> program = env_.program_replaced()) {
        // The primary sees the channel close after this verdict and starts the new program
        // for its next block.
        *env_.err << "snapledger-receive: session: " << *program
                  << " was replaced; ending the session so that the next one runs it\n";
        return 0;
      }
    }
  }
}

}  // namespace

std::function<std::optional<std::string>()> WatchOwnExecutable() {
  return [watch = ExecutableWatch()]() -> std::optional<std::string> {
    if (watch.Replaced()) return watch.path();
    return std::nullopt;
  };
}

int RunReceiveCommand(int argc, const char* const* argv, const ReceiveEnv& env) {
  CLI::App app{
      "snapledger-receive: receive one block on stdin (a btrfs send stream), verify it, "
      "promote it; with --session, block after block; the forced command of the primary's key "
      "on a replica",
      "snapledger-receive"};
  std::string root;
  TransferArgs t;
  app.add_option("--root", root, "the replica's ledger root on btrfs")->required();
  AddTransferOptions(app, t);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (app.exit(e, *env.out, *env.err) == 0) return 0;  // --help
    // Without a root there is no journal to record it in.
    *env.out << WriteReceiveVerdict(
                    FailedVerdict(ReceiveExit::kRefused, "", e.what(), ReceiveRefusal::kBadRequest))
             << "\n"
             << std::flush;
    return static_cast<int>(ReceiveExit::kRefused);
  }
  ReceiveCommand command(env, root);
  if (env.original_command) {
    if (t.session || HasTransferArgs(t))
      return command.FailBeforeReceiving(
          FailedVerdict(ReceiveExit::kRefused, "",
                        "transfer arguments come from the primary, not the forced command",
                        ReceiveRefusal::kForcedCommand),
          "refused");
    std::string error;
    if (std::optional<ReceiveRefusal> refusal = ParseOriginal(*env.original_command, t, &error))
      return command.FailBeforeReceiving(
          FailedVerdict(ReceiveExit::kRefused, "", absl::StrCat("refused command: ", error),
                        *refusal),
          "refused");
  }
  if (std::string error; !SessionStandsAlone(t, &error))
    return command.FailBeforeReceiving(
        FailedVerdict(ReceiveExit::kRefused, "", error, ReceiveRefusal::kBadRequest), "refused");
  if (t.session) return command.ReceiveSession();
  return command.ReceiveOne(t);
}

}  // namespace snapledger
