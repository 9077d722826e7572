#include "common/base/process.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "common/base/status_macros.h"

extern char** environ;

namespace snapledger {
namespace {

constexpr size_t kReadChunk = 64 * 1024;

// Collects the tail of a child's stderr on its own thread, so a child that writes a lot to
// stderr never blocks on a full pipe while the parent is busy with its stdin or stdout.
class StderrTail {
 public:
  StderrTail(UniqueFd fd, UniqueFd stop, size_t limit)
      : fd_(std::move(fd)), stop_(std::move(stop)), limit_(limit), thread_([this] { Run(); }) {}
  ~StderrTail() { Finish(); }
  StderrTail(const StderrTail&) = delete;
  StderrTail& operator=(const StderrTail&) = delete;

  // Call once the child has exited: what it wrote is in the pipe, so this drains it and stops,
  // without waiting for end of file (a grandchild may still hold the pipe open).
  void Finish() {
    if (!thread_.joinable()) return;
    uint64_t one = 1;
    (void)!::write(stop_.get(), &one, sizeof(one));
    thread_.join();
  }

  std::string Text() const {
    absl::MutexLock lock(&mu_);
    return text_.size() <= limit_ ? text_ : text_.substr(text_.size() - limit_);
  }

 private:
  void Run() {
    for (;;) {
      struct pollfd fds[2] = {{fd_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        return;
      }
      if (fds[0].revents != 0 && !DrainAvailable()) return;
      if (fds[1].revents != 0) {
        DrainAvailable();
        return;
      }
    }
  }

  // Reads what is available (the fd is non-blocking). False at end of file or on error.
  bool DrainAvailable() {
    char buf[kReadChunk];
    for (;;) {
      ssize_t n = ::read(fd_.get(), buf, sizeof(buf));
      if (n > 0) {
        Append(std::string_view(buf, static_cast<size_t>(n)));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      return n < 0 && errno == EAGAIN;
    }
  }

  void Append(std::string_view data) {
    absl::MutexLock lock(&mu_);
    text_.append(data);
    if (text_.size() > 2 * limit_) text_.erase(0, text_.size() - limit_);
  }

  UniqueFd fd_;
  UniqueFd stop_;
  const size_t limit_;
  mutable absl::Mutex mu_;
  std::string text_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

class SpawnedChild : public Child {
 public:
  SpawnedChild(pid_t pid, UniqueFd stdin_fd, UniqueFd stdout_fd, std::unique_ptr<StderrTail> err)
      : pid_(pid),
        stdin_(std::move(stdin_fd)),
        stdout_(std::move(stdout_fd)),
        stderr_(std::move(err)) {}

  ~SpawnedChild() override {
    if (!exit_.has_value()) {
      ::kill(pid_, SIGKILL);
      (void)Wait();
    }
  }

  pid_t pid() const override { return pid_; }
  UniqueFd TakeStdin() override { return std::move(stdin_); }
  UniqueFd TakeStdout() override { return std::move(stdout_); }

  absl::StatusOr<ExitStatus> Wait() override {
    if (exit_.has_value()) return *exit_;
    stdin_.Reset();
    stdout_.Reset();
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0) {
      if (errno == EINTR) continue;
      // Someone else reaped it (SIGCHLD ignored?): never signal that pid again.
      int err = errno;
      exit_ = ExitStatus{};
      stderr_->Finish();
      return ErrnoStatus(absl::StrCat("waitpid ", pid_), err);
    }
    stderr_->Finish();
    ExitStatus exit;
    if (WIFEXITED(status)) {
      exit.code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
      exit.signal = WTERMSIG(status);
    }
    exit_ = exit;
    return exit;
  }

  absl::Status Signal(int signal) override {
    if (exit_.has_value()) return absl::OkStatus();
    if (::kill(pid_, signal) != 0) return ErrnoStatus(absl::StrCat("kill ", pid_), errno);
    return absl::OkStatus();
  }

  std::string Stderr() const override { return stderr_->Text(); }

 private:
  const pid_t pid_;
  UniqueFd stdin_;
  UniqueFd stdout_;
  std::unique_ptr<StderrTail> stderr_;
  std::optional<ExitStatus> exit_;
};

// A copy of `fd` numbered 3 or higher, so the dup2s onto 0, 1 and 2 in the child cannot clobber
// each other's sources.
absl::StatusOr<UniqueFd> DupAbove2(int fd) {
  int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (copy < 0) return ErrnoStatus(absl::StrCat("dup fd ", fd), errno);
  return UniqueFd(copy);
}

struct PipeEnds {
  UniqueFd child;
  UniqueFd parent;
};

// `child_reads`: the child gets the read end (stdin); otherwise the write end.
absl::StatusOr<PipeEnds> MakeChildPipe(bool child_reads) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return ErrnoStatus("pipe2", errno);
  UniqueFd r(fds[0]), w(fds[1]);
  PipeEnds ends;
  ASSIGN_OR_RETURN(ends.child, DupAbove2(child_reads ? r.get() : w.get()));
  ends.parent = child_reads ? std::move(w) : std::move(r);
  return ends;
}

// Resolves one StdioSpec into the child's descriptor and, for a pipe, the parent's end.
absl::StatusOr<PipeEnds> OpenStdio(const StdioSpec& spec, bool is_stdin) {
  switch (spec.kind) {
    case StdioSpec::Kind::kDevNull: {
      ASSIGN_OR_RETURN(UniqueFd null, OpenFile("/dev/null", is_stdin ? O_RDONLY : O_WRONLY));
      ASSIGN_OR_RETURN(UniqueFd child, DupAbove2(null.get()));
      return PipeEnds{std::move(child), UniqueFd()};
    }
    case StdioSpec::Kind::kFd: {
      if (spec.fd < 0) return absl::InvalidArgumentError("StdioSpec::Fd with a negative fd");
      ASSIGN_OR_RETURN(UniqueFd child, DupAbove2(spec.fd));
      return PipeEnds{std::move(child), UniqueFd()};
    }
    case StdioSpec::Kind::kPipe:
      return MakeChildPipe(is_stdin);
  }
  return absl::InvalidArgumentError("unknown StdioSpec kind");
}

// posix_spawn attributes and file actions, destroyed on scope exit.
class SpawnSetup {
 public:
  SpawnSetup() {
    posix_spawn_file_actions_init(&actions_);
    posix_spawnattr_init(&attr_);
  }
  ~SpawnSetup() {
    posix_spawn_file_actions_destroy(&actions_);
    posix_spawnattr_destroy(&attr_);
  }
  SpawnSetup(const SpawnSetup&) = delete;
  SpawnSetup& operator=(const SpawnSetup&) = delete;

