// The receive command (`snapledger-receive`, replica/receive_main.cc): the one program the
// primary's key may run on a replica, as the forced command of its authorized_keys entry:
//
//   command="/usr/bin/snapledger-receive --root /srv/ledger",restrict ssh-ed25519 AAAA...
//
// sshd passes the primary's requested command in SSH_ORIGINAL_COMMAND; only its transfer
// arguments (--block, --parent, --epoch, --head-seq, --head-hash, --compress) are taken from
// it, parsed without a shell and validated; the root always comes from the forced command.
// With `--compress zstd` stdin is a zstd stream, decompressed before `btrfs receive`.
//
// With `--session` it takes block after block on stdin (common/transport/receive_session.h),
// so sshd starts it once per SSH session rather than once per block.
//
// It is its own small executable, not a subcommand of the daemon's: sshd starts it for every
// session (and, without sessions, every block), and loading the daemon's libraries (gRPC,
// FAISS, ...) would dominate its start-up (bench/README.md). It links only what receiving
// needs.
//
// It answers with the receive protocol (common/transport/receive_protocol.h): one verdict line
// per block on stdout, received or failed (a refusal names its ReceiveRefusal), and an exit code
// that matches it (ReceiveExit: 0 received or already held, 1 the transfer failed, including a
// corrupt or truncated compressed stream, 2 refused, 3 the block did not verify). A failure
// also says what was wrong in one line on stderr, for people. Every attempt is appended to the
// receive journal (replica/receive_journal.h), from which the daemon counts metrics.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <optional>
#include <string>

#include "common/base/byte_stream.h"
#include "common/base/clock.h"
#include "common/btrfs/btrfs.h"

namespace snapledger {

struct TransferArgs {
  std::string block, parent;
  uint64_t epoch = 0;
  uint64_t head_seq = 0;
  std::string head_hash;
  std::string compress = "none";
  bool session = false;  // --session: block after block on stdin (receive_session.h)
};

// Parses SSH_ORIGINAL_COMMAND: "snapledger-receive <transfer options>" or
// "snapledger-receive --session" (the program may be
// given by path; "snapledger-replica receive" and "receive" are accepted too, as primaries
// configured before the command had its own executable send them) and nothing else. False
// with `*error` saying why for anything else.
bool ParseOriginalCommand(const std::string& command, TransferArgs& t, std::string* error);

// Parses one request line of a session (the transfer options alone, --session not among
// them). False with `*error` saying why otherwise.
bool ParseRequestLine(const std::string& line, TransferArgs& t, std::string* error);

// Everything the receive command reaches outside its ledger root's files (which it reads and
// writes directly: head files, the receive lock, the journal). Borrowed; all must outlive
// RunReceiveCommand.
struct ReceiveEnv {
  Btrfs* btrfs;
  Clock* clock;       // the journal's timestamps and the verdict's seconds
  ByteSource* in;     // stdin: one block's stream, or a session's requests and frames
  std::ostream* out;  // stdout: verdict lines
  std::ostream* err;  // stderr: one line per failure, for people
  // SSH_ORIGINAL_COMMAND, when sshd set it (the command the primary asked for).
  std::optional<std::string> original_command;
  // After each verdict of a session: the path of this program when it has been replaced on
  // disk since the command started (then the session ends), nullopt otherwise. Empty: never.
  std::function<std::optional<std::string>()> program_replaced;
};

// Watches this process's executable (/proc/self/exe) from the call on, for
// ReceiveEnv::program_replaced: an upgrade renames a new file over it. Never replaced when the
// executable cannot be identified. The result is thread-compatible.
std::function<std::optional<std::string>()> WatchOwnExecutable();

// Parses argv (`--root` and the transfer options above) and receives one block from env.in
// into the ledger at the root; returns the exit code (ReceiveExit). When
// env.original_command is set, the transfer arguments come from it and argv must not carry
// any (a forced command with transfer arguments is refused). Never throws.
//
// With --session (common/transport/receive_session.h), blocks follow one another on env.in,
// each a request line and a framed stream, each answered with its verdict line and recorded in
// the journal on its own. The exit code is 0 when the input ends between blocks; a block that
// fails ends the session with that block's verdict and exit code. A bad or overlong request
// line is refused (2, bad_request); input cut or garbled inside a stream, or a request line
// cut by the end of input, is a transfer failure (1). After a block's verdict, a session whose
// program has been replaced (env.program_replaced) exits 0, so that the next block runs the
// new program.
int RunReceiveCommand(int argc, const char* const* argv, const ReceiveEnv& env);

}  // namespace snapledger
