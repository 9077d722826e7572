#include "common/transport/ssh_transport.h"

#include <libssh/libssh.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>

#include "absl/strings/str_cat.h"

namespace snapledger {
namespace {

void DetectDeadPeer(int fd, absl::Duration timeout) {
  if (fd < 0 || timeout <= absl::ZeroDuration()) return;
  // Unacknowledged data (or unanswered keepalive probes) older than `timeout` fails the
  // socket with ETIMEDOUT. Keepalives start after a third of it, so an idle connection whose
  // peer vanished is noticed within about `timeout` too. Best effort: errors leave defaults.
  unsigned int user_timeout = static_cast<unsigned int>(absl::ToInt64Milliseconds(timeout));
  int idle = std::max<int>(1, static_cast<int>(absl::ToInt64Seconds(timeout / 3)));
  int interval = std::max<int>(1, idle / 3);
  int count = 3, on = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof(user_timeout));
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count));
}

constexpr size_t kMaxStdout = 1 << 20;
constexpr size_t kMaxStderr = 64 << 10;

struct SessionDeleter {
  void operator()(ssh_session s) const {
    if (ssh_is_connected(s)) ssh_disconnect(s);
    ssh_free(s);
  }
};
using SessionHandle = std::unique_ptr<std::remove_pointer_t<ssh_session>, SessionDeleter>;

struct KeyDeleter {
  void operator()(ssh_key k) const { ssh_key_free(k); }
};
using KeyHandle = std::unique_ptr<std::remove_pointer_t<ssh_key>, KeyDeleter>;

struct ChannelDeleter {
  void operator()(ssh_channel c) const {
    if (ssh_channel_is_open(c)) ssh_channel_close(c);
    ssh_channel_free(c);
  }
};
using ChannelHandle = std::unique_ptr<std::remove_pointer_t<ssh_channel>, ChannelDeleter>;

std::string Where(const SshEndpoint& e) { return absl::StrCat(e.user, "@", e.host, ":", e.port); }

absl::Status SessionError(ssh_session s, absl::StatusCode code, std::string_view what) {
  return absl::Status(code, absl::StrCat(std::string(what), ": ", ssh_get_error(s)));
}

void AppendBounded(std::string* out, const char* data, size_t n, size_t limit) {
  out->append(data, n);
  if (out->size() > limit) out->erase(0, out->size() - limit);
}

class LibsshCommand : public RemoteCommand {
 public:
  LibsshCommand(ssh_session session, ChannelHandle channel, std::string description)
      : session_(session), channel_(std::move(channel)), description_(std::move(description)) {}

  absl::Status Write(std::string_view data) override {
    while (!data.empty()) {
      uint32_t chunk = static_cast<uint32_t>(std::min<size_t>(data.size(), 1 << 20));
      int n = ssh_channel_write(channel_.get(), data.data(), chunk);
      if (n == SSH_ERROR || n < 0)
        return SessionError(session_, absl::StatusCode::kUnavailable,
                            absl::StrCat("write to ", description_));
      if (n == 0 && (ssh_channel_is_eof(channel_.get()) || ssh_channel_is_closed(channel_.get())))
        return absl::AbortedError(absl::StrCat(description_, " closed its input"));
      data.remove_prefix(static_cast<size_t>(n));
      written_ += static_cast<uint64_t>(n);
    }
    return absl::OkStatus();
  }

  absl::Status Close() override {
    if (eof_sent_) return absl::OkStatus();
    eof_sent_ = true;
    if (ssh_channel_is_closed(channel_.get())) return absl::OkStatus();
    if (ssh_channel_send_eof(channel_.get()) != SSH_OK)
      return SessionError(session_, absl::StatusCode::kUnavailable,
                          absl::StrCat("send EOF to ", description_));
    return absl::OkStatus();
  }

  absl::StatusOr<std::optional<std::string>> ReadLine(size_t max) override {
    char buf[4096];
    while (true) {
      if (size_t nl = unread_stdout_.find('\n'); nl != std::string::npos) {
        std::string line = unread_stdout_.substr(0, nl);
        unread_stdout_.erase(0, nl + 1);
        return line;
      }
      if (unread_stdout_.size() > max)
        return absl::DataLossError(
            absl::StrCat(description_, " wrote a line longer than ", max, " bytes"));
      int n = ssh_channel_read(channel_.get(), buf, sizeof buf, 0);
      if (n == SSH_ERROR)
        return SessionError(session_, absl::StatusCode::kUnavailable,
                            absl::StrCat("read from ", description_));
      if (n <= 0) return std::nullopt;  // end of stdout
      unread_stdout_.append(buf, static_cast<size_t>(n));
    }
  }