  // stdin, stdout, stderr from these fds (all >= 3); everything else closed; signals default.
  absl::Status Configure(int in, int out, int err) {
    int rc = posix_spawn_file_actions_adddup2(&actions_, in, 0);
    if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions_, out, 1);
    if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions_, err, 2);
    if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(&actions_, 3);
    if (rc != 0) return ErrnoStatus("posix_spawn_file_actions", rc);
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2}) {
      sigaddset(&defaults, sig);
    }
    rc = posix_spawnattr_setsigmask(&attr_, &none);
    if (rc == 0) rc = posix_spawnattr_setsigdefault(&attr_, &defaults);
    if (rc == 0)
      rc = posix_spawnattr_setflags(&attr_, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    if (rc != 0) return ErrnoStatus("posix_spawnattr", rc);
    return absl::OkStatus();
  }

  const posix_spawn_file_actions_t* actions() const { return &actions_; }
  const posix_spawnattr_t* attr() const { return &attr_; }

 private:
  posix_spawn_file_actions_t actions_;
  posix_spawnattr_t attr_;
};

std::vector<char*> CStrings(const std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (const std::string& s : strings) out.push_back(const_cast<char*>(s.c_str()));
  out.push_back(nullptr);
  return out;
}

absl::StatusOr<UniqueFd> MakeEventFd() {
  int fd = ::eventfd(0, EFD_CLOEXEC);
  if (fd < 0) return ErrnoStatus("eventfd", errno);
  return UniqueFd(fd);
}

