#include "replica/receive_command.h"

#include <malloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/ledger/block.h"
#include "common/btrfs/btrfs.h"
#include "common/base/byte_stream.h"
#include "common/base/clock.h"
#include "common/ledger/head_file.h"
#include "common/transport/receive_session.h"
#include "common/transport/zstd_stream.h"
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
  app.add_flag("--session", t.session,
               "receive block after block: each a request line and a framed stream on stdin "
               "(common/transport/receive_session.h)");
}

namespace {

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

}  // namespace

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
  words.erase(words.begin(), words.begin() + static_cast<long>(skip));
  return ParseTransferWords(words, t, error) && SessionStandsAlone(t, error);
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

// Appends the outcome of one attempt (exit `code`) to the receive journal.
void Record(const std::string& root, const TransferArgs& t, int64_t start, int code,
            ReceiveOutcome& outcome) {
  outcome.block = t.block;
  if (!t.parent.empty()) outcome.parent = t.parent;
  outcome.ok = code == 0;
  if (!outcome.ok && outcome.reason.empty()) outcome.reason = code == 2 ? "refused" : "local";
  outcome.seconds = static_cast<double>(Clock::Real()->MonotonicNanos() - start) / 1e9;
  if (absl::Status s = AppendReceiveOutcome(root, outcome); !s.ok())
    std::cerr << "snapledger-receive: cannot record the outcome: " << s.message() << "\n";
}

