// The libssh transport against a real OpenSSH sshd on loopback: host key checking, key
// authentication, forced commands, one session carrying many channels.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/transport/ssh_transport.h"
#include "tests/integration/test_sshd.h"

namespace snapledger {
namespace {

using ::testing::HasSubstr;
using testing::TestSshdPtr;

absl::StatusOr<RemoteExit> RunWithInput(SshSession& session, const std::string& command,
                                        const std::string& input) {
  auto remote = session.Exec(command);
  if (!remote.ok()) return remote.status();
  if (absl::Status st = (*remote)->Write(input); !st.ok()) return st;
  return (*remote)->Wait();
}

TEST(SshTransport, StreamsStdinThroughTheForcedCommand) {
  TestSshdPtr sshd;
  ASSIGN_TEST_SSHD_OR_SKIP(sshd, "/usr/bin/wc -c");
  auto session = SshTransport::Libssh()->Connect(sshd->Endpoint());
  ASSERT_TRUE(session.ok()) << session.status();
  std::string payload(5 << 20, 'x');
  auto exit = RunWithInput(**session, "anything at all", payload);
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_TRUE(exit->ok()) << exit->stderr_text;
  EXPECT_EQ(exit->stdout_text, absl::StrCat(payload.size(), "\n"));
}

TEST(SshTransport, OneSessionCarriesManyChannels) {
  TestSshdPtr sshd;
  ASSIGN_TEST_SSHD_OR_SKIP(sshd, "/bin/sh -c 'echo \\\"$SSH_ORIGINAL_COMMAND\\\"; cat >/dev/null'");
  auto session = SshTransport::Libssh()->Connect(sshd->Endpoint());
  ASSERT_TRUE(session.ok()) << session.status();
  for (int i = 0; i < 5; ++i) {
    auto exit = RunWithInput(**session, absl::StrCat("receive --block ", i), "stream");
    ASSERT_TRUE(exit.ok()) << exit.status();
    EXPECT_EQ(exit->stdout_text, absl::StrCat("receive --block ", i, "\n"));
  }
  EXPECT_TRUE((*session)->Connected());
}

TEST(SshTransport, RemoteExitStatusAndStderrComeBack) {
  TestSshdPtr sshd;
  ASSIGN_TEST_SSHD_OR_SKIP(sshd, "/bin/sh -c 'echo refused >&2; exit 3'");
  auto session = SshTransport::Libssh()->Connect(sshd->Endpoint());
  ASSERT_TRUE(session.ok()) << session.status();
  auto remote = (*session)->Exec("receive");
  ASSERT_TRUE(remote.ok());
  (void)(*remote)->Write(std::string(1 << 20, 'y'));  // may fail: the command does not read
  auto exit = (*remote)->Wait();
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->exit_status, 3);
  EXPECT_EQ(exit->stderr_text, "refused\n");
}

TEST(SshTransport, UnknownHostKeyIsRefused) {
  TestSshdPtr sshd;
  ASSIGN_TEST_SSHD_OR_SKIP(sshd, "/bin/true");
  SshEndpoint e = sshd->Endpoint();
  e.known_hosts_file = sshd->dir() + "/empty_known_hosts";
  std::ofstream(e.known_hosts_file).flush();
  auto session = SshTransport::Libssh()->Connect(e);
  ASSERT_FALSE(session.ok());
  EXPECT_EQ(session.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(session.status().message()), HasSubstr("is not in"));
}

TEST(SshTransport, ChangedHostKeyIsRefused) {
  TestSshdPtr sshd;
  ASSIGN_TEST_SSHD_OR_SKIP(sshd, "/bin/true");
  auto other = sshd->NewKey("other_host_key");
  ASSERT_TRUE(other.ok());
  std::ifstream pub(*other + ".pub");
  std::string key((std::istreambuf_iterator<char>(pub)), std::istreambuf_iterator<char>());
  SshEndpoint e = sshd->Endpoint();
  e.known_hosts_file = sshd->dir() + "/wrong_known_hosts";
  std::ofstream(e.known_hosts_file) << "[127.0.0.1]:" << sshd->port() << " " << key;
  auto session = SshTransport::Libssh()->Connect(e);
  ASSERT_FALSE(session.ok());
  EXPECT_EQ(session.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(session.status().message()), HasSubstr("does not match"));
}

TEST(SshTransport, TrustOnFirstUseOnlyWhenAskedRecordsTheKey) {
  TestSshdPtr sshd;
  ASSIGN_TEST_SSHD_OR_SKIP(sshd, "/bin/true");
  SshEndpoint e = sshd->Endpoint();
  e.known_hosts_file = sshd->dir() + "/tofu_known_hosts";
  e.trust_unknown_host_key = true;
  ASSERT_TRUE(SshTransport::Libssh()->Connect(e).ok());
  e.trust_unknown_host_key = false;
  EXPECT_TRUE(SshTransport::Libssh()->Connect(e).ok());  // now known
}

TEST(SshTransport, UnauthorizedClientKeyIsRefused) {
  TestSshdPtr sshd;
  ASSIGN_TEST_SSHD_OR_SKIP(sshd, "/bin/true");
  auto stranger = sshd->NewKey("stranger_key");
  ASSERT_TRUE(stranger.ok());
  SshEndpoint e = sshd->Endpoint();
  e.identity_file = *stranger;
  auto session = SshTransport::Libssh()->Connect(e);
  ASSERT_FALSE(session.ok());
  EXPECT_EQ(session.status().code(), absl::StatusCode::kPermissionDenied);
}

}  // namespace
}  // namespace snapledger
