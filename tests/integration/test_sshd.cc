#include "tests/integration/test_sshd.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/base/posix_file.h"
#include "common/base/status_macros.h"

namespace snapledger::testing {
namespace {

constexpr char kSshd[] = "/usr/sbin/sshd";

absl::StatusOr<int> FreeLoopbackPort() {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    return ErrnoStatus("bind a free loopback port", errno);
  return ntohs(addr.sin_port);
}

bool Accepts(int port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
}

absl::Status KeyGen(const std::string& path) {
  return RunCommandOk(*ProcessRunner::Real(), {"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                                               "snapledger-test", "-f", path})
      .status();
}

absl::StatusOr<std::string> PublicKey(const std::string& private_key) {
  ASSIGN_OR_RETURN(std::string pub, ReadFileToString(private_key + ".pub"));
  return std::string(absl::StripTrailingAsciiWhitespace(pub));
}

}  // namespace

absl::StatusOr<TestSshdPtr> TestSshd::Start(const std::string& forced_command) {
  if (::geteuid() != 0)
    return absl::FailedPreconditionError("a test sshd needs root (it authenticates as root)");
  if (::access(kSshd, X_OK) != 0)
    return absl::FailedPreconditionError(
        "/usr/sbin/sshd is missing (scripts/install-deps.sh installs openssh-server)");
  std::string tmpl = (std::filesystem::temp_directory_path() / "snapledger-sshd-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) return ErrnoStatus("mkdtemp", errno);
  ASSIGN_OR_RETURN(int port, FreeLoopbackPort());
  TestSshdPtr sshd(new TestSshd(tmpl, port));
  const std::string& d = sshd->dir_;
  std::filesystem::create_directories("/run/sshd");  // sshd's privilege separation directory
  RETURN_IF_ERROR(KeyGen(d + "/host_key"));
  RETURN_IF_ERROR(KeyGen(d + "/client_key"));
  ASSIGN_OR_RETURN(std::string client_pub, PublicKey(d + "/client_key"));
  ASSIGN_OR_RETURN(std::string host_pub, PublicKey(d + "/host_key"));
  std::ofstream(d + "/authorized_keys")
      << "command=\"" << forced_command << "\",restrict " << client_pub << "\n";
  std::ofstream(d + "/known_hosts") << "[127.0.0.1]:" << port << " " << host_pub << "\n";
  // HOME points away from root's home so the account's ~/.bashrc (slow on these machines) is
  // not read for every forced command.
  std::ofstream(d + "/sshd_config")
      << "Port " << port << "\nListenAddress 127.0.0.1\nHostKey " << d << "/host_key\n"
      << "AuthorizedKeysFile " << d << "/authorized_keys\nPidFile " << d << "/sshd.pid\n"
      << "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
      << "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
      << "SetEnv HOME=" << d << "\n";
  ProcessSpec spec;
  spec.argv = {kSshd, "-D", "-e", "-f", d + "/sshd_config"};
  ASSIGN_OR_RETURN(sshd->sshd_, ProcessRunner::Real()->Start(spec));
  for (int i = 0; i < 500 && !Accepts(port); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (!Accepts(port))
    return absl::InternalError(
        absl::StrCat("sshd did not listen on port ", port, ": ", sshd->sshd_->Stderr()));
  return sshd;
}

// True while `pid` has child processes (sshd's per-connection handlers).
static bool HasChildren(pid_t pid) {
  auto children = ReadFileToString(absl::StrCat("/proc/", pid, "/task/", pid, "/children"));
  return children.ok() && !absl::StripAsciiWhitespace(*children).empty();
}

TestSshd::~TestSshd() {
  if (sshd_) {
    // Let connection handlers finish while their parent can still reap them, then stop the
    // sshd we started (by pid) and reap it.
    for (int i = 0; i < 200 && HasChildren(sshd_->pid()); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    (void)sshd_->Signal(SIGTERM);
    (void)sshd_->Wait();
    sshd_.reset();
  }
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

SshEndpoint TestSshd::Endpoint() const {
  SshEndpoint e;
  e.host = "127.0.0.1";
  e.port = port_;
  e.user = "root";
  e.identity_file = dir_ + "/client_key";
  e.known_hosts_file = dir_ + "/known_hosts";
  return e;
}

absl::StatusOr<std::string> TestSshd::NewKey(const std::string& name) const {
  std::string path = dir_ + "/" + name;
  RETURN_IF_ERROR(KeyGen(path));
  return path;
}

}  // namespace snapledger::testing
