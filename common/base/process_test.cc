#include "common/base/process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/base/byte_stream.h"
#include "common/base/posix_file.h"
#include "common/testing/temp_dir.h"

namespace snapledger {
namespace {

ProcessRunner& Runner() { return *ProcessRunner::Real(); }

ExitStatus RunToExit(const std::vector<std::string>& argv) {
  auto out = RunCommand(Runner(), argv);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? out->exit : ExitStatus{};
}

TEST(ProcessRunner, SuccessfulCommandExitsWithZero) {
  ExitStatus exit = RunToExit({"true"});
  EXPECT_TRUE(exit.ok());
  EXPECT_EQ(exit.code, 0);
}

TEST(ProcessRunner, ExitCodeIsReported) {
  ExitStatus exit = RunToExit({"sh", "-c", "exit 7"});
  EXPECT_FALSE(exit.ok());
  EXPECT_EQ(exit.code, 7);
  EXPECT_EQ(exit.signal, 0);
  EXPECT_EQ(exit.ToString(), "exited with status 7");
}

TEST(ProcessRunner, DeathBySignalIsReported) {
  ExitStatus exit = RunToExit({"sh", "-c", "kill -TERM $$"});
  EXPECT_EQ(exit.signal, SIGTERM);
  EXPECT_FALSE(exit.ok());
}

TEST(ProcessRunner, MissingProgramIsNotFound) {
  ProcessSpec spec;
  spec.argv = {"snapledger-no-such-program"};
  auto child = Runner().Start(spec);
  ASSERT_FALSE(child.ok());
  EXPECT_TRUE(absl::IsNotFound(child.status())) << child.status();
  EXPECT_TRUE(absl::StrContains(child.status().message(), "snapledger-no-such-program"));
}

TEST(ProcessRunner, EmptyArgvIsInvalid) {
  auto child = Runner().Start(ProcessSpec{});
  EXPECT_TRUE(absl::IsInvalidArgument(child.status())) << child.status();
}

TEST(ProcessRunner, StdoutIsCollected) {
  auto out = RunCommandOk(Runner(), {"echo", "hello"});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "hello\n");
}

TEST(ProcessRunner, FailingCommandErrorQuotesItsStderr) {
  auto out = RunCommandOk(Runner(), {"sh", "-c", "echo 'ERROR: disk on fire' >&2; exit 3"});
  ASSERT_FALSE(out.ok());
  EXPECT_TRUE(absl::IsInternal(out.status()));
  EXPECT_TRUE(absl::StrContains(out.status().message(), "exited with status 3"));
  EXPECT_TRUE(absl::StrContains(out.status().message(), "ERROR: disk on fire")) << out.status();
}

TEST(ProcessRunner, StderrKeepsOnlyItsTail) {
  ProcessSpec spec;
  spec.argv = {"sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x >&2; echo END >&2"};
  spec.stderr_limit = 1000;
  auto child = Runner().Start(spec);
  ASSERT_TRUE(child.ok()) << child.status();
  auto exit = (*child)->Wait();
  ASSERT_TRUE(exit.ok() && exit->ok());
  std::string err = (*child)->Stderr();
  EXPECT_EQ(err.size(), 1000u);
  EXPECT_TRUE(absl::EndsWith(err, "xxxEND\n"));
}

TEST(ProcessRunner, PipesCarryStdinToStdout) {
  ProcessSpec spec;
  spec.argv = {"cat"};
  spec.stdin_spec = StdioSpec::Pipe();
  spec.stdout_spec = StdioSpec::Pipe();
  auto child = Runner().Start(spec);
  ASSERT_TRUE(child.ok()) << child.status();
  FdSink in(child.value()->TakeStdin());
  FdSource out(child.value()->TakeStdout());
  ASSERT_TRUE(in.Write("through cat").ok());
  ASSERT_TRUE(in.Close().ok());
  StringSink collected;
  auto copied = CopyStream(out, collected);
  ASSERT_TRUE(copied.ok()) << copied.status();
  EXPECT_EQ(collected.data(), "through cat");
  auto exit = (*child)->Wait();
  ASSERT_TRUE(exit.ok());
  EXPECT_TRUE(exit->ok());
}

TEST(ProcessRunner, FdsConnectStdinAndStdoutToFiles) {
  testing::TempDir dir;
  ASSERT_TRUE(WriteFileAtomic(dir.Sub("in"), "abc\n").ok());
  auto in = OpenFile(dir.Sub("in"), O_RDONLY);
  auto out = OpenFile(dir.Sub("out"), O_WRONLY | O_CREAT | O_TRUNC);
  ASSERT_TRUE(in.ok() && out.ok());
  ProcessSpec spec;
  spec.argv = {"tr", "a-z", "A-Z"};
  spec.stdin_spec = StdioSpec::Fd(in->get());
  spec.stdout_spec = StdioSpec::Fd(out->get());
  auto child = Runner().Start(spec);
  ASSERT_TRUE(child.ok()) << child.status();
  ASSERT_TRUE((*child)->Wait()->ok());
  EXPECT_EQ(*ReadFileToString(dir.Sub("out")), "ABC\n");
}

TEST(ProcessRunner, ChildInheritsNoOtherDescriptors) {
  int leaky = ::open("/dev/null", O_RDONLY);  // deliberately without O_CLOEXEC
  ASSERT_GE(leaky, 3);
  UniqueFd owned(leaky);
  ExitStatus exit = RunToExit({"sh", "-c", absl::StrCat("test -e /proc/self/fd/", leaky)});
  EXPECT_EQ(exit.code, 1) << "fd " << leaky << " leaked into the child";
}

TEST(ProcessRunner, EnvironmentCanBeReplaced) {
  ProcessSpec spec;
  spec.argv = {"/bin/sh", "-c", "echo \"[$SNAPLEDGER_X][$HOME]\""};
  spec.env = std::vector<std::string>{"SNAPLEDGER_X=42"};
  spec.stdout_spec = StdioSpec::Pipe();
  auto child = Runner().Start(spec);
  ASSERT_TRUE(child.ok()) << child.status();
  FdSource out(child.value()->TakeStdout());
  StringSink text;
  ASSERT_TRUE(CopyStream(out, text).ok());
  EXPECT_EQ(text.data(), "[42][]\n");
}

TEST(Child, DestructorKillsAndReapsARunningChild) {
  ProcessSpec spec;
  spec.argv = {"sleep", "1000"};
  pid_t pid;
  {
    auto child = Runner().Start(spec);
    ASSERT_TRUE(child.ok()) << child.status();
    pid = (*child)->pid();
    ASSERT_EQ(::kill(pid, 0), 0);
  }
  // Reaped: the pid no longer names a process of ours (not even a zombie).
  EXPECT_EQ(::kill(pid, 0), -1);
  EXPECT_EQ(errno, ESRCH);
}

TEST(Child, WaitIsIdempotent) {
  ProcessSpec spec;
  spec.argv = {"sh", "-c", "exit 4"};
  auto child = Runner().Start(spec);
  ASSERT_TRUE(child.ok());
  EXPECT_EQ((*child)->Wait()->code, 4);
  EXPECT_EQ((*child)->Wait()->code, 4);
  EXPECT_TRUE((*child)->Signal(SIGKILL).ok());
}

TEST(Child, WaitClosesAnUntakenStdinPipe) {
  ProcessSpec spec;
  spec.argv = {"cat"};
  spec.stdin_spec = StdioSpec::Pipe();
  auto child = Runner().Start(spec);
  ASSERT_TRUE(child.ok());
  auto exit = (*child)->Wait();  // would hang if cat never saw end of input
  ASSERT_TRUE(exit.ok());
  EXPECT_TRUE(exit->ok());
}

TEST(FdSink, WriteToAPipeWithoutReaderIsAnErrorNotASignal) {
  auto pipe = MakePipe();
  ASSERT_TRUE(pipe.ok());
  pipe->read.Reset();
  FdSink sink(std::move(pipe->write), "orphan pipe");
  absl::Status st = sink.Write("nobody listens");
  EXPECT_FALSE(st.ok());
  EXPECT_TRUE(absl::StrContains(st.message(), "orphan pipe")) << st;
}

TEST(ExitToStatus, NamesTheCommandLine) {
  absl::Status st = ExitToStatus({"btrfs", "receive", "/a b"}, ExitStatus{1, 0}, "ERROR: x\n");
  EXPECT_EQ(st.message(), "`btrfs receive '/a b'` exited with status 1: ERROR: x");
}

}  // namespace
}  // namespace snapledger