  bool Open() override {
    ssh_channel c = channel_.get();
    if (eof_sent_ || !unread_stdout_.empty() || !ssh_channel_is_open(c) ||
        ssh_channel_is_closed(c) || ssh_channel_is_eof(c))
      return false;
    // Handles what arrived meanwhile without waiting: EOF, a close, or output.
    for (int is_stderr : {0, 1}) {
      int available = ssh_channel_poll(c, is_stderr);
      if (available != 0) return false;  // SSH_ERROR, SSH_EOF, or unasked-for output
    }
    return !ssh_channel_is_closed(c) && !ssh_channel_is_eof(c);
  }

  absl::StatusOr<RemoteExit> Wait() override {
    (void)Close();
    RemoteExit exit;
    exit.stdout_text = std::move(unread_stdout_);
    unread_stdout_.clear();
    char buf[16384];
    for (int is_stderr : {0, 1}) {
      while (true) {
        int n = ssh_channel_read(channel_.get(), buf, sizeof buf, is_stderr);
        if (n == SSH_ERROR)
          return SessionError(session_, absl::StatusCode::kUnavailable,
                              absl::StrCat("read from ", description_));
        if (n <= 0) break;
        AppendBounded(is_stderr ? &exit.stderr_text : &exit.stdout_text, buf,
                      static_cast<size_t>(n), is_stderr ? kMaxStderr : kMaxStdout);
      }
    }
    exit.exit_status = ssh_channel_get_exit_status(channel_.get());
    ssh_channel_close(channel_.get());
    return exit;
  }

  uint64_t bytes_written() const override { return written_; }

 private:
  ssh_session session_;
  ChannelHandle channel_;
  std::string description_;
  uint64_t written_ = 0;
  bool eof_sent_ = false;
  std::string unread_stdout_;  // read by ReadLine, not yet returned
};

class LibsshSession : public SshSession {
 public:
  LibsshSession(SessionHandle session, std::string where)
      : session_(std::move(session)), where_(std::move(where)), fd_(ssh_get_fd(session_.get())) {}

  absl::StatusOr<RemoteCommandPtr> Exec(const std::string& command) override {
    ChannelHandle channel(ssh_channel_new(session_.get()));
    if (!channel)
      return SessionError(session_.get(), absl::StatusCode::kUnavailable, "new channel");
    if (ssh_channel_open_session(channel.get()) != SSH_OK)
      return SessionError(session_.get(), absl::StatusCode::kUnavailable,
                          absl::StrCat("open channel to ", where_));
    if (ssh_channel_request_exec(channel.get(), command.c_str()) != SSH_OK)
      return SessionError(session_.get(), absl::StatusCode::kUnavailable,
                          absl::StrCat("exec on ", where_));
    return RemoteCommandPtr(new LibsshCommand(session_.get(), std::move(channel),
                                              absl::StrCat("`", command, "` on ", where_)));
  }

  bool Connected() const override {
    return !aborted_.load() && ssh_is_connected(session_.get()) != 0;
  }

  absl::Status KeepAlive() override {
    if (!Connected()) return absl::UnavailableError(absl::StrCat(where_, ": disconnected"));
    // Reading what arrived makes libssh answer the server's global requests (keepalives).
    ssh_event event = ssh_event_new();
    if (event != nullptr) {
      if (ssh_event_add_session(event, session_.get()) == SSH_OK) {
        ssh_event_dopoll(event, 0);
        ssh_event_remove_session(event, session_.get());
      }
      ssh_event_free(event);
    }
    // Something of our own now and then (an SSH_MSG_IGNORE), so that a dead peer shows up as a
    // failed write and TCP's user timeout.
    absl::Time now = absl::Now();
    if (now - last_ignore_ >= absl::Seconds(2)) {
      last_ignore_ = now;
      if (ssh_send_ignore(session_.get(), "") != SSH_OK)
        return SessionError(session_.get(), absl::StatusCode::kUnavailable,
                            absl::StrCat("keepalive to ", where_));
    }
    if (!Connected()) return absl::UnavailableError(absl::StrCat(where_, ": disconnected"));
    return absl::OkStatus();
  }

  // Only the socket is touched, never libssh's state (which belongs to the thread using the
  // session): a blocked poll/recv/send on it returns, libssh sees the connection gone and
  // fails the call in progress.
  void Abort() override {
    aborted_.store(true);
    if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
  }

 private:
  SessionHandle session_;
  std::string where_;
  const socket_t fd_;  // owned by session_; read once, while connected
  std::atomic<bool> aborted_{false};
  absl::Time last_ignore_ = absl::InfinitePast();  // KeepAlive, on the session's thread
};

