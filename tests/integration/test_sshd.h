// A throwaway OpenSSH sshd for integration tests: its own host key, a client key pair, an
// authorized_keys entry restricted to one forced command, and a known_hosts file for the
// client. Listens on 127.0.0.1 on a free port. The destructor kills the sshd it started (by
// pid) and deletes its directory, also when the test failed.
//
// Needs root and /usr/sbin/sshd, ssh-keygen; Start() returns FailedPrecondition naming what is
// missing.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/base/process.h"
#include "common/base/status_macros.h"
#include "common/transport/ssh_transport.h"

namespace snapledger::testing {

class TestSshd;
using TestSshdPtr = std::unique_ptr<TestSshd>;

class TestSshd {
 public:
  // `forced_command` goes into authorized_keys as command="..." with `restrict`.
  static absl::StatusOr<TestSshdPtr> Start(const std::string& forced_command);
  ~TestSshd();
  TestSshd(const TestSshd&) = delete;
  TestSshd& operator=(const TestSshd&) = delete;

  // An endpoint that trusts this server's host key and uses the authorized client key.
  SshEndpoint Endpoint() const;
  int port() const { return port_; }
  const std::string& dir() const { return dir_; }
  // Generates another key pair in the test directory; returns the private key's path.
  absl::StatusOr<std::string> NewKey(const std::string& name) const;

 private:
  TestSshd(std::string dir, int port) : dir_(std::move(dir)), port_(port) {}
  std::string dir_;
  int port_;
  ChildPtr sshd_;
};

}  // namespace snapledger::testing

// Assigns a started TestSshdPtr to `lhs`, or skips the test saying what is missing.
#define ASSIGN_TEST_SSHD_OR_SKIP(lhs, command)                                                \
  auto SNAPLEDGER_CONCAT(_sshd_, __LINE__) = ::snapledger::testing::TestSshd::Start(command); \
  if (absl::IsFailedPrecondition(SNAPLEDGER_CONCAT(_sshd_, __LINE__).status())) {             \
    GTEST_SKIP() << SNAPLEDGER_CONCAT(_sshd_, __LINE__).status().message();                   \
  }                                                                                           \
  ASSERT_TRUE(SNAPLEDGER_CONCAT(_sshd_, __LINE__).ok())                                       \
      << SNAPLEDGER_CONCAT(_sshd_, __LINE__).status();                                        \
  lhs = std::move(*SNAPLEDGER_CONCAT(_sshd_, __LINE__))
