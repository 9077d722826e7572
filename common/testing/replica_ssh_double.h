// In-memory doubles of a replica's side of SSH: an SshTransport whose sessions exec a fake
// `snapledger-receive` that speaks the receive-session protocol
// (common/transport/receive_session.h) or takes one block per command, answers with verdict
// lines, and refuses blocks as the test says. For unit tests of the shipper and its driver.
//
// Not thread-safe: one test thread. A FakeReplica must outlive the transport, its sessions and
// their commands.
#pragma once

#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/base/byte_stream.h"
#include "common/transport/receive_session.h"
#include "common/transport/ssh_transport.h"

namespace snapledger::testing {

// What the fake replica does, and what it saw.
struct FakeReplica {
  int session_ends_after = -1;          // verdicts a session gives before it ends (-1: never)
  bool refuses_sessions = false;        // a receive command from before sessions
  std::set<std::string> not_verifying;  // blocks refused with exit 3
  std::set<std::string> not_held;       // parents refused as not held here (exit 1)
  std::string verdict_names;            // when set, every verdict names this block instead
  std::vector<std::string> commands;    // every command line exec'ed
  std::vector<std::string> requests;    // every block asked for: a session's request lines,
                                        // or a one-block command's options
  int live_commands = 0;                // commands whose channel the primary still holds
};

// The value following `option` in a request line ("" when absent).
inline std::string OptionValue(const std::string& line, std::string_view option) {
  std::vector<std::string> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
  for (size_t i = 0; i + 1 < words.size(); ++i)
    if (words[i] == option) return words[i + 1];
  return "";
}

// One receive command on the fake replica: with `session`, it reads request lines and framed
// streams (common/transport/receive_session.h) and answers each block with a verdict line;
// otherwise it takes one block, whose options are in its command line, and answers when its stdin
// ends.
class FakeReceiveCommand : public RemoteCommand {
 public:
  FakeReceiveCommand(FakeReplica& replica, bool session, std::string options)
      : replica_(replica), session_(session), options_(std::move(options)) {
    ++replica_.live_commands;
    if (session_ && replica_.refuses_sessions)
      End(2,
          "snapledger-receive: refused command: The following argument was not expected: "
          "--session\n");
  }

  ~FakeReceiveCommand() override { --replica_.live_commands; }

  absl::Status Write(std::string_view data) override {
    if (ended_ || eof_) return absl::UnavailableError("fake channel: the command has ended");
    input_.append(data);
    written_ += data.size();
    return absl::OkStatus();
  }
  absl::Status Close() override {
    eof_ = true;
    return absl::OkStatus();
  }
  absl::StatusOr<std::optional<std::string>> ReadLine(size_t) override {
    if (!session_ || ended_) return std::nullopt;
    // Everything of the block has been written by now: the shipper reads the verdict after
    // the stream's end marker.
    StringSource in(input_.substr(consumed_));
    SessionReader reader(in, "fake stdin");
    absl::StatusOr<std::optional<std::string>> request = reader.ReadRequest();
    if (!request.ok() || !request->has_value()) return End(1, "no request\n");
    char buf[4096];
    while (true) {
      absl::StatusOr<size_t> n = reader.Stream().Read(buf, sizeof buf);
      if (!n.ok()) return End(1, absl::StrCat(n.status().message(), "\n"));
      if (*n == 0) break;
    }
    if (!reader.StreamEnded()) return End(1, "stream not ended\n");
    consumed_ = input_.size();  // one block at a time: all that was written was this block
    std::optional<std::string> verdict = Answer(**request);
    if (verdict && ++verdicts_ == replica_.session_ends_after) ended_ = true;
    return verdict;
  }
  bool Open() override { return !ended_ && !eof_; }
  absl::StatusOr<RemoteExit> Wait() override {
    eof_ = true;
    if (!session_ && !ended_) {
      RemoteExit exit;
      if (std::optional<std::string> verdict = Answer(options_)) {
        exit.exit_status = 0;
        exit.stdout_text = *verdict + "\n";
        return exit;
      }
    }
    if (!ended_) End(0, "");
    return exit_;
  }
  uint64_t bytes_written() const override { return written_; }

 private:
  // The verdict line for a block asked for with `request`, or nullopt when it is refused.
  std::optional<std::string> Answer(const std::string& request) {
    replica_.requests.push_back(request);
    const std::string block = OptionValue(request, "--block");
    if (const std::string parent = OptionValue(request, "--parent");
        replica_.not_held.contains(parent)) {
      End(1, absl::StrCat("snapledger-receive: receive ", block, " failed: parent ", parent,
                          " is not held here; send ", block, " in full\n"));
      return std::nullopt;
    }
    if (replica_.not_verifying.contains(block)) {
      End(3, absl::StrCat("snapledger-receive: receive ", block, " refused: does not verify\n"));
      return std::nullopt;
    }
    const std::string named = replica_.verdict_names.empty() ? block : replica_.verdict_names;
    return absl::StrCat("{\"block\":\"", named, "\",\"events_verified\":1}");
  }
  std::nullopt_t End(int status, std::string stderr_text) {
    ended_ = true;
    exit_.exit_status = status;
    exit_.stderr_text = std::move(stderr_text);
    return std::nullopt;
  }

  FakeReplica& replica_;
  const bool session_;
  const std::string options_;
  std::string input_;
  size_t consumed_ = 0;
  uint64_t written_ = 0;
  int verdicts_ = 0;
  bool ended_ = false, eof_ = false;
  RemoteExit exit_;
};

class FakeSession : public SshSession {
 public:
  explicit FakeSession(FakeReplica& replica) : replica_(replica) {}
  absl::StatusOr<RemoteCommandPtr> Exec(const std::string& command) override {
    replica_.commands.push_back(command);
    const std::string_view program = "snapledger-receive";
    if (!command.starts_with(program))
      return absl::InternalError(absl::StrCat("unexpected command ", command));
    std::string rest = command.substr(program.size());
    const bool session = absl::StripAsciiWhitespace(rest) == "--session";
    return std::make_unique<FakeReceiveCommand>(replica_, session, rest);
  }
  bool Connected() const override { return true; }

 private:
  FakeReplica& replica_;
};

class FakeTransport : public SshTransport {
 public:
  explicit FakeTransport(FakeReplica& replica) : replica_(replica) {}
  absl::StatusOr<SshSessionPtr> Connect(const SshEndpoint&) override {
    ++connects;
    return std::make_unique<FakeSession>(replica_);
  }
  int connects = 0;

 private:
  FakeReplica& replica_;
};

}  // namespace snapledger::testing