absl::Status CheckHostKey(ssh_session s, const SshEndpoint& e) {
  switch (ssh_session_is_known_server(s)) {
    case SSH_KNOWN_HOSTS_OK:
      return absl::OkStatus();
    case SSH_KNOWN_HOSTS_CHANGED:
    case SSH_KNOWN_HOSTS_OTHER:
      return absl::PermissionDeniedError(absl::StrCat(
          "host key of ", Where(e), " does not match ", e.known_hosts_file,
          ": refusing to connect (the host was reinstalled, or someone is in the middle)"));
    case SSH_KNOWN_HOSTS_UNKNOWN:
    case SSH_KNOWN_HOSTS_NOT_FOUND:
      if (e.trust_unknown_host_key) {
        if (ssh_session_update_known_hosts(s) != SSH_OK)
          return SessionError(s, absl::StatusCode::kInternal,
                              absl::StrCat("record host key in ", e.known_hosts_file));
        return absl::OkStatus();
      }
      return absl::PermissionDeniedError(
          absl::StrCat("host key of ", Where(e), " is not in ", e.known_hosts_file,
                       ": add it (ssh-keyscan) or allow trust on first use explicitly"));
    default:
      return SessionError(s, absl::StatusCode::kInternal, "check host key");
  }
}

class LibsshTransport : public SshTransport {
 public:
  absl::StatusOr<SshSessionPtr> Connect(const SshEndpoint& e) override {
    SessionHandle s(ssh_new());
    if (!s) return absl::InternalError("ssh_new failed");
    int port = e.port;
    long timeout = static_cast<long>(absl::ToInt64Seconds(e.connect_timeout));
    bool no = false;
    // Small messages go out at once: a channel open, an exec request and the EOF after a
    // stream are each waited for, and Nagle would hold each behind the previous one's ACK.
    int nodelay = 1;
    int verbosity = SSH_LOG_NOLOG;
    if (ssh_options_set(s.get(), SSH_OPTIONS_PROCESS_CONFIG, &no) != SSH_OK ||
        ssh_options_set(s.get(), SSH_OPTIONS_HOST, e.host.c_str()) != SSH_OK ||
        ssh_options_set(s.get(), SSH_OPTIONS_PORT, &port) != SSH_OK ||
        ssh_options_set(s.get(), SSH_OPTIONS_USER, e.user.c_str()) != SSH_OK ||
        ssh_options_set(s.get(), SSH_OPTIONS_KNOWNHOSTS, e.known_hosts_file.c_str()) != SSH_OK ||
        ssh_options_set(s.get(), SSH_OPTIONS_GLOBAL_KNOWNHOSTS, "/dev/null") != SSH_OK ||
        ssh_options_set(s.get(), SSH_OPTIONS_CIPHERS_C_S, e.ciphers.c_str()) != SSH_OK ||
        ssh_options_set(s.get(), SSH_OPTIONS_CIPHERS_S_C, e.ciphers.c_str()) != SSH_OK ||
        ssh_options_set(s.get(), SSH_OPTIONS_COMPRESSION, "no") != SSH_OK ||
        ssh_options_set(s.get(), SSH_OPTIONS_TIMEOUT, &timeout) != SSH_OK ||
        ssh_options_set(s.get(), SSH_OPTIONS_NODELAY, &nodelay) != SSH_OK ||
        ssh_options_set(s.get(), SSH_OPTIONS_LOG_VERBOSITY, &verbosity) != SSH_OK)
      return SessionError(s.get(), absl::StatusCode::kInvalidArgument, "ssh options");
    if (ssh_connect(s.get()) != SSH_OK)
      return SessionError(s.get(), absl::StatusCode::kUnavailable,
                          absl::StrCat("connect to ", Where(e)));
    DetectDeadPeer(ssh_get_fd(s.get()), e.dead_peer_timeout);
    if (absl::Status st = CheckHostKey(s.get(), e); !st.ok()) return st;
    ssh_key raw_key = nullptr;
    if (ssh_pki_import_privkey_file(e.identity_file.c_str(), nullptr, nullptr, nullptr, &raw_key) !=
        SSH_OK)
      return absl::PermissionDeniedError(absl::StrCat("cannot read private key ", e.identity_file));
    KeyHandle key(raw_key);
    if (ssh_userauth_publickey(s.get(), nullptr, key.get()) != SSH_AUTH_SUCCESS)
      return SessionError(
          s.get(), absl::StatusCode::kPermissionDenied,
          absl::StrCat("public key authentication to ", Where(e), " with ", e.identity_file));
    return SshSessionPtr(new LibsshSession(std::move(s), Where(e)));
  }
};

}  // namespace

SshTransport* SshTransport::Libssh() {
  static LibsshTransport* transport = new LibsshTransport();
  return transport;
}

}  // namespace snapledger
