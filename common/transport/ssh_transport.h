// SSH as the transport of send streams: one authenticated libssh session per replica, kept
// open, and one channel per block that execs the replica's receive command and carries the
// stream on its stdin.
//
// Trust: the client authenticates with its own private key, and the server's host key must be
// in the known_hosts file the endpoint names. An unknown or changed host key is refused;
// trust on first use happens only when the endpoint explicitly allows it (the key is then
// added to that file). ~/.ssh/config and the global known_hosts are never read.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/base/byte_stream.h"

namespace snapledger {

struct SshEndpoint {
  std::string host;
  int port = 22;
  std::string user = "root";
  std::string identity_file;            // private key (OpenSSH format), no passphrase
  std::string known_hosts_file;         // must hold the server's host key
  bool trust_unknown_host_key = false;  // TOFU: only when the operator asks for it
  // Preferred ciphers, client to server and back; AES-GCM is the fastest with AES-NI.
  std::string ciphers =
      "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com";
  absl::Duration connect_timeout = absl::Seconds(10);
  // A peer that acknowledges nothing for this long is dead: the connection's TCP socket gets
  // TCP_USER_TIMEOUT and keepalive probes, so the kernel fails it (and every blocked libssh
  // call on it) even when nothing is being written, e.g. while waiting for the replica's
  // verdict after the last byte. Zero leaves the kernel's defaults (minutes).
  absl::Duration dead_peer_timeout = absl::Seconds(30);
};

// How a remote command ended.
struct RemoteExit {
  int exit_status = -1;
  std::string stdout_text;  // at most 1 MiB is kept
  std::string stderr_text;  // at most 64 KiB is kept
  bool ok() const { return exit_status == 0; }
};

// A command running on the remote side of one channel. Its stdin is this sink: Write() sends
// bytes, Close() sends EOF. Not thread-safe; must not outlive its session.
class RemoteCommand : public ByteSink {
 public:
  // Reads the command's stdout up to the next '\n' and returns the line without it, for a
  // command that answers line by line and keeps running (a receive session). nullopt when
  // stdout ends first (the command exited: Wait() then says how, its stdout_text starting
  // with what was read here and not returned). DataLoss for a line longer than `max`;
  // Unavailable when the channel fails.
  virtual absl::StatusOr<std::optional<std::string>> ReadLine(size_t max) = 0;
  // Whether the command may still take input, as far as what has arrived shows: false once
  // the remote side sent EOF or closed the channel, or wrote output nobody asked for. Does
  // not wait.
  virtual bool Open() = 0;
  // Sends EOF if not yet sent, then reads the command's output until it exits.
  virtual absl::StatusOr<RemoteExit> Wait() = 0;
  virtual uint64_t bytes_written() const = 0;
};
using RemoteCommandPtr = std::unique_ptr<RemoteCommand>;

// An authenticated connection. Not thread-safe: one channel at a time, except Abort().
class SshSession {
 public:
  virtual ~SshSession() = default;
  // Opens a channel and execs `command` (the server may replace it with a forced command).
  virtual absl::StatusOr<RemoteCommandPtr> Exec(const std::string& command) = 0;
  // False once the connection broke or was aborted; the caller reconnects.
  virtual bool Connected() const = 0;
  // Breaks the connection, from any thread: a Write, Wait or Exec blocked on the network (in
  // another thread) returns an error promptly, and every later call fails; Connected() is
  // false from then on. For watchdogs. The session must not be destroyed while Abort runs.
  // Idempotent. libssh shuts the session's socket down (shutdown(2); the fd stays open until
  // the session is destroyed). The default does nothing, for doubles without a network.
  virtual void Abort() {}
  // For an idle session, a few times a second: answers what the server sent meanwhile (sshd's
  // ClientAliveInterval probes, which would otherwise drop an idle connection) and sends a
  // keepalive of its own. Unavailable when the connection is gone. Same thread as Exec.
  virtual absl::Status KeepAlive() { return absl::OkStatus(); }
};
using SshSessionPtr = std::unique_ptr<SshSession>;

// The seam the shipper uses, so its logic is tested without a network.
class SshTransport {
 public:
  virtual ~SshTransport() = default;
  // Connects, checks the host key, authenticates. Errors say which step failed:
  // Unavailable (network), PermissionDenied (host key refused, authentication failed).
  virtual absl::StatusOr<SshSessionPtr> Connect(const SshEndpoint& endpoint) = 0;

  // libssh; never null, never deleted.
  static SshTransport* Libssh();
};

}  // namespace snapledger
