// Child processes as a seam: production code starts `btrfs`, `ssh` and friends through a
// ProcessRunner, tests may inject their own.
//
// The real runner uses posix_spawn: the child gets exactly stdin, stdout and stderr (every
// other descriptor is closed, whether or not it was O_CLOEXEC), default signal dispositions and
// an empty signal mask. Every descriptor this code opens is O_CLOEXEC. The child's stderr is
// always captured (the last ProcessSpec::stderr_limit bytes) so errors can quote it.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/base/posix_file.h"

namespace snapledger {

// Where a child's stdin or stdout is connected.
struct StdioSpec {
  enum class Kind {
    kDevNull,  // /dev/null
    kFd,       // a descriptor of the caller's, borrowed: the child gets a copy
    kPipe,     // a new pipe; the parent's end is Child::TakeStdin()/TakeStdout()
  };
  Kind kind = Kind::kDevNull;
  int fd = -1;  // kFd only

  static StdioSpec DevNull() { return {}; }
  static StdioSpec Fd(int fd) { return {Kind::kFd, fd}; }
  static StdioSpec Pipe() { return {Kind::kPipe, -1}; }
};

inline constexpr size_t kDefaultStderrLimit = 64 * 1024;

struct ProcessSpec {
  // argv[0] is looked up in PATH. Must not be empty.
  std::vector<std::string> argv;
  StdioSpec stdin_spec;
  StdioSpec stdout_spec;
  // When set, the child's whole environment ("NAME=value" entries); otherwise it inherits ours.
  std::optional<std::vector<std::string>> env;
  // How much of the end of the child's stderr is kept.
  size_t stderr_limit = kDefaultStderrLimit;
};

// How a child ended.
struct ExitStatus {
  int code = -1;   // exit code when it exited; -1 when killed by a signal
  int signal = 0;  // the terminating signal, 0 when it exited
  bool ok() const { return signal == 0 && code == 0; }
  // "exited with status 1" / "killed by signal 9 (Killed)".
  std::string ToString() const;
};

// A started child process. Destroying a Child that has not been waited for kills it with
// SIGKILL and reaps it, so a child never outlives its owner unnoticed. Not thread-safe.
class Child {
 public:
  virtual ~Child() = default;

  virtual pid_t pid() const = 0;
  // The parent's ends of StdioSpec::Pipe() stdin (write end) and stdout (read end); invalid
  // when not a pipe or already taken. Closing the stdin end is how the child sees end of input.
  virtual UniqueFd TakeStdin() = 0;
  virtual UniqueFd TakeStdout() = 0;

  // Closes the parent's pipe ends that were not taken, waits for the child to exit and reaps
  // it. Idempotent: later calls return the same status.
  virtual absl::StatusOr<ExitStatus> Wait() = 0;
  // Sends `signal` to the child unless it has been reaped (then OK, nothing sent).
  virtual absl::Status Signal(int signal) = 0;
  // The last ProcessSpec::stderr_limit bytes the child wrote to stderr. Complete once Wait()
  // returned; before that, what has arrived so far.
  virtual std::string Stderr() const = 0;
};
using ChildPtr = std::unique_ptr<Child>;

// Starts child processes. Implementations are thread-safe.
class ProcessRunner {
 public:
  virtual ~ProcessRunner() = default;
  // Starts argv[0] (found in PATH). NotFound when it is not installed; other errors name the
  // failing call.
  virtual absl::StatusOr<ChildPtr> Start(const ProcessSpec& spec) = 0;

  // The process-wide real runner (posix_spawn); never null, never deleted.
  static ProcessRunner* Real();
};

// An error quoting the command and its stderr ("`btrfs receive /x` exited with status 1:
// ERROR: ...") when `exit` is not a success; OK otherwise. Internal for a non-zero exit,
// Aborted for death by a signal.
absl::Status ExitToStatus(const std::vector<std::string>& argv, const ExitStatus& exit,
                          std::string_view stderr_text);

// The command line for messages: arguments joined by spaces, each quoted if needed.
std::string CommandLineForMessages(const std::vector<std::string>& argv);

struct CommandOutput {
  ExitStatus exit;
  std::string stdout_text;
  std::string stderr_text;  // the tail, see ProcessSpec::stderr_limit
};

// Runs `argv` to completion with stdin from /dev/null, collecting stdout (at most
// `max_stdout` bytes: more is ResourceExhausted and the child is killed). Errors only when it
// cannot be run; a failing exit is in CommandOutput::exit.
absl::StatusOr<CommandOutput> RunCommand(ProcessRunner& runner,
                                         const std::vector<std::string>& argv,
                                         size_t max_stdout = 16 << 20);

// Like RunCommand, but a failing exit is an error quoting stderr (ExitToStatus). Returns
// stdout.
absl::StatusOr<std::string> RunCommandOk(ProcessRunner& runner,
                                         const std::vector<std::string>& argv,
                                         size_t max_stdout = 16 << 20);

}  // namespace snapledger