// Receives the block `t` describes from `input`; on success sets `*verdict` to the JSON line
// the primary reads (without its '\n'). `input_error`, when given, is the input's own failure
// (a session's framing or its stdin), which makes a failed receive a transfer failure rather
// than a refusal or a bad block.
int ReceiveBlock(const std::string& root, const TransferArgs& t, ByteSource& input,
                 const absl::Status* input_error, int64_t process_start,
                 ReceiveOutcome& outcome, std::string* verdict) {
  auto refuse = [&](const std::string& why) {
    outcome.reason = "refused";
    outcome.error = why;
    std::cerr << "snapledger-receive: " << why << "\n";
    return 2;
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
  BtrfsPtr btrfs = Btrfs::Linux();
  BlockReceiver receiver(*btrfs, root);
  ByteSource* stream = &input;
  ZstdDecompressSourcePtr decompressed;
  if (*compression == StreamCompression::kZstd) {
    auto zstd = ZstdDecompressSource::Create(input);
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
    const bool input_failed = (input_error != nullptr && !input_error->ok()) ||
                              (decompressed && !decompressed->error().ok());
    outcome.reason = FailureReason(result.status(), input_failed);
    outcome.error = std::string(result.status().message());
    std::cerr << "snapledger-receive: receive " << t.block
              << " refused: " << result.status().message() << "\n";
    // A bad compressed stream (DataLoss from the decompressor) or a cut or garbled session
    // input is a transfer failure, not a block that failed verification.
    if (input_failed) return 1;
    return absl::IsDataLoss(result.status()) ? 3 : 1;
  }
  outcome.already_held = result->already_held;
  outcome.events_verified = result->events_verified;
  outcome.log_bytes = result->log_bytes_added;
  std::ostringstream line;
  line << "{\"block\":\"" << result->block.name << "\",\"seq\":" << result->head.head.seq
       << ",\"hash\":\"" << result->head.head.hash
       << "\",\"events_verified\":" << result->events_verified
       << ",\"prefix_bytes_shared\":" << result->prefix_bytes_shared
       << ",\"prefix_bytes_compared\":" << result->prefix_bytes_compared
       << ",\"bytes_verified_in_stream\":" << result->bytes_verified_in_stream
       << ",\"already_held\":" << (result->already_held ? "true" : "false")
       << ",\"seconds\":{\"stream\":" << result->timings.stream
       << ",\"verify\":" << result->timings.verify << ",\"promote\":" << result->timings.promote
       << ",\"process\":"
       << static_cast<double>(Clock::Real()->MonotonicNanos() - process_start) / 1e9 << "}}";
  *verdict = line.str();
  return 0;
}

// Records an attempt that failed before a block could be received (`code` 1 or 2), saying
// `why` on stderr; returns `code`.
int FailBeforeReceiving(const std::string& root, int code, const std::string& why) {
  ReceiveOutcome outcome;
  outcome.ts_micros = Clock::Real()->NowMicros();
  outcome.reason = code == 2 ? "refused" : "stream";
  outcome.error = why;
  std::cerr << "snapledger-receive: " << why << "\n";
  Record(root, TransferArgs{}, Clock::Real()->MonotonicNanos(), code, outcome);
  return code;
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

// Block after block from stdin (common/transport/receive_session.h) until end of input or a failure.
int ReceiveSession(const std::string& root) {
  const ExecutableWatch program;
  // Between blocks the command waits with its buffers (the stream forwarder's, the in-stream
  // verifier's: a few MiB) freed. Keeping them in the heap rather than returning them to the
  // kernel means the next block writes to pages already mapped: first touches of fresh pages
  // were the receive command's largest cost per block in a profile of the lag benchmark.
  ::mallopt(M_MMAP_THRESHOLD, 32 << 20);
  ::mallopt(M_TRIM_THRESHOLD, 256 << 20);
  FdSource stdin_source(UniqueFd(::dup(STDIN_FILENO)), "stdin");
  SessionReader reader(stdin_source, "stdin");
  while (true) {
    absl::StatusOr<std::optional<std::string>> line = reader.ReadRequest();
    if (!line.ok()) {
      // A line cut off by the end of input is a transfer that stopped (the primary went away);
      // an overlong one, a request this command does not take.
      return FailBeforeReceiving(root, absl::IsDataLoss(line.status()) ? 1 : 2,
                                 absl::StrCat("session: ", line.status().message()));
    }
    if (!line->has_value()) return 0;  // the primary ended the session
    TransferArgs t;
    std::string error;
    if (!ParseRequestLine(**line, t, &error))
      return FailBeforeReceiving(root, 2, absl::StrCat("refused request: ", error));
    const int64_t start = Clock::Real()->MonotonicNanos();
    ReceiveOutcome outcome;
    outcome.ts_micros = Clock::Real()->NowMicros();
    std::string verdict;
    int code = ReceiveBlock(root, t, reader.Stream(), &reader.StreamError(), start, outcome,
                            &verdict);
    if (code == 0 && !reader.StreamEnded()) {
      // Promoted (or already held) before the stream's end marker was read: whatever is left
      // of the stream must go before the next request can be found. Bytes there that are not
      // frames end the session without a verdict; the block itself is fine (held here).
      char sink[64 << 10];
      while (true) {
        absl::StatusOr<size_t> n = reader.Stream().Read(sink, sizeof sink);
        if (!n.ok()) {
          outcome.reason = "stream";
          outcome.error = absl::StrCat("after ", t.block, ": ", n.status().message());
          std::cerr << "snapledger-receive: session: " << outcome.error << "\n";
          code = 1;
          break;
        }
        if (*n == 0) break;
      }
    }
    Record(root, t, start, code, outcome);
    if (code != 0) return code;
    std::cout << verdict << "\n" << std::flush;
    if (program.Replaced()) {
      // The primary sees the channel close after this verdict and starts the new program for
      // its next block.
      std::cerr << "snapledger-receive: session: " << program.path()
                << " was replaced; ending the session so that the next one runs it\n";
      return 0;
    }
  }
}

}  // namespace

int RunReceiveCommand(const std::string& root, TransferArgs t) {
  if (const char* original = std::getenv("SSH_ORIGINAL_COMMAND")) {
    std::string error;
    if (t.session || HasTransferArgs(t)) {
      error = "transfer arguments come from the primary, not the forced command";
    } else if (!ParseOriginalCommand(original, t, &error)) {
      error = absl::StrCat("refused command: ", error);
    }
    if (!error.empty()) return FailBeforeReceiving(root, 2, error);
  }
  if (std::string error; !SessionStandsAlone(t, &error))
    return FailBeforeReceiving(root, 2, error);
  if (t.session) return ReceiveSession(root);
  FdSource stdin_source(UniqueFd(::dup(STDIN_FILENO)), "stdin");
  const int64_t start = Clock::Real()->MonotonicNanos();
  ReceiveOutcome outcome;
  outcome.ts_micros = Clock::Real()->NowMicros();
  std::string verdict;
  int code = ReceiveBlock(root, t, stdin_source, nullptr, start, outcome, &verdict);
  Record(root, t, start, code, outcome);
  if (code == 0) std::cout << verdict << "\n" << std::flush;
  return code;
}

}  // namespace snapledger
