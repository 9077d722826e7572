// In-memory doubles of a replica's side of SSH: an SshTransport whose sessions exec a fake
// `snapledger-receive` that speaks the receive-session protocol
// (common/transport/receive_session.h) or takes one block per command, answers with the receive
// protocol's verdict lines and exit codes (common/transport/receive_protocol.h), and refuses
// blocks as the test says. For unit tests of the shipper and its driver.
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
#include "common/transport/receive_protocol.h"
#include "common/transport/receive_session.h"
#include "common/transport/ssh_transport.h"

namespace snapledger::testing {

// What the fake replica does, and what it saw.
struct FakeReplica {
  int session_ends_after = -1;          // verdicts a session gives before it ends (-1: never)
  std::set<std::string> not_verifying;  // blocks refused as not verifying (exit 3)
  std::set<std::string> not_held;       // parents refused as not held here (parent_not_held,
                                        // exit 2)
  std::string verdict_names;            // when set, every verdict names this block instead
  // When set, every block is answered with this stdout text (no '\n' added) and exit status.
  std::optional<std::string> raw_answer;
  int raw_exit = 0;
  std::vector<std::string> commands;  // every command line exec'ed
  std::vector<std::string> requests;  // every block asked for: a session's request lines,
                                      // or a one-block command's options
  int live_commands = 0;              // commands whose channel the primary still holds
};

// The value following `option` in a request line ("" when absent).
inline std::string OptionValue(const std::string& line, std::string_view option) {
  std::vector<std::string> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
  for (size_t i = 0; i + 1 < words.size(); ++i)
    if (words[i] == option) return words[i + 1];
  return "";
}

inline RemoteExit Exited(int status) {
  RemoteExit exit;
  exit.exit_status = status;
  return exit;
}

// One receive command on the fake replica: with `session`, it reads request lines and framed
// streams (common/transport/receive_session.h) and answers each block with a verdict line
// (common/transport/receive_protocol.h); otherwise it takes one block, whose options are in its
// command line, and answers when its stdin ends. A failed block's verdict ends the command with
// the verdict's exit code, as the real command does.
class FakeReceiveCommand : public RemoteCommand {
 public:
  FakeReceiveCommand(FakeReplica& replica, bool session, std::string options)
      : replica_(replica), session_(session), options_(std::move(options)) {
    ++replica_.live_commands;
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
  absl::StatusOr<std::optional<std::string>> ReadLine(size_t max) override {
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
    std::string verdict = Answer(**request);
    const size_t line_end = verdict.find('\n');
    if (line_end == std::string::npos) {  // a line cut short: stdout ends inside it
      End(exit_.exit_status, exit_.stderr_text);
      exit_.stdout_text = verdict;
      return std::nullopt;
    }
    std::string line = verdict.substr(0, line_end);
    if (line.size() > max) return absl::DataLossError("fake stdout: the line is too long");
    if (++verdicts_ == replica_.session_ends_after) ended_ = true;
    return line;
  }
  bool Open() override { return !ended_ && !eof_; }
  absl::StatusOr<RemoteExit> Wait() override {
    eof_ = true;
    if (!session_ && !ended_) {
      RemoteExit exit;
      exit.stdout_text = Answer(options_);
      exit.exit_status = exit_.exit_status;
      exit.stderr_text = exit_.stderr_text;
      ended_ = true;
      return exit;
    }
    ended_ = true;
    return exit_;
  }
  uint64_t bytes_written() const override { return written_; }

 private:
  // What the command writes on stdout for the block asked for with `request`; a failure also
  // ends the command (exit_).
  std::string Answer(const std::string& request) {
    replica_.requests.push_back(request);
    const std::string block = OptionValue(request, "--block");
    const std::string parent = OptionValue(request, "--parent");
    if (replica_.raw_answer) {
      if (replica_.raw_exit != 0) End(replica_.raw_exit, "snapledger-receive: raw answer\n");
      return *replica_.raw_answer;
    }
    // Refused before anything is received, as the real command does.
    if (!parent.empty() && replica_.not_held.contains(parent)) {
      const std::string why = absl::StrCat("parent ", parent, " is not held here");
      End(2, absl::StrCat("snapledger-receive: receive ", block, " refused: ", why, "\n"));
      return WriteReceiveVerdict(
                 FailedVerdict(ReceiveExit::kRefused, block, why, ReceiveRefusal::kParentNotHeld)) +
             "\n";
    }
    if (replica_.not_verifying.contains(block)) {
      const std::string why = absl::StrCat("block ", block, " does not verify");
      End(3, absl::StrCat("snapledger-receive: receive ", block, " refused: ", why, "\n"));
      return WriteReceiveVerdict(FailedVerdict(ReceiveExit::kNotVerified, block, why)) + "\n";
    }
    ReceiveVerdict v;
    v.block = replica_.verdict_names.empty() ? block : replica_.verdict_names;
    v.events_verified = 1;
    v.seconds.verify = 0.5;
    return WriteReceiveVerdict(v) + "\n";
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
  RemoteExit exit_ = Exited(0);
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