class PosixSpawnRunner : public ProcessRunner {
 public:
  absl::StatusOr<ChildPtr> Start(const ProcessSpec& spec) override {
    if (spec.argv.empty()) return absl::InvalidArgumentError("ProcessSpec.argv is empty");
    ASSIGN_OR_RETURN(PipeEnds in, OpenStdio(spec.stdin_spec, /*is_stdin=*/true));
    ASSIGN_OR_RETURN(PipeEnds out, OpenStdio(spec.stdout_spec, /*is_stdin=*/false));
    ASSIGN_OR_RETURN(PipeEnds err, MakeChildPipe(/*child_reads=*/false));
    if (::fcntl(err.parent.get(), F_SETFL, O_NONBLOCK) != 0) {
      return ErrnoStatus("fcntl O_NONBLOCK", errno);
    }
    ASSIGN_OR_RETURN(UniqueFd stop, MakeEventFd());
    SpawnSetup setup;
    RETURN_IF_ERROR(setup.Configure(in.child.get(), out.child.get(), err.child.get()));

    std::vector<char*> argv = CStrings(spec.argv);
    std::vector<char*> envp = spec.env.has_value() ? CStrings(*spec.env) : std::vector<char*>();
    pid_t pid = -1;
    int rc = posix_spawnp(&pid, argv[0], setup.actions(), setup.attr(), argv.data(),
                          spec.env.has_value() ? envp.data() : environ);
    if (rc == ENOENT) {
      return absl::NotFoundError(
          absl::StrCat("cannot run `", spec.argv[0], "`: not found in PATH (is it installed?)"));
    }
    if (rc != 0) return ErrnoStatus(absl::StrCat("posix_spawn ", spec.argv[0]), rc);
    auto tail =
        std::make_unique<StderrTail>(std::move(err.parent), std::move(stop), spec.stderr_limit);
    return std::make_unique<SpawnedChild>(pid, std::move(in.parent), std::move(out.parent),
                                          std::move(tail));
  }
};

bool NeedsQuoting(const std::string& arg) {
  if (arg.empty()) return true;
  for (char c : arg) {
    if (!(isalnum(static_cast<unsigned char>(c)) || strchr("-_./=:,+@%", c) != nullptr)) {
      return true;
    }
  }
  return false;
}

absl::StatusOr<std::string> ReadAllBounded(int fd, size_t max_bytes) {
  std::string out;
  char buf[kReadChunk];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus("read child stdout", errno);
    if (n == 0) return out;
    if (out.size() + static_cast<size_t>(n) > max_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("child stdout is larger than ", max_bytes, " bytes"));
    }
    out.append(buf, static_cast<size_t>(n));
  }
}

}  // namespace

std::string ExitStatus::ToString() const {
  if (signal != 0) return absl::StrCat("killed by signal ", signal, " (", strsignal(signal), ")");
  return absl::StrCat("exited with status ", code);
}

ProcessRunner* ProcessRunner::Real() {
  static ProcessRunner* runner = new PosixSpawnRunner();
  return runner;
}

std::string CommandLineForMessages(const std::vector<std::string>& argv) {
  std::vector<std::string> quoted;
  quoted.reserve(argv.size());
  for (const std::string& arg : argv) {
    quoted.push_back(NeedsQuoting(arg) ? absl::StrCat("'", arg, "'") : arg);
  }
  return absl::StrJoin(quoted, " ");
}

absl::Status ExitToStatus(const std::vector<std::string>& argv, const ExitStatus& exit,
                          std::string_view stderr_text) {
  if (exit.ok()) return absl::OkStatus();
  std::string_view err = stderr_text;
  while (!err.empty() && (err.back() == '\n' || err.back() == ' ')) err.remove_suffix(1);
  std::string msg = absl::StrCat("`", CommandLineForMessages(argv), "` ", exit.ToString());
  if (!err.empty()) absl::StrAppend(&msg, ": ", std::string(err));
  return exit.signal != 0 ? absl::AbortedError(msg) : absl::InternalError(msg);
}

absl::StatusOr<CommandOutput> RunCommand(ProcessRunner& runner,
                                         const std::vector<std::string>& argv, size_t max_stdout) {
  ProcessSpec spec;
  spec.argv = argv;
  spec.stdout_spec = StdioSpec::Pipe();
  ASSIGN_OR_RETURN(ChildPtr child, runner.Start(spec));
  UniqueFd out = child->TakeStdout();
  CommandOutput result;
  ASSIGN_OR_RETURN(result.stdout_text, ReadAllBounded(out.get(), max_stdout));
  ASSIGN_OR_RETURN(result.exit, child->Wait());
  result.stderr_text = child->Stderr();
  return result;
}

absl::StatusOr<std::string> RunCommandOk(ProcessRunner& runner,
                                         const std::vector<std::string>& argv, size_t max_stdout) {
  ASSIGN_OR_RETURN(CommandOutput out, RunCommand(runner, argv, max_stdout));
  RETURN_IF_ERROR(ExitToStatus(argv, out.exit, out.stderr_text));
  return std::move(out.stdout_text);
}

}  // namespace snapledger
